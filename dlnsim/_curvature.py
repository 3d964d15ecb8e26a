"""Curvature of deep linear nets: the Gauss-Newton matrix H+ and its block-diagonal approximation.

A curvature object C acts on the loss gradient g as ``(C + damping I)^(-power) g``, with
Moore-Penrose (pseudo-inverse) semantics when ``damping = 0``. Rules in :mod:`dlnsim._rules`
compose any curvature with any power, so exact, block-diagonal and later approximations plug
into the same natural-gradient rule.

Notation (Huh 2020, sec. 2): W_<i = W_{i-1}...W_1, W_>i = W_d...W_{i+1}, Sigma = Sigma_x and the
whitened Jacobian J: dtheta -> sum_i W_>i dW_i W_<i Sigma^(1/2). Then H+ = J^T J (Huh 2020, eq. 3;
Bernacchia et al. 2018, eq. 22 with unit output noise) and the gradient is g = J^T r with the
whitened residual r = (W - W*) Sigma^(1/2). The P x P matrix H+ is never formed here.
"""

from __future__ import annotations

import abc
import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx

from ._checks import check_integer, check_nonnegative, check_positive, check_rcond
from ._linalg import (
    default_rcond,
    divided_differences,
    inv,
    power_and_derivative,
    psd_function_apply,
    spectral_power,
    svd,
)
from ._models import Weights, network_map, prefix_products, suffix_products
from ._tasks import Task

CURVATURE_METHODS = ("auto", "dense", "krylov", "balanced")


def loss_gradient(weights: Weights, task: Task) -> Weights:
    """g_i = dL/dW_i = W_>i^T (W - W*) Sigma_x W_<i^T (Huh 2020, eq. 5; Bernacchia et al. 2018, eq. 13)."""
    pre, suf = prefix_products(weights), suffix_products(weights)
    drive = (network_map(weights) - task.teacher) @ task.input_cov
    return tuple(b.T @ drive @ a.T for a, b in zip(pre, suf, strict=True))


class AbstractCurvature(eqx.Module):
    """A PSD curvature approximation C(theta) of the Gauss-Newton matrix H+.

    Subclasses implement :meth:`precondition`. ``rcond`` is the relative rank cutoff of the
    pseudo-inverse; ``None`` picks 10 * size * machine epsilon, else a number in [0, 1).
    """

    rcond: float | None = eqx.field(default=None, static=True, kw_only=True)

    def __check_init__(self):
        check_rcond("rcond", self.rcond)

    @abc.abstractmethod
    def precondition(self, weights: Weights, task: Task, *, power: float, damping: float = 0.0) -> Weights:
        """Returns (C + damping I)^(-power) g for the task's loss gradient g."""

    def normalized_precondition(
        self, weights: Weights, task: Task, *, power: float, damping: float
    ) -> Weights:
        """Returns (1 + damping)^power (C + damping I)^(-power) g, the damped update of Huh 2020,
        eq. 17 (which tends to g as damping -> inf).

        This default rescales :meth:`precondition`, which loses all precision once
        (C + damping)^(-power) underflows (damping ~ 1e308); the built-in curvatures override it
        to apply ((C + damping I) / (1 + damping))^(-power) directly.
        """
        factor = (1.0 + damping) ** power
        return tuple(factor * d for d in self.precondition(weights, task, power=power, damping=damping))

    def _rcond(self, size: int, dtype) -> float:
        return default_rcond(size, dtype) if self.rcond is None else self.rcond


def _check_power_damping(power, damping) -> tuple[float, float]:
    return check_positive("power", power), check_nonnegative("damping", damping)


def _normalized(damping: float) -> tuple[float, float]:
    """(curvature scale, shift) with (C + eps) / (1 + eps) = scale C + shift; both stay finite and
    the shift tends to 1 as eps -> inf (Huh 2020, eq. 17: damped NGD tends to SGD)."""
    return 1.0 / (1.0 + damping), damping / (1.0 + damping)


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
    from ._models import as_weights

    return float(_imbalance(as_weights(weights)))


