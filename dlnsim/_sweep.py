"""Sweeps: grids of rules and hyperparameters, one compiled program per structure, sharded.

A :class:`SweepSpec` names the values to scan (rules, depths, q, eps, init scales, the
student-teacher SNR) and a number of seeds; its :meth:`~SweepSpec.elements` are every valid
combination (q only for the q-rules, eps only for damped NGD). Elements whose vector fields share
a structure (rule family, widths, curvature method: everything but array leaves) form a *group*:
their fields, tasks and initial weights are stacked and the group is integrated by one
``jax.vmap`` of one diffrax solve, compiled once, whatever the values. Each batch is sharded over
every device of every process (:mod:`dlnsim._sharding`).

Every element gets its own status (diffrax ``throw=False``): a failed element is recorded with
its time and message and the others go on. Rows are summaries computed from the saved loss
curve: final loss, half-time, time to threshold, conservation drift, status. :func:`run_sweep`
writes them a chunk at a time (:class:`dlnsim._table.ChunkStore`), so an interrupted sweep
resumes where it stopped, and ends with one tidy table (Parquet and CSV).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ._checks import DynamicsBlowUpError, check_integer, check_nonnegative, check_positive, check_q
from ._models import conserved_quantities, network_map
from ._rules import RULES, vector_field
from ._run_checks import _field_problem, _loss_scale
from ._sharding import batch_mesh, gather, padded_size, shard_batch
from ._simulation import DEFAULT_ATOL, DEFAULT_RTOL, _LossReached, init_weights_batch
from ._tasks import Task, random_teacher, student_teacher

SWEEP_TASKS = ("teacher", "student-teacher")
DTYPES = ("float64", "float32")
# (rtol, atol) of the PID step controller: dlnsim.simulate's defaults in float64; in float32
# about 100 and 1000 eps, the tightest a float32 state can honour
TOLERANCES = {"float64": (DEFAULT_RTOL, DEFAULT_ATOL), "float32": (1e-5, 1e-7)}
# diffrax's result members, named for the status column (compared with ==, public API)
_RESULT_NAMES = (
    "successful",
    "event_occurred",
    "max_steps_reached",
    "dt_min_reached",
    "singular",
    "breakdown",
    "max_steps_rejected",
    "internal_error",
)
_RESULTS = tuple((n, getattr(diffrax.RESULTS, n)) for n in _RESULT_NAMES if hasattr(diffrax.RESULTS, n))


def _values(name: str, values, check) -> tuple:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} needs at least one value")
    return tuple(check(name, v) for v in values)


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep scans. Tuples are grid axes; every valid combination is one element per seed.

    Attributes:
        rules: rule names (``dlnsim.RULES``).
        depths: numbers of weight layers d (every hidden width is ``width``).
        width: the width of every layer.
        q: curvature powers for ``qngd``/``qngd-d`` (q >= 1; inf is sgd).
        eps: dampings of ``damped-ngd`` (eps >= 0; Huh 2020, eq. 17).
        scales: overall init scales (``init``'s ``scale``).
        snrs: signal-to-noise ratios of the student-teacher task (ignored by ``teacher``).
        seeds: initial-weight seeds per combination (keys split from ``seed``).
        seed: the seed of the task and of the initial weights.
        init, task, rank, samples: as for ``dlnsim run``.
        t1: the end time; losses are saved at ``saves`` times log-spaced over [t1 1e-6, t1] and 0.
        loss_tol: stop an element once its loss <= loss_tol x its initial loss.
        max_steps: the solver's step budget per element.
        method: the exact curvature's method for the full rules (``None``: auto).
        dtype: ``"float64"`` (default) or ``"float32"`` (for GPUs: matmuls then run at precision
            "highest", and the step controller's tolerances are :data:`TOLERANCES` ``["float32"]``).
    """

    rules: tuple[str, ...] = ("sqrt-ngd",)
    depths: tuple[int, ...] = (4,)
    width: int = 8
    q: tuple[float, ...] = ()
    eps: tuple[float, ...] = ()
    scales: tuple[float, ...] = (0.1,)
    snrs: tuple[float, ...] = (10.0,)
    seeds: int = 16
    seed: int = 0
    init: str = "small"
    task: str = "teacher"
    rank: int = 3
    samples: int = 16
    t1: float = 100.0
    saves: int = 200
    loss_tol: float = 1e-6
    max_steps: int = 100_000
    method: str | None = None
    dtype: str = "float64"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        for rule in self.rules:
            if rule not in RULES:
                raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
        if not self.rules:
            raise ValueError("rules needs at least one rule")
        if any(r in ("qngd", "qngd-d") for r in self.rules) and not self.q:
            raise ValueError("the rules qngd and qngd-d need q values (q >= 1)")
        if self.q and not any(r in ("qngd", "qngd-d") for r in self.rules):
            raise ValueError("q applies only to the rules qngd and qngd-d")
        if self.eps and "damped-ngd" not in self.rules:
            raise ValueError("eps applies only to the rule damped-ngd")
        if self.task not in SWEEP_TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(SWEEP_TASKS)}")
        object.__setattr__(
            self, "depths", _values("depths", self.depths, lambda n, v: check_integer(n, v, 1))
        )
        object.__setattr__(self, "scales", _values("scales", self.scales, check_positive))
        object.__setattr__(self, "snrs", _values("snrs", self.snrs, check_positive))
        for q in self.q:
            check_q(q)
        object.__setattr__(self, "eps", tuple(check_nonnegative("eps", e) for e in self.eps))
        check_integer("width", self.width, 1)
        if self.task == "student-teacher" and check_integer("samples", self.samples, 1) < self.width:
            raise ValueError(
                f"the student-teacher task whitens its inputs and needs samples >= width {self.width}, "
                f"got {self.samples}"
            )
        check_integer("seeds", self.seeds, 1)
        check_integer("saves", self.saves, 2)
        check_integer("max_steps", self.max_steps, 1)
        check_positive("t1", self.t1)
        check_positive("loss_tol", self.loss_tol)

    def key(self) -> dict:
        """The settings as plain JSON data (a resumed sweep must match them)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def size(self) -> int:
        """The number of elements, without listing them."""
        snrs = len(self.snrs) if self.task == "student-teacher" else 1
        per_rule = [
            (len(self.q) if r in ("qngd", "qngd-d") else 1) * (len(self.eps) or 1 if r == "damped-ngd" else 1)
            for r in self.rules
        ]
        return sum(per_rule) * len(self.depths) * len(self.scales) * snrs * self.seeds

    def elements(self) -> list[dict]:
        """Every element: rule, depth, q, eps, scale, snr and seed index, in a fixed order."""
        out = []
        snrs = self.snrs if self.task == "student-teacher" else (None,)
        for rule in self.rules:
            qs = self.q if rule in ("qngd", "qngd-d") else (None,)
            epss = (self.eps or (0.0,)) if rule == "damped-ngd" else (None,)
            for depth in self.depths:
                for q in qs:
                    for eps in epss:
                        for scale in self.scales:
                            for snr in snrs:
                                for s in range(self.seeds):
                                    out.append(
                                        {"element": len(out), "rule": rule, "depth": depth, "q": q,
                                         "eps": eps, "scale": scale, "snr": snr, "seed_index": s}
                                    )  # fmt: skip
        return out

    def save_times(self) -> np.ndarray:
        return np.concatenate([[0.0], np.geomspace(self.t1 * 1e-6, self.t1, self.saves - 1)])


def curvature_method(spec: SweepSpec, rule: str) -> str | None:
    """``spec.method`` for the full rules (the exact curvature's method); None for the others."""
    full = rule not in ("sgd", "bernacchia") and not rule.endswith("-d")
    return spec.method if full else None


def element_field(spec: SweepSpec, element: dict):
    """The vector field of one element."""
    method = curvature_method(spec, element["rule"])
    return vector_field(element["rule"], q=element["q"], eps=element["eps"], method=method)


def _task(spec: SweepSpec, width: int, snr):
    k_task = jr.split(jr.PRNGKey(spec.seed))[0]
    if spec.task == "teacher":
        return Task(random_teacher(k_task, width, width, rank=spec.rank))
    return student_teacher(k_task, width=width, rank=spec.rank, snr=snr, samples=spec.samples).task


def _initial_weights(spec: SweepSpec, depth: int, scale: float, task: Task, seed_indices) -> tuple:
    keys = jr.split(jr.fold_in(jr.PRNGKey(spec.seed), 1), spec.seeds)
    widths = (spec.width,) * (depth + 1)
    batch = init_weights_batch(
        widths, keys, init=spec.init, scale=scale, teacher=task.teacher, input_cov=task.input_cov
    )
    return tuple(np.asarray(w)[np.asarray(seed_indices)] for w in batch)


def _stack(trees, dtype):
    def stack(*xs):
        out = np.stack([np.asarray(x) for x in xs])
        return out.astype(dtype) if np.issubdtype(out.dtype, np.floating) else out

    return jax.tree.map(stack, *trees)


def group_key(field, task, weights) -> tuple:
    """Elements with equal keys share one compiled solve: the field's and task's non-array
    parts and the weights' shapes."""
    return (
        eqx.partition(field, eqx.is_array)[1],
        jax.tree.structure(field),
        eqx.partition(task, eqx.is_array)[1],
        tuple(np.shape(w) for w in weights),
    )


_TRACES = 0


@eqx.filter_jit
def _solve_batch(static, arrays, weights, save_times, loss_tol, max_steps: int, tolerances: tuple):
    """Integrates every element of one group: times, losses, drift, result flags, steps and the
    initial velocity."""

    def one(array_part, w0):
        field, task = eqx.combine(array_part, static)
        loss0 = task.loss(network_map(w0))
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Tsit5(),
            save_times[0],
            save_times[-1],
            None,
            w0,
            args=task,
            saveat=diffrax.SaveAt(ts=save_times, t1=True),
            stepsize_controller=diffrax.PIDController(rtol=tolerances[0], atol=tolerances[1]),
            max_steps=max_steps,
            event=diffrax.Event(_LossReached(loss_tol * loss0)),
            throw=False,
        )
        c0 = conserved_quantities(w0)

        def observe(*w):
            drift = [jnp.linalg.norm(c - c_0) for c, c_0 in zip(conserved_quantities(w), c0, strict=True)]
            return task.loss(network_map(w)), (jnp.max(jnp.stack(drift)) if drift else jnp.zeros(()))

        losses, drifts = jax.vmap(observe)(*sol.ys)
        flags = jnp.stack([sol.result == item for _, item in _RESULTS])
        velocity = field(save_times[0], w0, task)  # for the initial check (summarize)
        return sol.ts, losses, drifts, flags, sol.stats["num_steps"], velocity

    global _TRACES
    _TRACES += 1  # runs once per compilation (tests count them)
    return jax.vmap(one)(arrays, weights)


