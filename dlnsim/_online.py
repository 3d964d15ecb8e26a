"""Discrete online natural gradient descent for deep networks (Bernacchia et al. 2018, sec. 5).

The network, its loss (eq. 6) and the minibatch natural-gradient direction of eq. 20 are in
:mod:`dlnsim._feedforward`. Each online NGD step takes a minibatch of M inputs and K model samples
per input and updates W_i <- W_i + alpha D_i. The damping lambda (``lam`` in code; its old keyword
``damping`` is a deprecated alias) follows the Levenberg-Marquardt rule of eq. 21, driven by the
ratio rho of the actual decrease of the minibatch loss to the decrease predicted in the paper's
footnote 1, (alpha - alpha^2/2) sum_i tr(D_i^T G_i) for the direction D_i and G_i = <e_i x_{i-1}^T>.
Plain minibatch SGD takes dW_i = alpha G_i.

**Hyperparameters are data.** alpha (``learning_rate``), lambda_0 (``lam``), ``rcond`` and
Sigma~ (``output_cov``) are array leaves of :class:`OnlineNGD` and :class:`OnlineSGD`; the
minibatch size M, the samples K and ``adaptive`` are static. The scan is one module-level jitted
program, so a second :func:`train` with new values of the leaves (same shapes) compiles nothing,
and :func:`sgd_learning_rate_search` vmaps one compiled run over alpha.

Minibatches are drawn with replacement from the training set, one fresh draw per step. A whole run
is one jitted ``lax.scan``; the same key gives the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
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
    check_integer,
    check_key,
    check_nonnegative,
    check_positive,
)
from ._curvature_base import hyperparameter, optional_rcond
from ._feedforward import (
    ACTIVATIONS,
    FeedforwardNet,
    backward,
    batch_loss,
    forward,
    lam_or_damping,
    levenberg_marquardt,
    mean_outer,
    minibatch_directions,
    minibatch_natural_gradient,
    precision_and_factor,
    predicted_decrease,
)


def _output_cov(value) -> np.ndarray | None:
    """Sigma~ as a (float64 numpy) array leaf, checked symmetric positive definite; or None."""
    if value is None:
        return None
    return np.asarray(check_covariance("output_cov", value, definite=True), dtype=np.float64)


def _adaptive(value) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"adaptive must be True or False, got {value!r}")
    return bool(value)


class OnlineNGD(eqx.Module):
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

    ``learning_rate``, ``lam``, ``rcond`` and ``output_cov`` are array leaves (checked when
    concrete); ``batch_size``, ``model_samples`` and ``adaptive`` are static.
    """

    learning_rate: Float[Array, ""]
    batch_size: int = eqx.field(static=True)
    model_samples: int = eqx.field(static=True)
    lam: Float[Array, ""]
    adaptive: bool = eqx.field(static=True)
    output_cov: Float[np.ndarray, "n n"] | None
    rcond: Float[Array, ""] | None

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
        lam, lam_name = lam_or_damping(lam, damping, 1.0)
        self.learning_rate = hyperparameter("learning_rate", learning_rate, check_positive)
        self.batch_size = check_integer("batch_size (M)", batch_size)
        self.model_samples = check_integer("model_samples (K)", model_samples)
        self.lam = hyperparameter(lam_name, lam, check_nonnegative)
        self.adaptive = _adaptive(adaptive)
        self.output_cov = _output_cov(output_cov)
        self.rcond = optional_rcond(rcond)

    @property
    def damping(self):
        """The deprecated old name of :attr:`lam` (the initial lambda)."""
        return self.lam