class GaussNewton(AbstractCurvature):
    """The exact Gauss-Newton matrix H+ = J^T J (Huh 2020, eq. 3), applied through map space.

    Since g = J^T r, (H+ + eps I)^(-s) g = J^T (K + eps I)^(-s) r with the map-space Gram matrix
    K = J J^T = sum_i B_i (x) A_i, B_i = W_>i W_>i^T and A_i = Sigma^(1/2) W_<i^T W_<i Sigma^(1/2),
    of size n_d n_0 (push-through identity; pseudo-inverse powers at eps = 0, as H+ and K share
    their non-zero spectrum). K acts on a map X as sum_i B_i X A_i in O(d n^3).

    Methods (all give the same pseudo-inverse power; they differ in cost):

    - ``"dense"``: eigh of K, O((n_d n_0)^3). Derivatives use divided differences, so they stay
      finite at repeated eigenvalues (orthogonal init).
    - ``"krylov"``: matrix-free. Power 1 (NGD, damped NGD) is one preconditioned CG solve (lineax)
      of (K + eps) X = r. Fractional powers use (K + eps)^(-s) = sin(pi s)/pi * int_0^inf
      t^(-s) (K + eps + t)^(-1) dt, a trapezoid rule in log t (error ~ exp(-2 pi^2 / h)) with
      geometric tails, each node a warm-started PCG solve. The preconditioner is diagonal in the
      singular bases of W Sigma^(1/2) = U S V^T: D_ab = sum_i |W_>i^T u_a|^2 |W_<i Sigma^(1/2) v_b|^2.
      It needs widths for which K is generically non-singular (:func:`structurally_full_rank`).
    - ``"balanced"``: closed form for balanced weights (W_{i+1}^T W_{i+1} = W_i W_i^T) with
      Sigma_x = I, where K is diagonal in the singular bases of W with eigenvalues
      sum_i s_a^(2(d-i)/d) s_b^(2(i-1)/d) (Huh 2020, eqs. 12-14). One SVD. It is wrong for
      unbalanced weights or a non-white Sigma_x; check with :func:`imbalance`.
    - ``"auto"`` (default): dense when n_d n_0 <= ``dense_max_size`` or K is structurally
      singular, else krylov. The default size is 64 for power 1 (one CG solve) and 256 for
      fractional powers (60-80 solves), where the measured costs cross on a 2-core CPU.
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
        if self.cg_rtol is not None:
            check_positive("cg_rtol", self.cg_rtol)
        check_integer("max_cg_steps", self.max_cg_steps, 1)
        if self.quadrature_step is not None:
            check_positive("quadrature_step", self.quadrature_step)

    def gram_matrix(self, weights: Weights, task: Task):
        """K = sum_i B_i (x) A_i in row-major vec ordering, so K vec(X) = vec(sum_i B_i X A_i)."""
        pre, suf = prefix_products(weights), suffix_products(weights)
        s = task.input_cov_sqrt
        k = 0.0
        for a, b in zip(pre, suf, strict=True):
            fa = a @ s
            k = k + jnp.kron(b @ b.T, fa.T @ fa)
        return k

    def resolved_method(self, widths, power: float = 1.0) -> str:
        """The method ``"auto"`` picks for nets of these widths and this curvature power."""
        if self.method != "auto":
            return self.method
        limit = self.dense_max_size
        if limit is None:
            limit = 64 if power == 1.0 else 256
        if widths[0] * widths[-1] <= limit or not structurally_full_rank(widths):
            return "dense"
        return "krylov"

    def precondition(self, weights, task, *, power, damping=0.0):
        power, damping = _check_power_damping(power, damping)
        return self._apply(weights, task, power, damping, 1.0)

    def normalized_precondition(self, weights, task, *, power, damping):
        power, damping = _check_power_damping(power, damping)
        return self._apply(weights, task, power, *_normalized(damping)[::-1])

    def _apply(self, weights, task, power, damping, scale):
        """(scale K + damping)^(-power) r pushed through J^T: with scale = 1 / (1 + eps) and
        damping = eps / (1 + eps) the normalized damped update."""
        widths = (weights[0].shape[1],) + tuple(w.shape[0] for w in weights)
        method = self.resolved_method(widths, power)
        pre, suf = prefix_products(weights), suffix_products(weights)
        s = task.input_cov_sqrt
        fas = [a @ s for a in pre]
        w = network_map(weights)
        residual = task.whitened_residual(w)
        rcond = self._rcond(widths[0] * widths[-1], residual.dtype)
        if method == "dense":
            gram = self.gram_matrix(weights, task)
            gram = gram if scale == 1.0 else scale * gram
            x = psd_function_apply(gram, residual.reshape(-1), power, damping, rcond).reshape(residual.shape)
        elif method == "balanced":
            x = _balanced_apply(w @ s, residual, len(weights), power, damping, rcond, scale)
        else:
            check_krylov_widths(widths, "method='krylov'", "method='dense' (or 'auto')")
            if power > 1.0:
                raise ValueError(f"method='krylov' applies powers 0 < power <= 1 (q >= 1), got power={power}")
            x = _krylov_apply(
                w @ s, suf, fas, residual, power=power, damping=damping, rcond=rcond,
                cg_rtol=self.cg_rtol, max_steps=self.max_cg_steps, step=self.quadrature_step, scale=scale,
            )  # fmt: skip
        return tuple(b.T @ x @ fa.T for fa, b in zip(fas, suf, strict=True))


def _krylov_apply(
    whitened_map, suf, fas, residual, *, power, damping, rcond, cg_rtol, max_steps, step, scale=1.0
):
    """(scale K + eps)^(-power) r, matrix-free, in the singular bases of W Sigma^(1/2) (see GaussNewton)."""
    double = residual.dtype == jnp.float64
    # targets: 1e-12 relative in float64; 1e-6 in float32 (about 10 eps)
    target = 1e-12 if double else 1e-6
    cg_rtol = target if cg_rtol is None else cg_rtol
    step = (0.8 if double else 1.6) if step is None else step  # quadrature error ~ exp(-2 pi^2 / h)
    # The converged solve does not depend on the basis, only the preconditioner does: holding U, V
    # (and the node placement) fixed keeps derivatives finite at repeated singular values.
    u, _, vt = svd(jax.lax.stop_gradient(whitened_map), full_matrices=True)
    cb = [b.T @ u for b in suf]  # W_>i^T U, (n_i, n_d)
    ca = [fa @ vt.T for fa in fas]  # W_<i Sigma^(1/2) V, (n_{i-1}, n_0)
    bt = jnp.stack([c.T @ c for c in cb])  # U^T B_i U, (d, n_d, n_d)
    bt = bt if scale == 1.0 else scale * bt  # so that gram(y) and diag are those of scale K
    at = jnp.stack([c.T @ c for c in ca])  # V^T A_i V, (d, n_0, n_0)
    diag = jnp.einsum("ia,ib->ab", jnp.diagonal(bt, axis1=1, axis2=2), jnp.diagonal(at, axis1=1, axis2=2))
    keep = diag + damping > rcond * jnp.max(diag)
    rhs = jnp.where(keep, u.T @ residual @ vt.T, 0.0)

    def gram(y):  # U^T K(U y V^T) V = sum_i (U^T B_i U) y (V^T A_i V)
        return jnp.sum(jnp.matmul(jnp.matmul(bt, y), at), axis=0)

    def solve(shift, y_guess):
        """(K + shift) y = rhs by CG on the Jacobi-scaled operator D_s^(-1/2) (K + shift) D_s^(-1/2)."""
        scale = jnp.where(keep, jax.lax.rsqrt(jnp.where(keep, diag + shift, 1.0)), 0.0)
        b = scale * rhs
        structure = jax.ShapeDtypeStruct(rhs.shape, rhs.dtype)
        op = lx.FunctionLinearOperator(
            lambda z: scale * (gram(scale * z) + shift * (scale * z)), structure, lx.positive_semidefinite_tag
        )
        tol = jax.lax.stop_gradient(cg_rtol * jnp.sqrt(jnp.mean(b**2)))
        solver = lx.CG(rtol=0.0, atol=tol, norm=_rms_norm, max_steps=max_steps, stabilise_every=10)
        options = {}
        if y_guess is not None:  # a warm start only changes the iterations, not the solution
            y0 = jnp.where(keep, y_guess / jnp.where(keep, scale, 1.0), 0.0)
            options["y0"] = jax.lax.stop_gradient(y0)
        sol = lx.linear_solve(op, b, solver, options=options, throw=False)
        return scale * sol.value

    if power == 1.0:
        y = solve(damping, None)
    else:
        y = _fractional_power(gram, solve, rhs, diag, keep, power, damping, step, target)
    return u @ y @ vt


def _rms_norm(x):
    return jnp.sqrt(jnp.mean(x**2))


def _fractional_power(gram, solve, rhs, diag, keep, s, damping, h, target):
    """(K + eps)^(-s) rhs for 0 < s < 1 by sin(pi s)/pi * int e^((1-s)u) (K + eps + e^u)^(-1) du.

    The trapezoid rule in u has error ~ exp(-2 pi^2 / h) (the integrand is analytic in the strip
    |Im u| < pi). Nodes run from above the spectrum's estimate down to below it, each PCG solve
    warm-started from the last. Beyond the ends, the sum over the infinite grid is added in
    closed form from (K + eps + e^u)^(-1) ~ e^(-u)(I - (K + eps) e^(-u)) above and
    ~ (K + eps)^(-1) below, with relative errors below ``target``.
    """
    diag = jax.lax.stop_gradient(diag)
    lam_hi = jnp.max(diag) + damping
    lam_lo = jnp.min(jnp.where(keep, diag + damping, lam_hi))
    # the Jacobi estimate brackets K's spectrum within about [1e-2, 1e2] times its range
    tail = -math.log(target)  # the truncated tails are O(target) relative
    u_hi = jnp.log(lam_hi) + math.log(1e2) + tail / (2.0 + s)
    u_lo = jnp.log(lam_lo) - math.log(1e3) - tail / (2.0 - s)
    n_nodes = jnp.ceil((u_hi - u_lo) / h).astype(jnp.int32) + 1

    def body(k, carry):
        acc, y = carry
        u = u_hi - h * k
        y = solve(jnp.exp(u) + damping, y)
        return acc + jnp.exp((1.0 - s) * u) * y, y

    zeros = jnp.zeros_like(rhs)
    acc, y_last = jax.lax.fori_loop(0, n_nodes, body, (zeros, zeros))
    u_last = u_hi - h * (n_nodes - 1)
    rho_lo = math.exp(-(1.0 - s) * h)
    lower = jnp.exp((1.0 - s) * u_last) * rho_lo / (1.0 - rho_lo) * y_last
    rho_s, rho_1 = math.exp(-s * h), math.exp(-(1.0 + s) * h)
    k_rhs = gram(rhs) + damping * rhs
    upper = (
        jnp.exp(-s * u_hi) * rho_s / (1.0 - rho_s) * rhs
        - jnp.exp(-(1.0 + s) * u_hi) * rho_1 / (1.0 - rho_1) * k_rhs
    )
    return math.sin(math.pi * s) / math.pi * h * (acc + lower + upper)


def _balanced_apply(whitened_map, residual, depth, power, damping, rcond, scale=1.0):
    u, sv, vt = svd(whitened_map, full_matrices=True)
    nd, n0 = whitened_map.shape
    sa = jnp.zeros(nd, sv.dtype).at[: sv.shape[0]].set(sv)
    sb = jnp.zeros(n0, sv.dtype).at[: sv.shape[0]].set(sv)
    lam = 0.0
    for i in range(1, depth + 1):
        lam = lam + _pow0(sa, 2.0 * (depth - i) / depth)[:, None] * _pow0(sb, 2.0 * (i - 1) / depth)[None, :]
    f = spectral_power(lam if scale == 1.0 else scale * lam, power=power, damping=damping, rcond=rcond)
    return u @ (f * (u.T @ residual @ vt.T)) @ vt


def _pow0(x, e):
    """x**e with 0**0 = 1 (the identity factors B_d and A_1)."""
    if e == 0:
        return jnp.ones_like(x)
    return jnp.where(x > 0, jnp.where(x > 0, x, 1.0) ** e, 0.0)


class BlockDiagonalGaussNewton(AbstractCurvature):
    """Layer-wise block-diagonal H+ (Huh 2020, eqs. 23-25; Bernacchia et al. 2018, eq. 22).

    Block i is H_ii = (W_>i^T W_>i) (x) (W_<i Sigma W_<i^T), a Kronecker product, so its
    (pseudo-inverse, damped) powers act exactly through the factors. They are taken from the
    thin SVDs W_>i = U_b S_b V_b^T and W_<i Sigma^(1/2) = U_a S_a V_a^T rather than from the
    Gram matrices, so small singular values keep full relative accuracy: with g_i = J_i^T r,
    (H_ii + eps)^(-s) g_i = V_b [S_b S_a^T (S_b^2 S_a^2T + eps)^(-s) o (U_b^T r V_a)] U_a^T.
    With ``depth_calibrated`` (the default) the curvature is d * blockdiag(H_ii), which gives the
    d^(-1/q) step of Huh 2020 eq. 25: NGD-d then has NGD's map dynamics and sqrt-NGD-d
    sqrt-NGD's parameter speed.

    NGD-d (power 1, no damping; Huh 2020, eq. 24) on square nets skips the SVDs: there the update is
    W_>i^+ r (W_<i Sigma^(1/2))^+ / d = W_>i^-1 (W - W*) W_<i^-1 / d, and the inverses of all the
    products come from one LU inverse per layer (:func:`layer_inverse_chains`). That path is
    taken only when power-iteration estimates put every block's smallest singular-value product
    10x above the rank cutoff, so it cuts nothing the SVDs would keep or cut; otherwise (and
    under ``vmap``, where both branches run) the SVDs decide.
    """

    depth_calibrated: bool = eqx.field(default=True, static=True, kw_only=True)

    def precondition(self, weights, task, *, power, damping=0.0):
        power, damping = _check_power_damping(power, damping)
        return self._apply(weights, task, power, damping, 1.0)

    def normalized_precondition(self, weights, task, *, power, damping):
        power, damping = _check_power_damping(power, damping)
        return self._apply(weights, task, power, *_normalized(damping)[::-1])

    def _apply(self, weights, task, power, damping, curvature_scale):
        """(curvature_scale d blockdiag(H_ii) + damping)^(-power) g (see :meth:`normalized_precondition`)."""
        scale = (float(len(weights)) if self.depth_calibrated else 1.0) * curvature_scale
        suf, fas, rconds = self._blocks(weights, task)
        delta = network_map(weights) - task.teacher
        residual = delta @ task.input_cov_sqrt

        def by_svd():
            return tuple(
                _kron_block_apply(b, fa, residual, power, damping, rcond, scale)
                for fa, b, rcond in zip(fas, suf, rconds, strict=True)
            )

        if power != 1.0 or damping != 0.0 or not all_square(weights):
            return by_svd()
        # NGD-d on square nets: (scale H_ii)^+ g_i = W_>i^+ r (W_<i Sigma^(1/2))^+ / scale, and
        # with invertible layers the pseudo-inverses of the products are products of inverses.
        # That path is taken when no singular-value product comes near the rank cutoff, so its
        # result is the pseudo-inverse one; else the SVDs decide what is cut.
        safe, left, right = self._inverse_path(weights, task, suf, fas, rconds)

        def by_inverses():
            return tuple(lb @ delta @ ra / scale for lb, ra in zip(left, right, strict=True))

        return choose(safe, by_inverses, by_svd)

    def takes_inverse_path(self, weights: Weights, task: Task, *, power: float = 1.0, damping: float = 0.0):
        """Whether :meth:`precondition` skips the SVDs for these weights (see the class docstring)."""
        if power != 1.0 or damping != 0.0 or not all_square(weights):
            return False
        return bool(self._inverse_path(weights, task, *self._blocks(weights, task))[0])

    def _blocks(self, weights, task):
        """W_>i, W_<i Sigma^(1/2) and the rank cutoff of each block."""
        pre, suf = prefix_products(weights), suffix_products(weights)
        fas = [a @ task.input_cov_sqrt for a in pre]
        dtype = jnp.result_type(weights[0], task.teacher)
        return suf, fas, [self._block_rcond(b, fa, dtype) for fa, b in zip(fas, suf, strict=True)]

    def _inverse_path(self, weights, task, suf, fas, rconds):
        left, right, cond_b, cond_a = square_path_conditions(weights, task, suf, fas)
        safe = jnp.all(cond_b * cond_a * jnp.sqrt(jnp.asarray(rconds)) < _CUTOFF_MARGIN)
        return jax.lax.stop_gradient(safe), left, right

    def _block_rcond(self, b, fa, dtype) -> float:
        if self.rcond is None and dtype != jnp.float64:
            # In float32, 10 size eps (1e-3 at size 1024) would drop well-resolved directions.
            # The SVDs resolve singular values to about n eps of the largest, so the cutoff
            # is put on the products s_b s_a instead: (10 n eps)^2 on s_b^2 s_a^2.
            eps = float(jnp.finfo(dtype).eps)
            return (10.0 * max(b.shape + fa.shape) * eps) ** 2
        return self._rcond(b.shape[1] * fa.shape[0], dtype)


# The inverse paths of the block rules require every estimated condition number to be 10x inside
# the rank cutoff, so estimates that are low by up to 10x (four factors of 0.56) change nothing.
_CUTOFF_MARGIN = 0.1


def all_square(weights: Weights) -> bool:
    """Whether every layer is square (then the products W_>i, W_<i are square too)."""
    return all(w.shape[0] == w.shape[1] for w in weights)


def layer_inverse_chains(weights: Weights):
    """[W_>1^-1, ..., W_>d^-1] and [W_<1^-1, ..., W_<d^-1] for square layers, from one LU
    inverse per layer: W_>(i-1)^-1 = W_i^-1 W_>i^-1 and W_<(i+1)^-1 = W_<i^-1 W_i^-1.

    Singular layers give non-finite entries, which :func:`condition_estimate` reports as nan.
    """
    inverses = inv(jnp.stack(weights))
    eye = jnp.eye(weights[0].shape[0], dtype=weights[0].dtype)
    left = [eye]
    for k in range(len(weights) - 1, 0, -1):
        left.append(inverses[k] @ left[-1])
    right = [eye]
    for k in range(len(weights) - 1):
        right.append(right[-1] @ inverses[k])
    return left[::-1], right


def square_path_conditions(weights: Weights, task: Task, suf, fas):
    """The inverse chains of :func:`layer_inverse_chains` and the estimated condition numbers
    of each W_>i (``suf``) and W_<i Sigma^(1/2) (``fas``), for the block rules' LU path."""
    left, right = layer_inverse_chains(weights)
    s_inv = inv(task.input_cov_sqrt)
    cond = condition_estimate(jnp.stack(suf + fas), jnp.stack(left + [s_inv @ ra for ra in right]))
    d = len(weights)
    return left, right, cond[:d], cond[d:]


