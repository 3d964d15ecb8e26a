"""Integrating learning rules with diffrax, and the observables of a trajectory."""

from __future__ import annotations

from dataclasses import dataclass

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._checks import (
    DynamicsBlowUpError,
    as_real_array,
    check_integer,
    check_nonnegative,
    check_positive,
    check_real,
)
from ._curvature import GaussNewton
from ._models import DeepLinearNet, as_weights, check_weights, conserved_quantities, network_map
from ._rules import RULES, BernacchiaFlow, NaturalGradientFlow, vector_field
from ._tasks import StudentTeacherData, Task

DEFAULT_RTOL = 1e-8
DEFAULT_ATOL = 1e-10


@dataclass(frozen=True)
class Trajectory:
    """A learning trajectory at its saved times, with its observables (all NumPy arrays).

    Attributes:
        rule: the rule's name.
        times: shape (T,).
        weights: ``(W_1, ..., W_d)``, each of shape (T, n_i, n_{i-1}).
        loss: the task loss 1/2 Tr[(W - W*) Sigma_x (W - W*)^T] (Huh 2020, eq. 1), shape (T,).
        mode_strengths: u_k^T W Sigma_x v_k in the data's singular basis, shape (T, modes).
        mode_targets: the data's singular values s_k, the strengths' fixed point, shape (modes,).
        conservation_drift: max_i ||C_i(t) - C_i(0)||_F with C_i of Huh 2020 eq. 4, shape (T,).
        parameter_speed: ||dtheta/dt||, shape (T,).
        train_loss, test_loss: for :class:`StudentTeacherData` tasks, else ``None``.
        stopped_early: whether the loss-threshold event ended the run before t1.
    """

    rule: str
    times: np.ndarray
    weights: tuple[np.ndarray, ...]
    loss: np.ndarray
    mode_strengths: np.ndarray
    mode_targets: np.ndarray
    conservation_drift: np.ndarray
    parameter_speed: np.ndarray
    train_loss: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    stopped_early: bool = False

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.weights[0].shape[2],) + tuple(w.shape[1] for w in self.weights)

    def maps(self) -> np.ndarray:
        """The input-output map W(t), shape (T, n_d, n_0)."""
        out = self.weights[0]
        for w in self.weights[1:]:
            out = np.einsum("tij,tjk->tik", w, out)
        return out

    def half_times(self) -> np.ndarray:
        """Per mode, the first time its strength reaches half its target.

        NaN if it never does, or if the target is zero (a mode outside the data's rank).
        """
        out = []
        floor = 1e-12 * np.abs(self.mode_targets).max(initial=0.0)
        for k, target in enumerate(self.mode_targets):
            s = self.mode_strengths[:, k]
            half = 0.5 * target
            hit = np.nonzero(s >= half)[0] if target > floor else np.array([], dtype=int)
            if hit.size == 0:
                out.append(np.nan)
            elif hit[0] == 0:
                out.append(float(self.times[0]))
            else:
                i = hit[0]
                frac = (half - s[i - 1]) / (s[i] - s[i - 1])
                out.append(float(self.times[i - 1] + frac * (self.times[i] - self.times[i - 1])))
        return np.asarray(out)


def _rule_name(rule) -> str:
    if isinstance(rule, str):
        return rule
    return type(rule).__name__


def _blow_up_hint(rule, discrete: bool = False) -> str:
    ngd_like = (isinstance(rule, NaturalGradientFlow) and rule.q == 1.0 and rule.damping == 0.0) or (
        isinstance(rule, BernacchiaFlow) and rule.damping == 0.0
    )
    if ngd_like:
        return (
            "NGD's parameter speed diverges as the weights approach 0 (Huh 2020, eq. 13); start from "
            "larger non-zero weights"
            + (", lower the learning rate" if discrete else "")
            + ", or use damped-ngd (eps > 0) or sqrt-ngd"
        )
    if discrete:
        return "lower the learning rate lr, or start from a less extreme initialisation"
    return "shorten t1, raise max_steps, or start from a less extreme initialisation"


def _split_task(task) -> tuple[Task, StudentTeacherData | None]:
    if isinstance(task, StudentTeacherData):
        return task.task, task
    if isinstance(task, Task):
        return task, None
    raise TypeError(f"task must be a dlnsim.Task or dlnsim.StudentTeacherData, got {type(task).__name__}")


