"""The feedforward network of Bernacchia et al. 2018 and its minibatch natural gradient (eqs. 1-21).

The network is eq. 1, x_i = phi_i(W_i x_{i-1} + b_i), with a linear output layer that is the mean
of a Gaussian predictive density q(y|x) = N(y; x_L, Sigma~), trained on the loss of eq. 6,
1/2 <(y - x_L)^T Sigma~^-1 (y - x_L)>. The hidden layers are linear (a deep linear net, eq. 9) or
tanh (the autoencoder of Fig. 1D). With ``bias=True`` each W_i carries its bias as a last column and
x_{i-1} is augmented with a constant 1, as in sec. 2.

One minibatch direction (eq. 20) estimates Lambda_i = <x_{i-1} x_{i-1}^T> from the forward pass
and Lambda~_i = <e_i e_i^T> from K outputs per input drawn from the model's own predictive density
and backpropagated (both averages are over p_theta, so the true targets enter only the gradient
<e_i x_{i-1}^T>), and returns

    D_i = (1 / L) (Lambda~_i + sqrt(lambda) I)^-1 <e_i x_{i-1}^T> (Lambda_i + sqrt(lambda) I)^-1,

with the Moore-Penrose pseudo-inverse where lambda = 0. The training loop that steps along it,
with the Levenberg-Marquardt rule of eq. 21, is :mod:`dlnsim._online`.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import (
    as_real_array,
    check_covariance,
    check_finite,
    check_key,
    check_nonnegative,
    check_positive,
    check_rcond,
    check_widths,
    is_traced,
)
from ._models import DeepLinearNet
from ._rules import layer_natural_gradient

ACTIVATIONS = ("linear", "tanh")


class FeedforwardNet(eqx.Module):
    """The network of Bernacchia et al. 2018, eq. 1, with a linear output layer.

    Args:
        widths: ``(n_0, ..., n_L)``.
        key: a JAX PRNG key (keyword only).
        activation: ``"linear"`` (a deep linear net, eq. 9) or ``"tanh"`` for every hidden layer;
            the output layer is always linear (it is the mean of the Gaussian predictive density).
        bias: append a bias column to each W_i (sec. 2); the initial biases are zero.
        scale: the weights are ``scale`` times Glorot-normal, N(0, 2 / (n_in + n_out)).

    ``weights[i]`` has shape ``(n_{i+1}, n_i + bias)``.
    """

    weights: tuple[Float[Array, "n_out n_in_aug"], ...]
    widths: tuple[int, ...] = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    bias: bool = eqx.field(static=True)

    def __init__(
        self,
        widths: Sequence[int],
        *,
        key: PRNGKeyArray,
        activation: str = "linear",
        bias: bool = False,
        scale: float = 1.0,
        weights=None,
    ):
        self.widths = check_widths(widths)
        self.activation = activation
        self.bias = bool(bias)
        if weights is None:
            check_key(key)
            ws = DeepLinearNet(
                self.widths, key=key, init="xavier", scale=check_positive("scale", scale)
            ).weights
            if self.bias:
                ws = tuple(jnp.concatenate([w, jnp.zeros((w.shape[0], 1), w.dtype)], axis=1) for w in ws)
            weights = ws
        self.weights = tuple(
            as_real_array(f"W_{i + 1}", w, dtype=jnp.result_type(float), finite=False)
            for i, w in enumerate(weights)
        )

    def __check_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        want = [
            (n_out, n_in + self.bias) for n_in, n_out in zip(self.widths[:-1], self.widths[1:], strict=True)
        ]
        got = [tuple(w.shape) for w in self.weights]
        if got != want:
            raise ValueError(f"weights must have shapes {want} for widths {self.widths}, got {got}")
        for i, w in enumerate(self.weights):
            check_finite(f"W_{i + 1}", w)

    @classmethod
    def from_weights(cls, weights, *, activation: str = "linear", bias: bool = False) -> FeedforwardNet:
        """Wraps given matrices (each ``(n_out, n_in + bias)``)."""
        if weights is None or isinstance(weights, str | bytes | dict) or hasattr(weights, "shape"):
            raise TypeError(f"weights must be a sequence of 2-D matrices, got {type(weights).__name__}")
        weights = tuple(as_real_array(f"W_{i + 1}", w, finite=False) for i, w in enumerate(weights))
        if not weights or any(w.ndim != 2 for w in weights):
            raise ValueError("weights must be a non-empty sequence of 2-D matrices")
        widths = (weights[0].shape[1] - bool(bias),) + tuple(w.shape[0] for w in weights)
        return cls(widths, key=None, activation=activation, bias=bias, weights=weights)

    @property
    def depth(self) -> int:
        return len(self.widths) - 1

    def __call__(self, x: Float[Array, "M n0"]) -> Float[Array, "M nL"]:
        return forward(self.weights, self.activation, self.bias, x)[2]


def forward(weights, activation: str, bias: bool, x):
    """Layer inputs x_{i-1} (augmented with 1 when ``bias``), phi_i' (None where linear), x_L."""
    inputs, slopes = [], []
    h = x
    for i, w in enumerate(weights):
        a = jnp.concatenate([h, jnp.ones((h.shape[0], 1), h.dtype)], axis=1) if bias else h
        inputs.append(a)
        u = a @ w.T
        if activation == "tanh" and i < len(weights) - 1:
            h = jnp.tanh(u)
            slopes.append(1.0 - h**2)
        else:
            h = u
            slopes.append(None)
    return inputs, slopes, h


