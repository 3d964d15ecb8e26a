"""Discrete online natural gradient descent for deep networks (Bernacchia et al. 2018, sec. 5).

The network is eq. 1, x_i = phi_i(W_i x_{i-1} + b_i), with a linear output layer that is the mean
of a Gaussian predictive density q(y|x) = N(y; x_L, Sigma~), trained on the loss of eq. 6,
1/2 <(y - x_L)^T Sigma~^-1 (y - x_L)>. The hidden layers are linear (a deep linear net, eq. 9) or
tanh (the autoencoder of Fig. 1D). With ``bias=True`` each W_i carries its bias as a last column and
x_{i-1} is augmented with a constant 1, as in sec. 2.

Each online NGD step (eq. 20) takes a minibatch of M inputs, estimates Lambda_i = <x_{i-1} x_{i-1}^T>
from the forward pass, draws K outputs per input from the model's own predictive density and
backpropagates them to estimate Lambda~_i = <e_i e_i^T> (both averages are over p_theta, so the true
targets enter only the gradient <e_i x_{i-1}^T>), and updates

    dW_i = (alpha / L) (Lambda~_i + sqrt(lambda) I)^-1 <e_i x_{i-1}^T> (Lambda_i + sqrt(lambda) I)^-1,

with the Moore-Penrose pseudo-inverse where lambda = 0. The damping lambda (``lam`` in code; its old
keyword ``damping`` is a deprecated alias) follows the Levenberg-Marquardt rule of eq. 21, driven by
the ratio rho of the actual decrease of the minibatch loss to the decrease predicted in the paper's
footnote 1, (alpha - alpha^2/2) sum_i tr(D_i^T G_i) for the direction D_i = dW_i / alpha and
G_i = <e_i x_{i-1}^T>. Plain minibatch SGD takes dW_i = alpha G_i.

Minibatches are drawn with replacement from the training set, one fresh draw per step. A whole run
is one jitted ``lax.scan``; the same key gives the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
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
)
from ._models import DeepLinearNet
from ._rules import layer_natural_gradient

ACTIVATIONS = ("linear", "tanh")


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


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
        return _forward(self.weights, self.activation, self.bias, x)[2]


def _forward(weights, activation: str, bias: bool, x):
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


def _backward(weights, widths, slopes, output_error):
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


def _mean_outer(a, b):
    """<a b^T> over every leading (sample) axis."""
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return a2.T @ b2 / a2.shape[0]


def _batch_loss(weights, activation, bias, precision, x, y):
    r = y - _forward(weights, activation, bias, x)[2]
    return 0.5 * jnp.mean(jnp.sum((r @ precision) * r, axis=-1))


def _precision_and_factor(output_cov, n_out: int, dtype):
    """Sigma~^-1 and C with C C^T = Sigma~^-1 (so xi C^T has covariance Sigma~^-1 for xi ~ N(0, I))."""
    if output_cov is None:
        eye = np.eye(n_out, dtype=dtype)
        return eye, eye
    xp = jnp if isinstance(output_cov, jax.Array) else np  # numpy: no compilation for constants
    precision = xp.linalg.inv(xp.asarray(output_cov, dtype=dtype))
    precision = 0.5 * (precision + precision.T)
    return precision, xp.linalg.cholesky(precision)


def _lam_or_damping(lam, damping, default):
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
    lam, lam_name = _lam_or_damping(lam, damping, 0.0)
    if not isinstance(lam, jax.core.Tracer):
        check_nonnegative(lam_name, lam)
    check_rcond("rcond", rcond)
    if output_cov is not None and not isinstance(output_cov, jax.core.Tracer):
        check_covariance("output_cov", output_cov, n_out, definite=True)
    precision, factor = _precision_and_factor(output_cov, n_out, dtype)
    inputs, slopes, out = _forward(net.weights, net.activation, net.bias, x)
    errs = _backward(net.weights, net.widths, slopes, (y - out) @ precision)
    model_errs = _backward(net.weights, net.widths, slopes, noise @ factor.T)
    shift = jnp.sqrt(lam)
    grads, dirs = [], []
    for a, e, e_model in zip(inputs, errs, model_errs, strict=True):
        g = _mean_outer(e, a)
        grads.append(g)
        d = layer_natural_gradient(_mean_outer(e_model, e_model), g, _mean_outer(a, a), shift, rcond)
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


@dataclass(frozen=True, init=False)
class OnlineNGD:
    """Online NGD with adaptive damping (Bernacchia et al. 2018, eqs. 20-21).

    Args:
        learning_rate: alpha (the paper uses 1).
        batch_size: M (the paper uses 1000).
        model_samples: K samples from q_theta(y|x) per input (the paper uses 1).
        lam: the initial damping lambda_0 >= 0 of eq. 20 (the paper does not give it; default 1).
        adaptive: update lambda_k by eq. 21 (otherwise it stays at ``lam``).
        output_cov: Sigma~ of the predictive density (identity by default).
        rcond: relative cutoff of the pseudo-inverse.
        damping: the deprecated old name of ``lam`` (keyword only; also readable as an attribute).
    """

    learning_rate: float = 1.0
    batch_size: int = 1000
    model_samples: int = 1
    lam: float = 1.0
    adaptive: bool = True
    output_cov: np.ndarray | None = field(default=None, compare=False, hash=False)
    rcond: float | None = None

    def __init__(
        self,
        learning_rate: float = 1.0,
        batch_size: int = 1000,
        model_samples: int = 1,
        lam: float | None = None,
        adaptive: bool = True,
        output_cov: np.ndarray | None = None,
        rcond: float | None = None,
        *,
        damping: float | None = None,
    ):
        lam, lam_name = _lam_or_damping(lam, damping, 1.0)
        check_positive("learning_rate", learning_rate)
        _check_count("batch_size (M)", batch_size)
        _check_count("model_samples (K)", model_samples)
        check_nonnegative(lam_name, lam)
        check_rcond("rcond", rcond)
        if not isinstance(adaptive, bool | np.bool_):
            raise ValueError(f"adaptive must be True or False, got {adaptive!r}")
        if output_cov is not None:
            check_covariance("output_cov", output_cov, definite=True)
        values = (learning_rate, batch_size, model_samples, lam, adaptive, output_cov, rcond)
        for f, value in zip(fields(self), values, strict=True):  # frozen: set once, here
            object.__setattr__(self, f.name, value)

    @property
    def damping(self) -> float:
        """The deprecated old name of :attr:`lam` (the initial lambda)."""
        return self.lam


@dataclass(frozen=True)
class OnlineSGD:
    """Plain minibatch SGD, dW_i = alpha <e_i x_{i-1}^T> (the paper's baseline: M = 20)."""

    learning_rate: float = 0.08
    batch_size: int = 20
    output_cov: np.ndarray | None = field(default=None, compare=False, hash=False)

    def __post_init__(self):
        check_positive("learning_rate", self.learning_rate)
        _check_count("batch_size (M)", self.batch_size)
        if self.output_cov is not None:
            check_covariance("output_cov", self.output_cov, definite=True)


@dataclass(frozen=True)
class OnlineRun:
    """The record of one online run.

    Attributes:
        examples: training examples seen at each record, ``(R + 1,)`` (starts at 0).
        test_loss, train_loss: the loss of eq. 6 on the test and the whole training set at each
            record (``test_loss`` is NaN when no test set was given).
        lam, rho: lambda_k (eq. 20, the damping used by step k) and rho_k (eq. 21, the ratio of
            the actual to the predicted decrease) at every step (NGD; NaN for SGD).
        net: the final network.
        seconds: wall time of the compiled run of all steps (compilation and the loss records
            excluded).
        compile_seconds: the one compilation.
    """

    examples: np.ndarray
    test_loss: np.ndarray
    train_loss: np.ndarray
    lam: np.ndarray
    rho: np.ndarray
    net: FeedforwardNet
    seconds: float
    compile_seconds: float

    @property
    def damping(self) -> np.ndarray:
        """The deprecated old name of :attr:`lam`."""
        return self.lam

    @property
    def seconds_per_step(self) -> float:
        steps = len(self.lam)
        return self.seconds / steps

    @property
    def wall_time(self) -> np.ndarray:
        """Elapsed seconds at each record: the measured mean cost per step times the steps taken."""
        return self.examples / self.examples[-1] * self.seconds


def _step(method, static, weights, lam, lr, x_all, y_all, idx, key):
    activation, bias, widths, precision, factor = static
    m = method.batch_size
    x, y = x_all[idx], y_all[idx]
    if isinstance(method, OnlineSGD):
        inputs, slopes, out = _forward(weights, activation, bias, x)
        errs = _backward(weights, widths, slopes, (y - out) @ precision)
        new = tuple(w + lr * _mean_outer(e, a) for w, e, a in zip(weights, errs, inputs, strict=True))
        nan = jnp.full((), jnp.nan, lam.dtype)
        return new, lam, nan
    net = FeedforwardNet.from_weights(weights, activation=activation, bias=bias)
    noise = jr.normal(key, (method.model_samples, m, widths[-1]), dtype=x.dtype)
    dirs, grads = minibatch_natural_gradient(
        net, x, y, noise, lam=lam, output_cov=method.output_cov, rcond=method.rcond
    )
    new = tuple(w + lr * d for w, d in zip(weights, dirs, strict=True))
    before = _batch_loss(weights, activation, bias, precision, x, y)
    after = _batch_loss(new, activation, bias, precision, x, y)
    rho = (before - after) / predicted_decrease(lr, dirs, grads)
    lam_next = levenberg_marquardt(lam, rho) if method.adaptive else lam
    return new, lam_next, rho


def _host_rng(key) -> np.random.Generator:
    """A numpy generator seeded from a JAX key (the same key gives the same draws)."""
    seed = np.asarray(jr.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    return np.random.default_rng(seed.astype(np.uint32).ravel().tolist())


def _draws(key, steps: int, batch: int, n: int):
    """Every step's minibatch indices ``(steps, M)``, drawn with replacement, and the key of the
    model samples. The latter is an XLA RngBitGenerator key: it compiles far faster than threefry
    inside the scan (deterministic on a given platform)."""
    rng = _host_rng(key)
    idx = rng.integers(0, n, size=(steps, batch), dtype=np.int32)
    model_key = jr.wrap_key_data(jnp.asarray(rng.integers(0, 2**32, size=4, dtype=np.uint32)), impl="rbg")
    return idx, model_key


def _run(method, static, steps, record_every, weights, lam0, lr, key, x_train, y_train, idx):
    """The scan over steps; returns the final weights, the weights at each record, lambda and rho.

    ``idx`` holds each step's minibatch indices, ``(steps, M)``; ``key`` draws the model samples.
    """
    records = steps // record_every

    def one(carry, step):
        ws, lam = carry
        i, batch = step
        ws, lam_next, rho = _step(method, static, ws, lam, lr, x_train, y_train, batch, jr.fold_in(key, i))
        return (ws, lam_next), (lam, rho)

    def block(carry, steps_):
        carry, (lams, rhos) = jax.lax.scan(one, carry, steps_)
        return carry, (carry[0], lams, rhos)

    xs = (jnp.arange(steps).reshape(records, record_every), idx.reshape(records, record_every, -1))
    (ws, _), (saved, lams, rhos) = jax.lax.scan(block, (weights, lam0), xs)
    return ws, saved, lams.reshape(-1), rhos.reshape(-1)


def _record_losses(static, initial, records, x_train, y_train, x_test, y_test):
    """The loss of eq. 6 on the training and test sets at the initial and every recorded state."""
    activation, bias, _, precision, _ = static
    records = jax.tree.map(lambda w0, r: jnp.concatenate([w0[None], r]), initial, records)

    def both(ws):
        train = _batch_loss(ws, activation, bias, precision, x_train, y_train)
        if x_test is None:
            return train, jnp.full((), jnp.nan, train.dtype)
        return train, _batch_loss(ws, activation, bias, precision, x_test, y_test)

    return jax.lax.map(both, records)


def _check_data(net: FeedforwardNet, name: str, x, y):
    x = as_real_array(f"{name} inputs", x, dtype=net.weights[0].dtype, finite=False)
    y = as_real_array(f"{name} targets", y, dtype=net.weights[0].dtype, finite=False)
    n0, nl = net.widths[0], net.widths[-1]
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != n0 or y.shape[1] != nl or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name} inputs and targets must be (P, {n0}) and (P, {nl}) with the same P, "
            f"got {x.shape} and {y.shape}"
        )
    if x.shape[0] < 1:
        raise ValueError(f"{name} set must hold at least one sample")
    check_finite(f"{name} inputs", x)
    check_finite(f"{name} targets", y)
    return x, y