def _check_task_matches(weights, task: Task) -> None:
    n0, nd = weights[0].shape[1], weights[-1].shape[0]
    if task.teacher.shape != (nd, n0):
        raise ValueError(
            f"the net maps {n0} inputs to {nd} outputs but the task's teacher has shape "
            f"{tuple(task.teacher.shape)}; widths must match"
        )


@eqx.filter_jit
def _observables(rule, task: Task, data: StudentTeacherData | None, ws):
    """Per saved state: loss, mode strengths, conservation drift, parameter speed, data losses.

    States are mapped one at a time (``lax.map`` without batching), so that no batched LAPACK
    decomposition runs inside this parallel loop: jaxlib's CPU kernels (0.9.2 and 0.10.2 both
    seen) split a batch into sub-tasks on the XLA thread pool that runs them and block on them,
    and independent batched decompositions running at once then deadlock every pool thread
    (README, "Known problems"). An unbatched decomposition runs inline.
    """

    def one(weights):
        w = network_map(weights)
        c = conserved_quantities(weights)
        speed = jnp.sqrt(sum(jnp.sum(v**2) for v in rule(0.0, weights, task)))
        out = {"loss": task.loss(w), "modes": task.mode_strengths(w), "speed": speed, "C": c}
        if data is not None:
            out["train"] = data.train_loss(w)
            out["test"] = data.test_loss(w)
        return out

    obs = jax.lax.map(one, ws)
    c0 = [c[0] for c in obs["C"]]
    drift = [
        jnp.sqrt(jnp.sum((c - c_init) ** 2, axis=(1, 2))) for c, c_init in zip(obs["C"], c0, strict=True)
    ]
    obs["drift"] = jnp.max(jnp.stack(drift), axis=0) if drift else jnp.zeros_like(obs["loss"])
    del obs["C"]
    return obs


def _zero_field_hint(rule) -> str:
    hint = (
        "start from larger non-zero weights: the field underflowed to exactly 0 (or the weights sit "
        "on the saddle at W = 0)"
    )
    ngd_like = isinstance(rule, NaturalGradientFlow | BernacchiaFlow) and not (
        isinstance(rule, NaturalGradientFlow) and np.isinf(rule.q)
    )
    if ngd_like:
        hint += "; NGD's parameter speed diverges as the weights approach 0 (Huh 2020, eq. 13)"
    return hint


def _loss_scale(task: Task) -> float:
    """L at the zero map, 1/2 Tr[W* Sigma_x W*^T]: the scale against which a loss counts as ~0."""
    return float(task.loss(jnp.zeros_like(task.teacher)))


def _field_problem(rule, velocity, loss: float, scale: float, eps: float) -> tuple[str, str] | None:
    """(reason, hint) when the field at a state is non-finite, or exactly zero where the loss is
    not ~0 (above eps times its value at the zero map); None when it is usable."""
    leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(velocity)]
    if not np.isfinite(loss):
        return (
            "the loss is not finite at the initial weights (the map W_d...W_1 overflows)",
            "start from smaller weights, or rescale the task",
        )
    if not all(np.all(np.isfinite(v)) for v in leaves):
        return (
            f"the learning rule's field is not finite (NaN or inf) at a state with loss {loss:.6g}; "
            "it lost all precision",
            _blow_up_hint(rule),
        )
    if not any(np.any(v) for v in leaves) and loss > eps * scale:
        return (
            f"the learning rule's field is exactly zero although the loss is {loss:.6g}, not a minimum "
            "(the run would stand still)",
            _zero_field_hint(rule),
        )
    return None


def _check_field_output(velocity, weights) -> None:
    """A vector field must return a tuple of arrays, one per weight matrix, each of its shape."""
    leaves = jax.tree_util.tree_leaves(velocity)
    shapes = [tuple(np.shape(v)) for v in leaves]
    want = [tuple(w.shape) for w in weights]
    if not isinstance(velocity, tuple):
        raise ValueError(
            f"the rule's vector field must return a tuple of arrays (dW_1, ..., dW_d), got a "
            f"{type(velocity).__name__}"
        )
    if shapes != want:
        raise ValueError(
            f"the rule's vector field must return one array per weight matrix with shapes {want}, "
            f"got shapes {shapes}"
        )


@eqx.filter_jit
def _compiled_field(rule, t, weights, task):
    return rule(t, weights, task)


