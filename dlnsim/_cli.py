"""The ``dlnsim`` command line (typer): ``run``, ``compare``, ``sweep``, ``phase``, ``wide``, ``reproduce``
and ``rules``."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Exact learning dynamics of deep linear networks under curvature-corrected rules.",
)

TASKS = ("student-teacher", "teacher")


SOLVERS = ("tsit5", "kvaerno5")


def _solver(name: str):
    """The diffrax solver for ``--solver`` (validated up front by :func:`_validate_numbers`)."""
    import diffrax

    return {"tsit5": diffrax.Tsit5, "kvaerno5": diffrax.Kvaerno5}[name]()


@app.callback()
def _entry() -> None:
    """Exact learning dynamics of deep linear networks under curvature-corrected rules."""
    _configure()


def _configure() -> None:
    """float64, and one LAPACK thread unless OPENBLAS_NUM_THREADS says otherwise (see
    :func:`dlnsim.limit_lapack_threads`)."""
    import os

    import jax

    from ._runtime import limit_lapack_threads

    jax.config.update("jax_enable_x64", True)
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        limit_lapack_threads(1)


def _fail(message: str, code: int = 2):
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def _cli_words(message: str) -> str:
    """A library message in the CLI's terms (its keyword arguments are options here)."""
    return message.replace("`max_steps`", "max_steps").replace("max_steps", "--max-steps")


SEED_MAX = 2**63 - 1


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or int(seed) != seed or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"--seed must be an integer from 0 to 2^63 - 1, got {seed!r}")
    return int(seed)


@contextlib.contextmanager
def _computing(what: str):
    """The stall watchdog (CPU backend only: a GPU run waits on the device with the CPU idle)."""
    import jax

    from ._runtime import StallWatchdog

    if jax.default_backend() != "cpu":
        yield
        return
    with StallWatchdog(what):  # on a stall it removes this process's temps and locks
        yield


def _claim(ctx: typer.Context, out: Path, overwrite: bool, what: str, needed_bytes: int = 0):
    """Checks and locks ``out`` before any computation (see :mod:`dlnsim._outputs`) and starts
    the stall watchdog; both end with the command. Raises ValueError (exit 2) for a path that
    dlnsim may not write."""
    from ._outputs import claim_output

    target = claim_output(
        out, overwrite=overwrite, needed_bytes=needed_bytes, command="dlnsim " + " ".join(sys.argv[1:])
    )
    ctx.with_resource(target)
    if not ctx.meta.get("dlnsim.watchdog"):  # one per command
        ctx.meta["dlnsim.watchdog"] = True
        ctx.with_resource(_computing(what))
    return target


def _trajectory_bytes(widths, saves: int, n_traj: int = 1) -> int:
    """Bytes of the saved weights (the bulk of trajectory.npz), plus ~2 MiB of plots and JSON."""
    params = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return int(8 * params * saves * n_traj) + (2 << 20)


@dataclass
class Setup:
    """A task, its data (if any) and the initial network, built from CLI options."""

    task: object  # Task or StudentTeacherData
    net: object
    description: str


def build_setup(
    *,
    task: str,
    depth: int,
    width: int,
    widths: str | None,
    init: str,
    scale: float | None,
    seed: int,
    rank: int,
    snr: float,
    samples: int,
    data: Path | None,
) -> Setup:
    """Builds the task and the initial net (the same for every rule given the same options)."""
    import jax.random as jr

    from ._models import DeepLinearNet
    from ._resources import resolve_widths
    from ._tasks import Task, load_regression_data, random_teacher, student_teacher

    key = jr.PRNGKey(_check_seed(seed))
    k_task, k_net = jr.split(key)
    net_widths = resolve_widths(depth, width, widths)
    if data is not None:
        base, irreducible = load_regression_data(str(data))
        n_out, n_in = base.teacher.shape
        if widths is None:  # the data fix the input and output widths; --width sets the hidden ones
            net_widths = (n_in,) + net_widths[1:-1] + (n_out,)
        elif (net_widths[0], net_widths[-1]) != (n_in, n_out):
            raise ValueError(
                f"--data has {n_in} inputs and {n_out} outputs but --widths starts at {net_widths[0]} "
                f"and ends at {net_widths[-1]}; make them match, or drop --widths"
            )
        the_task, desc = base, f"data from {data} (irreducible loss {float(irreducible):.4g})"
    elif task == "student-teacher":
        if net_widths[0] != net_widths[-1]:
            raise ValueError("the student-teacher task is square: input and output widths must be equal")
        the_task = student_teacher(k_task, width=net_widths[0], rank=rank, snr=snr, samples=samples)
        desc = f"student-teacher: rank-{rank} teacher, SNR {snr:g}, P={samples} samples"
    elif task == "teacher":
        the_task = Task(random_teacher(k_task, net_widths[-1], net_widths[0], rank=rank))
        desc = f"noise-free rank-{rank} teacher, whitened inputs"
    else:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    base = getattr(the_task, "task", the_task)
    net = DeepLinearNet(
        net_widths, key=k_net, init=init, scale=scale, teacher=base.teacher, input_cov=base.input_cov
    )
    return Setup(the_task, net, desc)


def _progress_meter(log_span: float | None = None):
    """diffrax's tqdm meter, shown only once a solve has run for a second.

    For runs to convergence (``log_span`` = t_max / first save time) the bar advances in log time,
    since diffrax reports progress as the fraction of [t0, t_max] reached.
    """
    import diffrax

    def to_percent(progress: float) -> float:
        if log_span is None:
            return 100.0 * progress
        return 100.0 * math.log1p(progress * log_span) / math.log1p(log_span)

    class _DelayedTqdm(diffrax.TqdmProgressMeter):
        @staticmethod
        def _init_bar():
            import tqdm

            fmt = "{percentage:.1f}%|{bar}| [{elapsed}<{remaining}]" + (" (log time)" if log_span else "")
            return tqdm.tqdm(total=100, unit="%", delay=1.0, bar_format=fmt)

        @staticmethod
        def _step_bar(bar, progress) -> None:
            bar.n = round(to_percent(float(progress)), 2)
            bar.update(n=0)

    return _DelayedTqdm()


MAX_STEPS = 2_000_000


def _log_span(t1):
    """Runs to convergence, and fixed-length runs past t = 1e3, show progress in log time
    (diffrax reports the fraction of [0, t1] reached, which stays near 0 for a huge t1)."""
    if t1 is None:
        return 1e6
    return float(t1) if t1 > 1e3 else None