def _check_output_cov(output_cov, n_out: int) -> None:
    if output_cov is not None and np.shape(output_cov) != (n_out, n_out):
        raise ValueError(
            f"output_cov must be ({n_out}, {n_out}) to match the net's output width {n_out}, "
            f"got {np.shape(output_cov)}"
        )


def _prepare(net, method, steps, record_every, x_train, y_train, test):
    if not isinstance(net, FeedforwardNet):
        raise TypeError(f"net must be a FeedforwardNet, got {type(net).__name__}")
    if not isinstance(method, OnlineNGD | OnlineSGD):
        raise TypeError(f"method must be OnlineNGD or OnlineSGD, got {type(method).__name__}")
    steps = _check_count("steps", steps)
    record_every = _check_count("record_every", record_every)
    if steps % record_every:
        raise ValueError(f"steps ({steps}) must be a multiple of record_every ({record_every})")
    x_train, y_train = _check_data(net, "training", x_train, y_train)
    if test is not None and (isinstance(test, str | bytes) or len(test) != 2):
        raise ValueError("test must be a pair (x_test, y_test)")
    x_test, y_test = (None, None) if test is None else _check_data(net, "test", *test)
    _check_output_cov(method.output_cov, net.widths[-1])
    dtype = net.weights[0].dtype
    precision, factor = _precision_and_factor(method.output_cov, net.widths[-1], dtype)
    static = (net.activation, net.bias, net.widths, precision, factor)
    return steps, record_every, (x_train, y_train, x_test, y_test), static