def _evaluate_field(rule, t0: float, weights, task: Task):
    """The field at concrete weights. Eagerly, so that the block rules take their Python branch
    and nothing is compiled; except on the matrix-free Krylov path, whose lineax operator is a new
    closure per call (eager calls would recompile it every time, about 1 s at width 16): there one
    compiled call, cached per rule and shapes."""
    curvature = getattr(rule, "curvature", None)
    if isinstance(rule, NaturalGradientFlow) and isinstance(curvature, GaussNewton) and not np.isinf(rule.q):
        widths = (weights[0].shape[1],) + tuple(w.shape[0] for w in weights)
        if curvature.resolved_method(widths, 1.0 / rule.q) == "krylov":
            return _compiled_field(rule, jnp.asarray(t0), weights, task)
    return rule(t0, weights, task)


def _initial_check(rule, t0: float, weights, task: Task) -> None:
    """One field evaluation on the concrete initial weights; raises DynamicsBlowUpError at t0
    when the field is non-finite, or exactly zero away from a minimum (see :func:`_field_problem`)."""
    velocity = _evaluate_field(rule, t0, weights, task)
    _check_field_output(velocity, weights)
    loss = float(task.loss(network_map(weights)))
    eps = float(jnp.finfo(weights[0].dtype).eps)
    problem = _field_problem(rule, velocity, loss, _loss_scale(task), eps)
    if problem is not None:
        raise DynamicsBlowUpError(t0, *problem)


@eqx.filter_jit
def _batched_field(rule, t0, batch, task):
    """The field and the loss at every initial state of a batch (one compiled, vmapped call)."""
    return jax.vmap(lambda w: (rule(t0, w, task), task.loss(network_map(w))))(batch)


def _batch_initial_problems(rule, t0: float, batch, task: Task) -> list[DynamicsBlowUpError | None]:
    """Per element of a batch, the DynamicsBlowUpError of :func:`_initial_check`, or None."""
    velocity, losses = _batched_field(rule, jnp.asarray(t0), batch, task)
    _check_field_output(jax.tree_util.tree_map(lambda v: v[0], velocity), tuple(w[0] for w in batch))
    velocity = [np.asarray(v) for v in jax.tree_util.tree_leaves(velocity)]
    losses = np.asarray(losses)
    scale, eps = _loss_scale(task), float(jnp.finfo(batch[0].dtype).eps)
    out = []
    for b in range(losses.shape[0]):
        problem = _field_problem(rule, [v[b] for v in velocity], float(losses[b]), scale, eps)
        out.append(None if problem is None else DynamicsBlowUpError(t0, *problem))
    return out


