"""The training losses of the wide nets, one class each: squared error and softmax cross-entropy.

Karakida & Osawa 2020, eq. 3 (MSE) and S.157-S.167 (cross-entropy). A loss gives its value (the
mean over samples), its residual r = dL_n / df (f - y, or softmax(f) - y, S.159), the output metric
Lambda that weights the Fisher G = S^T (Sigma x Lambda) S / N (the identity for MSE; the damped
softmax Hessian for cross-entropy, S.158) and the constant c of the default learning rate c / alpha
(Cor. 4.2; S.167). Theory code asks the loss (``linear_residual``) instead of comparing names;
names are resolved once, by :func:`loss_named`, where a string comes in (the factories and the CLI).

Values and residuals take JAX arrays (traced or not) or numpy arrays, and return the same kind, so
host-side records need no compilation. They reduce over the last two axes (samples, outputs), so a
stack of outputs ``(T, N, C)`` gives ``T`` values in one call.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

CE_RATE = 0.1  # c in eta = c / alpha for cross-entropy (S.167 leaves c free)


def _log_softmax(f):
    if isinstance(f, np.ndarray):
        shifted = f - f.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return jax.nn.log_softmax(f, axis=-1)


def _softmax(f):
    if isinstance(f, np.ndarray):
        z = np.exp(f - f.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)
    return jax.nn.softmax(f, axis=-1)


def _xp(f):
    return np if isinstance(f, np.ndarray) else jnp


def softmax_hessian(f: Float[Array, "N C"], ce_damping) -> Float[Array, "NC NC"]:
    """Lambda + rho~ I: block-diagonal over samples, diag(sigma) - sigma sigma^T per sample (S.158)."""
    p = jax.nn.softmax(f, axis=-1)
    n, c = p.shape
    blocks = jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :] + ce_damping * jnp.eye(c)
    out = jnp.zeros((n * c, n * c), dtype=f.dtype)
    idx = jnp.arange(n)
    out = out.reshape(n, c, n, c).at[idx, :, idx, :].set(blocks).reshape(n * c, n * c)
    return out


class AbstractLoss(eqx.Module):
    """A training loss L = mean_n l(f_n, y_n) of the outputs f ``(N, C)`` and targets y.

    Class attributes:
        name: the name used at the CLI and in the factories.
        linear_residual: the residual is f - y (linear in the outputs) and Lambda = I, so the
            linearised (NTK) dynamics and the analytic Theta_bar apply.
        rate_constant: c in the default NGD learning rate c / alpha.
    """

    name: ClassVar[str]
    linear_residual: ClassVar[bool]
    rate_constant: ClassVar[float]

    @abc.abstractmethod
    def value(self, f, y):
        """The mean loss over samples (over the last two axes of ``f``)."""

    @abc.abstractmethod
    def residual(self, f, y):
        """r = dl / df per sample; the loss gradient in the outputs is r / N."""

    def output_metric(self, f: Float[Array, "N C"], ce_damping) -> Float[Array, "NC NC"] | None:
        """Lambda (+ rho~ I), the sample-space metric of the Fisher; None for the identity."""
        return None


class SquaredError(AbstractLoss):
    """MSE, L = 1/(2N) sum_n ||f_n - y_n||^2 (Karakida & Osawa 2020, eq. 3)."""

    name: ClassVar[str] = "mse"
    linear_residual: ClassVar[bool] = True
    rate_constant: ClassVar[float] = 1.0

    def value(self, f, y):
        xp = _xp(f)
        return 0.5 * xp.mean(xp.sum((f - y) ** 2, axis=-1), axis=-1)

    def residual(self, f, y):
        return f - y


class CrossEntropy(AbstractLoss):
    """Softmax cross-entropy, L = -1/N sum_n y_n . log softmax(f_n) (Karakida & Osawa 2020, S.157)."""

    name: ClassVar[str] = "cross-entropy"
    linear_residual: ClassVar[bool] = False
    rate_constant: ClassVar[float] = CE_RATE

    def value(self, f, y):
        xp = _xp(f)
        return -xp.mean(xp.sum(y * _log_softmax(f), axis=-1), axis=-1)

    def residual(self, f, y):
        """softmax(f) - y (S.159)."""
        return _softmax(f) - y

    def output_metric(self, f, ce_damping):
        """The softmax Hessian plus rho~ I (S.158)."""
        return softmax_hessian(f, ce_damping)


LOSS_CLASSES: dict[str, type[AbstractLoss]] = {cls.name: cls for cls in (SquaredError, CrossEntropy)}
LOSSES = tuple(LOSS_CLASSES)


def loss_named(loss: str | AbstractLoss) -> AbstractLoss:
    """The loss of this name (``mse`` or ``cross-entropy``), or ``loss`` itself if already one."""
    if isinstance(loss, AbstractLoss):
        return loss
    if not isinstance(loss, str) or loss not in LOSS_CLASSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    return LOSS_CLASSES[loss]()


__all__ = [
    "CE_RATE",
    "LOSSES",
    "LOSS_CLASSES",
    "AbstractLoss",
    "CrossEntropy",
    "SquaredError",
    "loss_named",
    "softmax_hessian",
]