def choose(pred, fast, slow):
    """``lax.cond(pred, fast, slow)`` under tracing; on a concrete ``pred`` (eager calls) a plain
    Python branch, so nothing is compiled per call."""
    if isinstance(pred, jax.core.Tracer):
        return jax.lax.cond(pred, fast, slow)
    return fast() if bool(pred) else slow()


_POWER_ITERATIONS = 8


def spectral_norm_estimate(matrices):
    """||(M^T M)^k v||^(1/2k) for a fixed unit v and k = 8, for a stack of matrices: a lower
    bound on each ||M||_2 that is within the factor |<v, top right singular vector>|^(1/2k) of
    it (0.80 for |<v, .>| = 0.03, 0.65 for 1e-3).
    """
    n = matrices.shape[-1]
    v = jnp.cos(0.7 + 2.4 * jnp.arange(n, dtype=matrices.dtype))  # fixed, spread over all entries
    v = jnp.broadcast_to(v / jnp.linalg.norm(v), matrices.shape[:-2] + (n,))
    log_norm = jnp.zeros(matrices.shape[:-2], matrices.dtype)
    _, _, log_norm = jax.lax.fori_loop(0, _POWER_ITERATIONS, _power_step, (matrices, v, log_norm))
    return jnp.exp(0.5 * log_norm / _POWER_ITERATIONS)