def _make_trajectory(name, rule, task, data, times, ws, stopped_early, n_valid=None) -> Trajectory:
    """Observables for the first ``n_valid`` saved states (all by default).

    Rows past ``n_valid`` are filled with the last valid state before the observables are
    computed, so that every run with the same save grid reuses one compiled function.
    """
    n_total = times.shape[0]
    n_valid = n_total if n_valid is None else n_valid
    idx = np.minimum(np.arange(n_total), n_valid - 1)
    ws = tuple(jnp.asarray(np.asarray(w)[idx]) for w in ws)
    obs = _observables(rule, task, data, ws)
    obs = jax.tree_util.tree_map(lambda x: np.asarray(x)[:n_valid], obs)
    finite = np.ones(n_valid, dtype=bool)
    for value in jax.tree_util.tree_leaves(obs):
        finite &= np.all(np.isfinite(value.reshape(n_valid, -1)), axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise DynamicsBlowUpError(
            float(np.asarray(times)[bad]),
            "the field or the loss was not finite at a saved state (all precision was lost)",
            _blow_up_hint(rule),
        )
    _, s, _ = task.mode_basis()
    return Trajectory(
        rule=name,
        times=np.asarray(times)[:n_valid],
        weights=tuple(np.asarray(w)[:n_valid] for w in ws),
        loss=obs["loss"],
        mode_strengths=obs["modes"],
        mode_targets=np.asarray(s),
        conservation_drift=obs["drift"],
        parameter_speed=obs["speed"],
        train_loss=obs.get("train"),
        test_loss=obs.get("test"),
        stopped_early=stopped_early,
    )


def _resolve_rule(rule):
    if isinstance(rule, str):
        return vector_field(rule)
    if not callable(rule):
        raise TypeError(
            f"rule must be a name ({', '.join(RULES)}) or a vector field f(t, weights, task), "
            f"got {type(rule).__name__}"
        )
    return rule


@dataclass(frozen=True)
class TrajectoryBatch:
    """The result of :func:`simulate` on a batch of initial weights (one vmapped solve).

    Attributes:
        trajectories: one :class:`Trajectory` per element, or None where it failed.
        status: per element, ``"ok"``, ``"stopped early"`` (loss threshold reached) or the
            failure message with its time and hint.
        failure_times: the time each failed element reached (NaN where it succeeded).
    """

    trajectories: tuple[Trajectory | None, ...]
    status: tuple[str, ...]
    failure_times: np.ndarray

    @property
    def succeeded(self) -> np.ndarray:
        return np.array([t is not None for t in self.trajectories])

    def __len__(self) -> int:
        return len(self.trajectories)

    def __getitem__(self, i) -> Trajectory | None:
        return self.trajectories[i]


def _result_message(code: int) -> str:
    try:
        message = diffrax.RESULTS._index_to_message[int(code)]
    except (AttributeError, IndexError, KeyError, TypeError):
        message = f"diffrax result code {int(code)}"
    return str(message).strip().rstrip(".") or "the solver failed"


def _check_run(times, ws, code: int, t0: float, field_) -> tuple[int, bool]:
    """Returns (number of valid saves, stopped by the event) or raises DynamicsBlowUpError."""
    finite = np.isfinite(times)
    for w in ws:
        finite &= np.all(np.isfinite(w), axis=(1, 2))
    # Saves past an early stop are filled with inf: keep the contiguous finite prefix.
    n_ok = int(np.argmin(finite)) if not finite.all() else finite.size
    event_hit = code == _EVENT_CODE
    if code != _SUCCESS_CODE and not event_hit:
        reached_t = float(times[n_ok - 1]) if n_ok else float(t0)
        raise DynamicsBlowUpError(reached_t, _result_message(code), _blow_up_hint(field_))
    if n_ok < finite.size and not event_hit:
        bad_t = float(times[n_ok]) if np.isfinite(times[n_ok]) else float(t0)
        raise DynamicsBlowUpError(bad_t, "the state became non-finite", _blow_up_hint(field_))
    if n_ok >= 2 and times[n_ok - 1] == times[n_ok - 2]:
        n_ok -= 1  # the final-state save duplicates a requested time
    return n_ok, event_hit


class _LossReached(eqx.Module):
    """Event condition: the task loss has fallen to ``threshold`` (an array, so not static)."""

    threshold: Array

    def __call__(self, t, y, args, **kwargs):
        return args.loss(network_map(y)) <= self.threshold


_SUCCESS_CODE = int(diffrax.RESULTS.successful._value)
_EVENT_CODE = int(diffrax.RESULTS.event_occurred._value)


def simulate(
    net_or_weights,
    rule,
    task,
    t1: float,
    *,
    t0: float = 0.0,
    saveat: diffrax.SaveAt | None = None,
    solver: diffrax.AbstractSolver | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    dt0: float | None = None,
    max_steps: int = 200_000,
    loss_threshold: float | None = None,
    progress_meter: diffrax.AbstractProgressMeter | None = None,
) -> Trajectory | TrajectoryBatch:
    """Integrates a learning rule with diffrax and returns its :class:`Trajectory`.

    Args:
        net_or_weights: a :class:`DeepLinearNet`, a sequence ``(W_1, ..., W_d)``, or a batch:
            a sequence of 3-D arrays ``(B, n_i, n_{i-1})`` (see :func:`init_weights_batch`). A
            batch runs as one vmapped solve and returns a :class:`TrajectoryBatch`, in which a
            failed element does not stop the others.
        rule: a rule name (see ``dlnsim.RULES``) or any vector field ``f(t, weights, task)``.
        task: a :class:`Task` or :class:`StudentTeacherData` (adds train and test losses).
        t1: the end time (eta = 1, so t counts learning-rate units).
        saveat, solver, stepsize_controller, dt0, max_steps, progress_meter: passed to
            ``diffrax.diffeqsolve``. Defaults: 501 equally spaced saves (the final state is
            always saved too), Tsit5, and a PID controller with rtol 1e-8, atol 1e-10.
        loss_threshold: stop early once the task loss falls to this value.

    Raises:
        DynamicsBlowUpError: (single runs) the state became non-finite, the steps stalled, or
            max_steps ran out; or, at t0, the field is non-finite or exactly zero although the
            loss is not ~0 (e.g. NGD from weights so small that it underflows). It carries the
            time reached and a hint; no NaN is ever returned. In a batch each failed element
            gets its message in ``status`` instead.
        ValueError, TypeError: bad inputs (non-finite or non-real weights, mismatched widths or
            task, t1 <= t0, dt0 <= 0, max_steps < 1, saveat.ts outside [t0, t1], ...), in one
            line naming the argument.
    """
    weights, batch = _split_weights(net_or_weights)
    base, data = _split_task(task)
    _check_task_matches(weights, base)
    t0, t1, dt0, max_steps = _check_times(t0, t1, dt0, max_steps)
    name = _rule_name(rule)
    field_ = _resolve_rule(rule)
    saveat, solver, stepsize_controller, progress_meter = _check_solver_options(
        saveat, solver, stepsize_controller, progress_meter, t0, t1, dt0
    )
    if saveat is None:
        saveat = diffrax.SaveAt(ts=jnp.linspace(t0, t1, 501))
    if isinstance(saveat.subs, diffrax.SubSaveAt) and not saveat.subs.t1:
        # also save the final state, so an early stop records the state at which it stopped
        saveat = eqx.tree_at(lambda s: s.subs.t1, saveat, True)
    event = None
    if loss_threshold is not None:
        event = diffrax.Event(_LossReached(jnp.asarray(check_nonnegative("loss_threshold", loss_threshold))))
    # Times enter the compiled solve as arrays, not Python floats (which diffeqsolve's filter_jit
    # would treat as static): runs that differ only in t0, t1, dt0 or the threshold reuse one
    # compilation.
    t0_, t1_ = jnp.asarray(t0), jnp.asarray(t1)
    dt0_ = None if dt0 is None else jnp.asarray(dt0)

    def solve(y0):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(field_),
            diffrax.Tsit5() if solver is None else solver,
            t0_,
            t1_,
            dt0_,
            y0,
            args=base,
            saveat=saveat,
            stepsize_controller=(
                diffrax.PIDController(rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL)
                if stepsize_controller is None
                else stepsize_controller
            ),
            max_steps=max_steps,
            event=event,
            throw=False,
            progress_meter=diffrax.NoProgressMeter() if progress_meter is None else progress_meter,
        )

    if batch is None:
        _initial_check(field_, t0, weights, base)
        sol = solve(weights)
        times, ws = np.asarray(sol.ts), tuple(np.asarray(w) for w in sol.ys)
        n_ok, event_hit = _check_run(times, ws, int(sol.result._value), t0, field_)
        return _make_trajectory(name, field_, base, data, times, ws, event_hit, n_ok)

    initial = _batch_initial_problems(field_, t0, batch, base)
    usable = [b for b, problem in enumerate(initial) if problem is None]
    size = len(initial)
    if usable:
        # Elements whose field is unusable are not integrated: their slots run a copy of a usable
        # element (the batch keeps its shape, so the compiled solve is reused) and are discarded.
        idx = np.asarray([b if initial[b] is None else usable[0] for b in range(size)])
        sol = eqx.filter_vmap(solve)(tuple(w[idx] for w in batch))
        all_times, all_ws = np.asarray(sol.ts), tuple(np.asarray(w) for w in sol.ys)
        codes = np.asarray(sol.result._value)
    trajectories, status, failed_at = [], [], []
    for b in range(size):
        try:
            if initial[b] is not None:
                raise initial[b]
            ws_b = tuple(w[b] for w in all_ws)
            n_ok, event_hit = _check_run(all_times[b], ws_b, int(codes[b]), t0, field_)
            traj = _make_trajectory(name, field_, base, data, all_times[b], ws_b, event_hit, n_ok)
        except DynamicsBlowUpError as err:
            trajectories.append(None)
            status.append(str(err))
            failed_at.append(err.time)
            continue
        trajectories.append(traj)
        status.append("stopped early" if event_hit else "ok")
        failed_at.append(np.nan)
    return TrajectoryBatch(tuple(trajectories), tuple(status), np.asarray(failed_at))