def _simulate_cli(
    setup: Setup, rule_field, name, *, t1, t_max, loss_tol, saves, progress, solver="tsit5", max_steps=None
):
    """Runs ``simulate`` on the setup's net, or on a batch of initial weights (a TrajectoryBatch).

    Without t1, a run stops at loss <= loss_tol x the initial loss (for a batch: x the median
    initial loss of its elements) or at t_max, on a log-spaced save grid.
    """
    import dataclasses

    import diffrax
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ._models import network_map
    from ._simulation import TrajectoryBatch, simulate

    base = getattr(setup.task, "task", setup.task)
    weights = setup.net.weights if hasattr(setup.net, "weights") else setup.net
    if weights[0].ndim == 3:
        loss0 = float(np.median(jax.vmap(lambda *w: base.loss(network_map(w)))(*weights)))
    else:
        loss0 = float(base.loss(network_map(weights)))
    if t1 is None:
        ts = jnp.concatenate([jnp.zeros(1), jnp.geomspace(t_max * 1e-6, t_max, saves - 1)])
        end, threshold = t_max, loss_tol * loss0
    else:
        ts = jnp.linspace(0.0, t1, saves)
        end, threshold = t1, None
    result = simulate(
        weights,
        rule_field,
        setup.task,
        end,
        saveat=diffrax.SaveAt(ts=ts),
        loss_threshold=threshold,
        max_steps=MAX_STEPS if max_steps is None else int(max_steps),
        solver=_solver(solver),
        progress_meter=(_progress_meter(_log_span(t1)) if progress else None),
    )
    if isinstance(result, TrajectoryBatch):
        named = tuple(
            None if tr is None else dataclasses.replace(tr, rule=name) for tr in result.trajectories
        )
        return dataclasses.replace(result, trajectories=named)
    return dataclasses.replace(result, rule=name)


def _run_rule(
    setup: Setup,
    name: str,
    field_,
    *,
    q,
    eps,
    seed,
    init,
    task_name,
    t1,
    t_max,
    loss_tol,
    saves,
    progress,
    analytic: bool,
    solver: str = "tsit5",
    max_steps=None,
):
    """Simulates one rule; returns its trajectory, summary row and (aligned runs) mode comparison."""
    from ._simulation import compare_with_modes

    start = time.perf_counter()
    traj = _simulate_cli(setup, field_, name, t1=t1, t_max=t_max, loss_tol=loss_tol, saves=saves,
                         progress=progress, solver=solver, max_steps=max_steps)  # fmt: skip
    theory = compare_with_modes(traj, field_, setup.task) if analytic else None
    summary = _summary(
        traj, setup, rule=name, q=q, eps=eps, seed=seed, init=init, task_name=task_name,
        wall=time.perf_counter() - start, t1=t1, loss_tol=loss_tol,
    )  # fmt: skip
    if theory is not None:
        summary["max_mode_deviation"] = theory.max_mode_deviation
        summary["max_layer_deviation"] = theory.max_layer_deviation
    return traj, summary, theory


def _summary(traj, setup: Setup, *, rule, q, eps, seed, init, task_name, wall, t1, loss_tol) -> dict:
    import numpy as np

    from ._tasks import StudentTeacherData

    out = {
        "rule": rule,
        "depth": traj.depth,
        "widths": list(traj.widths),
        "q": None if q is None else (q if math.isfinite(q) else "inf"),
        "eps": eps,
        "seed": seed,
        "init": init,
        "task": task_name,
        "task_description": setup.description,
        "t_final": float(traj.times[-1]),
        "converged": bool(traj.stopped_early) if t1 is None else None,
        "loss_tolerance": loss_tol if t1 is None else None,
        "loss_initial": float(traj.loss[0]),
        "loss_final": float(traj.loss[-1]),
        "max_conservation_drift": float(np.max(traj.conservation_drift)),
        "max_parameter_speed": float(np.max(traj.parameter_speed)),
        "mode_targets": traj.mode_targets.tolist(),
        "mode_half_times": [None if not np.isfinite(h) else float(h) for h in traj.half_times()],
        "n_saved": int(traj.times.size),
        "wall_time_s": round(wall, 3),
    }
    if isinstance(setup.task, StudentTeacherData):
        j = int(np.argmin(traj.test_loss))
        out.update(
            train_loss_final=float(traj.train_loss[-1]),
            irreducible_loss=float(setup.task.irreducible_loss),
            test_loss_initial=float(traj.test_loss[0]),
            test_loss_final=float(traj.test_loss[-1]),
            test_loss_min=float(traj.test_loss[j]),
            t_test_loss_min=float(traj.times[j]),
            noise_std=setup.task.noise_std,
        )
    return out


def _save_npz(path: Path, traj, setup: Setup) -> None:
    import numpy as np

    from ._tasks import StudentTeacherData

    base = getattr(setup.task, "task", setup.task)
    arrays = {
        "t": traj.times,
        "loss": traj.loss,
        "teacher": np.asarray(base.teacher),
        "input_cov": np.asarray(base.input_cov),
        "mode_strengths": traj.mode_strengths,
        "mode_targets": traj.mode_targets,
        "conservation_drift": traj.conservation_drift,
        "parameter_speed": traj.parameter_speed,
    }
    for i, w in enumerate(traj.weights):
        arrays[f"weights_{i + 1}"] = w
    if isinstance(setup.task, StudentTeacherData):
        arrays.update(
            true_teacher=np.asarray(setup.task.true_teacher),
            irreducible_loss=np.asarray(setup.task.irreducible_loss),
            train_loss=traj.train_loss,
            test_loss=traj.test_loss,
        )
    np.savez(path, **arrays)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _print_table(rows: list[dict]) -> None:
    cols = [
        ("rule", "{}"),
        ("t_final", "{:.4g}"),
        ("loss_initial", "{:.4g}"),
        ("loss_final", "{:.3e}"),
        ("test_loss_min", "{:.4g}"),
        ("max_conservation_drift", "{:.2e}"),
        ("max_mode_deviation", "{:.1e}"),
        ("wall_time_s", "{:.1f}"),
    ]
    cols = [c for c in cols if any(c[0] in r for r in rows)]
    header = [c[0] for c in cols]
    body = []
    for r in rows:
        cells = []
        for key, fmt in cols:
            v = r.get(key)
            cells.append("-" if v is None else (fmt.format(v) if not isinstance(v, str) else v))
        body.append(cells)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for b in body:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)))


