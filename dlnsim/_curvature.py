"""Curvature of deep linear nets: the exact Gauss-Newton matrix H+ and its strategies.

Notation (Huh 2020, sec. 2): W_<i = W_{i-1}...W_1, W_>i = W_d...W_{i+1}, Sigma = Sigma_x and the
whitened Jacobian J: dtheta -> sum_i W_>i dW_i W_<i Sigma^(1/2). Then H+ = J^T J (Huh 2020, eq. 3;
Bernacchia et al. 2018, eq. 22 with unit output noise) and the gradient is g = J^T r with the
whitened residual r = (W - W*) Sigma^(1/2). The P x P matrix H+ is never formed here.

Every curvature implements the one interface of :class:`AbstractCurvature` (``_apply``, with
``precondition`` and ``normalized_precondition`` built on it): the exact H+ by three strategies,
:class:`DenseGaussNewton`, :class:`KrylovGaussNewton` and :class:`BalancedGaussNewton`, with
:class:`GaussNewton` choosing among them (``method="auto"``, or a name); and the layer-wise
:class:`BlockDiagonalGaussNewton` and Bernacchia et al. 2018's covariance form
:class:`CovarianceCurvature` (``dlnsim._block_curvature``). Their hyperparameters (rcond; the
power and damping they are applied with) are array leaves (``dlnsim._curvature_base``).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp

from ._block_curvature import (
    BlockDiagonalGaussNewton,
    CovarianceCurvature,
    condition_estimate,
    layer_inverse_chains,
    spectral_norm_estimate,
    square_path_conditions,
)
from ._checks import check_integer, check_positive
from ._curvature_base import (
    AbstractCurvature,
    all_square,
    choose,
    is_traced,
    loss_gradient,
    normalized_shift,
)
from ._krylov import krylov_apply
from ._linalg import psd_function_apply, spectral_power, svd
from ._models import Weights, as_weights, network_map, prefix_products, suffix_products
from ._tasks import Task

CURVATURE_METHODS = ("auto", "dense", "krylov", "balanced")


def structurally_full_rank(widths) -> bool:
    """Whether K = J J^T is non-singular for generic weights of these widths.

    J's range is a sum of the subspaces col(W_>i) (x) row(W_<i Sigma^(1/2)); it is everything iff
    some layer i has every later width n_i..n_{d-1} >= n_d and every earlier width n_1..n_{i-1}
    >= n_0. Bottlenecks narrower than both ends make K singular.
    """
    n0, nd, d = widths[0], widths[-1], len(widths) - 1
    return any(
        min(widths[i:d], default=nd) >= nd and min(widths[1:i], default=n0) >= n0 for i in range(1, d + 1)
    )


def check_krylov_widths(widths, option: str, alternative: str) -> None:
    """Raises a one-line ValueError naming ``option`` unless K is generically non-singular."""
    if not structurally_full_rank(widths):
        raise ValueError(
            f"{option} needs widths for which K = J J^T is non-singular; {list(widths)} has a "
            f"bottleneck narrower than both ends: use {alternative}"
        )


def _imbalance(weights: Weights):
    """max_i ||W_{i+1}^T W_{i+1} - W_i W_i^T||_F / ||W_i W_i^T||_F (0 for balanced nets)."""
    out = jnp.zeros((), weights[0].dtype)
    for lo, hi in zip(weights[:-1], weights[1:], strict=True):
        gram = lo @ lo.T
        num = jnp.linalg.norm(hi.T @ hi - gram)
        out = jnp.maximum(out, num / jnp.maximum(jnp.linalg.norm(gram), jnp.finfo(gram.dtype).tiny))
    return out


def imbalance(weights) -> float:
    """How far the weights are from balanced, max_i ||W_{i+1}^T W_{i+1} - W_i W_i^T|| / ||W_i W_i^T||.

    The conservation law (Huh 2020, eq. 4) keeps it constant under the full rules, so a net that
    starts balanced stays balanced, and ``GaussNewton(method="balanced")`` stays exact.
    """
    return float(_imbalance(as_weights(weights)))


class AbstractGaussNewton(AbstractCurvature):
    """The exact Gauss-Newton matrix H+ = J^T J (Huh 2020, eq. 3), applied through map space.

    Since g = J^T r, (H+ + eps I)^(-s) g = J^T (K + eps I)^(-s) r with the map-space Gram matrix
    K = J J^T = sum_i B_i (x) A_i, B_i = W_>i W_>i^T and A_i = Sigma^(1/2) W_<i^T W_<i Sigma^(1/2),
    of size n_d n_0 (push-through identity; pseudo-inverse powers at eps = 0, as H+ and K share
    their non-zero spectrum). K acts on a map X as sum_i B_i X A_i in O(d n^3). A strategy
    implements ``_map_apply``, (scale K + damping)^(-power) r; all give the same pseudo-inverse
    power and differ in cost.
    """

    def gram_matrix(self, weights: Weights, task: Task):
        """K = sum_i B_i (x) A_i in row-major vec ordering, so K vec(X) = vec(sum_i B_i X A_i)."""
        pre, suf = prefix_products(weights), suffix_products(weights)
        return _gram(suf, [a @ task.input_cov_sqrt for a in pre])

    @abc.abstractmethod
    def resolved_method(self, widths, power: float = 1.0) -> str:
        """The strategy's name (``"dense"``, ``"krylov"`` or ``"balanced"``) at these widths and power."""

    @abc.abstractmethod
    def _map_apply(self, space: MapSpace, power, damping, scale):
        """(scale K + damping)^(-power) r in map space (see :class:`MapSpace`)."""

    def matrix_free(self, widths, power) -> bool:
        return self.resolved_method(tuple(widths), float(power)) == "krylov"

    def _apply(self, weights, task, power, damping, scale):
        """(scale K + damping)^(-power) r pushed through J^T: with scale = 1 / (1 + eps) and
        damping = eps / (1 + eps) the normalized damped update."""
        pre, suf = prefix_products(weights), suffix_products(weights)
        fas = [a @ task.input_cov_sqrt for a in pre]
        w = network_map(weights)
        residual = task.whitened_residual(w)
        widths = (weights[0].shape[1],) + tuple(v.shape[0] for v in weights)
        rcond = self._rcond(widths[0] * widths[-1], residual.dtype)
        space = MapSpace(widths, suf, fas, w @ task.input_cov_sqrt, residual, rcond)
        x = self._map_apply(space, power, damping, scale)
        return tuple(b.T @ x @ fa.T for fa, b in zip(fas, suf, strict=True))


