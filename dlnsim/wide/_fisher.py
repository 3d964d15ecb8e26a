"""The Fisher interface and the layer-wise family: exact, block-diagonal (bd) and block tri-diagonal.

Karakida & Osawa 2020, eqs. 8-9 and 15-23, S.64-S.94, S.157-S.167. The Fisher is G = J^T J / N (eq. 8),
damped G + rho I; NGD updates theta <- theta - eta (G + rho I)^+ grad L with grad L = J^T r / N and the
Moore-Penrose pseudo-inverse at rho = 0 (eq. 9). Theta_bar(x', x) = J(x') G^+ J(x)^T / N (S.4): one
step moves f by -eta Theta_bar r.

Every approximation is one subclass of :class:`AbstractFisher`: ``prepare`` computes, once per state,
the sample-space matrices it needs (a pytree of arrays), ``apply`` turns a residual into the
preconditioned update, ``theta_bar`` forms Theta_bar, and ``alpha`` / ``analytic_theta_bar`` give the
theory where the paper has one. The damping rho, rho~ and the cutoff rcond are array leaves
(:mod:`dlnsim.wide._hyperparameters`).

``prepare`` and ``apply`` take an optional ``power`` s = 1/q (an array, traced or not): the fractional
(G~ + rho I)^(-s) grad L of q-NGD (Huh 2020, eq. 14), used by the continuous-time flows of
:mod:`dlnsim.wide._flow`. ``power=None`` (the default) is the pseudo-inverse of eq. 9, computed exactly
as before; the sample-space Fishers use the push-through identity
f(J^T J / N) J^T = J^T f(J J^T / N) for f(lambda) = (lambda + rho)^(-s).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._linalg import eigh, inv, spectral_power
from ._hyperparameters import PINV_RCOND, concrete, hyperparameter, rank_cutoff
from ._kernels import Kernels
from ._losses import LOSSES, AbstractLoss, SquaredError, loss_named
from ._mlp import MLP, Signals, _jvp_all, _vjp_all, layer_grams

LAYERWISE = ("exact", "bd", "tri-diagonal")


def _rho(value) -> Float[Array, ""]:
    return hyperparameter("rho (damping)", value)


def _ce_damping(value) -> Float[Array, ""]:
    return hyperparameter("ce_damping", value)


def _pinv_rcond(value) -> Float[Array, ""]:
    return rank_cutoff("rcond", value, PINV_RCOND)


def psd_pinv(m: Float[Array, "a a"], damping, rcond, power=None) -> Float[Array, "a a"]:
    """(m + damping I)^+ of one symmetric PSD matrix by eigh: eigenvalues with lambda + damping at or
    below rcond * max(lambda) count as zero (:func:`dlnsim._linalg.spectral_power` with power 1).
    With ``power`` s: the pseudo-inverse power (m + damping I)^(-s) under the same cutoff."""
    evals, evecs = eigh(m)
    power = 1 if power is None else power
    return (evecs * spectral_power(evals, power=power, damping=damping, rcond=rcond)) @ evecs.T


def is_psd_pattern(sigma: np.ndarray) -> bool:
    """Whether the layer pattern Sigma is positive semi-definite (its coupled matrix C then is too)."""
    return bool(np.linalg.eigvalsh(sigma).min() >= -1e-12)


def check_power_pattern(sigma: np.ndarray, power) -> None:
    """A one-line ValueError for a fractional power s != 1 of an indefinite Sigma (concrete s only)."""
    value = None if power is None else concrete(power)
    if value is not None and value != 1.0 and not is_psd_pattern(sigma):
        raise ValueError(
            f"the tri-diagonal Sigma is indefinite at depth L={sigma.shape[0]} >= 3, so (G~ + rho I)^(-1/q) "
            "is not defined for q != 1 (a fractional power needs a PSD Fisher); use q = 1 or another Fisher"
        )


def symmetric_pinv(m: Float[Array, "a a"], rcond) -> Float[Array, "a a"]:
    """Moore-Penrose pseudo-inverse of a symmetric, possibly indefinite, matrix: |lambda| at or below
    rcond * max |lambda| counts as zero (the tri-diagonal Sigma makes the coupled matrix indefinite)."""
    evals, evecs = eigh(m)
    keep = jnp.abs(evals) > rcond * jnp.max(jnp.abs(evals))
    inverse = jnp.where(keep, 1.0 / jnp.where(keep, evals, 1.0), 0.0)
    return (evecs * inverse) @ evecs.T


class _FisherMeta(type(eqx.Module)):
    """Accepts ``damping=``, the old name of ``rho``, in every Fisher's constructor."""

    def __call__(cls, *args, damping=None, **kwargs):
        if damping is not None:
            if "rho" in kwargs:
                raise ValueError("give the damping once: rho (or its old name damping), not both")
            kwargs["rho"] = damping
        return super().__call__(*args, **kwargs)