_COMMON = dict(
    depth=typer.Option(4, help="Number of weight layers d (>= 1)."),
    width=typer.Option(
        16, help="Width of every layer (input, hidden and output; with --data, the hidden layers)."
    ),
    widths=typer.Option(
        None, help="Explicit widths n_0,...,n_d, e.g. 5,3,2,3,4 (overrides --depth/--width)."
    ),
    init=typer.Option("small", help="small | orthogonal | balanced | xavier | aligned."),
    scale=typer.Option(
        None, help="Init scale: largest singular value for 'small' (default 0.05), else a multiplier."
    ),
    seed=typer.Option(0, help="Seed for the task and the initial weights (0 to 2^63 - 1)."),
    task=typer.Option(
        "student-teacher", help="student-teacher (Huh 2020 Fig. 3 setting) | teacher (noise-free)."
    ),
    rank=typer.Option(3, help="Teacher rank."),
    snr=typer.Option(10.0, help="Signal-to-noise ratio of the student-teacher data."),
    samples=typer.Option(16, help="Training samples P of the student-teacher data."),
    data=typer.Option(None, help="Your own .npz with arrays x (P, n_in) and y (P, n_out); overrides --task."),
    t1=typer.Option(
        None, help="End time; by default run until the loss reaches --loss-tol x initial or --t-max."
    ),
    t_max=typer.Option(1e4, help="Longest time for a run to convergence."),
    loss_tol=typer.Option(1e-6, help="Convergence: stop when loss <= loss_tol x initial loss."),
    saves=typer.Option(600, help="Number of saved times."),
    solver=typer.Option(
        "tsit5",
        help="ODE solver: tsit5 (explicit, default) | kvaerno5 (implicit, dense Jacobian; fewer steps on "
        "long SGD plateaus of small nets, far slower once P is in the thousands).",
    ),
    curvature=typer.Option(
        "auto",
        help="How full rules apply the exact curvature: auto | dense | krylov | balanced "
        "(balanced is exact only for balanced weights with white inputs).",
    ),
    max_steps=typer.Option(
        MAX_STEPS, help="Most solver steps per run; a run that needs more stops with a message."
    ),
    overwrite=typer.Option(
        False, "--overwrite", help="Replace an earlier dlnsim result at --out (never anything else)."
    ),
)


def _check_curvature(curvature: str, widths) -> None:
    from ._curvature import check_krylov_widths

    if curvature == "krylov":
        check_krylov_widths(widths, "--curvature krylov", "--curvature dense or auto")


def _check_linear_resources(
    what, *, depth, width, widths, saves, rule, curvature, q, solver, task, samples, data, batch=1
) -> None:
    """Refuses (ValueError, exit 2) a run whose memory or compile time cannot fit this machine,
    before anything is allocated (see :mod:`dlnsim._resources`)."""
    from ._resources import check_resources, estimate_linear_run, resolve_widths

    st = task == "student-teacher" and data is None
    estimate = estimate_linear_run(
        resolve_widths(depth, width, widths), saves=saves, rule=rule, method=curvature, q=q, solver=solver,
        samples=samples if st else 0, test_samples=1000 if st else 0, batch=batch,
    )  # fmt: skip
    check_resources(estimate, what=what)


def _check_unused(names, *, q, eps) -> None:
    """compare/phase: --q and --eps must reach a rule that takes them."""
    if q is not None and not {"qngd", "qngd-d"} & set(names):
        raise ValueError("--q applies to qngd and qngd-d, and --rules lists neither; drop --q or add one")
    if eps is not None and "damped-ngd" not in names:
        raise ValueError("--eps applies to damped-ngd, which --rules does not list; drop --eps or add it")


def _field(rule: str, q, eps, curvature: str, *, strict: bool = True):
    """The rule's vector field; ``curvature`` applies to the full rules only.

    With ``strict`` (single-rule commands), q or eps given to a rule without them is an error;
    otherwise (compare) each rule takes only the options it has.
    """
    from ._curvature import CURVATURE_METHODS
    from ._rules import vector_field

    if curvature not in CURVATURE_METHODS:
        raise ValueError(f"--curvature must be one of {', '.join(CURVATURE_METHODS)}, got {curvature!r}")
    full = rule in ("ngd", "qngd", "sqrt-ngd", "damped-ngd")
    return vector_field(
        rule,
        q=q if strict or rule in ("qngd", "qngd-d") else None,
        eps=eps if strict or rule == "damped-ngd" else None,
        method=curvature if full or (strict and curvature != "auto") else None,
    )


# Times below this cannot be split into a save grid and plotted on log axes without running
# into float64's subnormal range (2.2e-308); no learning-rule time scale is anywhere near it.
MIN_TIME = 1e-250


def _validate_numbers(**values) -> None:
    from ._checks import check_positive

    for name in ("t1", "t_max", "loss_tol"):
        v = values.get(name)
        if v is not None:
            check_positive(name.replace("_", "-"), v)
    for name in ("t1", "t_max"):
        v = values.get(name)
        if v is not None and v < MIN_TIME:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {MIN_TIME:g}, got {v!r}")
    if int(values["saves"]) < 2:
        raise ValueError(f"saves must be >= 2, got {values['saves']}")
    steps = values.get("max_steps")
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
        raise ValueError(f"--max-steps must be an integer >= 1, got {steps!r}")
    if values.get("solver", "tsit5") not in SOLVERS:
        raise ValueError(f"--solver must be one of {', '.join(SOLVERS)}, got {values['solver']!r}")