def _first_crossing(times, losses, level) -> float | None:
    """The first time the loss reaches ``level``, interpolated linearly in log loss."""
    below = np.nonzero(losses <= level)[0]
    if below.size == 0:
        return None
    i = int(below[0])
    if i == 0:
        return float(times[0])
    l0, l1 = math.log(losses[i - 1]), math.log(max(losses[i], 1e-300))
    frac = 0.0 if l1 == l0 else (math.log(level) - l0) / (l1 - l0)
    return float(times[i - 1] + frac * (times[i] - times[i - 1]))


def summarize(
    element: dict, times, losses, drifts, flags, steps, loss_tol: float, problem: tuple | None = None
) -> dict:
    """One row: the element's parameters and its summary figures and status. ``problem``: the
    (reason, hint) of an unusable field at t = 0 (:func:`dlnsim._run_checks._field_problem`),
    which fails the element as :func:`dlnsim.simulate` would."""
    names = [n for n, _ in _RESULTS]
    finite = np.isfinite(times) & np.isfinite(losses) & np.isfinite(drifts)
    n_ok = int(np.argmin(finite)) if not finite.all() else finite.size
    times, losses, drifts = times[:n_ok], losses[:n_ok], drifts[:n_ok]
    result = names[int(np.argmax(flags))] if flags.any() else "unknown"
    row = dict(element)
    row["steps"] = int(steps)
    row.update(loss_initial=None, loss_final=None, t_final=None, half_time=None, threshold_time=None,
               max_conservation_drift=None, failure_time=None)  # fmt: skip
    if problem is not None:
        row.update(status=f"failed: {DynamicsBlowUpError(float(times[0]), *problem)}", failure_time=0.0)
        return row
    if n_ok == 0:
        row.update(status="failed: the state was not finite at t = 0", failure_time=0.0)
        return row
    loss0 = float(losses[0])
    row.update(
        loss_initial=loss0,
        loss_final=float(losses[-1]),
        t_final=float(times[-1]),
        half_time=_first_crossing(times, losses, 0.5 * loss0),
        threshold_time=_first_crossing(times, losses, loss_tol * loss0),
        max_conservation_drift=float(np.max(drifts)),
    )
    # an early stop saves its final state in the first unused slot and fills the rest with inf
    if result == "event_occurred" or (result == "successful" and n_ok == finite.size):
        row["status"] = "stopped early" if result == "event_occurred" else "ok"
    elif result == "successful":
        row.update(status="failed: the state became non-finite", failure_time=float(times[-1]))
    else:
        message = str(diffrax.RESULTS[dict(_RESULTS)[result]]).strip().rstrip(".")
        row.update(status=f"failed: {message}", failure_time=float(times[-1]))
    return row