def _split_weights(net_or_weights):
    """(weights, None) for one net, or (the first element's weights, the batch) for a batch of
    3-D arrays (B, n_i, n_{i-1}); validates dtypes, finiteness and widths."""
    if isinstance(net_or_weights, DeepLinearNet):
        return net_or_weights.weights, None
    if net_or_weights is None or isinstance(net_or_weights, str | bytes | dict):
        raise TypeError(
            "net_or_weights must be a DeepLinearNet, a sequence of 2-D matrices or a batch of 3-D "
            f"arrays, got {type(net_or_weights).__name__}"
        )
    try:
        arrays = tuple(net_or_weights)
    except TypeError:
        raise TypeError(
            "net_or_weights must be a DeepLinearNet, a sequence of 2-D matrices or a batch of 3-D "
            f"arrays, got {type(net_or_weights).__name__}"
        ) from None
    ndims = [len(getattr(w, "shape", ())) if hasattr(w, "shape") else None for w in arrays]
    if 3 not in ndims:
        return check_weights(arrays, "net_or_weights"), None
    batch = tuple(as_real_array(f"W_{i + 1} (batched)", w, finite=False) for i, w in enumerate(arrays))
    if any(w.ndim != 3 for w in batch):
        raise ValueError(
            "net_or_weights: a batch of initial weights needs every W_i as a 3-D array (B, n_i, n_{i-1}), "
            "got shapes "
            f"{[tuple(w.shape) for w in batch]}"
        )
    sizes = {w.shape[0] for w in batch}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            f"net_or_weights: every batched weight array needs the same leading batch size >= 1, "
            f"got {sorted(sizes)}"
        )
    weights = check_weights(tuple(w[0] for w in batch), "net_or_weights")
    for i, w in enumerate(batch):
        as_real_array(f"W_{i + 1} (batched)", w)  # finite entries in every element
    return weights, batch


