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

import equinox as eqx
import jax.numpy as jnp

from ._models import Weights, network_map, prefix_products, suffix_products
from ._tasks import Task


def loss_gradient(weights: Weights, task: Task) -> Weights:
    """g_i = dL/dW_i = W_>i^T (W - W*) Sigma_x W_<i^T (Huh 2020, eq. 5; Bernacchia et al. 2018, eq. 13)."""
    pre, suf = prefix_products(weights), suffix_products(weights)
    drive = (network_map(weights) - task.teacher) @ task.input_cov
    return tuple(b.T @ drive @ a.T for a, b in zip(pre, suf, strict=True))


def spectral_power(evals, *, power: float, damping: float, rcond: float):
    """f(lambda) = (lambda + damping)^(-power), set to 0 where lambda + damping <= rcond * max(lambda).

    At ``damping = 0`` this is the pseudo-inverse power with a relative rank cutoff.
    """
    shifted = evals + damping
    cutoff = rcond * jnp.max(evals)
    keep = shifted > cutoff
    safe = jnp.where(keep, shifted, 1.0)
    return jnp.where(keep, safe ** (-power), 0.0)


def _default_rcond(size: int, dtype) -> float:
    return 10.0 * size * float(jnp.finfo(dtype).eps)


class AbstractCurvature(eqx.Module):
    """A PSD curvature approximation C(theta) of the Gauss-Newton matrix H+.

    Subclasses implement :meth:`precondition`. ``rcond`` is the relative rank cutoff of the
    pseudo-inverse; ``None`` picks 10 * size * machine epsilon.
    """

    rcond: float | None = eqx.field(default=None, static=True, kw_only=True)

    @abc.abstractmethod
    def precondition(self, weights: Weights, task: Task, *, power: float, damping: float = 0.0) -> Weights:
        """Returns (C + damping I)^(-power) g for the task's loss gradient g."""

    def _rcond(self, size: int, dtype) -> float:
        return _default_rcond(size, dtype) if self.rcond is None else self.rcond


class GaussNewton(AbstractCurvature):
    """The exact Gauss-Newton matrix H+ = J^T J (Huh 2020, eq. 3), applied through map space.

    Since g = J^T r, (H+ + eps I)^(-s) g = J^T (K + eps I)^(-s) r with the map-space Gram matrix
    K = J J^T = sum_i B_i (x) A_i, B_i = W_>i W_>i^T and A_i = Sigma^(1/2) W_<i^T W_<i Sigma^(1/2),
    of size n_d n_0 (push-through identity; pseudo-inverse powers at eps = 0, as H+ and K share
    their non-zero spectrum). Cost: one eigh of an (n_d n_0)-square matrix.
    """

    def gram_matrix(self, weights: Weights, task: Task):
        """K = sum_i B_i (x) A_i in row-major vec ordering, so K vec(X) = vec(sum_i B_i X A_i)."""
        pre, suf = prefix_products(weights), suffix_products(weights)
        s = task.input_cov_sqrt
        k = 0.0
        for a, b in zip(pre, suf, strict=True):
            fa = a @ s
            k = k + jnp.kron(b @ b.T, fa.T @ fa)
        return k

    def precondition(self, weights, task, *, power, damping=0.0):
        pre, suf = prefix_products(weights), suffix_products(weights)
        s = task.input_cov_sqrt
        residual = task.whitened_residual(network_map(weights))
        gram = self.gram_matrix(weights, task)
        evals, evecs = jnp.linalg.eigh(gram)
        f = spectral_power(evals, power=power, damping=damping, rcond=self._rcond(gram.shape[0], gram.dtype))
        x = (evecs @ (f * (evecs.T @ residual.reshape(-1)))).reshape(residual.shape)
        return tuple(b.T @ x @ (a @ s).T for a, b in zip(pre, suf, strict=True))


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
    """

    depth_calibrated: bool = eqx.field(default=True, static=True, kw_only=True)

    def precondition(self, weights, task, *, power, damping=0.0):
        pre, suf = prefix_products(weights), suffix_products(weights)
        scale = float(len(weights)) if self.depth_calibrated else 1.0
        s = task.input_cov_sqrt
        residual = task.whitened_residual(network_map(weights))
        out = []
        for a, b in zip(pre, suf, strict=True):
            ub, sb, vbt = jnp.linalg.svd(b, full_matrices=False)
            ua, sa, vat = jnp.linalg.svd(a @ s, full_matrices=False)
            evals = scale * (sb**2)[:, None] * (sa**2)[None, :]
            size = b.shape[1] * a.shape[0]
            f = spectral_power(evals, power=power, damping=damping, rcond=self._rcond(size, evals.dtype))
            core = sb[:, None] * sa[None, :] * f * (ub.T @ residual @ vat.T)
            out.append(vbt.T @ core @ ua.T)
        return tuple(out)


__all__ = ["AbstractCurvature", "GaussNewton", "BlockDiagonalGaussNewton", "loss_gradient"]
