"""Exact singular-mode theory of curvature-corrected learning (Huh 2020, secs. 3.1-3.3, S.I.2-S.I.3).

Notation: a singular mode of a depth-d net has per-layer singular values sigma_1..sigma_d, map
strength sigma = prod_i sigma_i, coupling j_i = d sigma / d sigma_i = prod_{k != i} sigma_k and
displacement sigma_Delta = sigma - sigma*.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

from ._checks import (
    as_real_array,
    check_depth,
    check_finite,
    check_integer,
    check_nonnegative,
    check_positive,
    check_q,
)
from ._curvature import AbstractGaussNewton, BlockDiagonalGaussNewton, loss_gradient
from ._curvature_base import PowerAndEps, hyperparameter, q_leaf
from ._models import DeepLinearNet, network_map
from ._rules import BernacchiaFlow, GradientFlow, NaturalGradientFlow, vector_field
from ._tasks import Task, random_teacher

# ---------------------------------------------------------------------------------------------
# Stiffness, effective depth and scaling exponents


def stiffness(depth: int, q: float) -> float:
    """p = 2(d-1)(q-1)/(dq), the stiffness of the balanced map dynamics (Huh 2020, eq. 21).

    q = inf (SGD) gives 2(d-1)/d; q = 1 (NGD) gives 0; q = 2 (sqrt-NGD) gives 1 - 1/d.
    """
    d, q = check_depth(depth), check_q(q)
    if math.isinf(q):
        return 2.0 * (d - 1) / d
    return 2.0 * (d - 1) * (q - 1) / (d * q)


def effective_depth(depth: int, q: float) -> float:
    """d_eff = dq/(d+q-1), the SGD depth with the same stiffness (Huh 2020, eq. 22); d at q = inf."""
    d, q = check_depth(depth), check_q(q)
    if math.isinf(q):
        return float(d)
    return d * q / (d + q - 1)


def calibrated_learning_rate(depth: int, q: float, eta: float = 1.0) -> float:
    """eta~ = eta d^(1-1/q), the depth-calibrated rate of the balanced map dynamics (Huh 2020, eq. 21)."""
    d, q = check_depth(depth), check_q(q)
    return eta * d ** (1.0 - (0.0 if math.isinf(q) else 1.0 / q))


def scaling_exponents(depth: int, q: float) -> dict[str, float]:
    """Exponents of the scaling laws in the overall weight scale a (Huh 2020, S.I.16-S.I.17).

    ``update``: ||dtheta/dt|| / sqrt(L) ~ a^((d-1)(1-2/q)); ``loss_rate``: |dL/dt| / L ~
    a^((d-1)(2-2/q)). Exact for balanced weights whose modes share one coupling strength.
    """
    d, q = check_depth(depth), check_q(q)
    inv = 0.0 if math.isinf(q) else 1.0 / q
    return {"update": (d - 1) * (1 - 2 * inv), "loss_rate": (d - 1) * (2 - 2 * inv)}


def learning_time_exponent(depth: int, q: float) -> float:
    """The learning time of a mode scales as (sigma*)^(-p) (Huh 2020, sec. 3.2): returns -p."""
    return -stiffness(depth, q)


# ---------------------------------------------------------------------------------------------
# Singular-mode vector fields


def _exclusive_products(sigmas):
    """j_i = prod_{k != i} sigma_k along axis 0, without dividing (sigma_i may be 0)."""
    ones = jnp.ones_like(sigmas[:1])
    left = jnp.concatenate([ones, jnp.cumprod(sigmas[:-1], axis=0)], axis=0)
    right = jnp.flip(jnp.concatenate([ones, jnp.cumprod(jnp.flip(sigmas, 0)[:-1], axis=0)], axis=0), 0)
    return left * right


class ModeVectorField(PowerAndEps):
    """d sigma_i / dt for one singular mode (or a batch of modes along trailing axes).

    Full rules (Huh 2020, eqs. 6, 12, 14): sigma_i' = -eta lambda^(1-1/q) sigma_Delta j_i / ||j||^(2/q).
    Block-diagonal rules with the d^(-1/q) calibration (Huh 2020, eqs. 24-26):
    sigma_i' = -eta lambda^(1-1/q) d^(-1/q) sigma_Delta sign(j_i) |j_i|^(1-2/q).
    lambda is the mode's input-covariance eigenvalue (1 for whitened inputs). With eps the
    mode's curvature c (lambda ||j||^2, or d lambda j_i^2 per block) enters as
    (1+eps)^(1/q) lambda sigma_Delta j_i (c + eps)^(-1/q); q = 1 is damped NGD (Huh 2020, eq. 18).

    Call as ``f(t, sigmas, args)`` with ``sigmas`` of shape (d,) or (d, modes) and ``args`` either
    sigma* or a tuple ``(sigma*, lambda)``, broadcast against the trailing axes. Where the
    curvature vanishes the pseudo-inverse gives 0, as in the full-matrix rules.
    """

    power: Float[Array, ""]
    block_diagonal: bool = eqx.field(static=True)
    learning_rate: Float[Array, ""]
    eps: Float[Array, ""]

    def __init__(self, q=1.0, block_diagonal: bool = False, learning_rate=1.0, eps=0.0, *, damping=None):
        if damping is not None:  # the old keyword for eps
            eps = damping
        self.power = 1.0 / q_leaf(q)
        self.block_diagonal = bool(block_diagonal)
        self.learning_rate = hyperparameter("learning_rate", learning_rate, check_positive)
        self.eps = hyperparameter("eps (damping)", eps, check_nonnegative)

    def __call__(self, t, sigmas, args):
        check_finite("sigmas", sigmas)  # concrete calls only; skipped under a JAX trace
        sigma_star, lam = args if isinstance(args, tuple) else (args, 1.0)
        lam = jnp.asarray(lam)
        d = sigmas.shape[0]
        j = _exclusive_products(sigmas)
        drive = self.learning_rate * lam * (jnp.prod(sigmas, axis=0) - sigma_star) * j
        if self.block_diagonal:
            curvature = d * lam * j**2
        else:
            curvature = jnp.broadcast_to(lam * jnp.sum(j**2, axis=0), j.shape)
        # ((c + eps) / (1 + eps))^(-1/q) = (1 + eps)^(1/q) (c + eps)^(-1/q): exact as eps -> inf,
        # where it tends to 1 (SGD); 0 where it vanishes (the pseudo-inverse, also for an eps so
        # small that it is flushed to zero). SGD (power 0) gives 1 wherever drive is nonzero.
        shifted = curvature / (1.0 + self.eps) + self.eps / (1.0 + self.eps)
        safe = jnp.where(shifted > 0, shifted, 1.0)
        factor = jnp.where(shifted > 0, safe ** (-self.power), 0.0)
        return -drive * factor


def mode_vector_field(
    q: float, block_diagonal: bool = False, *, learning_rate: float = 1.0, eps: float = 0.0, damping=None
) -> ModeVectorField:
    """The singular-mode ODE of q-NGD (``block_diagonal=True``: q-NGD-d) as a diffrax vector field.

    q = 1 is NGD / NGD-d, q = 2 sqrt-NGD / sqrt-NGD-d, q = inf SGD (Huh 2020, eqs. 6, 12, 14, 24-26);
    ``eps`` (old name ``damping``) with q = 1 is damped NGD (Huh 2020, eq. 18). q, learning_rate
    and eps are array leaves: new values reuse a compiled solve, and ``jax.vmap`` maps over them.
    """
    return ModeVectorField(q, block_diagonal, learning_rate=learning_rate, eps=eps, damping=damping)


def mode_field_of(rule) -> ModeVectorField:
    """The singular-mode ODE that a full-matrix rule reduces to on aligned nets.

    Accepts a rule name or a vector field from :func:`dlnsim.vector_field`. Raises ValueError for
    fields without a singular-mode reduction (a custom field, or bernacchia with output noise or
    damping).
    """
    field = vector_field(rule) if isinstance(rule, str) else rule
    if isinstance(field, GradientFlow):
        return ModeVectorField(math.inf)
    if isinstance(field, NaturalGradientFlow):
        if isinstance(field.curvature, AbstractGaussNewton | BlockDiagonalGaussNewton):
            block = isinstance(field.curvature, BlockDiagonalGaussNewton)
            if block and not field.curvature.depth_calibrated:
                raise ValueError("the mode reduction assumes the depth-calibrated block-diagonal curvature")
            return eqx.tree_at(lambda f: f.power, ModeVectorField(1.0, block, eps=field.eps), field.power)
    if isinstance(field, BernacchiaFlow) and field.output_cov is None and field.damping == 0.0:
        return ModeVectorField(1.0, True)
    raise ValueError(f"{type(field).__name__} has no singular-mode reduction")


def mode_invariants(sigmas, q: float, block_diagonal: bool = False):
    """Constants of motion between adjacent layers, shape (d-1, ...).

    Full rules: sigma_i^2 - sigma_{i+1}^2 (hyperbolic paths, Huh 2020, eq. 7). Block rules:
    sigma_i^a - sigma_{i+1}^a with a = 2(1-1/q) (Huh 2020, eq. 25); for NGD-d (a = 0) the ratio
    sigma_i / sigma_{i+1}.
    """
    s = as_real_array("sigmas", sigmas)
    q = check_q(q)
    if s.ndim < 1:
        raise ValueError(f"sigmas must have the layers along axis 0, shape (d, ...), got shape {s.shape}")
    if not block_diagonal:
        return s[:-1] ** 2 - s[1:] ** 2
    a = 2.0 * (1.0 - (0.0 if math.isinf(q) else 1.0 / q))
    if a == 0.0:
        return s[:-1] / s[1:]
    return jnp.abs(s[:-1]) ** a - jnp.abs(s[1:]) ** a


# ---------------------------------------------------------------------------------------------
# Balanced map dynamics: sigma' = -eta~ (sigma - sigma*) sigma^p  (Huh 2020, eq. 21)

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)
_SERIES_TERMS = 64
_LN2 = math.log(2.0)


def _series_difference(a, b, eps):
    """S(b) - S(a) for S(u) = sum_n u^(n+eps)/(n+eps), the antiderivative of u^(-p)/(1-u), eps = 1-p.

    Valid for 0 <= a <= b <= 1/2; the n = 0 term is evaluated without cancellation.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if eps == 0.0:
            first = np.log(b / a)
        else:
            ratio_term = np.where(
                a > 0, a**eps * np.expm1(eps * np.log(b / np.where(a > 0, a, 1.0))) / eps, 0.0
            )
            first = np.where(a > 0, ratio_term, b**eps / eps)
    n = np.arange(1, _SERIES_TERMS)[:, None]
    rest = np.sum((b.ravel() ** (n + eps) - a.ravel() ** (n + eps)) / (n + eps), axis=0).reshape(b.shape)
    return first + rest


