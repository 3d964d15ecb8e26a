"""Learning rules as diffrax vector fields ``f(t, weights, task) -> dweights/dt`` (eta = 1).

Every rule is an equinox module, so it can be passed straight to ``diffrax.ODETerm``::

    f = dlnsim.vector_field("sqrt-ngd")
    sol = diffrax.diffeqsolve(diffrax.ODETerm(f), diffrax.Tsit5(), 0.0, 10.0, None,
                              weights, args=task)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._block_curvature import (
    _CUTOFF_MARGIN,
    condition_estimate,
    factor_rcond,
    layer_natural_gradient,
    square_path_conditions,
)
from ._checks import as_real_array, check_covariance, check_nonnegative, check_q
from ._curvature import CURVATURE_METHODS, BlockDiagonalGaussNewton, GaussNewton
from ._curvature_base import (
    AbstractCurvature,
    PowerAndEps,
    all_square,
    choose,
    concrete_or_traced,
    hyperparameter,
    loss_gradient,
    optional_rcond,
    q_leaf,
)
from ._linalg import inv
from ._models import Weights, check_weights, network_map, prefix_products, suffix_products
from ._tasks import Task


def check_field_inputs(weights, task) -> None:
    """The arguments of a direct (concrete) call ``f(t, weights, task)``: finite real 2-D weights
    with matching widths and a :class:`Task` of the net's shape. Under a JAX trace (diffrax, jit,
    vmap) nothing is checked, so integrations pay nothing."""
    if any(isinstance(w, jax.core.Tracer) for w in jax.tree_util.tree_leaves(weights)):
        return
    if not isinstance(task, Task):
        raise TypeError(
            f"task must be a dlnsim.Task (pass data.task for a data set), got {type(task).__name__}"
        )
    weights = check_weights(weights)
    n0, nd = weights[0].shape[1], weights[-1].shape[0]
    if tuple(task.teacher.shape) != (nd, n0):
        raise ValueError(
            f"the weights map {n0} inputs to {nd} outputs but the task's teacher has shape "
            f"{tuple(task.teacher.shape)}; widths must match"
        )


class GradientFlow(eqx.Module):
    """Gradient flow dtheta/dt = -g (Huh 2020, eqs. 5-6)."""

    def __call__(self, t, weights: Weights, task: Task) -> Weights:
        check_field_inputs(weights, task)
        return tuple(-g for g in loss_gradient(weights, task))


class NaturalGradientFlow(PowerAndEps):
    """Curvature-corrected flow dtheta/dt = -(1 + eps)^(1/q) (C + eps I)^(-1/q) g.

    With the exact Gauss-Newton curvature C = H+: q = 1 is NGD (Huh 2020, eqs. 9-12), q > 1 is
    fractional q-NGD (Huh 2020, eq. 14; q = 2 is sqrt-NGD), q = inf is SGD, and q = 1 with
    eps > 0 is damped NGD (Huh 2020, eq. 17). At eps = 0 the inverse is the Moore-Penrose
    pseudo-inverse power (minimum-norm update), as bottleneck nets have a singular H+.
    With the block-diagonal curvature these are NGD-d and q-NGD-d (Huh 2020, eqs. 23-26).

    The field is computed as -((C + eps I) / (1 + eps))^(-1/q) g
    (:meth:`AbstractCurvature.normalized_precondition`), which stays exact as eps -> inf, where
    it tends to SGD's -g; the product of (1 + eps)^(1/q) and (C + eps)^(-1/q) g would underflow.

    ``power`` = 1/q and ``eps`` are array leaves: a new value reuses the compiled program, and
    ``jax.vmap`` maps over them (q = inf, power 0, is selected by array code). ``q`` and the old
    name ``damping`` (= eps) read back as Python floats when concrete. Call as
    ``NaturalGradientFlow(curvature, q, eps)``.
    """

    curvature: AbstractCurvature
    power: Float[Array, ""]
    eps: Float[Array, ""]

    def __init__(self, curvature: AbstractCurvature, q=1.0, eps=0.0, *, damping=None):
        if not isinstance(curvature, AbstractCurvature):
            raise TypeError(
                "curvature must be a dlnsim curvature (GaussNewton, BlockDiagonalGaussNewton or an "
                f"AbstractCurvature subclass), got {type(curvature).__name__}"
            )
        if damping is not None:  # the old keyword for eps
            eps = damping
        self.curvature = curvature
        self.power = 1.0 / q_leaf(q)
        self.eps = hyperparameter("eps (damping)", eps, check_nonnegative)

    def __call__(self, t, weights: Weights, task: Task) -> Weights:
        check_field_inputs(weights, task)

        def natural():
            return self.curvature.normalized_precondition(weights, task, power=self.power, damping=self.eps)

        direction = choose(self.power == 0.0, lambda: loss_gradient(weights, task), natural)
        return tuple(-d for d in direction)


def _as_output_cov(cov):
    """Sigma~ as a real 2-D array (None stays None); its symmetry and definiteness are checked in
    :meth:`BernacchiaFlow.__check_init__`."""
    return None if cov is None else as_real_array("output_cov", cov, 2)


class BernacchiaFlow(eqx.Module):
    """Bernacchia et al. 2018, eq. 10 in continuous time with full-batch averages:

    dW_i/dt = (1/d) <e_i e_i^T>^+ <e_i x_{i-1}^T> <x_{i-1} x_{i-1}^T>^+, with
    <e_i e_i^T> = W_>i^T Sigma~^-1 W_>i (eq. 14), <x_{i-1} x_{i-1}^T> = W_<i Sigma_x W_<i^T (eq. 15)
    and <e_i x_{i-1}^T> = -W_>i^T Sigma~^-1 (W - W*) Sigma_x W_<i^T (eq. 13).

    ``output_cov`` is the output noise covariance Sigma~ (identity by default; then the rule
    equals NGD-d exactly). ``lam`` is the Levenberg-Marquardt damping lambda of eq. 20, which adds
    sqrt(lambda) I to both covariances before their pseudo-inversion (``damping`` is its old name,
    kept as a keyword and a read-only alias). ``lam`` and ``rcond`` are array leaves.

    Undamped on square nets, eq. 10 is W_>i^-1 (W - W*) W_<i^-1 / d whatever Sigma~ and
    Sigma_x are; it is computed from one LU inverse per layer when condition estimates show that
    the pseudo-inverses cut nothing, as for NGD-d (:class:`BlockDiagonalGaussNewton`).
    """

    output_cov: jnp.ndarray | None
    lam: Float[Array, ""]
    rcond: Float[Array, ""] | None

    def __init__(self, output_cov=None, lam=0.0, rcond=None, *, damping=None):
        name = "lam"
        if damping is not None:  # the old keyword for lambda
            lam, name = damping, "damping"
        self.output_cov = _as_output_cov(output_cov)
        self.lam = hyperparameter(name, lam, check_nonnegative)
        self.rcond = optional_rcond(rcond)

    def __check_init__(self):
        if self.output_cov is not None:
            check_covariance("output_cov", self.output_cov, definite=True)

    @property
    def damping(self):
        """The old name of lambda (Bernacchia et al. 2018, eq. 20)."""
        return concrete_or_traced(self.lam)

    def __call__(self, t, weights: Weights, task: Task) -> Weights:
        check_field_inputs(weights, task)
        pre, suf = prefix_products(weights), suffix_products(weights)
        nd = weights[-1].shape[0]
        if self.output_cov is not None and tuple(self.output_cov.shape) != (nd, nd):
            raise ValueError(
                f"output_cov must be ({nd}, {nd}) to match the net's output width {nd}, "
                f"got {tuple(self.output_cov.shape)}"
            )
        precision = jnp.eye(nd, dtype=task.teacher.dtype) if self.output_cov is None else inv(self.output_cov)
        delta = network_map(weights) - task.teacher
        shift = jnp.sqrt(self.lam)  # sqrt(lambda) on each covariance (Bernacchia et al. 2018, eq. 20)
        d = len(weights)

        def by_eigh():
            out = []
            for a, b in zip(pre, suf, strict=True):
                err_cov = b.T @ precision @ b
                act_cov = a @ task.input_cov @ a.T
                cross = b.T @ precision @ delta @ task.input_cov @ a.T
                out.append(-layer_natural_gradient(err_cov, cross, act_cov, shift, self.rcond) / d)
            return tuple(out)

        if not all_square(weights):
            return by_eigh()
        # lambda = 0 on square layers: (W_>i^T P W_>i)^+ W_>i^T P (W - W*) Sigma W_<i^T (W_<i Sigma W_<i^T)^+
        # is W_>i^-1 (W - W*) W_<i^-1 whenever nothing is cut (see BlockDiagonalGaussNewton)
        return choose(
            self.lam == 0.0,
            lambda: self._by_inverses_if_safe(weights, task, delta, precision, by_eigh),
            by_eigh,
        )

    def _by_inverses_if_safe(self, weights, task, delta, precision, by_eigh):
        pre, suf = prefix_products(weights), suffix_products(weights)
        d = len(weights)
        fas = [a @ task.input_cov_sqrt for a in pre]
        left, right, cond_b, cond_a = square_path_conditions(weights, task, suf, fas)
        if self.output_cov is not None:
            out_cov = jnp.asarray(self.output_cov, precision.dtype)
            cond_p = condition_estimate(precision[None], out_cov[None])[0]
        else:
            cond_p = 1.0
        widths = [w.shape[1] for w in weights] + [weights[-1].shape[0]]
        # the eigenvalues of <e e^T> (n_i) and <x x^T> (n_{i-1}) are cut as in layer_natural_gradient
        rc_err = jnp.stack([jnp.asarray(factor_rcond(n, delta.dtype, self.rcond)) for n in widths[1:]])
        rc_act = jnp.stack([jnp.asarray(factor_rcond(n, delta.dtype, self.rcond)) for n in widths[:-1]])
        safe = jnp.all((cond_p * cond_b**2 * rc_err < _CUTOFF_MARGIN) & (cond_a**2 * rc_act < _CUTOFF_MARGIN))

        def by_inverses():
            return tuple(-(lb @ delta @ ra) / d for lb, ra in zip(left, right, strict=True))

        return choose(jax.lax.stop_gradient(safe), by_inverses, by_eigh)


@dataclass(frozen=True)
class RuleInfo:
    name: str
    summary: str
    reference: str


RULES: dict[str, RuleInfo] = {
    r.name: r
    for r in [
        RuleInfo("sgd", "gradient flow, -g", "Huh 2020, eqs. 5-6"),
        RuleInfo("ngd", "natural gradient, -(H+)^+ g (minimum-norm pseudo-inverse)", "Huh 2020, eqs. 9-12"),
        RuleInfo("qngd", "fractional NGD, -((H+)^+)^(1/q) g; needs q >= 1 (inf = sgd)", "Huh 2020, eq. 14"),
        RuleInfo("sqrt-ngd", "fractional NGD with q = 2, -((H+)^+)^(1/2) g", "Huh 2020, eqs. 14-16"),
        RuleInfo("ngd-d", "block-diagonal NGD, -(1/d) (H_ii)^+ g_i per layer", "Huh 2020, eqs. 23-24"),
        RuleInfo(
            "sqrt-ngd-d", "block-diagonal sqrt-NGD, -d^(-1/2) ((H_ii)^+)^(1/2) g_i", "Huh 2020, eqs. 25-26"
        ),
        RuleInfo(
            "qngd-d", "block-diagonal q-NGD, -d^(-1/q) ((H_ii)^+)^(1/q) g_i; needs q >= 1", "Huh 2020, eq. 25"
        ),
        RuleInfo(
            "damped-ngd", "damped NGD, -(eps+1)(eps I + H+)^-1 g; needs eps >= 0", "Huh 2020, eqs. 17-18"
        ),
        RuleInfo(
            "bernacchia",
            "per-layer NG from error and activation covariances",
            "Bernacchia et al. 2018, eq. 10",
        ),
    ]
}


def vector_field(
    rule: str,
    *,
    q: float | None = None,
    eps: float | None = None,
    rcond: float | None = None,
    output_cov=None,
    lam: float | None = None,
    damping: float | None = None,
    method: str | None = None,
) -> eqx.Module:
    """The learning rule ``rule`` as a diffrax vector field ``f(t, weights, task)``.

    Args:
        rule: one of ``dlnsim.RULES`` (see ``dlnsim rules``).
        q: the fractional power for ``"qngd"`` and ``"qngd-d"`` (q >= 1, ``inf`` allowed).
        eps: the damping eps of ``"damped-ngd"`` (Huh 2020, eq. 17; eps >= 0, eps = 0 is NGD).
        rcond: relative rank cutoff of the pseudo-inverse (default 10 * size * machine eps).
        output_cov, lam: options of ``"bernacchia"``: the output noise covariance Sigma~ and the
            Levenberg-Marquardt damping lambda (Bernacchia et al. 2018, eq. 20); ``damping`` is
            lambda's old name.
        method: how the full rules (ngd, qngd, sqrt-ngd, damped-ngd) apply the exact curvature:
            ``"auto"`` (default), ``"dense"``, ``"krylov"`` or ``"balanced"`` (see :class:`GaussNewton`).

    q, eps, lambda and rcond become array leaves of the field: a new value reuses a compiled
    program, and they may be traced (``jax.vmap`` over them; traced values are not checked).
    """
    if not isinstance(rule, str):
        raise TypeError(f"rule must be a rule name (one of {', '.join(RULES)}), got {type(rule).__name__}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if q is not None and rule not in ("qngd", "qngd-d"):
        raise ValueError(f"q applies only to the rules qngd and qngd-d, not {rule!r}")
    if rule in ("qngd", "qngd-d") and q is None:
        raise ValueError(f"rule {rule!r} needs q >= 1 (q=1 is NGD, q=2 sqrt-NGD, q=inf SGD)")
    if eps is not None and rule != "damped-ngd":
        raise ValueError(f"eps applies only to the rule damped-ngd, not {rule!r}")
    if lam is not None and damping is not None:
        raise ValueError("give bernacchia's lambda once: lam (or its old name damping), not both")
    if (output_cov is not None or lam is not None or damping is not None) and rule != "bernacchia":
        raise ValueError(f"output_cov and damping apply only to the rule bernacchia, not {rule!r}")
    if method is not None and (rule in ("sgd", "bernacchia") or rule.endswith("-d")):
        raise ValueError(
            f"method applies only to the full rules ngd, qngd, sqrt-ngd and damped-ngd, not {rule!r}"
        )
    if q is not None:
        q = q_leaf(q)
    rcond = optional_rcond(rcond)
    if method is not None and (not isinstance(method, str) or method not in CURVATURE_METHODS):
        raise ValueError(f"unknown curvature method {method!r}; choose one of {', '.join(CURVATURE_METHODS)}")
    if rule == "sgd":
        return GradientFlow()
    if rule == "bernacchia":
        if damping is not None:
            return BernacchiaFlow(output_cov, rcond=rcond, damping=damping)
        return BernacchiaFlow(output_cov, 0.0 if lam is None else lam, rcond)
    if rule.endswith("-d"):
        curvature, base = BlockDiagonalGaussNewton(rcond=rcond), rule[:-2]
    else:
        curvature, base = GaussNewton(rcond=rcond, method=method or "auto"), rule
    if base == "damped-ngd":
        eps = 0.0 if eps is None else hyperparameter("eps", eps, check_nonnegative)
        return NaturalGradientFlow(curvature, 1.0, eps)
    power = {"ngd": 1.0, "sqrt-ngd": 2.0}.get(base, q)
    return NaturalGradientFlow(curvature, power)


def rule_q(rule: str, q: float | None = None) -> float:
    """The curvature power q of a named rule (inf for sgd; 1 for ngd, ngd-d, damped-ngd, bernacchia)."""
    if rule == "sgd":
        return math.inf
    if rule in ("qngd", "qngd-d"):
        return check_q(q)
    return 2.0 if rule.startswith("sqrt-ngd") else 1.0


__all__ = [
    "GradientFlow",
    "NaturalGradientFlow",
    "BernacchiaFlow",
    "RULES",
    "vector_field",
]
