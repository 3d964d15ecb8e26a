"""Deep-linear runs for the commands ``run``, ``compare`` and ``sweep``: the task and initial net
from the options, the rule's vector field, the resource check, the integration and the outputs
(summary row, ``trajectory.npz``, the printed table)."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import tqdm
import typer

from .. import _simulation
from .._curvature import CURVATURE_METHODS, check_krylov_widths
from .._models import DeepLinearNet, network_map
from .._resources import check_resources, estimate_linear_run, resolve_widths
from .._rules import vector_field
from .._tasks import (
    StudentTeacherData,
    Task,
    determinant_saddle_loss,
    load_regression_data,
    random_teacher,
    student_teacher,
)
from ._boundary import check_seed
from ._options import MAX_STEPS, TASKS, SetupOptions, SolveOptions

# Rules that precondition with the full Gauss-Newton curvature (--curvature applies to them).
_FULL_RULES = ("ngd", "qngd", "sqrt-ngd", "damped-ngd")


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
    key = jr.PRNGKey(check_seed(seed))
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
    elif task in ("student-teacher", "student-teacher-unwhitened"):
        if net_widths[0] != net_widths[-1]:
            raise ValueError(f"the {task} task is square: input and output widths must be equal")
        white = task == "student-teacher"
        if white and samples < net_widths[0]:
            raise ValueError(
                f"--task student-teacher whitens its inputs and needs --samples >= the width "
                f"{net_widths[0]}, got {samples}; raise --samples or use --task student-teacher-unwhitened"
            )
        the_task = student_teacher(
            k_task, width=net_widths[0], rank=rank, snr=snr, samples=samples, whiten=white
        )
        inputs = "whitened inputs" if white else "unwhitened Gaussian inputs"
        desc = f"{task}: rank-{rank} teacher, SNR {snr:g}, P={samples} samples, {inputs}"
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


def setup_from(options: SetupOptions) -> Setup:
    """:func:`build_setup` from the option group."""
    return build_setup(**dataclasses.asdict(options))


def rule_field(rule: str, q, eps, curvature: str, *, strict: bool = True):
    """The rule's vector field; ``curvature`` applies to the full rules only.

    With ``strict`` (single-rule commands), q or eps given to a rule without them is an error;
    otherwise (compare) each rule takes only the options it has.
    """
    if curvature not in CURVATURE_METHODS:
        raise ValueError(f"--curvature must be one of {', '.join(CURVATURE_METHODS)}, got {curvature!r}")
    full = rule in _FULL_RULES
    return vector_field(
        rule,
        q=q if strict or rule in ("qngd", "qngd-d") else None,
        eps=eps if strict or rule == "damped-ngd" else None,
        method=curvature if full or (strict and curvature != "auto") else None,
    )


def check_curvature(curvature: str, widths) -> None:
    """``--curvature krylov`` needs widths the Krylov solve can take."""
    if curvature == "krylov":
        check_krylov_widths(widths, "--curvature krylov", "--curvature dense or auto")


def check_linear_resources(
    what: str, setup: SetupOptions, solve: SolveOptions, *, rule, q, batch: int = 1
) -> None:
    """Refuses (ValueError, exit 2) a run whose memory or compile time cannot fit this machine,
    before anything is allocated (see :mod:`dlnsim._resources`)."""
    st = setup.task.startswith("student-teacher") and setup.data is None
    estimate = estimate_linear_run(
        resolve_widths(setup.depth, setup.width, setup.widths), saves=solve.saves, rule=rule,
        method=solve.curvature, q=q, solver=solve.solver, samples=setup.samples if st else 0,
        test_samples=1000 if st else 0, batch=batch,
    )  # fmt: skip
    check_resources(estimate, what=what)


def trajectory_bytes(widths, saves: int, n_traj: int = 1) -> int:
    """Bytes of the saved weights (the bulk of trajectory.npz), plus ~2 MiB of plots and JSON."""
    params = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return int(8 * params * saves * n_traj) + (2 << 20)


def _solver(name: str):
    """The diffrax solver for ``--solver`` (validated up front by :meth:`SolveOptions.check`)."""
    return {"tsit5": diffrax.Tsit5, "kvaerno5": diffrax.Kvaerno5}[name]()


class _HostBar:
    """The host side of :class:`LogTimeProgressMeter`: a tqdm bar, opened on the first refresh
    and shown only once a solve has run for a second."""

    def __init__(self, log_span: float | None, delay: float):
        self.log_span, self.delay = log_span, delay
        self.bar = None
        self.lock = threading.Lock()

    def percent(self, progress: float) -> float:
        if self.log_span is None:
            return 100.0 * progress
        return 100.0 * math.log1p(progress * self.log_span) / math.log1p(self.log_span)

    def show(self, progress) -> None:
        with self.lock:
            if self.bar is None:
                fmt = "{percentage:.1f}%|{bar}| [{elapsed}<{remaining}]"
                fmt += " (log time)" if self.log_span else ""
                self.bar = tqdm.tqdm(total=100, unit="%", delay=self.delay, bar_format=fmt)
            self.bar.n = round(self.percent(float(np.min(progress))), 2)
            self.bar.update(n=0)

    def close(self, _state) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.n = 100.0
                self.bar.update(n=0)
                self.bar.close()
                self.bar = None


class LogTimeProgressMeter(diffrax.AbstractProgressMeter):
    """A tqdm progress bar for a diffrax solve, through diffrax's public progress-meter interface
    (init, step, close) and ``jax.debug.callback``.

    The bar refreshes every ``refresh_steps`` steps and appears only once a solve has run for
    ``delay`` seconds. With ``log_span`` (= t_max / first save time, for runs to convergence) it advances in
    log time, since diffrax reports progress as the fraction of [t0, t_max] reached. Under
    ``vmap`` every element reports, and the bar shows the slowest.
    """

    log_span: float | None = eqx.field(default=None, static=True)
    refresh_steps: int = eqx.field(default=20, static=True)
    delay: float = eqx.field(default=1.0, static=True)
    host: _HostBar = eqx.field(default=None, static=True)

    def __post_init__(self):
        if self.host is None:
            self.host = _HostBar(self.log_span, self.delay)

    def init(self):
        return jnp.zeros((), jnp.int32)

    def step(self, state, progress):
        def show(progress):
            jax.debug.callback(self.host.show, progress)

        jax.lax.cond(state % self.refresh_steps == 0, show, lambda _: None, progress)
        return state + 1

    def close(self, state):
        jax.debug.callback(self.host.close, state)


def _log_span(t1):
    """Runs to convergence, and fixed-length runs past t = 1e3, show progress in log time
    (diffrax reports the fraction of [0, t1] reached, which stays near 0 for a huge t1)."""
    if t1 is None:
        return 1e6
    return float(t1) if t1 > 1e3 else None


def simulate_options(setup: Setup, field, name: str, solve: SolveOptions, *, progress: bool):
    """Runs ``simulate`` on the setup's net, or on a batch of initial weights (a TrajectoryBatch).

    Without t1, a run stops at loss <= loss_tol x the initial loss (for a batch: x the median
    initial loss of its elements) or at t_max, on a log-spaced save grid.
    """
    base = getattr(setup.task, "task", setup.task)
    weights = setup.net.weights if hasattr(setup.net, "weights") else setup.net
    if weights[0].ndim == 3:
        loss0 = float(np.median(jax.vmap(lambda *w: base.loss(network_map(w)))(*weights)))
    else:
        loss0 = float(base.loss(network_map(weights)))
    t1, saves = solve.t1, solve.saves
    if t1 is None:
        ts = jnp.concatenate([jnp.zeros(1), jnp.geomspace(solve.t_max * 1e-6, solve.t_max, saves - 1)])
        end, threshold = solve.t_max, solve.loss_tol * loss0
    else:
        ts = jnp.linspace(0.0, t1, saves)
        end, threshold = t1, None
    options = dict(
        saveat=diffrax.SaveAt(ts=ts),
        loss_threshold=threshold,
        max_steps=MAX_STEPS if solve.max_steps is None else int(solve.max_steps),
        solver=_solver(solve.solver),
        progress_meter=(LogTimeProgressMeter(_log_span(t1)) if progress else None),
    )
    # looked up per call: tests replace them
    if weights[0].ndim == 3:
        result = _simulation.simulate_batch(weights, field, setup.task, end, **options)
        named = tuple(
            None if tr is None else dataclasses.replace(tr, rule=name) for tr in result.trajectories
        )
        return dataclasses.replace(result, trajectories=named)
    result = _simulation.simulate(weights, field, setup.task, end, stop_at_saddle=t1 is None, **options)
    return dataclasses.replace(result, rule=name)


def run_rule(
    setup: Setup,
    name: str,
    field,
    options: SetupOptions,
    solve: SolveOptions,
    *,
    q,
    eps,
    init: str,
    progress: bool,
    analytic: bool,
):
    """Simulates one rule; returns its trajectory, summary row and (aligned runs) mode comparison."""
    start = time.perf_counter()
    traj = simulate_options(setup, field, name, solve, progress=progress)
    theory = _simulation.compare_with_modes(traj, field, setup.task) if analytic else None
    row = summary_row(
        traj, setup, rule=name, q=q, eps=eps, seed=options.seed, init=init, task_name=options.task_name,
        wall=time.perf_counter() - start, t1=solve.t1, loss_tol=solve.loss_tol,
    )  # fmt: skip
    if theory is not None:
        row["max_mode_deviation"] = theory.max_mode_deviation
        row["max_layer_deviation"] = theory.max_layer_deviation
    return traj, row, theory


def summary_row(traj, setup: Setup, *, rule, q, eps, seed, init, task_name, wall, t1, loss_tol) -> dict:
    """One run's ``summary.json`` (a row of the printed table)."""
    base = getattr(setup.task, "task", setup.task)
    saddle = determinant_saddle_loss(tuple(w[0] for w in traj.weights), base)
    stalled = traj.stop_reason == "determinant saddle"
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
        "converged": bool(traj.stopped_early) and not stalled if t1 is None else None,
        "stalled_at_saddle": stalled if t1 is None else None,
        "saddle_loss": saddle,
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