class OnlineSGD(eqx.Module):
    """Plain minibatch SGD, dW_i = alpha <e_i x_{i-1}^T> (the paper's baseline: M = 20).

    ``learning_rate`` (alpha) and ``output_cov`` are array leaves, ``batch_size`` is static."""

    learning_rate: Float[Array, ""]
    batch_size: int = eqx.field(static=True)
    output_cov: Float[np.ndarray, "n n"] | None

    def __init__(self, learning_rate: float = 0.08, batch_size: int = 20, output_cov=None):
        self.learning_rate = hyperparameter("learning_rate", learning_rate, check_positive)
        self.batch_size = check_integer("batch_size (M)", batch_size)
        self.output_cov = _output_cov(output_cov)


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
        compile_seconds: the compilation (near 0 when an earlier run with the same shapes and
            static settings already compiled the program).
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


def _step(method, net, precision, factor, weights, lam, x_all, y_all, idx, key):
    """One update of ``weights`` (the net's activation, bias and widths are static)."""
    lr = method.learning_rate
    x, y = x_all[idx], y_all[idx]
    if isinstance(method, OnlineSGD):
        inputs, slopes, out = forward(weights, net.activation, net.bias, x)
        errs = backward(weights, net.widths, slopes, (y - out) @ precision)
        new = tuple(w + lr * mean_outer(e, a) for w, e, a in zip(weights, errs, inputs, strict=True))
        nan = jnp.full((), jnp.nan, lam.dtype)
        return new, lam, nan
    current = eqx.tree_at(lambda n: n.weights, net, weights)
    noise = jr.normal(key, (method.model_samples, method.batch_size, net.widths[-1]), dtype=x.dtype)
    dirs, grads = minibatch_directions(current, x, y, noise, lam, precision, factor, method.rcond)
    new = tuple(w + lr * d for w, d in zip(weights, dirs, strict=True))
    before = batch_loss(weights, net.activation, net.bias, precision, x, y)
    after = batch_loss(new, net.activation, net.bias, precision, x, y)
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


def _scan(method, net, precision, factor, lam0, key, x_train, y_train, idx, steps, record_every):
    """The scan over steps from ``net``'s weights; returns the final weights, the weights at each
    record, lambda and rho. ``idx`` holds each step's minibatch indices, ``(steps, M)``; ``key``
    draws the model samples."""
    records = steps // record_every

    def one(carry, step):
        ws, lam = carry
        i, batch = step
        out = _step(method, net, precision, factor, ws, lam, x_train, y_train, batch, jr.fold_in(key, i))
        return out[:2], (lam, out[2])

    def block(carry, steps_):
        carry, (lams, rhos) = jax.lax.scan(one, carry, steps_)
        return carry, (carry[0], lams, rhos)

    xs = (jnp.arange(steps).reshape(records, record_every), idx.reshape(records, record_every, -1))
    (ws, _), (saved, lams, rhos) = jax.lax.scan(block, (net.weights, lam0), xs)
    return ws, saved, lams.reshape(-1), rhos.reshape(-1)


_run = jax.jit(_scan, static_argnames=("steps", "record_every"))