class AbstractFisher(eqx.Module, metaclass=_FisherMeta):
    """A Fisher approximation G~ of G = J^T J / N (Karakida & Osawa 2020, eqs. 8-9, 15).

    Attributes:
        rho: the damping rho >= 0 added to the Fisher (eq. 9; to each Kronecker factor for K-FAC);
            0 is the pseudo-inverse (zero-damping limit). An array leaf: a new value reuses
            compiled code. ``damping`` is its old name, kept as a constructor keyword and a
            read-only attribute.
        rcond: the relative rank cutoff of the pseudo-inverses (default: ``PINV_RCOND`` for the
            sample-space Fishers, ``ENTRYWISE_RCOND`` for the entry-wise ones). An array leaf.

    Subclasses implement ``prepare`` (once per state) and ``apply`` (per residual), and where they
    exist the theory methods ``undamped_alpha`` and ``analytic_theta_bar``.
    """

    rho: Float[Array, ""] = eqx.field(default=0.0, converter=_rho)
    rcond: Float[Array, ""] = eqx.field(default=None, converter=_pinv_rcond)
    name: ClassVar[str]

    @property
    def damping(self) -> Float[Array, ""]:
        """The old name of :attr:`rho`."""
        return self.rho

    @property
    def loss(self) -> str:
        """The name of the loss this Fisher preconditions: ``mse`` (cross-entropy is layer-wise
        only, S.157)."""
        return "mse"

    @property
    def loss_function(self) -> AbstractLoss:
        """The loss this Fisher preconditions, as a :class:`~dlnsim.wide.AbstractLoss`."""
        return SquaredError()

    def check_depth(self, depth: int) -> None:
        """Refuses a depth at which this Fisher's pseudo-inverse NGD is singular (none by default)."""

    @abc.abstractmethod
    def prepare(self, mlp: MLP, sig: Signals, *, power=None) -> Any:
        """Everything this Fisher needs from the training signals, as a pytree of arrays; ``power`` s
        (None: the pseudo-inverse, s = 1) must be the one later passed to :meth:`apply`."""

    @abc.abstractmethod
    def apply(
        self, mlp: MLP, sig: Signals, prepared, residual: Float[Array, "N C"], *, power=None
    ) -> tuple[list, list | None]:
        """(G~ + rho I)^+ grad L for the residual r (N, C), grad L = J^T r / N, as per-layer ``(ws, bs)``;
        with ``power`` s the fractional (G~ + rho I)^(-s) grad L."""

    def theta_bar(self, mlp: MLP, sig: Signals, prepared, test: Signals) -> Float[Array, "NtC NC"]:
        """Theta_bar(x', x) = J(x') G~^+ J(x)^T / N (S.4) by applying the preconditioner to the N C unit
        residuals (O(N C P) each); the sample-space Fishers override it with a closed form."""
        n, c = sig.f.shape

        def column(e):
            ws, bs = self.apply(mlp, sig, prepared, e.reshape(n, c))
            return _jvp_all(mlp, test, ws, bs).reshape(-1)

        eye = jnp.eye(n * c, dtype=sig.f.dtype)
        return jax.lax.map(column, eye).T

    def residual(self, f: Float[Array, "N C"], y: Float[Array, "N C"]) -> Float[Array, "N C"]:
        """r = dL/df per sample: f - y for MSE (eq. 3), softmax(f) - y for cross-entropy (S.159)."""
        return self.loss_function.residual(f, y)

    def default_learning_rate(self, alpha: float) -> float:
        """eta = c / alpha: c = 1 for MSE (one-step convergence, Cor. 4.2); c = 0.1 for
        cross-entropy, where S.167 gives the rate as c/alpha and a unit step (a Newton step on the
        logits) leaves the linear regime when an initial prediction is confidently wrong."""
        return self.loss_function.rate_constant / alpha

    def undamped_alpha(self, mlp: MLP, n_samples: int, *, forster: bool = False) -> float | None:
        """The alpha of Theta_bar = alpha I at rho = 0, or None where the paper gives none."""
        return None

    def alpha(self, mlp: MLP, n_samples: int, *, forster: bool = False) -> float | None:
        """The theoretical alpha (:meth:`undamped_alpha`), or None with damping > 0 or a traced damping."""
        rho = concrete(self.rho)
        if rho is None or rho > 0:
            return None
        return self.undamped_alpha(mlp, n_samples, forster=forster)

    def analytic_theta_bar(
        self, kernels_test: Kernels, kernels_train: Kernels, *, sigma_w2: float, sigma_b2: float, bias: bool
    ) -> np.ndarray:
        """Infinite-width Theta_bar(x', x) (N', N) per output from analytic kernels, where closed."""
        raise ValueError(
            f"no analytic Theta_bar for {self.name!r}; available for exact, bd, tri-diagonal and kfac"
        )