def _check_times(t0, t1, dt0, max_steps):
    t0, t1 = check_real("t0", t0), check_real("t1", t1)
    if t1 <= t0:
        raise ValueError(f"t1 must be greater than t0 = {t0}, got {t1}")
    if not np.isfinite(t1 - t0):
        raise ValueError(f"t1 - t0 must be a finite duration, got t0 = {t0:g} and t1 = {t1:g}")
    if dt0 is not None:
        dt0 = check_positive("dt0", dt0)
        # a subnormal step is flushed to 0 by XLA on CPU, and one below t0's spacing never moves
        if dt0 < np.finfo(np.float64).tiny or t0 + dt0 == t0:
            raise ValueError(f"dt0 must be large enough that t0 + dt0 > t0 (t0 = {t0:g}), got {dt0!r}")
    return t0, t1, dt0, check_integer("max_steps", max_steps, 1)


def _check_solver_options(saveat, solver, stepsize_controller, progress_meter, t0, t1, dt0):
    """Type checks of the options passed to diffrax, and saveat.ts within [t0, t1], ascending."""
    for name, value, kind in (
        ("saveat", saveat, diffrax.SaveAt),
        ("solver", solver, diffrax.AbstractSolver),
        ("stepsize_controller", stepsize_controller, diffrax.AbstractStepSizeController),
        ("progress_meter", progress_meter, diffrax.AbstractProgressMeter),
    ):
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{name} must be a diffrax.{kind.__name__} (or None), got {type(value).__name__}")
    if isinstance(stepsize_controller, diffrax.ConstantStepSize) and dt0 is None:
        raise ValueError("dt0 must be given (a number > 0) with a diffrax.ConstantStepSize controller")
    if saveat is not None:
        subs = jax.tree_util.tree_leaves(saveat.subs, is_leaf=lambda x: isinstance(x, diffrax.SubSaveAt))
        for sub in subs:
            if isinstance(sub, diffrax.SubSaveAt) and sub.ts is not None:
                ts = as_real_array("saveat.ts", sub.ts, 1, numpy=True)
                if ts.size and (ts.min() < t0 or ts.max() > t1 or np.any(np.diff(ts) < 0)):
                    raise ValueError(
                        f"saveat.ts must be ascending times within [t0, t1] = [{t0:g}, {t1:g}], "
                        f"got values from {ts.min():g} to {ts.max():g}"
                    )
    return saveat, solver, stepsize_controller, progress_meter


def init_weights_batch(widths, keys, **init_kwargs) -> tuple[Array, ...]:
    """Initial weights for a batch of PRNG keys, stacked as ``(B, n_i, n_{i-1})`` arrays.

    ``init_kwargs`` go to :class:`DeepLinearNet` (init, scale, teacher, ...). Pass the result to
    :func:`simulate` to integrate all of them in one vmapped solve.
    """
    keys = keys if hasattr(keys, "dtype") else np.asarray(keys)
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if not ((typed and keys.ndim == 1) or (keys.dtype == np.uint32 and keys.ndim == 2)) or len(keys) < 1:
        raise ValueError("keys must be a batch of PRNG keys, e.g. jax.random.split(key, 64)")
    keys = jnp.asarray(keys)
    DeepLinearNet(widths, key=keys[0], **init_kwargs)  # validates the options eagerly
    return jax.vmap(lambda k: DeepLinearNet(widths, key=k, **init_kwargs).weights)(keys)


