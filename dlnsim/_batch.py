"""Batches of initial weights integrated as one vmapped solve, with per-element failures."""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._checks import DynamicsBlowUpError
from ._models import DeepLinearNet, network_map
from ._observables import Trajectory, _make_trajectory
from ._run_checks import _check_field_output, _field_problem, _loss_scale, check_run
from ._tasks import Task


@dataclass(frozen=True)
class TrajectoryBatch:
    """The result of :func:`simulate_batch`: a batch of initial weights in one vmapped solve.

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


def init_weights_batch(widths, keys, **init_kwargs) -> tuple[Array, ...]:
    """Initial weights for a batch of PRNG keys, stacked as ``(B, n_i, n_{i-1})`` arrays.

    ``init_kwargs`` go to :class:`DeepLinearNet` (init, scale, teacher, ...). Pass the result to
    :func:`simulate_batch` to integrate all of them in one vmapped solve.
    """
    keys = keys if hasattr(keys, "dtype") else np.asarray(keys)
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if not ((typed and keys.ndim == 1) or (keys.dtype == np.uint32 and keys.ndim == 2)) or len(keys) < 1:
        raise ValueError("keys must be a batch of PRNG keys, e.g. jax.random.split(key, 64)")
    keys = jnp.asarray(keys)
    DeepLinearNet(widths, key=keys[0], **init_kwargs)  # validates the options eagerly
    return jax.vmap(lambda k: DeepLinearNet(widths, key=k, **init_kwargs).weights)(keys)


def solve_batch(name, field_, solve, t0: float, batch, base: Task, data) -> TrajectoryBatch:
    """Runs ``solve`` (one diffeqsolve) vmapped over a batch of initial weights; elements whose
    field is unusable at t0 are not integrated, and a failed element does not stop the others."""
    initial = _batch_initial_problems(field_, t0, batch, base)
    usable = [b for b, problem in enumerate(initial) if problem is None]
    size = len(initial)
    if usable:
        # Elements whose field is unusable are not integrated: their slots run a copy of a usable
        # element (the batch keeps its shape, so the compiled solve is reused) and are discarded.
        idx = np.asarray([b if initial[b] is None else usable[0] for b in range(size)])
        sol = eqx.filter_vmap(solve)(tuple(w[idx] for w in batch))
        all_times, all_ws = np.asarray(sol.ts), tuple(np.asarray(w) for w in sol.ys)
        results = sol.result
    trajectories, status, failed_at = [], [], []
    for b in range(size):
        try:
            if initial[b] is not None:
                raise initial[b]
            ws_b = tuple(w[b] for w in all_ws)
            result_b = jax.tree_util.tree_map(lambda r, b=b: r[b], results)
            n_ok, event_hit = check_run(all_times[b], ws_b, result_b, t0, field_)
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


__all__ = ["TrajectoryBatch", "init_weights_batch", "solve_batch"]