# ----------------------------------------------------------------------------------------------
# the layer-wise family G = S^T (Sigma x Lambda) S / N (eq. 15, S.163)


def tridiagonal_sigma(depth: int) -> np.ndarray:
    """The L x L block tri-diagonal pattern Sigma: ones on the diagonal and first off-diagonals (eq. 19)."""
    return np.eye(depth) + np.eye(depth, k=1) + np.eye(depth, k=-1)


def tridiagonal_alpha(depth: int, a: float = 1.0, b: float = 1.0) -> float:
    """1^T Sigma^{-1} 1 for the L x L tri-diagonal Toeplitz Sigma (diagonal a, off-diagonals b), from
    da Fonseca & Petronilho's inverse as quoted in Karakida & Osawa 2020, S.93-S.94:

        1^T Sigma^{-1} 1 = (L + 2 b s) / (a + 2 b),  s = (1 + b (sigma_1 + sigma_2)) / (a + 2 b),

    where sigma_1 = (Sigma^{-1})_{11} and sigma_2 = (Sigma^{-1})_{1L} are given by S.94 with
    r_+- = (a +- sqrt(a^2 - 4 b^2)) / (2 b). (The extracted S.93 reads sigma_1 - sigma_2; the sum is
    what the derivation gives and what matches a direct solve.) For a = b = 1 this is s for
    L = 3s and s + 1 for L = 3s + 1 (Lemma 4.3).
    """
    L = int(depth)
    disc = np.sqrt(complex(a * a - 4 * b * b))
    rp, rm = (a + disc) / (2 * b), (a - disc) / (2 * b)
    den = rp ** (L + 1) - rm ** (L + 1)
    if abs(den) < 1e-12:
        raise ValueError(f"the tri-diagonal Sigma is singular at L={L} (L = 2 mod 3, Lemma 4.3)")
    sigma1 = (rp**L - rm**L) / den / b
    sigma2 = (-1) ** (L + 1) * (rp - rm) / den / b
    s = (1 + b * (sigma1 + sigma2)) / (a + 2 * b)
    return float(np.real((L + 2 * b * s) / (a + 2 * b)))