def backward(weights, widths, slopes, output_error):
    """e_L = phi_L' o output_error, e_i = phi_i' o (W_{i+1}^T e_{i+1}) (Bernacchia et al. 2018, eq. 8).

    ``output_error`` may carry extra leading axes (model samples); the slopes broadcast over them.
    """
    errs = [None] * len(weights)
    e = output_error
    for i in reversed(range(len(weights))):
        if slopes[i] is not None:
            e = e * slopes[i]
        errs[i] = e
        if i > 0:
            e = e @ weights[i][:, : widths[i]]
    return errs


def mean_outer(a, b):
    """<a b^T> over every leading (sample) axis."""
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return a2.T @ b2 / a2.shape[0]


def batch_loss(weights, activation, bias, precision, x, y):
    r = y - forward(weights, activation, bias, x)[2]
    return 0.5 * jnp.mean(jnp.sum((r @ precision) * r, axis=-1))


def precision_and_factor(output_cov, n_out: int, dtype):
    """Sigma~^-1 and C with C C^T = Sigma~^-1 (so xi C^T has covariance Sigma~^-1 for xi ~ N(0, I))."""
    if output_cov is None:
        eye = np.eye(n_out, dtype=dtype)
        return eye, eye
    xp = jnp if isinstance(output_cov, jax.Array) else np  # numpy: no compilation for constants
    precision = xp.linalg.inv(xp.asarray(output_cov, dtype=dtype))
    precision = 0.5 * (precision + precision.T)
    return precision, xp.linalg.cholesky(precision)


def lam_or_damping(lam, damping, default):
    """lambda from ``lam`` or its deprecated old keyword ``damping`` (not both), and the keyword's name
    for error messages."""
    if damping is None:
        return (default if lam is None else lam), "lam"
    if lam is not None:
        raise ValueError("give lambda once: lam (or its deprecated old name damping), not both")
    return damping, "damping"


