"""Integrating learning rules with diffrax, and the observables of a trajectory."""

from __future__ import annotations

from dataclasses import dataclass

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._checks import DynamicsBlowUpError, check_nonnegative, check_positive
from ._models import DeepLinearNet, as_weights, conserved_quantities, network_map
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
    raise ValueError(f"task must be a dlnsim.Task or dlnsim.StudentTeacherData, got {type(task).__name__}")


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

    States are mapped in chunks of 64: vmapping a block rule's SVDs over all ~600 saved states
    at once was seen to hang XLA on CPU for some inputs, while chunks evaluate in milliseconds.
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

    obs = jax.lax.map(one, ws, batch_size=64)
    c0 = [c[0] for c in obs["C"]]
    drift = [
        jnp.sqrt(jnp.sum((c - c_init) ** 2, axis=(1, 2))) for c, c_init in zip(obs["C"], c0, strict=True)
    ]
    obs["drift"] = jnp.max(jnp.stack(drift), axis=0) if drift else jnp.zeros_like(obs["loss"])
    del obs["C"]
    return obs


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
        raise ValueError(f"rule must be a name ({', '.join(RULES)}) or a vector field f(t, weights, task)")
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
            max_steps ran out. It carries the time reached and a hint; no NaN is ever returned.
    """
    batched = not isinstance(net_or_weights, DeepLinearNet) and np.ndim(net_or_weights[0]) == 3
    if batched:
        batch = tuple(jnp.asarray(w) for w in net_or_weights)
        sizes = {w.shape[0] for w in batch}
        if len(sizes) != 1:
            raise ValueError(
                f"every batched weight array needs the same leading batch size, got {sorted(sizes)}"
            )
        weights = as_weights(tuple(w[0] for w in batch))
    else:
        weights = as_weights(net_or_weights)
    base, data = _split_task(task)
    _check_task_matches(weights, base)
    t1 = check_positive("t1", t1)
    if t1 <= t0:
        raise ValueError(f"t1 must be greater than t0 = {t0}, got {t1}")
    name = _rule_name(rule)
    field_ = _resolve_rule(rule)
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
    t0_, t1_ = jnp.asarray(float(t0)), jnp.asarray(t1)
    dt0_ = None if dt0 is None else jnp.asarray(float(dt0))

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

    if not batched:
        sol = solve(weights)
        times, ws = np.asarray(sol.ts), tuple(np.asarray(w) for w in sol.ys)
        n_ok, event_hit = _check_run(times, ws, int(sol.result._value), t0, field_)
        return _make_trajectory(name, field_, base, data, times, ws, event_hit, n_ok)

    sol = eqx.filter_vmap(solve)(batch)
    all_times, all_ws = np.asarray(sol.ts), tuple(np.asarray(w) for w in sol.ys)
    codes = np.asarray(sol.result._value)
    trajectories, status, failed_at = [], [], []
    for b in range(all_times.shape[0]):
        ws_b = tuple(w[b] for w in all_ws)
        try:
            n_ok, event_hit = _check_run(all_times[b], ws_b, int(codes[b]), t0, field_)
        except DynamicsBlowUpError as err:
            trajectories.append(None)
            status.append(str(err))
            failed_at.append(err.time)
            continue
        trajectories.append(_make_trajectory(name, field_, base, data, all_times[b], ws_b, event_hit, n_ok))
        status.append("stopped early" if event_hit else "ok")
        failed_at.append(np.nan)
    return TrajectoryBatch(tuple(trajectories), tuple(status), np.asarray(failed_at))


def init_weights_batch(widths, keys, **init_kwargs) -> tuple[Array, ...]:
    """Initial weights for a batch of PRNG keys, stacked as ``(B, n_i, n_{i-1})`` arrays.

    ``init_kwargs`` go to :class:`DeepLinearNet` (init, scale, teacher, ...). Pass the result to
    :func:`simulate` to integrate all of them in one vmapped solve.
    """
    keys = jnp.asarray(keys)
    if keys.ndim != 2:
        raise ValueError("keys must be a batch of PRNG keys, e.g. jax.random.split(key, 64)")
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

    Saved times are ``step * lr``, so discrete and continuous runs share one time axis. Raises
    :class:`DynamicsBlowUpError` at the first saved step whose state is non-finite or whose loss
    exceeds ``divergence_factor`` times the initial loss.
    """
    weights = as_weights(net_or_weights)
    base, data = _split_task(task)
    _check_task_matches(weights, base)
    lr = check_positive("lr", lr)
    if int(steps) != steps or steps < 1 or int(save_every) != save_every or save_every < 1:
        raise ValueError(f"steps and save_every must be integers >= 1, got {steps} and {save_every}")
    name = _rule_name(rule)
    field_ = _resolve_rule(rule)
    n_saves = steps // save_every
    ws = _euler(field_, base, weights, lr, int(save_every), int(n_saves))
    ws = tuple(jnp.concatenate([w0[None], w]) for w0, w in zip(weights, ws, strict=True))
    times = lr * save_every * np.arange(n_saves + 1)
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
def _euler(rule, task, weights, lr, save_every, n_saves):
    def step(w, _):
        return jax.tree_util.tree_map(lambda a, b: a + lr * b, w, rule(0.0, w, task)), None

    def block(w, _):
        w, _ = jax.lax.scan(step, w, None, length=save_every)
        return w, w

    _, saved = jax.lax.scan(block, weights, None, length=n_saves)
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
