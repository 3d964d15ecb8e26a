"""Curvature-corrected flows of a wide network in continuous time, and their integration.

The rules of dlnsim's deep linear nets as diffrax vector fields on the wide MLP of Karakida & Osawa
2020 (eq. 1), for a regression task of N samples (eq. 3, MSE loss L = sum_n ||f(x_n) - y_n||^2 / (2N)):

    d theta / dt = -(G~ + rho I)^(-1/q) grad L,   grad L = J^T r / N,  r = f - y  (eqs. 3, 8-9),

with G~ any Fisher approximation of G = J^T J / N (exact, bd, tri-diagonal, kfac, unit-wise, diagonal,
quasi-diagonal; :mod:`dlnsim.wide._fisher`). q = 1 is NGD (the small-eta limit of eq. 9), q = 2
sqrt-NGD and q > 1 fractional q-NGD (Huh 2020, eq. 14), q = inf the gradient flow -grad L. The exact and
layer-wise Fishers act in sample space (push-through: J^T (J J^T / N + rho)^(-1/q) r / N), so no P x P
matrix appears; a fractional power is one N C-sized eigen-decomposition.

The power s = 1/q and the damping rho are array leaves of the field: a new value reuses the compiled
program and ``jax.vmap`` maps over them. :func:`simulate_flow` integrates a field with diffrax (Tsit5,
PID rtol 1e-8 / atol 1e-10, as :func:`dlnsim.simulate`) and returns a :class:`FlowTrajectory`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import DynamicsBlowUpError, as_real_array, check_integer, check_real
from .._curvature_base import q_leaf
from .._run_checks import result_message
from ._data import WideTask
from ._factory import as_fisher
from ._fisher import AbstractFisher
from ._hyperparameters import concrete, hyperparameter
from ._losses import AbstractLoss, SquaredError
from ._mlp import MLP, _as_update, _vjp_all, check_data, check_mlp, signals
from ._model_flow import ModelFlow

# The rules of the wide flows, named as for the deep linear nets (``dlnsim rules``).
FLOW_RULES: dict[str, str] = {
    "sgd": "gradient flow -grad L (q = inf)",
    "ngd": "natural gradient flow -(G~ + rho I)^+ grad L (q = 1; Karakida & Osawa 2020, eq. 9)",
    "qngd": "fractional NGD -(G~ + rho I)^(-1/q) grad L, q >= 1 (Huh 2020, eq. 14)",
    "sqrt-ngd": "fractional NGD with q = 2 (Huh 2020, eqs. 14-16)",
    "damped-ngd": "damped NGD -(G~ + rho I)^(-1) grad L with rho > 0",
}


class FlowTask(eqx.Module):
    """A regression task for the wide flows: training inputs x (N, M0) and targets y (N, C), and an
    optional test set (x_test, y_test) whose outputs :func:`simulate_flow` records."""

    x: Float[Array, "N M0"]
    y: Float[Array, "N C"]
    x_test: Float[Array, "Nt M0"] | None = None
    y_test: Float[Array, "Nt C"] | None = None

    def __check_init__(self):
        if any(isinstance(a, jax.core.Tracer) for a in (self.x, self.y)):
            return
        for name in ("x", "y", "x_test", "y_test"):
            value = getattr(self, name)
            if value is not None and jnp.ndim(value) != 2:
                raise ValueError(f"{name} must be a 2-D array, got shape {tuple(jnp.shape(value))}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"x and y must have the same number N of rows, got {self.x.shape} and {self.y.shape}"
            )
        if (self.x_test is None) != (self.y_test is None):
            raise ValueError("give both x_test and y_test, or neither")

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def has_test(self) -> bool:
        return self.x_test is not None


def as_flow_task(task) -> FlowTask:
    """A :class:`FlowTask` as given, or the one of a :class:`~dlnsim.wide.WideTask` (train and test)."""
    if isinstance(task, FlowTask):
        return task
    if isinstance(task, WideTask):
        return FlowTask(task.x_train, task.y_train, task.x_test, task.y_test)
    raise TypeError(f"task must be a dlnsim.wide.FlowTask or WideTask, got {type(task).__name__}")


class FisherFlow(eqx.Module):
    """The vector field f(t, mlp, task) = -(G~ + rho I)^(-1/q) grad L on a wide MLP (module docstring).

    The state is the :class:`~dlnsim.wide.MLP` itself (its weight and bias arrays); the field returns an
    MLP-shaped pytree of their time derivatives, so it can be passed to ``diffrax.ODETerm``.

    Attributes:
        fisher: the Fisher approximation G~; its ``damping`` is rho (an array leaf). K-FAC damps each
            Kronecker factor, (B + rho)^(-s) x (A + rho)^(-s) (S.95).
        power: s = 1/q in [0, 1] (0: the gradient flow), an array leaf.
    """

    fisher: AbstractFisher
    power: Float[Array, ""]

    def __init__(self, fisher: str | AbstractFisher = "exact", q=1.0, *, rho=None, **fisher_options):
        if isinstance(fisher, AbstractFisher):
            if fisher_options:
                raise ValueError("Fisher options apply only to a Fisher given by name")
            if rho is not None:
                fisher = eqx.tree_at(lambda f: f.rho, fisher, hyperparameter("rho", rho))
        else:
            fisher = as_fisher(fisher, 0.0 if rho is None else hyperparameter("rho", rho), **fisher_options)
        self.fisher = fisher
        self.power = 1.0 / q_leaf(q)

    @property
    def q(self):
        """The curvature power q = 1/s (inf for the gradient flow); a traced array under a trace."""
        value = concrete(self.power)
        if value is None:
            return 1.0 / self.power
        return math.inf if value == 0 else 1.0 / value

    @property
    def rho(self):
        """The damping rho of the Fisher."""
        return self.fisher.rho

    def __call__(self, t, mlp: MLP, task: FlowTask) -> MLP:
        power = concrete(self.power)
        if not isinstance(mlp.weights[0], jax.core.Tracer):
            check_mlp(mlp)
            check_data(mlp, task.x, task.y)
            self.fisher.check_depth(mlp.depth)
        sig = signals(mlp, task.x)
        r = self.fisher.residual(sig.f, task.y)
        grad_w, grad_b = _vjp_all(mlp, sig, [r / r.shape[0]] * mlp.depth)
        if power == 0.0:
            ws, bs = grad_w, grad_b
        else:
            pre = self.fisher.prepare(mlp, sig, power=self.power)
            ws, bs = self.fisher.apply(mlp, sig, pre, r, power=self.power)
            if power is None:  # a traced s: q = inf selected by array code (vmap over q works)
                gradient = self.power == 0.0
                ws = [jnp.where(gradient, g, w) for g, w in zip(grad_w, ws, strict=True)]
                if bs is not None:
                    bs = [jnp.where(gradient, g, b) for g, b in zip(grad_b, bs, strict=True)]
        return _as_update(mlp, [-w for w in ws], None if bs is None else [-b for b in bs])


def flow_field(rule: str = "ngd", *, fisher: str | AbstractFisher = "exact", q=None, rho=None, **options):
    """The wide flow named ``rule`` (one of ``FLOW_RULES``) with the Fisher ``fisher``.

    ``sgd`` is q = inf, ``ngd`` and ``damped-ngd`` q = 1, ``sqrt-ngd`` q = 2, ``qngd`` the given q >= 1;
    ``rho`` >= 0 damps the Fisher (``damped-ngd`` needs rho > 0). ``options`` go to the Fisher
    (e.g. ``kfac_bias``, ``rcond``).
    """
    if not isinstance(rule, str) or rule not in FLOW_RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(FLOW_RULES)}")
    if q is not None and rule != "qngd":
        raise ValueError(f"q applies only to the rule qngd, not {rule!r}")
    if rule == "qngd" and q is None:
        raise ValueError("rule 'qngd' needs q >= 1 (q=1 is NGD, q=2 sqrt-NGD, q=inf SGD)")
    if rule == "damped-ngd" and (rho is None or concrete(hyperparameter("rho", rho)) == 0):
        raise ValueError("rule 'damped-ngd' needs rho > 0 (rho = 0 is ngd)")
    power_q = {"sgd": math.inf, "ngd": 1.0, "damped-ngd": 1.0, "sqrt-ngd": 2.0}.get(rule, q)
    return FisherFlow(fisher, power_q, rho=rho, **options)


@dataclass(frozen=True)
class FlowTrajectory:
    """An integrated wide flow at the saved times.

    Attributes:
        times: (T,) the save times.
        residuals: (T, N, C) the training residuals f_t - y (softmax(f_t) - y for a cross-entropy
            Fisher, S.159).
        train_loss: (T,) L = sum_n ||f_t(x_n) - y_n||^2 / (2N) (eq. 3), or the mean cross-entropy.
        test_outputs: (T, N', C) f_t on the test inputs, or None without a test set.
        test_loss: (T,) the test loss (the same loss), or None.
        mlp: the network (or model) at the final time.
        num_steps: accepted solver steps.
    """

    times: np.ndarray
    residuals: np.ndarray
    train_loss: np.ndarray
    test_outputs: np.ndarray | None
    test_loss: np.ndarray | None
    mlp: Any
    num_steps: int

    @property
    def model(self):
        """The model at the final time (the same as ``mlp``)."""
        return self.mlp


def _observe(t, mlp, task: FlowTask):
    test = mlp(task.x_test) if task.x_test is not None else None
    return mlp(task.x), test


def _check_model(model, task: FlowTask) -> None:
    """The one-line checks of a general model: it maps x (N, M0) to outputs of y's shape."""
    if not jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)):
        raise ValueError("the model has no floating-point parameter arrays to integrate")
    for x, y, name in ((task.x, task.y, "x"), (task.x_test, task.y_test, "x_test")):
        if x is None:
            continue
        hint = "a per-example module needs dlnsim.wide.Batched(module)"
        try:
            shape = jax.eval_shape(model, x).shape
        except (TypeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"the model cannot be applied to {name} of shape {tuple(x.shape)} ({first}); {hint}"
            ) from None
        if shape != y.shape:
            raise ValueError(
                f"the model maps {name} of shape {tuple(x.shape)} to outputs of shape {tuple(shape)}, "
                f"but the targets have shape {tuple(y.shape)}; {hint}"
            )