class MapSpace(eqx.Module):
    """What the exact strategies share for one state: the widths, W_>i (``suf``), W_<i Sigma^(1/2)
    (``fas``), the whitened map W Sigma^(1/2), the whitened residual r and the rank cutoff."""

    widths: tuple[int, ...] = eqx.field(static=True)
    suf: list
    fas: list
    whitened_map: jnp.ndarray
    residual: jnp.ndarray
    rcond: jnp.ndarray | float


def _gram(suf, fas):
    k = 0.0
    for fa, b in zip(fas, suf, strict=True):
        k = k + jnp.kron(b @ b.T, fa.T @ fa)
    return k


class DenseGaussNewton(AbstractGaussNewton):
    """Exact H+ by eigh of K, O((n_d n_0)^3). Derivatives use divided differences
    (Daleckii-Krein), so they stay finite at repeated eigenvalues (orthogonal init)."""

    def resolved_method(self, widths, power: float = 1.0) -> str:
        return "dense"

    def _map_apply(self, space, power, damping, scale):
        gram = scale * _gram(space.suf, space.fas)
        r = space.residual
        return psd_function_apply(gram, r.reshape(-1), power, damping, space.rcond).reshape(r.shape)


class BalancedGaussNewton(AbstractGaussNewton):
    """Exact H+ in closed form for balanced weights (W_{i+1}^T W_{i+1} = W_i W_i^T) with
    Sigma_x = I, where K is diagonal in the singular bases of W with eigenvalues
    sum_i s_a^(2(d-i)/d) s_b^(2(i-1)/d) (Huh 2020, eqs. 12-14). One SVD. It is wrong for
    unbalanced weights or a non-white Sigma_x; check with :func:`imbalance`."""

    def resolved_method(self, widths, power: float = 1.0) -> str:
        return "balanced"

    def _map_apply(self, space, power, damping, scale):
        return _balanced_apply(
            space.whitened_map, space.residual, len(space.suf), power, damping, space.rcond, scale
        )