def save_npz(path: Path, traj, setup: Setup) -> None:
    """A trajectory with its task: times, losses, mode strengths, drifts and every saved weight."""
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


_TABLE_COLUMNS = (
    ("rule", "{}"),
    ("t_final", "{:.4g}"),
    ("loss_initial", "{:.4g}"),
    ("loss_final", "{:.3e}"),
    ("test_loss_min", "{:.4g}"),
    ("max_conservation_drift", "{:.2e}"),
    ("max_mode_deviation", "{:.1e}"),
    ("wall_time_s", "{:.1f}"),
)


def print_table(rows: list[dict]) -> None:
    """The summary rows as an aligned table (columns that no row has are left out)."""
    cols = [c for c in _TABLE_COLUMNS if any(c[0] in r for r in rows)]
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


__all__ = [
    "Setup",
    "build_setup",
    "check_curvature",
    "check_linear_resources",
    "print_table",
    "rule_field",
    "run_rule",
    "save_npz",
    "setup_from",
    "simulate_options",
    "summary_row",
    "trajectory_bytes",
]


def stop_note(summary: dict, solve: SolveOptions) -> str | None:
    """Why a run to convergence stopped short of the loss tolerance, in one line (or None)."""
    if solve.t1 is not None or summary["converged"]:
        return None
    if summary["stalled_at_saddle"]:
        return (
            f"note: stalled at a saddle at t={summary['t_final']:.4g}: the loss is within the tolerance "
            f"of {summary['saddle_loss']:.4g}, half the weakest target mode squared; the initial map's "
            "determinant has the opposite sign to the target's and every width is equal, so the map must "
            "pass through a singular one (the weakest mode through 0) to converge, which it may still do, "
            "slowly. Try another --seed, or --t1 to integrate a fixed time"
        )
    return f"note: stopped at t_max={solve.t_max:g} before the loss fell to {solve.loss_tol:g} x initial"
