"""Checks of a simulation's inputs and results: one-line errors for bad input, and
DynamicsBlowUpError (with the time reached and a hint) for a field or run that lost precision.
Only diffrax's public API is used (``diffrax.RESULTS`` items, compared and looked up)."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import DynamicsBlowUpError, as_real_array, check_integer, check_positive, check_real
from ._models import DeepLinearNet, check_weights, network_map
from ._rules import RULES, BernacchiaFlow, NaturalGradientFlow, vector_field
from ._tasks import StudentTeacherData, Task


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
    if isinstance(rule, NaturalGradientFlow) and float(rule.power) > 0.0:
        widths = (weights[0].shape[1],) + tuple(w.shape[0] for w in weights)
        if rule.curvature.matrix_free(widths, rule.power):
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


def _resolve_rule(rule):
    if isinstance(rule, str):
        return vector_field(rule)
    if not callable(rule):
        raise TypeError(
            f"rule must be a name ({', '.join(RULES)}) or a vector field f(t, weights, task), "
            f"got {type(rule).__name__}"
        )
    return rule


def result_message(result) -> str:
    """The message of a (concrete, unbatched) ``diffrax.RESULTS`` item, in one line."""
    try:
        message = diffrax.RESULTS[result]
    except (TypeError, ValueError):
        message = "the solver failed"
    return str(message).strip().rstrip(".") or "the solver failed"


def check_run(times, ws, result, t0: float, field_) -> tuple[int, bool]:
    """Returns (number of valid saves, stopped by the event) or raises DynamicsBlowUpError.

    ``result`` is the run's (unbatched) ``diffrax.RESULTS`` item."""
    finite = np.isfinite(times)
    for w in ws:
        finite &= np.all(np.isfinite(w), axis=(1, 2))
    # Saves past an early stop are filled with inf: keep the contiguous finite prefix.
    n_ok = int(np.argmin(finite)) if not finite.all() else finite.size
    event_hit = bool(result == diffrax.RESULTS.event_occurred)
    if not bool(result == diffrax.RESULTS.successful) and not event_hit:
        reached_t = float(times[n_ok - 1]) if n_ok else float(t0)
        raise DynamicsBlowUpError(reached_t, result_message(result), _blow_up_hint(field_))
    if n_ok < finite.size and not event_hit:
        bad_t = float(times[n_ok]) if np.isfinite(times[n_ok]) else float(t0)
        raise DynamicsBlowUpError(bad_t, "the state became non-finite", _blow_up_hint(field_))
    if n_ok >= 2 and times[n_ok - 1] == times[n_ok - 2]:
        n_ok -= 1  # the final-state save duplicates a requested time
    return n_ok, event_hit


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