@jax.jit
def _record_losses(net, precision, records, x_train, y_train, x_test, y_test):
    """The loss of eq. 6 on the training and test sets at the initial and every recorded state."""
    records = jax.tree.map(lambda w0, r: jnp.concatenate([w0[None], r]), net.weights, records)

    def both(ws):
        train = batch_loss(ws, net.activation, net.bias, precision, x_train, y_train)
        if x_test is None:
            return train, jnp.full((), jnp.nan, train.dtype)
        return train, batch_loss(ws, net.activation, net.bias, precision, x_test, y_test)

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
    """Checked counts, data and Sigma~^-1 with its factor (computed once, on the host)."""
    if not isinstance(net, FeedforwardNet):
        raise TypeError(f"net must be a FeedforwardNet, got {type(net).__name__}")
    if not isinstance(method, OnlineNGD | OnlineSGD):
        raise TypeError(f"method must be OnlineNGD or OnlineSGD, got {type(method).__name__}")
    steps = check_integer("steps", steps)
    record_every = check_integer("record_every", record_every)
    if steps % record_every:
        raise ValueError(f"steps ({steps}) must be a multiple of record_every ({record_every})")
    x_train, y_train = _check_data(net, "training", x_train, y_train)
    if test is not None and (isinstance(test, str | bytes) or len(test) != 2):
        raise ValueError("test must be a pair (x_test, y_test)")
    x_test, y_test = (None, None) if test is None else _check_data(net, "test", *test)
    _check_output_cov(method.output_cov, net.widths[-1])
    precision, factor = precision_and_factor(method.output_cov, net.widths[-1], net.weights[0].dtype)
    return steps, record_every, (x_train, y_train, x_test, y_test), (precision, factor)


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

    The compiled scan is shared by every call with the same shapes, ``steps``, ``record_every``
    and static settings: new values of alpha, lambda_0, rcond or Sigma~ compile nothing.
    """
    steps, record_every, data, (precision, factor) = _prepare(
        net, method, steps, record_every, x_train, y_train, test
    )
    check_key(key)
    x_train, y_train = data[:2]
    dtype = net.weights[0].dtype
    method = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), method)
    lam0 = jnp.asarray(getattr(method, "lam", 0.0), dtype)
    idx, model_key = _draws(key, steps, method.batch_size, x_train.shape[0])
    args = (method, net, precision, factor, lam0, model_key, x_train, y_train, idx)
    t0 = time.perf_counter()
    compiled = _run.lower(*args, steps=steps, record_every=record_every).compile()
    t1 = time.perf_counter()
    ws, records, lams, rhos = jax.block_until_ready(compiled(*args))
    seconds = time.perf_counter() - t1
    # the losses are evaluated after the timed run, so the wall time counts the updates only
    train_loss, test_loss = _record_losses(net, precision, records, *data)
    examples = np.arange(steps // record_every + 1) * record_every * method.batch_size
    return OnlineRun(
        examples=examples,
        test_loss=np.asarray(test_loss),
        train_loss=np.asarray(train_loss),
        lam=np.asarray(lams) if isinstance(method, OnlineNGD) else np.full(steps, np.nan),
        rho=np.asarray(rhos),
        net=FeedforwardNet.from_weights(ws, activation=net.activation, bias=net.bias),
        seconds=seconds,
        compile_seconds=t1 - t0,
    )


@partial(jax.jit, static_argnames="steps")
def _final_losses(rates, method, net, precision, factor, key, x_train, y_train, idx, *, steps):
    """The final whole-training-set loss of SGD at each learning rate in ``rates`` (one vmap over
    the method's alpha leaf)."""

    def final(rate):
        sgd = eqx.tree_at(lambda m: m.learning_rate, method, rate)
        lam0 = jnp.zeros((), rate.dtype)
        ws = _scan(sgd, net, precision, factor, lam0, key, x_train, y_train, idx, steps, steps)[0]
        return batch_loss(ws, net.activation, net.bias, precision, x_train, y_train)

    return jax.vmap(final)(rates)


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

    One compiled run, vmapped over ``learning_rates`` (the array leaf alpha of
    :class:`OnlineSGD`); every rate sees the same minibatches. Diverged runs give NaN or inf.
    """
    rates = as_real_array("learning_rates", learning_rates, numpy=True, finite=False)
    if rates.ndim != 1 or rates.size < 1 or not np.all(np.isfinite(rates)) or np.any(rates <= 0):
        raise ValueError("learning_rates must be a non-empty 1-D list of finite numbers > 0")
    method = OnlineSGD(float(rates[0]), batch_size, output_cov)
    steps, _, data, (precision, factor) = _prepare(net, method, steps, steps, x_train, y_train, None)
    check_key(key)
    dtype = net.weights[0].dtype
    idx, model_key = _draws(key, steps, batch_size, data[0].shape[0])
    losses = _final_losses(
        jnp.asarray(rates, dtype), method, net, precision, factor, model_key, *data[:2], idx, steps=steps
    )
    return np.asarray(losses)


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