def _power_step(_, carry):
    matrices, v, log_norm = carry
    w = jnp.einsum("...ji,...jk,...k->...i", matrices, matrices, v)
    norm = jnp.linalg.norm(w, axis=-1)
    return matrices, w / norm[..., None], log_norm + jnp.log(norm)


@jax.jit
def condition_estimate(matrices, inverses):
    """||M|| ||M^-1|| (2-norms) for a stack of matrices and their inverses, estimated from below
    by :func:`spectral_norm_estimate`; nan where an inverse is not finite. Not differentiated:
    it only selects a code path."""
    matrices, inverses = jax.lax.stop_gradient(matrices), jax.lax.stop_gradient(inverses)
    finite = jnp.all(jnp.isfinite(inverses), axis=(1, 2))
    inverses = jnp.where(finite[:, None, None], inverses, 0.0)
    norms = spectral_norm_estimate(jnp.concatenate([matrices, inverses]))
    est = norms[: matrices.shape[0]] * norms[matrices.shape[0] :]
    return jnp.where(finite, est, jnp.nan)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6))
def _kron_block_apply(b, fa, residual, power, damping, rcond, scale):
    """(scale G_b (x) G_a + damping)^(-power) J_i^T r for one layer block of H+.

    G_b = W_>i^T W_>i and G_a = W_<i Sigma W_<i^T (Huh 2020, eq. 23); J_i^T r = W_>i^T r (W_<i Sigma^(1/2))^T.
    The value comes from the thin SVDs b = W_>i = U_b S_b V_b^T and fa = W_<i Sigma^(1/2) = U_a S_a V_a^T,
    so small singular values keep full relative accuracy:
    V_b [S_b S_a f(scale S_b^2 S_a^2) o (U_b^T r V_a)] U_a^T. The custom JVP is the Daleckii-Krein
    formula for a function of a Kronecker product, finite at repeated singular values.
    """
    ub, sb, vbt = svd(b, full_matrices=False)
    ua, sa, vat = svd(fa, full_matrices=False)
    evals = scale * (sb**2)[:, None] * (sa**2)[None, :]
    f = spectral_power(evals, power=power, damping=damping, rcond=rcond)
    core = sb[:, None] * sa[None, :] * f * (ub.T @ residual @ vat.T)
    return vbt.T @ core @ ua.T


