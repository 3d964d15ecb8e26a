"""The curvature interface of deep linear nets, and numeric hyperparameters as array leaves.

A curvature object C acts on the loss gradient g as ``(C + damping I)^(-power) g``, with
Moore-Penrose (pseudo-inverse) semantics when ``damping = 0``. Every curvature implements one
private method, ``_apply(weights, task, power, damping, scale)`` = (scale C + damping I)^(-power) g;
the public :meth:`AbstractCurvature.precondition` and :meth:`AbstractCurvature.normalized_precondition`
are built on it here, once. Rules in :mod:`dlnsim._rules` compose any curvature with any power.

**Hyperparameters are data.** eps (Huh 2020, eq. 17), Bernacchia's lambda (Bernacchia et al.
2018, eq. 20), rcond and the power 1/q are stored as (weakly typed) JAX array leaves, not static
fields: a new value reuses a compiled program, and ``jax.vmap`` maps over them. Concrete values
are checked at construction (:func:`hyperparameter`); traced ones (under ``jit`` or ``vmap``)
are not. Whatever depends on their value is array code (:func:`choose`, ``jnp.where``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._checks import check_nonnegative, check_positive, check_q, check_rcond, is_traced
from ._linalg import default_rcond
from ._models import Weights, network_map, prefix_products, suffix_products
from ._tasks import Task


def hyperparameter(name: str, value, check: Callable[[str, float], float]) -> Float[Array, ""]:
    """A numeric hyperparameter as a weakly typed 0-d array leaf.

    A concrete value is checked by ``check(name, value)`` (one-line ValueError) and stored as
    ``jnp.asarray(float)``, so it takes the dtype of the arrays it meets (float32 runs stay
    float32) and two values share one compiled program. A traced value passes unchecked.
    """
    if is_traced(value):
        return value
    return jnp.asarray(check(name, value))


def q_leaf(q) -> Float[Array, ""]:
    """The curvature power q (>= 1; inf is SGD) as an array leaf, checked when concrete."""
    return hyperparameter("q", q, lambda _, value: check_q(value))


class PowerAndEps(eqx.Module):
    """Read-back of a curvature-corrected field's array leaves ``power`` = 1/q and ``eps``: ``q``
    and ``damping`` (the old name of eps, Huh 2020, eqs. 17-18) as Python floats when concrete."""

    @property
    def q(self):
        """The curvature power q = 1 / power (inf for SGD)."""
        return concrete_or_traced(1.0 / self.power)

    @property
    def damping(self):
        """The old name of eps (Huh 2020, eqs. 17-18)."""
        return concrete_or_traced(self.eps)


def optional_rcond(value) -> Float[Array, ""] | None:
    """rcond as an array leaf, or None for the default :func:`dlnsim._linalg.default_rcond`."""
    return None if value is None else hyperparameter("rcond", value, check_rcond)


def concrete_or_traced(value):
    """A Python float for a concrete 0-d array (for code that needs a static number, such as the
    singular-mode reduction), else the traced array itself."""
    return value if is_traced(value) else float(value)


def choose(pred, fast: Callable, slow: Callable):
    """``lax.cond(pred, fast, slow)`` under tracing; on a concrete ``pred`` (eager calls) a plain
    Python branch, so nothing is compiled per call."""
    if is_traced(pred):
        return jax.lax.cond(pred, fast, slow)
    return fast() if bool(pred) else slow()


def loss_gradient(weights: Weights, task: Task) -> Weights:
    """g_i = dL/dW_i = W_>i^T (W - W*) Sigma_x W_<i^T (Huh 2020, eq. 5; Bernacchia et al. 2018, eq. 13)."""
    pre, suf = prefix_products(weights), suffix_products(weights)
    drive = (network_map(weights) - task.teacher) @ task.input_cov
    return tuple(b.T @ drive @ a.T for a, b in zip(pre, suf, strict=True))


def normalized_shift(eps) -> tuple[Array, Array]:
    """(curvature scale, shift) with (C + eps) / (1 + eps) = scale C + shift; both stay finite and
    the shift tends to 1 as eps -> inf (Huh 2020, eq. 17: damped NGD tends to SGD)."""
    return 1.0 / (1.0 + eps), eps / (1.0 + eps)


class AbstractCurvature(eqx.Module):
    """A PSD curvature approximation C(theta) of the Gauss-Newton matrix H+ (Huh 2020, eq. 3).

    Subclasses implement ``_apply(weights, task, power, damping, scale)``, which returns
    (scale C + damping I)^(-power) g for the task's loss gradient g; ``power``, ``damping`` and
    ``scale`` are arrays (possibly traced). ``rcond`` is the relative rank cutoff of the
    pseudo-inverse, an array leaf: ``None`` picks 10 * size * machine epsilon, else a number in
    [0, 1).
    """

    rcond: Float[Array, ""] | None = eqx.field(default=None, converter=optional_rcond, kw_only=True)

    @abc.abstractmethod
    def _apply(self, weights: Weights, task: Task, power, damping, scale) -> Weights:
        """(scale C + damping I)^(-power) g, with pseudo-inverse semantics where it vanishes."""

    def precondition(self, weights: Weights, task: Task, *, power, damping=0.0) -> Weights:
        """Returns (C + damping I)^(-power) g for the task's loss gradient g."""
        power, damping = _check_power_damping(power, damping)
        return self._apply(weights, task, power, damping, jnp.ones_like(damping))

    def normalized_precondition(self, weights: Weights, task: Task, *, power, damping) -> Weights:
        """Returns (1 + eps)^power (C + eps I)^(-power) g with eps = ``damping``, the damped update
        of Huh 2020, eq. 17 (which tends to g as eps -> inf). It is computed as
        ((C + eps I) / (1 + eps))^(-power) g, which stays exact as eps -> inf, where the product
        of (1 + eps)^power and (C + eps)^(-power) g would underflow. At eps = 0 it equals
        :meth:`precondition` exactly (scale 1, shift 0).
        """
        power, damping = _check_power_damping(power, damping)
        scale, shift = normalized_shift(damping)
        return self._apply(weights, task, power, shift, scale)

    def matrix_free(self, widths, power) -> bool:
        """Whether applying this curvature at these widths and this (concrete) power runs
        matrix-free Krylov solves (then eager calls are better compiled once)."""
        return False

    def _rcond(self, size: int, dtype):
        return default_rcond(size, dtype) if self.rcond is None else self.rcond


def _check_power_damping(power, damping):
    return (
        hyperparameter("power", power, check_positive),
        hyperparameter("damping", damping, check_nonnegative),
    )


def all_square(weights: Weights) -> bool:
    """Whether every layer is square (then the products W_>i, W_<i are square too)."""
    return all(w.shape[0] == w.shape[1] for w in weights)


__all__ = [
    "AbstractCurvature",
    "all_square",
    "choose",
    "concrete_or_traced",
    "hyperparameter",
    "is_traced",
    "loss_gradient",
    "normalized_shift",
    "optional_rcond",
]