class _CumulativeQuadrature:
    """F(x) = int_lo^x f for x in [lo, hi], by composite 16-point Gauss-Legendre panels of width h."""

    def __init__(self, f, lo: float, hi: float, h: float = 0.25):
        self.f, self.lo, self.h = f, lo, h
        n = max(1, math.ceil((hi - lo) / h))
        self.hi = lo + n * h
        edges = lo + h * np.arange(n)
        x = edges[:, None] + 0.5 * h * (_GL_NODES[None, :] + 1.0)
        panel = 0.5 * h * (f(x) @ _GL_WEIGHTS)
        self.cum = np.concatenate([[0.0], np.cumsum(panel)])

    def __call__(self, x):
        x = np.clip(np.asarray(x, dtype=float), self.lo, self.hi)
        k = np.minimum(((x - self.lo) // self.h).astype(int), self.cum.size - 2)
        start = self.lo + k * self.h
        half = 0.5 * (x - start)
        nodes = start[..., None] + half[..., None] * (_GL_NODES + 1.0)
        return self.cum[k] + half * (self.f(nodes) @ _GL_WEIGHTS)


def _growth_time(x0: float, p: float):
    """tau(x) = int_x0^x u^(-p)/(1-u) du for x0 <= x < 1, as a function of the logit of x."""
    eps = 1.0 - p
    # above u = 1/2, substitute z = -ln(1-u): the integrand becomes (1-e^-z)^(-p) = 1 + c(z)
    corr = _CumulativeQuadrature(lambda z: (-np.expm1(-z)) ** (-p) - 1.0, _LN2, _LN2 + 60.0)
    z0 = max(-math.log1p(-x0), _LN2) if x0 < 1 else _LN2
    below = float(_series_difference(x0, 0.5, eps)) if x0 < 0.5 else 0.0
    corr0 = corr(z0)

    def tau(zeta):
        zeta = np.asarray(zeta, dtype=float)
        with np.errstate(over="ignore"):
            x = 1.0 / (1.0 + np.exp(-zeta))
        z = np.logaddexp(0.0, zeta)  # -ln(1 - x), accurate as x -> 1
        low = _series_difference(np.full_like(x, x0), np.minimum(np.maximum(x, x0), 0.5), eps)
        high = (z - z0) + corr(z) - corr0
        return np.where(x <= 0.5, low, below + high)

    return tau


def _decay_time(x0: float, p: float):
    """tau(x) = int_x^x0 u^(-p)/(u-1) du for 1 < x <= x0, as a function of v = ln(x - 1)."""
    v0 = math.log(x0 - 1.0)
    lo = min(v0, 0.0) - 60.0
    corr = _CumulativeQuadrature(lambda v: (1.0 + np.exp(v)) ** (-p) - 1.0, lo, v0)
    corr0 = corr(v0)

    def tau(v):
        v = np.asarray(v, dtype=float)
        return (v0 - v) + corr0 - corr(v)

    return tau, v0


def _bisect(f, target, lo, hi, increasing: bool, iterations: int = 110):
    lo = np.broadcast_to(np.asarray(lo, dtype=float), target.shape).copy()
    hi = np.broadcast_to(np.asarray(hi, dtype=float), target.shape).copy()
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = f(mid) >= target
        if not increasing:
            above = ~above
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return 0.5 * (lo + hi)


def _check_balanced_args(depth, q, sigma_star, sigma0, eta):
    p = stiffness(depth, q)
    rate = calibrated_learning_rate(depth, q, check_positive("eta", eta))
    sigma_star = check_positive("sigma_star", sigma_star)
    sigma0 = check_nonnegative("sigma0", sigma0)
    return p, rate, sigma_star, sigma0


def balanced_map_time(sigma, *, depth: int, q: float, sigma_star: float, sigma0: float, eta: float = 1.0):
    """t(sigma) = int_sigma0^sigma d s / (eta~ (sigma* - s) s^p): the time the balanced map takes to
    go from sigma0 to sigma (Huh 2020, eq. 21, integrated exactly by quadrature, no ODE solve)."""
    p, rate, sigma_star, sigma0 = _check_balanced_args(depth, q, sigma_star, sigma0, eta)
    x = as_real_array("sigma", sigma, numpy=True) / sigma_star
    x0 = sigma0 / sigma_star
    scale = 1.0 / (rate * sigma_star**p)
    if x0 == 1.0:
        return np.where(x == 1.0, 0.0, np.inf)
    if x0 < 1.0:
        if np.any((x < x0) | (x >= 1.0)):
            raise ValueError("sigma must lie in [sigma0, sigma*) for a growing mode")
        if x0 == 0.0 and p >= 1.0:
            return np.where(x == 0.0, 0.0, np.inf)
        with np.errstate(divide="ignore"):
            zeta = np.log(x) - np.log1p(-x)
        return scale * _growth_time(x0, p)(zeta)
    if np.any((x > x0) | (x <= 1.0)):
        raise ValueError("sigma must lie in (sigma*, sigma0] for a decaying mode")
    tau, _ = _decay_time(x0, p)
    return scale * tau(np.log(x - 1.0))


def balanced_map_trajectory(t, *, depth: int, q: float, sigma_star: float, sigma0: float, eta: float = 1.0):
    """Exact sigma(t) of a balanced mode, sigma' = -eta~ (sigma - sigma*) sigma^p (Huh 2020, eq. 21).

    Closed forms for p = 0 (NGD), 1/2 (sqrt-NGD at d = 2) and 1 (SGD at d = 2), as in Huh 2020
    Fig. 2; any other p inverts t(sigma) (see :func:`balanced_map_time`) by bisection to machine
    precision. eta~ = eta d^(1-1/q). sigma0 = 0 with p < 1 returns the branch that escapes zero in
    finite time; with p >= 1 a mode at 0 stays at 0.
    """
    p, rate, sigma_star, sigma0 = _check_balanced_args(depth, q, sigma_star, sigma0, eta)
    t = as_real_array("t", t, numpy=True)
    if np.any(t < 0):
        raise ValueError("times t must be >= 0")
    if sigma0 == sigma_star:
        return np.full_like(t, sigma_star)
    if sigma0 == 0.0 and p >= 1.0:
        return np.zeros_like(t)
    if p == 0.0:
        return sigma_star + (sigma0 - sigma_star) * np.exp(-rate * t)
    if p == 1.0:
        return sigma_star / (1.0 + (sigma_star / sigma0 - 1.0) * np.exp(-rate * sigma_star * t))
    if p == 0.5:
        s, u0, c = math.sqrt(sigma_star), math.sqrt(sigma0), 0.5 * rate * math.sqrt(sigma_star)
        if u0 < s:
            return (s * np.tanh(c * t + math.atanh(u0 / s))) ** 2
        return (s / np.tanh(c * t + math.atanh(s / u0))) ** 2
    x0 = sigma0 / sigma_star
    target = t * rate * sigma_star**p
    if x0 < 1.0:
        tau = _growth_time(x0, p)
        lo = math.log(x0) - math.log1p(-x0) if x0 > 0 else -745.0
        zeta = _bisect(tau, target, lo, max(lo, 0.0) + target + 60.0, increasing=True)
        with np.errstate(over="ignore"):
            x = 1.0 / (1.0 + np.exp(-zeta))
    else:
        tau, v0 = _decay_time(x0, p)
        v = _bisect(tau, target, v0 - target - max(v0, 0.0) - 70.0, v0, increasing=False)
        x = 1.0 + np.exp(v)
    return sigma_star * x


def half_max_time(*, depth: int, q: float, sigma_star: float, sigma0: float = 0.0, eta: float = 1.0) -> float:
    """Time for a balanced mode to grow from sigma0 to sigma*/2 (Huh 2020, Fig. 2 half-max points).

    It scales as (sigma*)^(-p) at fixed sigma0/sigma* (or sigma0 = 0 with p < 1). Infinite when
    sigma0 = 0 and p >= 1 (the saddle is never left).
    """
    sigma_star = check_positive("sigma_star", sigma_star)
    if check_nonnegative("sigma0", sigma0) >= 0.5 * sigma_star:
        raise ValueError("half_max_time needs sigma0 < sigma*/2")
    return float(
        balanced_map_time(0.5 * sigma_star, depth=depth, q=q, sigma_star=sigma_star, sigma0=sigma0, eta=eta)
    )


def saxe_sgd_solution(t, *, sigma_star: float, sigma0: float, eta: float = 1.0):
    """Saxe et al. (2013)'s exact gradient-flow solution of a balanced mode of a d = 2 net:
    sigma(t) = sigma* e^(2 eta sigma* t) / (e^(2 eta sigma* t) - 1 + sigma*/sigma0)."""
    sigma_star, sigma0 = check_positive("sigma_star", sigma_star), check_positive("sigma0", sigma0)
    t = as_real_array("t", t, numpy=True)
    e = np.exp(2.0 * check_positive("eta", eta) * sigma_star * t)
    return sigma_star * e / (e - 1.0 + sigma_star / sigma0)


# ---------------------------------------------------------------------------------------------
# Aligned nets: frames and projections


def aligned_frames(weights, teacher) -> list[np.ndarray]:
    """The fixed singular frames L_0 = R*, L_1, ..., L_d = L* of an aligned net (Huh 2020, fn. 2).

    Hidden frames are read off the weights: L_i = W_i L_{i-1} / ||W_i L_{i-1}|| column-wise.
    Each frame has m = min(widths) orthonormal columns, one per mode.
    """
    ws = [np.asarray(w) for w in weights]
    modes = min([ws[0].shape[1]] + [w.shape[0] for w in ws])
    u, _, vt = np.linalg.svd(np.asarray(teacher), full_matrices=True)
    frames = [vt.T[:, :modes]]
    for w in ws[:-1]:
        m = w @ frames[-1]
        norms = np.linalg.norm(m, axis=0)
        frames.append(m / np.where(norms > 0, norms, 1.0))
    frames.append(u[:, :modes])
    return frames


def project_onto_modes(weights, frames) -> np.ndarray:
    """sigma_{i,k} = L_i[:, k]^T X_i L_{i-1}[:, k] for each layer i (rows) and mode k (columns).

    Works for weights or for their velocities, with optional leading time axes on each X_i.
    """
    return np.stack(
        [
            np.einsum("ik,...ij,jk->...k", frames[i + 1], np.asarray(x), frames[i])
            for i, x in enumerate(weights)
        ],
        axis=-2,
    )


def measure_scaling(
    rule,
    *,
    depth: int,
    scales,
    width: int = 6,
    init: str = "balanced",
    key=None,
) -> dict:
    """Measures the scaling laws of Huh 2020 S.I.16-S.I.17 with the full-matrix vector field.

    For each overall weight scale a, a net of the given width and depth (``init="balanced"``:
    every layer a times a fixed semi-orthogonal frame; ``"xavier"``: a times a fixed Xavier draw)
    learns a random full-rank teacher from whitened inputs. Returns the scales, the update size
    ||dtheta/dt|| / sqrt(L), the loss rate |dL/dt| / L (dL/dt = <g, dtheta/dt>) and the exponents
    fitted by least squares on log-log axes.
    """
    depth = check_depth(depth)
    if init not in ("balanced", "xavier"):
        raise ValueError(f"init must be 'balanced' or 'xavier' for scaling measurements, got {init!r}")
    width = check_integer("width", width)
    scales = as_real_array("scales", scales, numpy=True)
    if scales.ndim != 1 or scales.size < 2 or np.any(scales <= 0):
        raise ValueError("scales must be at least two positive numbers")
    key = jr.PRNGKey(0) if key is None else key
    k_net, k_task = jr.split(key)
    field = vector_field(rule) if isinstance(rule, str) else rule
    task = Task(random_teacher(k_task, width, width))
    base = DeepLinearNet((width,) * (depth + 1), key=k_net, init=init, scale=1.0).weights
    update, loss_rate = [], []
    for a in scales:
        weights = tuple(a * w for w in base)
        loss = float(task.loss(network_map(weights)))
        velocity = field(0.0, weights, task)
        grads = loss_gradient(weights, task)
        speed = math.sqrt(sum(float(jnp.sum(v**2)) for v in velocity))
        rate = -sum(float(jnp.sum(g * v)) for g, v in zip(grads, velocity, strict=True))
        update.append(speed / math.sqrt(loss))
        loss_rate.append(abs(rate) / loss)
    update, loss_rate = np.asarray(update), np.asarray(loss_rate)
    log_a = np.log(scales)
    return {
        "scales": scales,
        "update": update,
        "loss_rate": loss_rate,
        "update_exponent": float(np.polyfit(log_a, np.log(update), 1)[0]),
        "loss_rate_exponent": float(np.polyfit(log_a, np.log(loss_rate), 1)[0]),
    }