def _loss_of(field) -> AbstractLoss:
    """The loss a flow descends: its Fisher's (MSE for model flows)."""
    return field.fisher.loss_function if isinstance(field, FisherFlow) else SquaredError()


@eqx.filter_jit
def _solve(field, mlp, task, t0, t1, ts, dt0, rtol, atol, solver, max_steps):
    # the state is the model's floating-point arrays; the rest (activations, sizes) stays fixed
    params, static = eqx.partition(mlp, eqx.is_inexact_array)

    def velocity(t, p, args):
        return eqx.filter(field(t, eqx.combine(p, static), args), eqx.is_inexact_array)

    def observe(t, p, args):
        return _observe(t, eqx.combine(p, static), args)

    saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=observe), diffrax.SubSaveAt(t1=True)])
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(velocity), solver, t0, t1, dt0, params, args=task, saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps, throw=False,
    )  # fmt: skip
    return (
        sol.ts[0],
        sol.ys[0],
        eqx.combine(jax.tree.map(lambda a: a[0], sol.ys[1]), static),
        sol.result,
        sol.stats["num_accepted_steps"],
    )


def _blow_up_hint(field) -> str:
    if isinstance(field, FisherFlow | ModelFlow) and concrete(field.rho) == 0 and concrete(field.power) != 0:
        return (
            "the pseudo-inverse Fisher's speed diverges where G~ loses rank; use rho > 0 (damped-ngd), a "
            "larger q, a shorter t1 or a larger max_steps"
        )
    return "shorten t1, raise max_steps, or start from a smaller initialisation"