@app.command()
def run(
    ctx: typer.Context,
    rule: str = typer.Option("sqrt-ngd", help="Learning rule; see `dlnsim rules`."),
    q: float = typer.Option(None, help="Curvature power for qngd / qngd-d (q >= 1; inf = sgd)."),
    eps: float = typer.Option(None, help="Damping for damped-ngd (eps >= 0)."),
    depth: int = _COMMON["depth"],
    width: int = _COMMON["width"],
    widths: str = _COMMON["widths"],
    init: str = _COMMON["init"],
    scale: float = _COMMON["scale"],
    seed: int = _COMMON["seed"],
    task: str = _COMMON["task"],
    rank: int = _COMMON["rank"],
    snr: float = _COMMON["snr"],
    samples: int = _COMMON["samples"],
    data: Path = _COMMON["data"],
    t1: float = _COMMON["t1"],
    t_max: float = _COMMON["t_max"],
    loss_tol: float = _COMMON["loss_tol"],
    saves: int = _COMMON["saves"],
    curvature: str = _COMMON["curvature"],
    solver: str = _COMMON["solver"],
    max_steps: int = _COMMON["max_steps"],
    overwrite: bool = _COMMON["overwrite"],
    out: Path = typer.Option(None, help="Output directory (default runs/<rule>-d<depth>)."),
    progress: bool = typer.Option(True, help="Show diffrax's progress bar on runs longer than a second."),
) -> None:
    """Integrate one learning rule and write summary.json, trajectory.npz and plots."""
    from ._checks import DynamicsBlowUpError
    from ._plotting import plot_loss, plot_modes
    from ._rules import rule_q

    try:
        _validate_numbers(
            t1=t1, t_max=t_max, loss_tol=loss_tol, saves=saves, solver=solver, max_steps=max_steps
        )
        field_ = _field(rule, q, eps, curvature)
        _check_linear_resources(
            "this run", depth=depth, width=width, widths=widths, saves=saves, rule=rule, curvature=curvature,
            q=q, solver=solver, task=task, samples=samples, data=data,
        )  # fmt: skip
        setup = build_setup(
            task=task, depth=depth, width=width, widths=widths, init=init, scale=scale, seed=seed,
            rank=rank, snr=snr, samples=samples, data=data,
        )  # fmt: skip
        _check_curvature(curvature, setup.net.widths)
        out = Path(out) if out is not None else Path("runs") / f"{rule}-d{setup.net.depth}"
        target = _claim(ctx, out, overwrite, "dlnsim run", _trajectory_bytes(setup.net.widths, saves))
    except ValueError as err:
        _fail(str(err))
    try:
        traj, summary, theory = _run_rule(
            setup, rule, field_, q=rule_q(rule, q), eps=eps, seed=seed, init=init,
            task_name="data" if data else task, t1=t1, t_max=t_max, loss_tol=loss_tol, saves=saves,
            progress=progress, analytic=init == "aligned", solver=solver, max_steps=max_steps,
        )  # fmt: skip
    except DynamicsBlowUpError as err:
        _fail(_cli_words(str(err)), code=1)
    title = f"{rule}, d={traj.depth}, widths {list(traj.widths)}; {setup.description}"
    with target.writing() as tmp:
        _write_json(tmp / "summary.json", summary)
        _save_npz(tmp / "trajectory.npz", traj, setup)
        plot_loss([traj], str(tmp / "loss.png"), title=title)
        plot_modes([traj], str(tmp / "modes.png"), title=title, theory=[theory])
    _print_table([summary])
    if t1 is None and not summary["converged"]:
        typer.echo(f"note: stopped at t_max={t_max:g} before the loss fell to {loss_tol:g} x initial")
    typer.echo(f"wrote {out}/summary.json, trajectory.npz, loss.png, modes.png")


@app.command()
def compare(
    ctx: typer.Context,
    rules: str = typer.Option("sgd,ngd,sqrt-ngd,ngd-d,sqrt-ngd-d", help="Comma-separated rules."),
    q: float = typer.Option(None, help="q for qngd / qngd-d entries."),
    eps: float = typer.Option(None, help="eps for a damped-ngd entry."),
    depth: int = _COMMON["depth"],
    width: int = _COMMON["width"],
    widths: str = _COMMON["widths"],
    init: str = _COMMON["init"],
    scale: float = _COMMON["scale"],
    seed: int = _COMMON["seed"],
    task: str = _COMMON["task"],
    rank: int = _COMMON["rank"],
    snr: float = _COMMON["snr"],
    samples: int = _COMMON["samples"],
    data: Path = _COMMON["data"],
    t1: float = _COMMON["t1"],
    t_max: float = _COMMON["t_max"],
    loss_tol: float = _COMMON["loss_tol"],
    saves: int = _COMMON["saves"],
    curvature: str = _COMMON["curvature"],
    solver: str = _COMMON["solver"],
    max_steps: int = _COMMON["max_steps"],
    overwrite: bool = _COMMON["overwrite"],
    analytic: bool = typer.Option(
        False, "--analytic", help="Aligned init; integrate the singular-mode ODEs beside each run."
    ),
    out: Path = typer.Option(Path("runs/compare"), help="Output directory."),
    progress: bool = typer.Option(True, help="Show diffrax's progress bar on runs longer than a second."),
) -> None:
    """Run several rules from the same task and initial weights; overlay plots and a table."""
    from ._checks import DynamicsBlowUpError
    from ._plotting import plot_loss, plot_modes
    from ._rules import rule_q

    names = [r.strip() for r in rules.split(",") if r.strip()]
    try:
        if analytic and init not in ("small", "aligned"):
            raise ValueError(f"--analytic uses the aligned init; it cannot be combined with --init {init}")
        init = "aligned" if analytic else init
        if not names:
            raise ValueError("--rules needs at least one rule name")
        if len(set(names)) != len(names):
            raise ValueError(f"--rules lists a rule twice: {rules}")
        _validate_numbers(
            t1=t1, t_max=t_max, loss_tol=loss_tol, saves=saves, solver=solver, max_steps=max_steps
        )
        fields = {n: _field(n, q, eps, curvature, strict=False) for n in names}
        _check_linear_resources(
            "this comparison", depth=depth, width=width, widths=widths, saves=saves, rule=names,
            curvature=curvature, q=q, solver=solver, task=task, samples=samples, data=data,
        )  # fmt: skip
        setup = build_setup(
            task=task, depth=depth, width=width, widths=widths, init=init, scale=scale, seed=seed,
            rank=rank, snr=snr, samples=samples, data=data,
        )  # fmt: skip
        _check_curvature(curvature, setup.net.widths)
        _check_unused(names, q=q, eps=eps)
        target = _claim(
            ctx, out, overwrite, "dlnsim compare", _trajectory_bytes(setup.net.widths, saves, len(names))
        )
    except ValueError as err:
        _fail(str(err))
    trajs, rows, theories, failures = [], [], [], {}
    for name in names:
        qq = q if name in ("qngd", "qngd-d") else None
        try:
            traj, row, theory = _run_rule(
                setup, name, fields[name], q=rule_q(name, qq), eps=eps if name == "damped-ngd" else None,
                seed=seed, init=init, task_name="data" if data else task, t1=t1, t_max=t_max,
                loss_tol=loss_tol, saves=saves, progress=progress, analytic=analytic, solver=solver,
                max_steps=max_steps,
            )  # fmt: skip
        except DynamicsBlowUpError as err:
            failures[name] = {"time": err.time, "reason": err.reason, "hint": err.hint}
            typer.echo(f"{name}: {_cli_words(str(err))}", err=True)
            continue
        trajs.append(traj)
        rows.append(row)
        theories.append(theory)
    title = f"d={setup.net.depth}, widths {list(setup.net.widths)}; {setup.description}"
    with target.writing() as tmp:
        _write_json(tmp / "summary.json", {"rules": rows, "failed": failures})
        if trajs:
            (tmp / "trajectories").mkdir()
            for traj in trajs:
                _save_npz(tmp / "trajectories" / f"{traj.rule}.npz", traj, setup)
            plot_loss(trajs, str(tmp / "loss.png"), title=title)
            plot_modes(trajs, str(tmp / "modes.png"), title=title, theory=theories)
    if rows:
        _print_table(rows)
        typer.echo("time to half of each mode's strength (strongest modes first):")
        for r in rows:
            half = ", ".join("-" if h is None else f"{h:.3g}" for h in r["mode_half_times"][:6])
            typer.echo(f"  {r['rule']:<12} {half}")
    typer.echo(f"wrote {out}/summary.json, loss.png, modes.png, trajectories/")
    if failures:
        raise typer.Exit(1)