class KrylovGaussNewton(AbstractGaussNewton):
    """Exact H+ applied matrix-free (``dlnsim._krylov``). Power 1 (NGD, damped NGD) is one
    preconditioned CG solve (lineax) of (K + eps) X = r; fractional powers 0 < 1/q < 1 use a
    trapezoid rule for sin(pi s)/pi * int_0^inf t^(-s) (K + eps + t)^(-1) dt in log t (error
    ~ exp(-2 pi^2 / h)), each node a warm-started PCG solve. It needs widths for which K is
    generically non-singular (:func:`structurally_full_rank`).

    The power stays an array (q may be traced): the quadrature runs over a static number of nodes
    and skips the unneeded ones. A CG solve that does not converge within ``max_cg_steps``
    raises; reverse-mode derivatives work under ``jit``.
    """

    cg_rtol: float | None = eqx.field(default=None, static=True, kw_only=True)
    max_cg_steps: int = eqx.field(default=1000, static=True, kw_only=True)
    quadrature_step: float | None = eqx.field(default=None, static=True, kw_only=True)

    def __check_init__(self):
        _check_krylov_options(self.cg_rtol, self.max_cg_steps, self.quadrature_step)

    def resolved_method(self, widths, power: float = 1.0) -> str:
        return "krylov"

    def _map_apply(self, space, power, damping, scale, active=True):
        check_krylov_widths(space.widths, "method='krylov'", "method='dense' (or 'auto')")
        if not is_traced(power) and float(power) > 1.0:
            raise ValueError(
                f"method='krylov' applies powers 0 < power <= 1 (q >= 1), got power={float(power)}"
            )
        return krylov_apply(
            space.whitened_map, space.suf, space.fas, space.residual, power=power, damping=damping,
            scale=scale, rcond=space.rcond, cg_rtol=self.cg_rtol, max_steps=self.max_cg_steps,
            step=self.quadrature_step, active=active,
        )  # fmt: skip


def _check_krylov_options(cg_rtol, max_cg_steps, quadrature_step) -> None:
    if cg_rtol is not None:
        check_positive("cg_rtol", cg_rtol)
    check_integer("max_cg_steps", max_cg_steps, 1)
    if quadrature_step is not None:
        check_positive("quadrature_step", quadrature_step)


DENSE_MAX_SIZE = 256  # n_d n_0 up to which "auto" takes the dense eigh of K