def simulate_discrete(
    net_or_weights,
    rule,
    task,
    *,
    lr: float,
    steps: int,
    save_every: int = 1,
    divergence_factor: float = 1e10,
) -> Trajectory:
    """Discrete updates theta <- theta + lr f(t, theta) of the same vector fields (forward Euler).

    Saved times are ``step * lr``, so discrete and continuous runs share one time axis (the
    field of step k is evaluated at t = k lr). The state
    is saved every ``save_every`` steps and after the last step, also when ``steps`` is not a
    multiple of ``save_every`` (the final step is never dropped). Raises
    :class:`DynamicsBlowUpError` at the first saved step whose state is non-finite or whose loss
    exceeds ``divergence_factor`` (> 1) times the initial loss, and at step 0 when the field is
    non-finite or exactly zero away from a minimum (as :func:`simulate`).
    """
    weights = as_weights(net_or_weights)
    base, data = _split_task(task)
    _check_task_matches(weights, base)
    lr = check_positive("lr", lr)
    steps = check_integer("steps", steps, 1)
    save_every = check_integer("save_every", save_every, 1)
    if not np.isfinite(lr * steps):
        raise ValueError(f"lr * steps (the final time) must be finite, got lr = {lr:g} and steps = {steps}")
    divergence_factor = check_positive("divergence_factor", divergence_factor)
    if divergence_factor <= 1.0:
        raise ValueError(f"divergence_factor must be a finite number > 1, got {divergence_factor!r}")
    name = _rule_name(rule)
    field_ = _resolve_rule(rule)
    _initial_check(field_, 0.0, weights, base)
    n_full, rest = divmod(steps, save_every)
    parts, state = [], weights
    # lr and the first step enter the compiled steps as (weakly typed) arrays: new rates reuse
    # the compilation, and the weights keep their dtype
    lr_ = jnp.asarray(lr)
    if n_full:
        full = _euler(field_, base, weights, lr_, save_every, n_full, jnp.asarray(0.0))
        parts.append(full)
        state = tuple(w[-1] for w in full)
    if rest:  # the steps after the last full block, saved once at the final step
        parts.append(_euler(field_, base, state, lr_, rest, 1, jnp.asarray(float(n_full * save_every))))
    ws = tuple(jnp.concatenate([w0[None], *ps]) for w0, *ps in zip(weights, *parts, strict=True))
    steps_saved = save_every * np.arange(n_full + 1)
    if rest:
        steps_saved = np.append(steps_saved, steps)
    times = lr * steps_saved
    finite = np.ones(times.shape, dtype=bool)
    for w in ws:
        finite &= np.all(np.isfinite(np.asarray(w)), axis=(1, 2))
    losses = np.asarray(jax.vmap(lambda *w: base.loss(network_map(w)))(*ws))
    with np.errstate(invalid="ignore"):
        ok = finite & (losses <= divergence_factor * max(float(losses[0]), np.finfo(float).tiny))
    if not ok.all():
        bad = int(np.argmin(ok))
        reason = (
            "the discrete iterates became non-finite"
            if not finite[bad]
            else f"the loss grew to {losses[bad]:.3g}, over {divergence_factor:g} x its initial value"
        )
        raise DynamicsBlowUpError(float(times[bad]), reason, _blow_up_hint(field_, discrete=True))
    return _make_trajectory(name, field_, base, data, times, ws, False)


@eqx.filter_jit
def _euler(rule, task, weights, lr, save_every, n_saves, start):
    """``n_saves`` blocks of ``save_every`` Euler steps; step k (counted from ``start``) evaluates
    the field at its time t = k lr. ``lr`` and ``start`` are arrays, so that neither is compiled in."""

    def step(carry, _):
        w, k = carry
        velocity = rule(k * lr, w, task)
        return (jax.tree_util.tree_map(lambda a, b: a + lr * b, w, velocity), k + 1), None

    def block(carry, _):
        carry, _ = jax.lax.scan(step, carry, None, length=save_every)
        return carry, carry[0]

    _, saved = jax.lax.scan(block, (weights, start), None, length=n_saves)
    return saved