def minibatch_natural_gradient(
    net: FeedforwardNet, x, y, noise, *, lam=None, output_cov=None, rcond=None, damping=None
):
    """The online natural-gradient direction of Bernacchia et al. 2018, eq. 20 (without alpha).

    Args:
        net: the network.
        x, y: a minibatch, ``(M, n_0)`` and ``(M, n_L)``.
        noise: standard-normal draws ``(K, M, n_L)``: the K model samples per input are
            y~ = x_L + Sigma~^(1/2) xi, so the backpropagated output error is Sigma~^-1 (y~ - x_L).
        lam: the damping lambda >= 0 of eq. 20; sqrt(lambda) I is added to both covariances
            (0, the default: pseudo-inverse).
        output_cov: Sigma~ (identity by default).
        rcond: the pseudo-inverse's relative cutoff (default 10 n eps).
        damping: the deprecated old name of ``lam``.

    Returns:
        ``(directions, gradients)``: D_i = (1/L) (Lambda~_i + sqrt(lambda))^-1 G_i (Lambda_i +
        sqrt(lambda))^-1 and G_i = <e_i x_{i-1}^T> = -dL/dW_i on the minibatch (eqs. 7, 10, 20).
    """
    if not isinstance(net, FeedforwardNet):
        raise TypeError(f"net must be a FeedforwardNet, got {type(net).__name__}")
    n_out = net.widths[-1]
    dtype = net.weights[0].dtype
    x = as_real_array("x", x, 2, dtype=dtype)
    y = as_real_array("y", y, 2, dtype=dtype)
    noise = as_real_array("noise", noise, 3, dtype=dtype)
    m = x.shape[0]
    if x.shape[1] != net.widths[0] or y.shape != (m, n_out) or noise.shape[1:] != (m, n_out):
        raise ValueError(
            f"x, y and noise must be ({m}, {net.widths[0]}), ({m}, {n_out}) and (K, {m}, {n_out}) for "
            f"widths {net.widths}, got {x.shape}, {y.shape} and {noise.shape}"
        )
    lam, lam_name = lam_or_damping(lam, damping, 0.0)
    if not is_traced(lam):
        check_nonnegative(lam_name, lam)
    if not is_traced(rcond):
        check_rcond("rcond", rcond)
    if output_cov is not None and not is_traced(output_cov):
        check_covariance("output_cov", output_cov, n_out, definite=True)
    precision, factor = precision_and_factor(output_cov, n_out, dtype)
    return minibatch_directions(net, x, y, noise, lam, precision, factor, rcond)


def minibatch_directions(net: FeedforwardNet, x, y, noise, lam, precision, factor, rcond):
    """:func:`minibatch_natural_gradient` on checked arrays, with Sigma~^-1 = ``precision`` and its
    factor C C^T = Sigma~^-1 given (:func:`precision_and_factor`); ``rcond`` None is the default."""
    inputs, slopes, out = forward(net.weights, net.activation, net.bias, x)
    errs = backward(net.weights, net.widths, slopes, (y - out) @ precision)
    model_errs = backward(net.weights, net.widths, slopes, noise @ factor.T)
    shift = jnp.sqrt(lam)
    grads, dirs = [], []
    for a, e, e_model in zip(inputs, errs, model_errs, strict=True):
        g = mean_outer(e, a)
        grads.append(g)
        d = layer_natural_gradient(mean_outer(e_model, e_model), g, mean_outer(a, a), shift, rcond)
        dirs.append(d / net.depth)
    return tuple(dirs), tuple(grads)


def predicted_decrease(learning_rate, directions, gradients):
    """(alpha - alpha^2 / 2) sum_i tr(D_i^T G_i) (Bernacchia et al. 2018, footnote 1).

    The decrease of the quadratic model whose Newton step is the direction D, for a step alpha D.
    """
    inner = sum(jnp.sum(d * g) for d, g in zip(directions, gradients, strict=True))
    return (learning_rate - 0.5 * learning_rate**2) * inner


def levenberg_marquardt(lam, rho):
    """lambda_{k+1} = 3 lambda_k / 2 if rho_k < 1/4, 2 lambda_k / 3 if rho_k > 3/4, else lambda_k
    (Bernacchia et al. 2018, eq. 21), for ``lam`` = lambda_k. A NaN rho leaves lambda unchanged."""
    return jnp.where(rho < 0.25, 1.5 * lam, jnp.where(rho > 0.75, lam / 1.5, lam))


__all__ = [
    "ACTIVATIONS",
    "FeedforwardNet",
    "backward",
    "batch_loss",
    "forward",
    "lam_or_damping",
    "mean_outer",
    "minibatch_directions",
    "precision_and_factor",
    "levenberg_marquardt",
    "minibatch_natural_gradient",
    "predicted_decrease",
]