def layerwise_operator(
    grams, sigma: np.ndarray, metric: Array | None, n: int, damping, rcond=PINV_RCOND, power=None
) -> Array:
    """P of shape (L, NC, NC) with Delta theta_l = J_l^T P_l r equal to (G + rho I)^+ J^T r / N.

    G = S^T (Sigma x Lambda) S / N with S = blockdiag(J_l) (eq. 15, S.72-S.74, S.163); Lambda = I (MSE)
    or the damped softmax Hessian. With K_l = V_l D_l V_l^T and Z = blockdiag(V_l D_l^{1/2}):
    G = U C U^T / N with C = Z^T (Sigma x Lambda) Z and orthonormal U = S^T blockdiag(V_l D_l^{-1/2}),
    so G^+ grad L = S^T blockdiag(V_l D_l^{-1/2}) C^+ Z^T (1 x I) r exactly (Moore-Penrose, any rank).
    With rho > 0, C + N rho I is inverted directly; the choice is a ``lax.cond`` on the traced rho.

    With ``power`` s (PSD Sigma): U is orthonormal and grad L = U Z^T (1 x I) r / N lies in its range, so
    (G + rho I)^(-s) grad L = S^T blockdiag(V_l D_l^{-1/2}) (C / N + rho)^(-s) Z^T (1 x I) r / N; at s = 1
    (C / N + rho)^(-1) / N = (C + N rho I)^(-1), the operator above. An indefinite Sigma (tri-diagonal,
    L >= 3) keeps the s = 1 operator, and a traced s != 1 there gives NaN (a concrete one is refused by
    :func:`check_power_pattern`).
    """
    L = len(grams)
    nc = grams[0].shape[0]
    zs, zinv = [], []
    for k in grams:
        evals, evecs = eigh(k)
        keep = evals > rcond * jnp.max(evals)
        root = jnp.where(keep, jnp.sqrt(jnp.where(keep, evals, 1.0)), 0.0)
        zs.append(evecs * root)
        zinv.append(evecs * jnp.where(keep, 1.0 / jnp.where(keep, root, 1.0), 0.0))
    lam = jnp.eye(nc, dtype=grams[0].dtype) if metric is None else metric
    sig = jnp.asarray(sigma, dtype=grams[0].dtype)
    big = jnp.block([[sig[a, b] * zs[a].T @ lam @ zs[b] for b in range(L)] for a in range(L)])
    rhs = jnp.concatenate([z.T for z in zs], axis=0)  # Z^T (1 x I): (L*NC, NC)
    if power is not None and is_psd_pattern(sigma):
        evals, evecs = eigh(0.5 * (big + big.T) / n)
        scale = spectral_power(evals, power=power, damping=damping, rcond=rcond) / n
        coef = evecs @ (scale[:, None] * (evecs.T @ rhs))
        return jnp.stack([zinv[layer] @ coef[layer * nc : (layer + 1) * nc] for layer in range(L)])
    ginv = jax.lax.cond(
        damping > 0,
        lambda: inv(big + n * damping * jnp.eye(big.shape[0], dtype=big.dtype)),
        lambda: symmetric_pinv(0.5 * (big + big.T), rcond),
    )
    coef = ginv @ rhs
    out = jnp.stack([zinv[layer] @ coef[layer * nc : (layer + 1) * nc] for layer in range(L)])
    return out if power is None else jnp.where(power == 1.0, out, jnp.nan)