@app.command()
def sweep(
    ctx: typer.Context,
    rule: str = typer.Option("sqrt-ngd", help="Learning rule; see `dlnsim rules`."),
    seeds: int = typer.Option(16, help="Number of initial-weight seeds, run as one vmapped solve."),
    q: float = typer.Option(None, help="Curvature power for qngd / qngd-d (q >= 1; inf = sgd)."),
    eps: float = typer.Option(None, help="Damping for damped-ngd (eps >= 0)."),
    depth: int = _COMMON["depth"],
    width: int = _COMMON["width"],
    widths: str = _COMMON["widths"],
    init: str = _COMMON["init"],
    scale: float = _COMMON["scale"],
    seed: int = _COMMON["seed"],
    task: str = _COMMON["task"],
    rank: int = _COMMON["rank"],
    snr: float = _COMMON["snr"],
    samples: int = _COMMON["samples"],
    data: Path = _COMMON["data"],
    t1: float = _COMMON["t1"],
    t_max: float = _COMMON["t_max"],
    loss_tol: float = _COMMON["loss_tol"],
    saves: int = _COMMON["saves"],
    curvature: str = _COMMON["curvature"],
    solver: str = _COMMON["solver"],
    max_steps: int = _COMMON["max_steps"],
    overwrite: bool = _COMMON["overwrite"],
    out: Path = typer.Option(None, help="Output directory (default runs/sweep-<rule>-d<depth>)."),
    progress: bool = typer.Option(True, help="Show diffrax's progress bar on runs longer than a second."),
) -> None:
    """One rule from many initial weights (same task), batched under vmap; a failed seed is
    recorded and the others go on. Writes one summary per seed and a combined plot."""
    import jax.random as jr
    import numpy as np

    from ._plotting import plot_sweep
    from ._rules import rule_q
    from ._simulation import init_weights_batch

    try:
        if int(seeds) != seeds or seeds < 1:
            raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
        _validate_numbers(
            t1=t1, t_max=t_max, loss_tol=loss_tol, saves=saves, solver=solver, max_steps=max_steps
        )
        field_ = _field(rule, q, eps, curvature)
        _check_linear_resources(
            "this sweep", depth=depth, width=width, widths=widths, saves=saves, rule=rule,
            curvature=curvature, q=q, solver=solver, task=task, samples=samples, data=data, batch=seeds,
        )  # fmt: skip
        setup = build_setup(
            task=task, depth=depth, width=width, widths=widths, init=init, scale=scale, seed=seed,
            rank=rank, snr=snr, samples=samples, data=data,
        )  # fmt: skip
        _check_curvature(curvature, setup.net.widths)
        base = getattr(setup.task, "task", setup.task)
        keys = jr.split(jr.fold_in(jr.PRNGKey(seed), 1), seeds)
        batch = init_weights_batch(
            setup.net.widths, keys, init=init, scale=scale, teacher=base.teacher, input_cov=base.input_cov
        )
        out = Path(out) if out is not None else Path("runs") / f"sweep-{rule}-d{setup.net.depth}"
        target = _claim(ctx, out, overwrite, "dlnsim sweep", 64 * seeds * saves + (2 << 20))
    except ValueError as err:
        _fail(str(err))
    start = time.perf_counter()
    batch_setup = Setup(setup.task, batch, setup.description)
    result = _simulate_cli(
        batch_setup,
        field_,
        rule,
        t1=t1,
        t_max=t_max,
        loss_tol=loss_tol,
        saves=saves,
        progress=progress,
        max_steps=max_steps,
        solver=solver,
    )
    wall = time.perf_counter() - start
    rows = []
    for k, (traj, status) in enumerate(zip(result.trajectories, result.status, strict=True)):
        row = {"seed_index": k, "status": status}
        if traj is not None:
            row.update(
                _summary(
                    traj,
                    setup,
                    rule=rule,
                    q=rule_q(rule, q),
                    eps=eps,
                    seed=seed,
                    init=init,
                    task_name="data" if data else task,
                    wall=wall / seeds,
                    t1=t1,
                    loss_tol=loss_tol,
                )  # fmt: skip
            )
        rows.append(row)
    ok = [r for r in rows if "loss_final" in r]
    combined = {
        "rule": rule,
        "seeds": seeds,
        "succeeded": len(ok),
        "failed": [
            {"seed_index": r["seed_index"], "status": r["status"]} for r in rows if "loss_final" not in r
        ],
        "wall_time_s": round(wall, 3),
    }
    for key in ("loss_final", "t_final", "max_conservation_drift", "test_loss_min"):
        values = np.asarray([r[key] for r in ok if key in r], dtype=float)
        if values.size:
            combined[key] = {
                "median": float(np.median(values)), "min": float(values.min()), "max": float(values.max())
            }  # fmt: skip
    with target.writing() as tmp:
        _write_json(tmp / "summary.json", combined)
        (tmp / "seeds").mkdir()
        for r in rows:
            _write_json(tmp / "seeds" / f"seed_{r['seed_index']:04d}.json", r)
        plot_sweep(result, str(tmp / "loss.png"), title=f"{rule}, {seeds} seeds; {setup.description}")
    typer.echo(
        f"{rule}: {len(ok)} of {seeds} seeds succeeded in {wall:.1f} s; median final loss "
        f"{combined.get('loss_final', {}).get('median', float('nan')):.3e}"
    )
    if combined["failed"]:
        typer.echo(f"{len(combined['failed'])} seed(s) failed; see {out}/summary.json")
    typer.echo(f"wrote {out}/summary.json, seeds/, loss.png")