class GaussNewton(AbstractGaussNewton):
    """The exact H+ (Huh 2020, eq. 3) by a named strategy: ``method`` is ``"dense"``
    (:class:`DenseGaussNewton`), ``"krylov"`` (:class:`KrylovGaussNewton`), ``"balanced"``
    (:class:`BalancedGaussNewton`) or ``"auto"`` (default): dense when n_d n_0 <=
    ``dense_max_size`` (default :data:`DENSE_MAX_SIZE`, 256) or K is structurally singular,
    else krylov, for every power. (For power 1 one CG solve is cheaper than eigh from about 64
    on, but along an NGD run at n = 16, d = 4 from xavier x 0.5 weights toward a rank-3 teacher
    the CG stopped at max_cg_steps short of its tolerance once the map neared the low-rank
    teacher, where eigh stays exact; the same method for every power also keeps one strategy
    per net, so ``vmap`` over q runs one code path.)
    """

    method: str = eqx.field(default="auto", static=True, kw_only=True)
    dense_max_size: int | None = eqx.field(default=None, static=True, kw_only=True)
    cg_rtol: float | None = eqx.field(default=None, static=True, kw_only=True)
    max_cg_steps: int = eqx.field(default=1000, static=True, kw_only=True)
    quadrature_step: float | None = eqx.field(default=None, static=True, kw_only=True)

    def __check_init__(self):
        if not isinstance(self.method, str) or self.method not in CURVATURE_METHODS:
            raise ValueError(
                f"unknown curvature method {self.method!r}; choose one of {', '.join(CURVATURE_METHODS)}"
            )
        if self.dense_max_size is not None:
            check_integer("dense_max_size", self.dense_max_size, 0)
        _check_krylov_options(self.cg_rtol, self.max_cg_steps, self.quadrature_step)

    def strategy(self, method: str) -> AbstractGaussNewton:
        """The strategy object for ``"dense"``, ``"krylov"`` or ``"balanced"``, with this rcond
        and these Krylov options."""
        if method == "dense":
            return DenseGaussNewton(rcond=self.rcond)
        if method == "balanced":
            return BalancedGaussNewton(rcond=self.rcond)
        return KrylovGaussNewton(
            rcond=self.rcond, cg_rtol=self.cg_rtol, max_cg_steps=self.max_cg_steps,
            quadrature_step=self.quadrature_step,
        )  # fmt: skip

    def _auto(self, widths) -> tuple[str, str]:
        """The methods for (power 1, fractional powers) at these widths."""
        if self.method != "auto":
            return self.method, self.method
        if not structurally_full_rank(widths):
            return "dense", "dense"
        size = widths[0] * widths[-1]
        if self.dense_max_size is not None:
            method = "dense" if size <= self.dense_max_size else "krylov"
            return method, method
        method = "dense" if size <= DENSE_MAX_SIZE else "krylov"
        return method, method

    def resolved_method(self, widths, power: float = 1.0) -> str:
        """The method ``"auto"`` picks for nets of these widths and this curvature power."""
        for_ngd, fractional = self._auto(tuple(widths))
        return for_ngd if power == 1.0 else fractional

    def _map_apply(self, space, power, damping, scale):
        for_ngd, fractional = self._auto(space.widths)
        if for_ngd == fractional:
            return self.strategy(for_ngd)._map_apply(space, power, damping, scale)
        is_ngd = power == 1.0

        def branch(method, active):
            strategy = self.strategy(method)
            if isinstance(strategy, KrylovGaussNewton):  # under vmap both branches run: its CG
                return strategy._map_apply(
                    space, power, damping, scale, active=active
                )  # checks only where used
            return strategy._map_apply(space, power, damping, scale)

        return choose(
            is_ngd, lambda: branch(for_ngd, is_ngd), lambda: branch(fractional, jnp.logical_not(is_ngd))
        )


def _balanced_apply(whitened_map, residual, depth, power, damping, rcond, scale):
    u, sv, vt = svd(whitened_map, full_matrices=True)
    nd, n0 = whitened_map.shape
    sa = jnp.zeros(nd, sv.dtype).at[: sv.shape[0]].set(sv)
    sb = jnp.zeros(n0, sv.dtype).at[: sv.shape[0]].set(sv)
    lam = 0.0
    for i in range(1, depth + 1):
        lam = lam + _pow0(sa, 2.0 * (depth - i) / depth)[:, None] * _pow0(sb, 2.0 * (i - 1) / depth)[None, :]
    f = spectral_power(scale * lam, power=power, damping=damping, rcond=rcond)
    return u @ (f * (u.T @ residual @ vt.T)) @ vt


def _pow0(x, e):
    """x**e with 0**0 = 1 (the identity factors B_d and A_1); e is static (depth only)."""
    if e == 0:
        return jnp.ones_like(x)
    return jnp.where(x > 0, jnp.where(x > 0, x, 1.0) ** e, 0.0)


__all__ = [
    "AbstractCurvature",
    "AbstractGaussNewton",
    "BalancedGaussNewton",
    "BlockDiagonalGaussNewton",
    "CovarianceCurvature",
    "CURVATURE_METHODS",
    "DenseGaussNewton",
    "GaussNewton",
    "KrylovGaussNewton",
    "MapSpace",
    "all_square",
    "check_krylov_widths",
    "choose",
    "condition_estimate",
    "imbalance",
    "layer_inverse_chains",
    "loss_gradient",
    "normalized_shift",
    "spectral_norm_estimate",
    "square_path_conditions",
    "structurally_full_rank",
]