class AbstractLayerwiseFisher(AbstractFisher):
    """G = S^T (Sigma x Lambda) S / N with S = blockdiag(J_l) (eq. 15): Sigma = 11^T (exact), I (bd) or
    tri-diagonal; Lambda = I for MSE, the damped softmax Hessian for cross-entropy (S.157-S.163).

    Attributes:
        loss: ``mse`` or ``cross-entropy`` (static).
        ce_damping: rho~ > 0 added to the softmax Hessian Lambda (S.158); an array leaf.
    """

    loss: str = eqx.field(default="mse", static=True)
    ce_damping: Float[Array, ""] = eqx.field(default=1e-4, converter=_ce_damping)

    def __check_init__(self):
        if self.loss not in LOSSES:
            loss_named(self.loss)  # the one-line error naming the allowed losses
        if not self.loss_function.linear_residual and concrete(self.ce_damping) == 0:
            raise ValueError(
                "cross-entropy NGD needs ce_damping > 0: the softmax Hessian is singular (S.158)"
            )

    @property
    def loss_function(self) -> AbstractLoss:
        """The loss named by :attr:`loss`."""
        return loss_named(self.loss)

    @classmethod
    @abc.abstractmethod
    def sigma(cls, depth: int) -> np.ndarray:
        """The L x L pattern Sigma of eq. 15."""

    @classmethod
    def sigma_alpha(cls, depth: int) -> float | None:
        """alpha = 1^T Sigma^{-1} 1 (Theorem 4.1), or None when Sigma is singular."""
        s = cls.sigma(depth)
        return float(np.ones(depth) @ np.linalg.solve(s, np.ones(depth)))

    def prepare(self, mlp: MLP, sig: Signals, *, power=None) -> Float[Array, "L NC NC"]:
        """P_l with Delta theta_l = J_l^T P_l r (:func:`layerwise_operator`)."""
        n = sig.f.shape[0]
        sigma = self.sigma(mlp.depth)
        check_power_pattern(sigma, power)
        grams = layer_grams(mlp, sig)
        metric = self.loss_function.output_metric(sig.f, self.ce_damping)
        return layerwise_operator(grams, sigma, metric, n, self.rho, self.rcond, power)

    def apply(self, mlp, sig, prepared, residual, *, power=None):
        """J_l^T P_l r for every layer."""
        n, c = residual.shape
        r = residual.reshape(-1)
        return _vjp_all(mlp, sig, [(prepared[layer] @ r).reshape(n, c) for layer in range(mlp.depth)])

    def theta_bar(self, mlp, sig, prepared, test):
        """sum_l K_l(x', x) P_l (S.71-S.74)."""
        grams = layer_grams(mlp, test, sig)
        return sum(grams[layer] @ prepared[layer] for layer in range(mlp.depth))

    def undamped_alpha(self, mlp, n_samples, *, forster=False):
        """1^T Sigma^{-1} 1 (S.71, S.92-S.94), at any width."""
        return self.sigma_alpha(mlp.depth)

    def analytic_theta_bar(self, kernels_test, kernels_train, *, sigma_w2, sigma_b2, bias):
        """sum_l (Sigma^{-1} 1)_l Theta_l(x', x) Theta_l^{-1} (S.71)."""
        kt, kx = kernels_test, kernels_train
        L = len(kx.A)
        w = np.linalg.solve(self.sigma(L), np.ones(L))
        return sum(w[layer] * kt.layer_ntk[layer] @ np.linalg.inv(kx.layer_ntk[layer]) for layer in range(L))


class ExactFisher(AbstractLayerwiseFisher):
    """The exact Fisher, Sigma = 11^T: Theta_bar = I on the training samples (S.53)."""

    name: ClassVar[str] = "exact"

    @classmethod
    def sigma(cls, depth):
        return np.ones((depth, depth))

    @classmethod
    def sigma_alpha(cls, depth):
        return 1.0

    def prepare(self, mlp, sig, *, power=None):
        """MSE: (sum_l K_l + N rho I)^+ for every layer; cross-entropy: the layer-wise operator. With
        ``power`` s: (K / N + rho I)^(-s) / N, K = J J^T, so that J^T P r = (G + rho I)^(-s) grad L."""
        if not self.loss_function.linear_residual:
            return super().prepare(mlp, sig, power=power)
        n, c = sig.f.shape
        if power is None:
            p = psd_pinv(sum(layer_grams(mlp, sig)), n * self.rho, self.rcond)
        else:
            p = psd_pinv(sum(layer_grams(mlp, sig)) / n, self.rho, self.rcond, power) / n
        return jnp.broadcast_to(p, (mlp.depth, n * c, n * c))

    def analytic_theta_bar(self, kernels_test, kernels_train, *, sigma_w2, sigma_b2, bias):
        """Theta(x', x) Theta^{-1} (S.53)."""
        return kernels_test.ntk @ np.linalg.inv(kernels_train.ntk)