# A phase portrait integrates each rule's mode ODE over a grid of starts to t1: the flows reach
# their fixed points by t ~ 10 (Huh 2020, Fig. 1 uses t <= 4), and past 1e6 the plot shows nothing
# new while the solver (and its markers at fixed fractions of t1) leave any useful range.
PHASE_T1_RANGE = (1e-6, 1e6)


@app.command()
def phase(
    ctx: typer.Context,
    rules: str = typer.Option("sgd,ngd,sqrt-ngd,ngd-d,sqrt-ngd-d", help="Comma-separated rules."),
    q: float = typer.Option(None, help="q for qngd / qngd-d entries."),
    eps: float = typer.Option(None, help="eps for a damped-ngd entry."),
    sigma_star: float = typer.Option(1.0, help="The mode's target strength sigma*."),
    start: str = typer.Option("0.25,1.3", help="Initial (sigma_1, sigma_2)."),
    t1: float = typer.Option(4.0, help="Length of each trajectory (at most 1e6)."),
    out: Path = typer.Option(Path("runs/phase"), help="Output directory."),
    overwrite: bool = _COMMON["overwrite"],
) -> None:
    """Phase portraits of one mode of a d = 2 net in the (sigma_1, sigma_2) plane (Huh 2020, Fig. 1)."""
    from ._analytic import mode_field_of
    from ._checks import check_positive
    from ._plotting import plot_phase_portraits
    from ._rules import vector_field

    names = [r.strip() for r in rules.split(",") if r.strip()]
    try:
        if not names or len(set(names)) != len(names):
            raise ValueError(f"--rules needs distinct rule names, got {rules!r}")
        fields = [
            (n, mode_field_of(vector_field(
                n, q=q if n in ("qngd", "qngd-d") else None, eps=eps if n == "damped-ngd" else None
            )))
            for n in names
        ]  # fmt: skip
        try:
            y0 = tuple(float(v) for v in start.split(","))
        except ValueError:
            y0 = ()
        if len(y0) != 2 or not all(math.isfinite(v) and v > 0 for v in y0):
            raise ValueError(f"--start must be two positive numbers like 0.25,1.3, got {start!r}")
        check_positive("sigma-star", sigma_star)
        check_positive("t1", t1)
        if not PHASE_T1_RANGE[0] <= t1 <= PHASE_T1_RANGE[1]:
            raise ValueError(f"--t1 must be from {PHASE_T1_RANGE[0]:g} to {PHASE_T1_RANGE[1]:g}, got {t1!r}")
        _check_unused(names, q=q, eps=eps)
        target = _claim(ctx, out, overwrite, "dlnsim phase")
    except ValueError as err:
        _fail(str(err))
    with target.writing() as tmp:
        markers = plot_phase_portraits(fields, str(tmp / "phase.png"), sigma_star=sigma_star, start=y0, t1=t1)
        _write_json(tmp / "summary.json", {"sigma_star": sigma_star, "start": list(y0), "rules": markers})
    for name, m in markers.items():
        values = ", ".join(f"{v:.4f}" for v in m["map_at_markers"])
        typer.echo(f"{name:<12} sigma_1 sigma_2 at t = {m['marker_times']}: {values}")
    typer.echo(f"wrote {out}/phase.png, summary.json")


WIDE_DATASETS = ("synthetic", "digits")