def _save_times(saveat, t0: float, t1: float) -> np.ndarray:
    if saveat is None:
        return np.linspace(t0, t1, 101)
    if isinstance(saveat, diffrax.SaveAt):
        subs = jax.tree_util.tree_leaves(saveat.subs, is_leaf=lambda s: isinstance(s, diffrax.SubSaveAt))
        if len(subs) != 1 or subs[0].ts is None:
            raise ValueError("saveat must be times, or a diffrax.SaveAt(ts=...) with times only")
        saveat = subs[0].ts
    ts = as_real_array("saveat", saveat, 1, numpy=True)
    if ts.size == 0 or ts.min() < t0 or ts.max() > t1 or np.any(np.diff(ts) < 0):
        raise ValueError(f"saveat must be ascending times within [t0, t1] = [{t0:g}, {t1:g}]")
    return ts


def simulate_flow(
    mlp: MLP,
    field,
    task,
    t1: float,
    *,
    saveat=None,
    t0: float = 0.0,
    dt0: float | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    solver: diffrax.AbstractSolver | None = None,
) -> FlowTrajectory:
    """Integrates d theta/dt = field(t, theta, task) from the network ``mlp`` over [t0, t1] with diffrax
    (Tsit5 with a PID controller, rtol 1e-8 and atol 1e-10 by default, as :func:`dlnsim.simulate`).

    ``mlp`` is a :class:`~dlnsim.wide.MLP`, or any equinox model mapping x (N, M0) to outputs (N, C)
    (for example ``Batched(eqx.nn.MLP(...))``) with a :class:`~dlnsim.wide.ModelFlow` field.
    ``field`` is a :class:`FisherFlow` (see :func:`flow_field`), a :class:`ModelFlow`, or any
    f(t, model, task) returning a pytree of the model's structure; ``task`` a :class:`FlowTask` or
    :class:`~dlnsim.wide.WideTask`; ``saveat`` the save times (an array or a
    ``diffrax.SaveAt(ts=...)``; default 101 evenly spaced). The field's
    hyperparameters are traced, so new q or rho reuse the compiled solve. A field that is non-finite at
    t0, or a run that fails or turns non-finite, raises :class:`~dlnsim.DynamicsBlowUpError` with the time
    reached and a hint.
    """
    task = as_flow_task(task)
    if not callable(field):
        raise TypeError(f"field must be a vector field f(t, mlp, task), got {type(field).__name__}")
    if isinstance(mlp, MLP):
        check_mlp(mlp)
        check_data(mlp, task.x, task.y)
        if task.has_test:
            check_data(mlp, task.x_test, task.y_test, "x_test")
    elif isinstance(field, FisherFlow):
        raise TypeError(
            f"FisherFlow acts on a dlnsim.wide.MLP, got a {type(mlp).__name__}; use "
            "dlnsim.wide.ModelFlow (exact, bd, diagonal) for another equinox model"
        )
    else:
        _check_model(mlp, task)
    t0, t1 = check_real("t0", t0), check_real("t1", t1)
    if not t1 > t0:
        raise ValueError(f"t1 must be greater than t0 = {t0}, got {t1}")
    max_steps = check_integer("max_steps", max_steps, 1)
    ts = _save_times(saveat, t0, t1)
    velocity = field(t0, mlp, task)  # eager: the field's own one-line checks, and a finite start
    if not all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(velocity)):
        raise DynamicsBlowUpError(
            t0, "the field is not finite (NaN or inf) at the initial network", _blow_up_hint(field)
        )
    dtype = jax.tree_util.tree_leaves(eqx.filter(mlp, eqx.is_inexact_array))[0].dtype
    times, (outputs, test), final, result, steps = _solve(
        field, mlp, task, jnp.asarray(t0, dtype), jnp.asarray(t1, dtype), jnp.asarray(ts, dtype),
        None if dt0 is None else jnp.asarray(dt0, dtype), rtol, atol, solver or diffrax.Tsit5(), max_steps,
    )  # fmt: skip
    times, outputs = np.asarray(times), np.asarray(outputs)
    test = None if test is None else np.asarray(test)
    y = np.asarray(task.y)[None]
    finite = np.isfinite(times) & np.all(np.isfinite(outputs), axis=(1, 2))
    if test is not None:
        finite &= np.all(np.isfinite(test), axis=(1, 2))
    n_ok = finite.size if finite.all() else int(np.argmin(finite))
    if not bool(result == diffrax.RESULTS.successful):
        raise DynamicsBlowUpError(
            times[n_ok - 1] if n_ok else t0, result_message(result), _blow_up_hint(field)
        )
    if n_ok < finite.size:
        raise DynamicsBlowUpError(times[n_ok], "the state became non-finite", _blow_up_hint(field))
    loss = _loss_of(field)
    res = loss.residual(outputs, y)
    train_loss = loss.value(outputs, y)
    test_loss = None if test is None else loss.value(test, np.asarray(task.y_test)[None])
    return FlowTrajectory(times, res, train_loss, test, test_loss, final, int(steps))


__all__ = [
    "FLOW_RULES",
    "FisherFlow",
    "FlowTask",
    "FlowTrajectory",
    "as_flow_task",
    "flow_field",
    "simulate_flow",
]