def train(
    net: FeedforwardNet,
    method: OnlineNGD | OnlineSGD,
    x_train,
    y_train,
    *,
    steps: int,
    key: PRNGKeyArray,
    record_every: int = 1,
    test=None,
) -> OnlineRun:
    """Trains ``net`` online for ``steps`` minibatch steps (one compiled ``lax.scan``).

    Args:
        net: the initial :class:`FeedforwardNet`.
        method: :class:`OnlineNGD` (eqs. 20-21) or :class:`OnlineSGD`.
        x_train, y_train: the training set ``(P, n_0)``, ``(P, n_L)``; minibatches are drawn from it
            with replacement.
        steps: number of updates (a multiple of ``record_every``).
        key: the PRNG key of the minibatch draws and model samples.
        record_every: record the losses every this many steps.
        test: an optional ``(x_test, y_test)``.
    """
    steps, record_every, data, static = _prepare(net, method, steps, record_every, x_train, y_train, test)
    check_key(key)
    x_train, y_train, x_test, y_test = data
    run = jax.jit(partial(_run, method, static, steps, record_every))
    dtype = net.weights[0].dtype
    lam0 = jnp.asarray(getattr(method, "lam", 0.0), dtype)
    lr = jnp.asarray(method.learning_rate, dtype)
    idx, model_key = _draws(key, steps, method.batch_size, x_train.shape[0])
    args = (net.weights, lam0, lr, model_key, x_train, y_train, idx)
    t0 = time.perf_counter()
    compiled = run.lower(*args).compile()
    t1 = time.perf_counter()
    ws, records, lams, rhos = jax.block_until_ready(compiled(*args))
    seconds = time.perf_counter() - t1
    # the losses are evaluated after the timed run, so the wall time counts the updates only
    train_loss, test_loss = jax.jit(partial(_record_losses, static))(net.weights, records, *data)
    examples = np.arange(steps // record_every + 1) * record_every * method.batch_size
    final = FeedforwardNet.from_weights(ws, activation=net.activation, bias=net.bias)
    return OnlineRun(
        examples=examples,
        test_loss=np.asarray(test_loss),
        train_loss=np.asarray(train_loss),
        lam=np.asarray(lams) if isinstance(method, OnlineNGD) else np.full(steps, np.nan),
        rho=np.asarray(rhos),
        net=final,
        seconds=seconds,
        compile_seconds=t1 - t0,
    )


def sgd_learning_rate_search(
    net: FeedforwardNet,
    learning_rates: Sequence[float],
    x_train,
    y_train,
    *,
    steps: int,
    key: PRNGKeyArray,
    batch_size: int = 20,
    output_cov=None,
) -> np.ndarray:
    """The final whole-training-set loss of SGD at each learning rate (the paper's grid search).

    One compiled run, vmapped over ``learning_rates``; every rate sees the same minibatches.
    Diverged runs give NaN or inf.
    """
    rates = as_real_array("learning_rates", learning_rates, numpy=True, finite=False)
    if rates.ndim != 1 or rates.size < 1 or not np.all(np.isfinite(rates)) or np.any(rates <= 0):
        raise ValueError("learning_rates must be a non-empty 1-D list of finite numbers > 0")
    method = OnlineSGD(float(rates[0]), batch_size, output_cov)
    steps, _, data, static = _prepare(net, method, steps, steps, x_train, y_train, None)
    check_key(key)
    dtype = net.weights[0].dtype
    idx, model_key = _draws(key, steps, batch_size, data[0].shape[0])

    def final_loss(lr):
        ws = _run(
            method, static, steps, steps, net.weights, jnp.zeros((), dtype), lr, model_key, *data[:2], idx
        )[0]
        return _batch_loss(ws, static[0], static[1], static[3], *data[:2])

    return np.asarray(jax.jit(jax.vmap(final_loss))(jnp.asarray(rates, dtype)))


__all__ = [
    "ACTIVATIONS",
    "FeedforwardNet",
    "OnlineNGD",
    "OnlineRun",
    "OnlineSGD",
    "levenberg_marquardt",
    "minibatch_natural_gradient",
    "predicted_decrease",
    "sgd_learning_rate_search",
    "train",
]