@dataclass
class SweepGroup:
    """Elements that share one compiled solve, with their stacked inputs."""

    elements: list[dict]
    static: object
    arrays: object
    weights: tuple
    fields: list  # per element, for the initial check's hint
    loss_scales: list[float]  # per element, the loss at the zero map (the initial check's scale)


def build_groups(spec: SweepSpec, elements: Sequence[dict]) -> list[SweepGroup]:
    """Groups ``elements`` by structure and stacks their fields, tasks and initial weights."""
    tasks: dict = {}
    inits: dict = {}
    groups: dict = {}
    for el in elements:
        if el["snr"] not in tasks:
            task = _task(spec, spec.width, el["snr"])
            tasks[el["snr"]] = (task, _loss_scale(task))
        task, loss_scale = tasks[el["snr"]]
        ikey = (el["depth"], el["scale"], el["snr"])
        if ikey not in inits:
            inits[ikey] = _initial_weights(spec, el["depth"], el["scale"], task, range(spec.seeds))
        w0 = tuple(w[el["seed_index"]] for w in inits[ikey])
        field = element_field(spec, el)
        key = group_key(field, task, w0)
        groups.setdefault(key, []).append((el, field, task, w0, loss_scale))
    out = []
    for members in groups.values():
        arrays = [eqx.partition((m[1], m[2]), eqx.is_array) for m in members]
        out.append(
            SweepGroup(
                elements=[m[0] for m in members],
                static=arrays[0][1],
                arrays=_stack([a for a, _ in arrays], spec.dtype),
                weights=_stack([m[3] for m in members], spec.dtype),
                fields=[m[1] for m in members],
                loss_scales=[m[4] for m in members],
            )
        )
    return out