class BlockDiagonalFisher(AbstractLayerwiseFisher):
    """The block-diagonal (bd) Fisher, Sigma = I: alpha = L (Theorem 4.1, S.71)."""

    name: ClassVar[str] = "bd"

    @classmethod
    def sigma(cls, depth):
        return np.eye(depth)

    @classmethod
    def sigma_alpha(cls, depth):
        return float(depth)


class TriDiagonalFisher(AbstractLayerwiseFisher):
    """The block tri-diagonal Fisher (eq. 19): alpha = s (L = 3s) or s + 1 (L = 3s + 1); Sigma is singular
    at L = 3s + 2 (Lemma 4.3, S.92-S.94)."""

    name: ClassVar[str] = "tri-diagonal"

    @classmethod
    def sigma(cls, depth):
        return tridiagonal_sigma(depth)

    @classmethod
    def sigma_alpha(cls, depth):
        return None if depth % 3 == 2 else tridiagonal_alpha(depth)

    def check_depth(self, depth: int) -> None:
        """Refuses the singular tri-diagonal Fisher (L = 2 mod 3, Lemma 4.3) without damping (a traced
        damping is not checked)."""
        if depth % 3 == 2 and concrete(self.rho) == 0:
            raise ValueError(
                f"the tri-diagonal Fisher is singular at depth L={depth} (L = 2 mod 3, Karakida & Osawa "
                "2020, Lemma 4.3) and its pseudo-inverse NGD diverges; use a damping rho > 0 "
                "(--rho, old name --damping) or another depth"
            )

    def analytic_theta_bar(self, kernels_test, kernels_train, *, sigma_w2, sigma_b2, bias):
        L = len(kernels_train.A)
        if L % 3 == 2:
            raise ValueError(f"the tri-diagonal Sigma is singular at L={L} (Lemma 4.3)")
        return super().analytic_theta_bar(kernels_test, kernels_train, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                                          bias=bias)  # fmt: skip


LAYERWISE_FISHERS: dict[str, type[AbstractLayerwiseFisher]] = {
    "exact": ExactFisher,
    "bd": BlockDiagonalFisher,
    "tri-diagonal": TriDiagonalFisher,
}


def _layerwise_class(fisher) -> type[AbstractLayerwiseFisher]:
    if isinstance(fisher, AbstractLayerwiseFisher):
        return type(fisher)
    if isinstance(fisher, str) and fisher in LAYERWISE_FISHERS:
        return LAYERWISE_FISHERS[fisher]
    name = fisher.name if isinstance(fisher, AbstractFisher) else fisher
    raise ValueError(f"{name!r} is not a layer-wise Fisher; choose one of {', '.join(LAYERWISE)}")


def layer_sigma(fisher: str | AbstractLayerwiseFisher, depth: int) -> np.ndarray:
    """Sigma of a layer-wise Fisher G = S^T (Sigma x I) S / N (eq. 15): 11^T, I or tri-diagonal."""
    return _layerwise_class(fisher).sigma(depth)


def layerwise_alpha(fisher: str | AbstractLayerwiseFisher, depth: int) -> float | None:
    """alpha = 1^T Sigma^{-1} 1 of a layer-wise Fisher (Theorem 4.1): 1 (exact), L (bd), and for the
    tri-diagonal Sigma s (L = 3s) or s + 1 (L = 3s + 1); None when Sigma is singular (L = 3s + 2)."""
    return _layerwise_class(fisher).sigma_alpha(depth)