@_kron_block_apply.defjvp
def _kron_block_apply_jvp(power, damping, rcond, scale, primals, tangents):
    b, fa, residual = primals
    db, dfa, dres = tangents
    out = _kron_block_apply(b, fa, residual, power, damping, rcond, scale)
    _, sb, vbt = svd(b, full_matrices=True)
    ua, sa, _ = svd(fa, full_matrices=True)
    vb = vbt.T  # eigenvectors of G_b (n_i x n_i); eigenvalues sb^2 padded with zeros
    beta = jnp.zeros(b.shape[1], sb.dtype).at[: sb.shape[0]].set(sb**2)
    alpha = jnp.zeros(fa.shape[0], sa.dtype).at[: sa.shape[0]].set(sa**2)
    mu = scale * beta[:, None] * alpha[None, :]
    f, fprime = power_and_derivative(mu, power, damping, rcond)
    g = b.T @ residual @ fa.T
    dg = db.T @ residual @ fa.T + b.T @ dres @ fa.T + b.T @ residual @ dfa.T
    e_b = vb.T @ (db.T @ b + b.T @ db) @ vb
    e_a = ua.T @ (dfa @ fa.T + fa @ dfa.T) @ ua
    x = vb.T @ g @ ua
    # d f(mu)_kl along G_b: sum_m f[mu_kl, mu_ml] scale (E_b)_km alpha_l x_ml
    dd_b = divided_differences(mu[:, None, :], mu[None, :, :], f[:, None, :], f[None, :, :],
                                fprime[:, None, :], fprime[None, :, :])  # fmt: skip  # (k, m, l)
    t_b = scale * alpha[None, :] * jnp.einsum("kml,km,ml->kl", dd_b, e_b, x)
    # along G_a: sum_n f[mu_kl, mu_kn] scale beta_k (E_a)_ln x_kn
    dd_a = divided_differences(mu[:, :, None], mu[:, None, :], f[:, :, None], f[:, None, :],
                                fprime[:, :, None], fprime[:, None, :])  # fmt: skip  # (k, l, n)
    t_a = scale * beta[:, None] * jnp.einsum("kln,ln,kn->kl", dd_a, e_a, x)
    tangent = vb @ (f * (vb.T @ dg @ ua) + t_b + t_a) @ ua.T
    return out, tangent


__all__ = [
    "AbstractCurvature",
    "BlockDiagonalGaussNewton",
    "CURVATURE_METHODS",
    "GaussNewton",
    "imbalance",
    "loss_gradient",
    "structurally_full_rank",
]