@dataclass(frozen=True)
class ModeComparison:
    """A full-matrix run on aligned weights beside the integrated singular-mode ODEs.

    Attributes:
        times: shape (T,).
        layer_values: per-layer mode singular values L_i^T W_i(t) L_{i-1} of the full run, (T, d, m).
        layer_values_theory: the same from the mode ODEs (Huh 2020, eqs. 6, 12, 14, 24-26), (T, d, m).
        sigma_star: the teacher's mode strengths, shape (m,).
        input_eigenvalues: Sigma_x on each mode's input direction, shape (m,).
        max_mode_deviation: max over t, k of |sigma_k(t) - sigma_k^theory(t)| / max_k sigma*_k,
            for the map strengths sigma_k = prod_i sigma_{i,k}.
        max_layer_deviation: the same for the per-layer values, relative to their largest value.
    """

    times: np.ndarray
    layer_values: np.ndarray
    layer_values_theory: np.ndarray
    sigma_star: np.ndarray
    input_eigenvalues: np.ndarray
    max_mode_deviation: float
    max_layer_deviation: float

    def map_strengths(self) -> np.ndarray:
        return np.prod(self.layer_values, axis=1)

    def map_strengths_theory(self) -> np.ndarray:
        return np.prod(self.layer_values_theory, axis=1)


def compare_with_modes(traj: Trajectory, rule, task) -> ModeComparison:
    """Integrates the singular-mode ODEs from the aligned start of ``traj`` and compares.

    ``rule`` is the rule ``traj`` ran (name or vector field) and ``task`` its task. The run must
    start from aligned weights (``DeepLinearNet(init="aligned")``, Huh 2020 footnote 2).
    """
    from ._analytic import aligned_frames, mode_field_of, project_onto_modes

    if not isinstance(traj, Trajectory):
        raise TypeError(f"traj must be a dlnsim.Trajectory (from simulate), got {type(traj).__name__}")
    base, _ = _split_task(task)
    mode_field = mode_field_of(rule)
    w0 = tuple(w[0] for w in traj.weights)
    frames = aligned_frames(w0, base.teacher)
    sig0 = project_onto_modes(w0, frames)
    scale = max(np.abs(w).max() for w in w0)
    for i, w in enumerate(w0):
        if np.abs((frames[i + 1] * sig0[i]) @ frames[i].T - w).max() > 1e-8 * scale:
            raise ValueError("the trajectory does not start from aligned weights; use init='aligned'")
    teacher, cov = np.asarray(base.teacher), np.asarray(base.input_cov)
    sigma_star = np.einsum("ik,ij,jk->k", frames[-1], teacher, frames[0])
    # modes outside the teacher's rank have sigma* = 0 up to rounding; make it exact, or a mode
    # would have to cross the saddle at 0 to reach a target of -1e-17
    sigma_star = np.where(np.abs(sigma_star) <= 1e-12 * np.abs(sigma_star).max(), 0.0, sigma_star)
    lam = np.einsum("ik,ij,jk->k", frames[0], cov, frames[0])
    ts = jnp.asarray(traj.times)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(mode_field), diffrax.Tsit5(), ts[0], ts[-1], None, jnp.asarray(sig0),
        args=(jnp.asarray(sigma_star), jnp.asarray(lam)), saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12), max_steps=1_000_000,
        throw=False,
    )  # fmt: skip
    if not diffrax.is_successful(sol.result):
        reached = np.asarray(sol.ts)[np.isfinite(np.asarray(sol.ts))]
        raise DynamicsBlowUpError(
            float(reached[-1]) if reached.size else float(ts[0]), "the singular-mode ODE failed",
            _blow_up_hint(mode_field, discrete=False),
        )  # fmt: skip
    theory = np.asarray(sol.ys)
    full = project_onto_modes(traj.weights, frames)
    map_dev = np.abs(np.prod(full, axis=1) - np.prod(theory, axis=1)).max()
    return ModeComparison(
        times=np.asarray(traj.times),
        layer_values=full,
        layer_values_theory=theory,
        sigma_star=sigma_star,
        input_eigenvalues=lam,
        max_mode_deviation=float(map_dev / max(np.abs(sigma_star).max(), 1e-300)),
        max_layer_deviation=float(np.abs(full - theory).max() / max(np.abs(theory).max(), 1e-300)),
    )


__all__ = [
    "ModeComparison",
    "Trajectory",
    "TrajectoryBatch",
    "compare_with_modes",
    "init_weights_batch",
    "simulate",
    "simulate_discrete",
]
