"""Matrix-free powers of the map-space Gram matrix K = J J^T by preconditioned CG.

(scale K + eps)^(-s) r for 0 < s <= 1, in the singular bases of W Sigma^(1/2) = U S V^T, where
K acts on a map X as sum_i B_i X A_i (Huh 2020, eq. 3 pushed through J; see
:class:`dlnsim.KrylovGaussNewton`). Power 1 is one CG solve; fractional powers use
(K + eps)^(-s) = sin(pi s)/pi * int_0^inf t^(-s) (K + eps + t)^(-1) dt, a trapezoid rule in
log t with geometric tails, each node a warm-started CG solve.

Nothing fails silently: a CG solve that stops at ``max_steps`` raises (``eqx.error_if``), and
the quadrature runs over a static number of nodes (the ones past the spectrum's need are
skipped by ``lax.cond``), so reverse-mode derivatives work under ``jit`` too (a loop with a
traced trip count is a ``while_loop``, which reverse mode cannot differentiate).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx

from ._curvature_base import choose
from ._linalg import svd

_NOT_CONVERGED = (
    "method='krylov': a CG solve of (K + eps) y = r stopped at max_cg_steps before reaching its "
    "tolerance; raise max_cg_steps or cg_rtol, or use method='dense'"
)


def quadrature_nodes_bound(dtype, step: float, target: float) -> int:
    """The static number of quadrature nodes that covers any spectrum whose kept eigenvalues
    span at most 1 / eps(dtype) (the node range of :func:`fractional_power`, worst case over s)."""
    tail = -math.log(target)
    span = -math.log(float(jnp.finfo(dtype).eps)) + math.log(1e2) + math.log(1e3) + tail / 2.0 + tail
    return int(math.ceil(span / step)) + 2


def krylov_apply(
    whitened_map, suf, fas, residual, *, power, damping, scale, rcond, cg_rtol, max_steps, step, active=True
):
    """(scale K + damping)^(-power) r, matrix-free, in the singular bases of W Sigma^(1/2).

    The preconditioner is diagonal in those bases: D_ab = sum_i |W_>i^T u_a|^2 |W_<i Sigma^(1/2) v_b|^2.
    ``power``, ``damping``, ``scale`` and ``rcond`` may be traced; power 1 takes one CG solve
    (selected with :func:`choose`, so under ``vmap`` over the power both paths run).
    ``active``: whether this result is used (a traced flag when a caller selects between this and
    another method under ``vmap``, where both run): a CG failure raises only where it is.
    """
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
    bt = scale * jnp.stack([c.T @ c for c in cb])  # U^T B_i U (d, n_d, n_d), times the curvature scale
    at = jnp.stack([c.T @ c for c in ca])  # V^T A_i V, (d, n_0, n_0)
    diag = jnp.einsum("ia,ib->ab", jnp.diagonal(bt, axis1=1, axis2=2), jnp.diagonal(at, axis1=1, axis2=2))
    keep = diag + damping > rcond * jnp.max(diag)
    rhs = jnp.where(keep, u.T @ residual @ vt.T, 0.0)

    def gram(y):  # U^T K(U y V^T) V = sum_i (U^T B_i U) y (V^T A_i V)
        return jnp.sum(jnp.matmul(jnp.matmul(bt, y), at), axis=0)

    def solve(shift, y_guess):
        """(K + shift) y = rhs by CG on the Jacobi-scaled operator D_s^(-1/2) (K + shift) D_s^(-1/2);
        returns y and whether CG failed to converge."""
        jacobi = jnp.where(keep, jax.lax.rsqrt(jnp.where(keep, diag + shift, 1.0)), 0.0)
        b = jacobi * rhs
        structure = jax.ShapeDtypeStruct(rhs.shape, rhs.dtype)
        op = lx.FunctionLinearOperator(
            lambda z: jacobi * (gram(jacobi * z) + shift * (jacobi * z)),
            structure,
            lx.positive_semidefinite_tag,
        )
        tol = jax.lax.stop_gradient(cg_rtol * jnp.sqrt(jnp.mean(b**2)))
        solver = lx.CG(rtol=0.0, atol=tol, norm=_rms_norm, max_steps=max_steps, stabilise_every=10)
        options = {}
        if y_guess is not None:  # a warm start only changes the iterations, not the solution
            y0 = jnp.where(keep, y_guess / jnp.where(keep, jacobi, 1.0), 0.0)
            options["y0"] = jax.lax.stop_gradient(y0)
        sol = lx.linear_solve(op, b, solver, options=options, throw=False)
        return jacobi * sol.value, sol.result != lx.RESULTS.successful

    y, failed = choose(
        power == 1.0,
        lambda: solve(damping, None),
        lambda: fractional_power(gram, solve, rhs, diag, keep, power, damping, step, target),
    )
    y = eqx.error_if(y, failed & active, _NOT_CONVERGED)
    return u @ y @ vt


def _rms_norm(x):
    return jnp.sqrt(jnp.mean(x**2))


def fractional_power(gram, solve, rhs, diag, keep, s, damping, h, target):
    """(K + eps)^(-s) rhs for 0 < s < 1 by sin(pi s)/pi * int e^((1-s)u) (K + eps + e^u)^(-1) du.

    The trapezoid rule in u has error ~ exp(-2 pi^2 / h) (the integrand is analytic in the strip
    |Im u| < pi). Nodes run from above the spectrum's estimate down to below it, each PCG solve
    warm-started from the last. Beyond the ends, the sum over the infinite grid is added in
    closed form from (K + eps + e^u)^(-1) ~ e^(-u)(I - (K + eps) e^(-u)) above and
    ~ (K + eps)^(-1) below, with relative errors below ``target``.

    The nodes run in a ``lax.scan`` over :func:`quadrature_nodes_bound` steps, those past the
    spectrum's need skipped by ``lax.cond``; the spectrum's lower end is held within
    1 / eps(dtype) of its top (below the rounding of K itself), so the bound always covers it.
    Returns the result and whether any CG solve failed to converge.
    """
    diag = jax.lax.stop_gradient(diag)
    lam_hi = jnp.max(diag) + damping
    lam_lo = jnp.min(jnp.where(keep, diag + damping, lam_hi))
    lam_lo = jnp.maximum(lam_lo, float(jnp.finfo(diag.dtype).eps) * lam_hi)
    # the Jacobi estimate brackets K's spectrum within about [1e-2, 1e2] times its range
    tail = -math.log(target)  # the truncated tails are O(target) relative
    u_hi = jnp.log(lam_hi) + math.log(1e2) + tail / (2.0 + s)
    u_lo = jnp.log(lam_lo) - math.log(1e3) - tail / (2.0 - s)
    n_nodes = jnp.ceil((u_hi - u_lo) / h).astype(jnp.int32) + 1

    def body(carry, k):
        def node():
            acc, y, failed = carry
            u = u_hi - h * k
            y, bad = solve(jnp.exp(u) + damping, y)
            return acc + jnp.exp((1.0 - s) * u) * y, y, failed | bad

        return choose(k < n_nodes, node, lambda: carry), None

    zeros = jnp.zeros_like(rhs)
    bound = quadrature_nodes_bound(rhs.dtype, h, target)
    start = (zeros, zeros, jnp.asarray(False))
    (acc, y_last, failed), _ = jax.lax.scan(body, start, jnp.arange(bound, dtype=jnp.int32))
    u_last = u_hi - h * (n_nodes - 1)
    rho_lo = jnp.exp(-(1.0 - s) * h)
    lower = jnp.exp((1.0 - s) * u_last) * rho_lo / (1.0 - rho_lo) * y_last
    rho_s, rho_1 = jnp.exp(-s * h), jnp.exp(-(1.0 + s) * h)
    k_rhs = gram(rhs) + damping * rhs
    upper = (
        jnp.exp(-s * u_hi) * rho_s / (1.0 - rho_s) * rhs
        - jnp.exp(-(1.0 + s) * u_hi) * rho_1 / (1.0 - rho_1) * k_rhs
    )
    return jnp.sin(math.pi * s) / math.pi * h * (acc + lower + upper), failed


__all__ = ["fractional_power", "krylov_apply", "quadrature_nodes_bound"]
