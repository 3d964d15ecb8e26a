"""Integrating learning rules with diffrax: :func:`simulate` (continuous time, one net),
:func:`simulate_batch` (a batch of initial weights, one vmapped solve) and
:func:`simulate_discrete` (forward Euler). The observables live in ``dlnsim._observables``,
batches in ``dlnsim._batch`` and the input and result checks in ``dlnsim._run_checks``; their
public names are re-exported here."""

from __future__ import annotations

from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._batch import TrajectoryBatch, init_weights_batch, solve_batch
from ._checks import DynamicsBlowUpError, check_integer, check_nonnegative, check_positive
from ._models import as_weights, network_map
from ._observables import ModeComparison, Trajectory, _make_trajectory, compare_with_modes
from ._observables import _observables as _observables  # re-exported (tests reach it here)
from ._run_checks import (
    _blow_up_hint,
    _check_solver_options,
    _check_task_matches,
    _check_times,
    _initial_check,
    _resolve_rule,
    _rule_name,
    _split_task,
    _split_weights,
    check_run,
)
from ._tasks import determinant_saddle_loss

DEFAULT_RTOL = 1e-8
DEFAULT_ATOL = 1e-10


class _AtDeterminantSaddle(eqx.Module):
    """Event condition: the loss has fallen to ``threshold`` above the determinant saddle's loss
    while the map's determinant still has the sign that forbids reaching the target (see
    :func:`determinant_saddle_loss`)."""

    threshold: Array
    sign: Array

    def __call__(self, t, y, args, **kwargs):
        w_map = network_map(y)
        return (args.loss(w_map) <= self.threshold) & (jnp.linalg.slogdet(w_map)[0] == self.sign)


class _LossReached(eqx.Module):
    """Event condition: the task loss has fallen to ``threshold`` (an array, so not static)."""

    threshold: Array

    def __call__(self, t, y, args, **kwargs):
        return args.loss(network_map(y)) <= self.threshold


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
    stop_at_saddle: bool = False,
) -> Trajectory:
    """Integrates a learning rule with diffrax and returns its :class:`Trajectory`.

    Args:
        net_or_weights: a :class:`DeepLinearNet` or a sequence ``(W_1, ..., W_d)``. (A batch of
            initial weights goes to :func:`simulate_batch`.)
        rule: a rule name (see ``dlnsim.RULES``) or any vector field ``f(t, weights, task)``.
        task: a :class:`Task` or :class:`StudentTeacherData` (adds train and test losses).
        t1: the end time (eta = 1, so t counts learning-rate units).
        saveat, solver, stepsize_controller, dt0, max_steps, progress_meter: passed to
            ``diffrax.diffeqsolve``. Defaults: 501 equally spaced saves (the final state is
            always saved too), Tsit5, and a PID controller with rtol 1e-8, atol 1e-10.
        loss_threshold: stop early once the task loss falls to this value.
        stop_at_saddle: (with a ``loss_threshold``) also stop once a square net whose map's
            determinant has the wrong sign has its loss within ``loss_threshold`` of the
            saddle's (:func:`determinant_saddle_loss`, when above the threshold), where the
            flow may crawl on until t1. The trajectory then has ``stop_reason`` set to
            ``"determinant saddle"`` and a final loss above the threshold. A heuristic: a net
            that is not aligned and balanced may still cross the singular maps later, slowly
            (an SGD run at N = 4 crosses between t = 1e3 and 4e4), so integrate a fixed time to
            see whether it does.

    Raises:
        DynamicsBlowUpError: the state became non-finite, the steps stalled, or max_steps ran
            out; or, at t0, the field is non-finite or exactly zero although the loss is not ~0
            (e.g. NGD from weights so small that it underflows). It carries the time reached
            and a hint; no NaN is ever returned.
        ValueError, TypeError: bad inputs (non-finite or non-real weights, a batch, mismatched
            widths or task, t1 <= t0, dt0 <= 0, max_steps < 1, saveat.ts outside [t0, t1], ...),
            in one line naming the argument.
    """
    weights, batch = _split_weights(net_or_weights)
    if batch is not None:
        raise TypeError(
            "simulate integrates one net; for a batch of initial weights (3-D arrays) use simulate_batch"
        )
    run = _prepare(weights, rule, task, t0, t1, saveat, solver, stepsize_controller, dt0, max_steps,
                   loss_threshold, progress_meter, stop_at_saddle)  # fmt: skip
    _initial_check(run.field, run.t0, weights, run.base)
    sol = run.solve(weights)
    times, ws = np.asarray(sol.ts), tuple(np.asarray(w) for w in sol.ys)
    n_ok, event_hit = check_run(times, ws, sol.result, run.t0, run.field)
    saddle_hit = isinstance(sol.event_mask, tuple) and bool(sol.event_mask[1])
    reason = "determinant saddle" if saddle_hit else "loss threshold"
    return _make_trajectory(run.name, run.field, run.base, run.data, times, ws, event_hit, n_ok, reason)


def simulate_batch(
    weights,
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
) -> TrajectoryBatch:
    """Integrates a learning rule from a batch of initial weights as one vmapped diffrax solve.

    Args:
        weights: a sequence of 3-D arrays ``(B, n_i, n_{i-1})`` (see :func:`init_weights_batch`).
        rule: a rule name or vector field, as for :func:`simulate`; the other arguments (task,
            t1, t0, saveat, solver, stepsize_controller, dt0, max_steps, loss_threshold,
            progress_meter) are also as for :func:`simulate`, shared by every element.

    Returns:
        A :class:`TrajectoryBatch`: a failed element (blow-up, stalled steps, an unusable field
        at t0) gets None and its message in ``status`` and does not stop the others.
    """
    first, batch = _split_weights(weights)
    if batch is None:
        raise TypeError(
            "simulate_batch needs a batch of initial weights (3-D arrays (B, n_i, n_{i-1})); "
            "for one net use simulate"
        )
    run = _prepare(first, rule, task, t0, t1, saveat, solver, stepsize_controller, dt0, max_steps,
                   loss_threshold, progress_meter, False)  # fmt: skip
    return solve_batch(run.name, run.field, run.solve, run.t0, batch, run.base, run.data)


class _Run(NamedTuple):
    name: str
    field: object
    base: object
    data: object
    t0: float
    solve: object  # y0 -> diffrax.Solution


def _prepare(weights, rule, task, t0, t1, saveat, solver, stepsize_controller, dt0, max_steps,
             loss_threshold, progress_meter, stop_at_saddle) -> _Run:  # fmt: skip
    """Validates the inputs of :func:`simulate` / :func:`simulate_batch` (``weights``: one
    element's) and builds the solve: one ``diffrax.diffeqsolve`` of the initial state."""
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
        threshold = jnp.asarray(check_nonnegative("loss_threshold", loss_threshold))
        saddle = determinant_saddle_loss(weights, base) if stop_at_saddle else None
        if saddle is None or saddle <= float(threshold):  # no saddle, or one under the threshold
            event = diffrax.Event(_LossReached(threshold))
        else:
            sign = jnp.linalg.slogdet(network_map(weights))[0]
            at_saddle = _AtDeterminantSaddle(saddle + threshold, sign)
            event = diffrax.Event((_LossReached(threshold), at_saddle))
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

    return _Run(name, field_, base, data, t0, solve)


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


__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "ModeComparison",
    "Trajectory",
    "TrajectoryBatch",
    "compare_with_modes",
    "init_weights_batch",
    "simulate",
    "simulate_batch",
    "simulate_discrete",
]