def _plot_wide(summary: dict, path: Path) -> None:
    """Measured against theory: training loss per step (with GD on the NTK) and test loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t = np.arange(len(summary["train_loss"]))
    floor = 1e-30
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    ax.semilogy(t, np.maximum(summary["train_loss"], floor), "o", label=f"{summary['fisher']}-NGD, measured")
    ax.semilogy(t, np.maximum(summary["theory_loss"], floor), "-", label=f"theory ({summary['theory']})")
    ax.semilogy(t, np.maximum(summary["gd_theory_loss"], floor), "--", label="GD on the NTK (theory)")
    ax.set(xlabel="step t", ylabel="training loss", title=f"alpha theory {summary['alpha_theory']}, "
           f"measured {summary['alpha_measured']:.6g}")  # fmt: skip
    ax.set_ylim(bottom=max(1e-12, min(summary["train_loss"][0] * 1e-12, 1e-6)))
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(t, summary["test_loss"], "o", label="measured")
    if summary["test_loss_theory"] is not None:
        ax.plot(t, summary["test_loss_theory"], "-", label="linearised model (S.26)")
    ax.plot(t, summary["gd_theory_test_loss"], "--", label="GD on the NTK (theory)")
    ax.set(xlabel="step t", ylabel="test loss")
    ax.set_title(summary["task"][:70], fontsize=8)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"L={summary['depth']}, widths {summary['widths'][1:-1][:3]}..., {summary['activation']}, "
        f"N={summary['samples']}, eta={summary['learning_rate']:.4g}", fontsize=9,
    )  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@app.command()
def wide(
    ctx: typer.Context,
    fisher: str = typer.Option(
        "bd", help="exact | bd | tri-diagonal | kfac | unit-wise | diagonal | quasi-diagonal."
    ),
    depth: int = typer.Option(3, help="Number of weight layers L (>= 1)."),
    width: int = typer.Option(512, help="Width M of every hidden layer."),
    samples: int = typer.Option(16, help="Training samples N."),
    input_dim: int = typer.Option(None, help="Input dimension M0 (synthetic data; default 32; digits: 64)."),
    outputs: int = typer.Option(1, help="Outputs C of the synthetic task (>= 2: one-hot classes)."),
    activation: str = typer.Option("relu", help="relu | tanh | erf | shifted-relu | identity."),
    shift: float = typer.Option(0.0, help="Shift s of shifted-relu (S.156)."),
    sigma_w2: float = typer.Option(2.0, help="Weight variance sigma_w^2."),
    sigma_b2: float = typer.Option(0.5, help="Bias variance sigma_b^2."),
    bias: bool = typer.Option(True, help="Include bias terms."),
    damping: float = typer.Option(0.0, help="Damping rho >= 0 (0: pseudo-inverse)."),
    lr: float = typer.Option(
        None, help="Learning rate; default the theory-optimal 1/alpha (0.1/alpha for CE)."
    ),
    steps: int = typer.Option(10, help="Number of NGD steps T."),
    dataset: str = typer.Option("synthetic", help="synthetic | digits (scikit-learn's bundled 8x8 digits)."),
    classes: str = typer.Option("0,7", help="Digits to use, e.g. 0,7 (two classes: +-0.5) or all."),
    data: Path = typer.Option(
        None, help="Your own .npz with x (N, M0), y (N,) or (N, C); overrides --dataset."
    ),
    test_samples: int = typer.Option(100, help="Held-out test samples."),
    forster: bool = typer.Option(False, "--forster", help="K-FAC with M0 < N: Forster-transform the inputs."),
    loss: str = typer.Option("mse", help="mse | cross-entropy (layer-wise Fishers, S.157-S.167)."),
    ce_damping: float = typer.Option(
        1e-4, help="Damping rho~ of the softmax Hessian (cross-entropy, S.158)."
    ),
    seed: int = typer.Option(0, help="Seed for the data and the initial weights (0 to 2^63 - 1)."),
    out: Path = typer.Option(None, help="Output directory (default runs/wide-<fisher>-L<depth>)."),
    overwrite: bool = _COMMON["overwrite"],
) -> None:
    """Discrete NGD of a wide MLP with an approximate Fisher, set against the NTK theory
    (Karakida & Osawa 2020). Writes summary.json, curves.npz and loss.png."""
    import jax.random as jr
    import numpy as np

    from ._checks import check_depth, check_nonnegative, check_positive
    from ._kernels import compare_with_theory
    from ._resources import check_resources, wide_widths
    from ._resources_wide import estimate_wide_run
    from ._wide import (
        FISHERS,
        LOSSES,
        MLP,
        Fisher,
        digits_task,
        forster_transform,
        load_wide_data,
        synthetic_task,
    )

    try:
        if fisher not in FISHERS:
            raise ValueError(f"unknown fisher {fisher!r}; choose one of {', '.join(FISHERS)}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        check_depth(depth)
        for name, v in (("width", width), ("samples", samples), ("test-samples", test_samples),
                        ("outputs", outputs)):  # fmt: skip
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if int(steps) != steps or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        check_nonnegative("damping", damping)
        if lr is not None:
            check_positive("lr", lr)
        if forster and fisher != "kfac":
            raise ValueError("--forster applies to --fisher kfac only (Karakida & Osawa 2020, S.108-S.111)")
        fis = Fisher(
            fisher, damping, kfac_bias="block" if forster else "augmented", loss=loss, ce_damping=ce_damping
        )
        fis.check_depth(depth)
        k_data, k_net = jr.split(jr.PRNGKey(_check_seed(seed)))
        one_hot = loss == "cross-entropy"
        if data is not None:
            task = load_wide_data(str(data), key=k_data)
        elif dataset == "synthetic":
            m0 = 32 if input_dim is None else input_dim
            if int(m0) != m0 or m0 < 1:
                raise ValueError(f"input-dim must be an integer >= 1, got {m0!r}")
            check_resources(
                estimate_wide_run(
                    wide_widths(depth, width, m0, outputs), samples=samples, outputs=outputs, fisher=fisher,
                    steps=steps, test_samples=test_samples, bias=bias, loss=loss,
                ),
                what="dlnsim wide",
            )  # fmt: skip
            task = synthetic_task(k_data, samples, m0, outputs=outputs, test_samples=test_samples)
        elif dataset == "digits":
            if input_dim is not None and input_dim != 64:
                raise ValueError(f"the digits are 8x8 images: input-dim is 64, got {input_dim}")
            if classes.strip() == "all":
                digits = None
            else:
                try:
                    digits = [int(c) for c in classes.split(",")]
                except ValueError:
                    raise ValueError(f"--classes must be digits like 0,7 or 'all', got {classes!r}") from None
            task = digits_task(k_data, samples, classes=digits, test_samples=test_samples, one_hot=one_hot)
        else:
            raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(WIDE_DATASETS)}")
        if loss == "cross-entropy" and task.outputs < 2:
            raise ValueError(
                "cross-entropy needs one-hot targets with >= 2 outputs: "
                "use --outputs >= 2 or --dataset digits"
            )
        if forster:
            task = type(task)(
                forster_transform(task.x_train), task.y_train, task.x_test, task.y_test, task.kind,
                task.description + "; Forster-transformed training inputs",
            )  # fmt: skip
        widths = wide_widths(depth, width, task.input_dim, task.outputs)
        check_resources(
            estimate_wide_run(
                widths, samples=task.n_samples, outputs=task.outputs, fisher=fisher, steps=steps,
                test_samples=int(task.x_test.shape[0]), bias=bias, loss=loss,
            ),
            what="dlnsim wide",
        )  # fmt: skip
        net = MLP(widths, activation, key=k_net, sigma_w2=sigma_w2, sigma_b2=sigma_b2, bias=bias, shift=shift)
        if not np.all(np.isfinite(np.asarray(net(task.x_train)))):
            raise ValueError(
                f"the initial network's outputs overflow (--sigma-w2 {sigma_w2:g}, --sigma-b2 {sigma_b2:g}, "
                f"depth {depth}); use variances of order 1"
            )
        out = Path(out) if out is not None else Path("runs") / f"wide-{fisher}-L{depth}"
        target = _claim(ctx, out, overwrite, "dlnsim wide", 64 * (steps + 1) + (2 << 20))
    except ValueError as err:
        _fail(str(err))
    start = time.perf_counter()
    try:
        summary = compare_with_theory(net, task, fis, learning_rate=lr, steps=steps, forster=forster)
    except FloatingPointError as err:
        _fail(_cli_words(str(err)), code=1)
    summary["seed"] = seed
    summary["wall_time_s"] = round(time.perf_counter() - start, 3)
    with target.writing() as tmp:
        _write_json(tmp / "summary.json", summary)
        np.savez(
            tmp / "curves.npz",
            **{k: np.asarray(summary[k], dtype=float) for k in (
                "train_loss", "theory_loss", "deviation", "test_loss", "gd_theory_loss", "gd_theory_test_loss"
            )},
        )  # fmt: skip
        _plot_wide(summary, tmp / "loss.png")
    typer.echo(
        f"{fisher}-NGD, L={depth}, M={width}, N={task.n_samples}: alpha theory {summary['alpha_theory']}, "
        f"measured {summary['alpha_measured']:.8g}, isotropy condition number "
        f"{summary['isotropy_condition_number']:.6g}"
    )
    typer.echo(
        f"lr {summary['learning_rate']:.4g}: train loss {summary['train_loss'][0]:.3e} -> "
        f"{summary['train_loss'][-1]:.3e} (theory {summary['theory_loss'][-1]:.3e}); max deviation from "
        f"theory {summary['max_deviation']:.3e}; test loss {summary['test_loss'][-1]:.4g}"
    )
    typer.echo(f"wrote {out}/summary.json, curves.npz, loss.png")


@app.command()
def reproduce(
    ctx: typer.Context,
    figure_id: str = typer.Argument(
        None, metavar="ID", help="A figure id from --list, or 'all' to run every figure."
    ),
    list_figures: bool = typer.Option(False, "--list", help="List the figure ids and exit."),
    fast: bool = typer.Option(
        False, "--fast", help="Shrunken sizes (about a minute each on 2 cores); the checks still apply."
    ),
    out: Path = typer.Option(
        None, help="Output directory [default: reproductions/ID]; with 'all', one subdirectory per id."
    ),
    seed: int = typer.Option(0, help="Base random seed (0 to 2^63 - 1)."),
    overwrite: bool = _COMMON["overwrite"],
) -> None:
    """Reproduce a figure of the source papers: writes figure.png/.pdf, metrics.json and data.npz.

    Exits 1 when a quantitative check against the paper or its theory fails.
    """
    from .experiments import EXPERIMENTS
    from .experiments import reproduce as run_reproduction

    if list_figures:
        width = max((len(i) for i in EXPERIMENTS), default=0)
        for exp in EXPERIMENTS.values():
            typer.echo(f"{exp.id.ljust(width)}  {exp.title}  [{exp.source}]")
        return
    if figure_id is None:
        _fail("give a figure id (see 'dlnsim reproduce --list') or 'all'")
    ids = list(EXPERIMENTS) if figure_id == "all" else [figure_id]
    if figure_id != "all" and figure_id not in EXPERIMENTS:
        _fail(f"unknown figure id {figure_id!r}; allowed: all, {', '.join(EXPERIMENTS)}")
    base = Path("reproductions") if out is None else out
    try:
        _check_seed(seed)
        targets = {fid: base / fid if (figure_id == "all" or out is None) else base for fid in ids}
        claims = {fid: _claim(ctx, t, overwrite, f"dlnsim reproduce {fid}") for fid, t in targets.items()}
    except ValueError as err:
        _fail(str(err))
    failed = []
    for fid in ids:
        target = targets[fid]
        typer.echo(f"{fid}: {EXPERIMENTS[fid].title} [{EXPERIMENTS[fid].source}]{' (fast)' if fast else ''}")
        try:
            rep = run_reproduction(fid, fast=fast, seed=seed, out=claims[fid])
        except ValueError as err:
            _fail(f"{fid}: {err}")
        for c in rep.checks:
            typer.echo(f"  {c}")
        typer.echo(f"  {'passed' if rep.passed else 'FAILED'} in {rep.wall_seconds:.1f} s; wrote {target}")
        if not rep.passed:
            failed.append(fid)
    if failed:
        typer.echo(f"checks failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


@app.command()
def rules() -> None:
    """List the learning rules, each with one line and its paper equation."""
    from ._rules import RULES

    width = max(len(n) for n in RULES)
    for info in RULES.values():
        typer.echo(f"{info.name.ljust(width)}  {info.summary}  [{info.reference}]")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every failure ends in one ``Error: ...`` line on stderr.

    Exit codes: 0 success; 1 a run failed (dynamics blew up, a reproduction's check failed, out
    of memory); 2 bad input (options, data, output path); 3 a stalled process (see
    :class:`dlnsim.StallWatchdog`); 130 interrupted; 143 terminated (SIGTERM).
    """
    from ._outputs import terminate_on_signals

    _configure()
    terminate_on_signals()
    try:
        code = app(args=argv, prog_name="dlnsim", standalone_mode=False)
    except typer.TyperException as err:  # typer's own (vendored click) parse errors
        if type(err).__name__ == "NoArgsIsHelpError":
            typer.echo(err.ctx.get_help())
            sys.exit(0)
        where = f" (see '{err.ctx.command_path} --help')" if getattr(err, "ctx", None) else ""
        message = " ".join(err.format_message().split())
        typer.echo(f"Error: {message}{where}", err=True)
        code = err.exit_code
    except typer.Abort as err:
        if isinstance(err.__cause__, EOFError):
            typer.echo("Error: unexpected end of input (an empty or truncated file?)", err=True)
            code = 2
        else:
            typer.echo("Error: interrupted", err=True)
            code = 130
    except Exception as err:  # noqa: BLE001  (the last line of defence: one line, never a traceback)
        code = _report_unexpected(err)
    sys.exit(code if isinstance(code, int) else 0)


def _report_unexpected(err: Exception) -> int:
    """One line for an error that escaped the command's own checks; the traceback goes to a file."""
    import tempfile
    import traceback

    from ._checks import DynamicsBlowUpError

    first = " ".join(str(err).split())[:300] or type(err).__name__
    if isinstance(err, (ValueError, TypeError, OverflowError)):
        typer.echo(f"Error: {first}", err=True)
        return 2
    if isinstance(err, DynamicsBlowUpError):
        typer.echo(f"Error: {first}", err=True)
        return 1
    if isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in str(err) or "Out of memory" in str(err):
        typer.echo("Error: out of memory; reduce the widths, --saves or --samples", err=True)
        return 1
    fd, path = tempfile.mkstemp(prefix="dlnsim-error-", suffix=".txt")
    with open(fd, "w") as f:
        traceback.print_exception(err, file=f)
    typer.echo(
        f"Error: internal error {type(err).__name__}: {first} (traceback in {path}; please report it)",
        err=True,
    )
    return 1


if __name__ == "__main__":
    main()