def _take(tree, idx):
    return jax.tree.map(lambda x: x[idx], tree)


def run_groups(
    spec: SweepSpec,
    groups: Sequence[SweepGroup],
    *,
    chunk_size: int = 64,
    mesh=None,
    on_chunk: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Runs every group in chunks of at most ``chunk_size`` elements (padded to a multiple of the
    mesh's devices), sharded over ``mesh`` (default: every device); ``on_chunk`` receives each
    chunk's rows as soon as they exist. Returns all rows."""
    mesh = batch_mesh() if mesh is None else mesh
    save_times = jnp.asarray(spec.save_times(), dtype=spec.dtype)
    loss_tol = jnp.asarray(spec.loss_tol, dtype=spec.dtype)
    precision = "highest" if spec.dtype == "float32" else None
    rows: list[dict] = []
    for group in groups:
        n = len(group.elements)
        size = padded_size(min(chunk_size, n), mesh)
        for start in range(0, n, size):
            idx = np.arange(start, start + size)
            idx = np.minimum(idx, n - 1)  # pad with copies of the last element, discarded below
            arrays, weights = shard_batch((_take(group.arrays, idx), _take(group.weights, idx)), mesh)
            with jax.default_matmul_precision(precision):
                out = _solve_batch(
                    group.static,
                    arrays,
                    weights,
                    save_times,
                    loss_tol,
                    spec.max_steps,
                    TOLERANCES[spec.dtype],
                )
            times, losses, drifts, flags, steps, velocity = gather(out)
            chunk = []
            for k, j in enumerate(range(start, min(start + size, n))):
                el = group.elements[j]
                problem = _field_problem(
                    group.fields[j], [v[k] for v in jax.tree.leaves(velocity)], float(losses[k][0]),
                    group.loss_scales[j], float(np.finfo(spec.dtype).eps),
                )  # fmt: skip
                chunk.append(
                    summarize(el, times[k], losses[k], drifts[k], flags[k], steps[k], spec.loss_tol, problem)
                )
            rows.extend(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
    return sorted(rows, key=lambda r: r["element"])


def sweep(spec: SweepSpec, *, chunk_size: int = 64, mesh=None) -> list[dict]:
    """Runs every element of ``spec`` (no files written) and returns its rows, one per element.

    See :func:`run_sweep` (the ``dlnsim sweep`` command's engine) for resumable runs with outputs.
    """
    return run_groups(spec, build_groups(spec, spec.elements()), chunk_size=chunk_size, mesh=mesh)
