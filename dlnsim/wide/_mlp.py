"""The wide network and its signals: MLP, forward/backward signals, per-layer Jacobian products and Grams.

Karakida & Osawa 2020, eqs. 1-2 and S.64-S.68. Conventions:

- NTK parameterisation (eq. 1): u_l = (sigma_w / sqrt(M_{l-1})) W_l h_{l-1} + sigma_b b_l, h_l = phi(u_l),
  f = u_L, with every entry of W_l and b_l drawn from N(0, 1) (eq. 2).
- The signals are the forward activations h_{l-1} and the exact back-propagated derivatives
  delta_l = df/du_l (S.64-S.65), so that df/dW_l = (sigma_w / sqrt(M_{l-1})) delta_l h_{l-1}^T and
  df/db_l = sigma_b delta_l. Every Jacobian product J_l^T c, J_l v and Gram K_l = J_l J_l^T is formed
  from them in sample space; no P x P matrix is ever built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import as_real_array, check_depth, check_key, check_nonnegative, check_positive, check_widths
from ._activations import activation_derivative, activation_fn, check_activation


class MLP(eqx.Module):
    """A fully connected network in the NTK parameterisation (Karakida & Osawa 2020, eqs. 1-2).

    Args:
        widths: ``(M_0, M_1, ..., M_{L-1}, C)``: input dimension, hidden widths, outputs. The depth L
            counts weight layers (``len(widths) - 1``).
        activation: one of ``relu``, ``tanh``, ``erf``, ``shifted-relu``, ``identity``.
        key: a JAX PRNG key (keyword only).
        sigma_w2, sigma_b2: the weight and bias variances sigma_w^2, sigma_b^2.
        bias: include the bias terms sigma_b b_l.
        shift: the shift s of ``shifted-relu`` (S.156).
        dtype: float64 when x64 is enabled, else float32.
    """

    weights: tuple[Float[Array, "out in"], ...]
    biases: tuple[Float[Array, " out"], ...] | None
    widths: tuple[int, ...] = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    shift: float = eqx.field(static=True)
    sigma_w2: float = eqx.field(static=True)
    sigma_b2: float = eqx.field(static=True)

    def __init__(
        self,
        widths: Sequence[int],
        activation: str = "relu",
        *,
        key: PRNGKeyArray,
        sigma_w2: float = 2.0,
        sigma_b2: float = 0.5,
        bias: bool = True,
        shift: float = 0.0,
        dtype=None,
    ):
        self.widths = check_widths(widths)
        check_key(key)
        self.activation = check_activation(activation, shift)
        self.shift = float(shift)
        self.sigma_w2 = check_positive("sigma_w2", sigma_w2)
        self.sigma_b2 = check_nonnegative("sigma_b2", sigma_b2)
        dtype = jnp.result_type(float) if dtype is None else dtype
        depth = len(self.widths) - 1
        keys = jr.split(key, 2 * depth)
        self.weights = tuple(
            jr.normal(keys[layer], (self.widths[layer + 1], self.widths[layer]), dtype=dtype)
            for layer in range(depth)
        )
        self.biases = (
            tuple(
                jr.normal(keys[depth + layer], (self.widths[layer + 1],), dtype=dtype)
                for layer in range(depth)
            )
            if bias
            else None
        )

    def __check_init__(self):
        depth = len(self.widths) - 1
        if len(self.weights) != depth:
            raise ValueError(f"an MLP with widths {self.widths} needs {depth} weight matrices")
        for layer, w in enumerate(self.weights):
            if tuple(w.shape) != (self.widths[layer + 1], self.widths[layer]):
                raise ValueError(
                    f"weight {layer + 1} must have shape "
                    f"{(self.widths[layer + 1], self.widths[layer])}, got {w.shape}"
                )
        if self.biases is not None:
            for layer, b in enumerate(self.biases):
                if tuple(b.shape) != (self.widths[layer + 1],):
                    raise ValueError(
                        f"bias {layer + 1} must have shape {(self.widths[layer + 1],)}, got {b.shape}"
                    )

    @classmethod
    def uniform(
        cls, *, depth: int, width: int, input_dim: int, outputs: int = 1, activation: str = "relu", key,
        **kwargs,
    ) -> MLP:  # fmt: skip
        """An MLP of depth L with every hidden width M: widths ``(input_dim, M, ..., M, outputs)``."""
        depth = check_depth(depth)
        return cls((input_dim,) + (width,) * (depth - 1) + (outputs,), activation, key=key, **kwargs)

    @property
    def depth(self) -> int:
        return len(self.widths) - 1

    @property
    def has_bias(self) -> bool:
        return self.biases is not None

    @property
    def sigma_w(self) -> float:
        return math.sqrt(self.sigma_w2)

    @property
    def sigma_b(self) -> float:
        return math.sqrt(self.sigma_b2) if self.has_bias else 0.0

    @property
    def n_params(self) -> int:
        n = sum(a * b for a, b in zip(self.widths[:-1], self.widths[1:], strict=True))
        return n + (sum(self.widths[1:]) if self.has_bias else 0)

    def __call__(self, x: Float[Array, "... M0"]) -> Float[Array, "... C"]:
        """The output f = u_L for inputs of shape (..., M0)."""
        phi = activation_fn(self.activation, self.shift)
        h = x
        for layer in range(self.depth):
            u = (self.sigma_w / math.sqrt(self.widths[layer])) * h @ self.weights[layer].T
            if self.has_bias:
                u = u + self.sigma_b * self.biases[layer]
            h = phi(u) if layer < self.depth - 1 else u
        return h


class Signals(NamedTuple):
    """Forward and backward signals of an MLP on N inputs.

    hs[l]: h_l, shape (N, M_l), for l = 0..L-1 (h_0 = x); deltas[l]: delta_{l+1} = df/du_{l+1},
    shape (N, C, M_{l+1}); f: the outputs, shape (N, C).
    """

    hs: tuple
    deltas: tuple
    f: Array


def signals(mlp: MLP, x: Float[Array, "N M0"]) -> Signals:
    """The activations h_{l-1} and exact back-propagated derivatives delta_l (S.64-S.65)."""
    phi = activation_fn(mlp.activation, mlp.shift)
    dphi = activation_derivative(mlp.activation, mlp.shift)
    L = mlp.depth
    h = x
    hs, us = [], []
    for layer in range(L):
        hs.append(h)
        u = (mlp.sigma_w / math.sqrt(mlp.widths[layer])) * h @ mlp.weights[layer].T
        if mlp.has_bias:
            u = u + mlp.sigma_b * mlp.biases[layer]
        us.append(u)
        if layer < L - 1:
            h = phi(u)
    f = us[-1]
    n, c = f.shape
    delta = jnp.broadcast_to(jnp.eye(c, dtype=f.dtype), (n, c, c))
    deltas = [delta]
    for layer in range(L - 1, 0, -1):
        back = (mlp.sigma_w / math.sqrt(mlp.widths[layer])) * delta @ mlp.weights[layer]
        delta = dphi(us[layer - 1])[:, None, :] * back
        deltas.append(delta)
    return Signals(tuple(hs), tuple(deltas[::-1]), f)


def _layer_vjp(mlp: MLP, sig: Signals, layer: int, c: Array):
    """J_l^T c for a cotangent c of shape (N, C): the (dW_l, db_l) of layer l (0-based)."""
    scale = mlp.sigma_w / math.sqrt(mlp.widths[layer])
    dw = scale * jnp.einsum("nk,nkm,nj->mj", c, sig.deltas[layer], sig.hs[layer])
    db = mlp.sigma_b * jnp.einsum("nk,nkm->m", c, sig.deltas[layer]) if mlp.has_bias else None
    return dw, db


def _layer_jvp(mlp: MLP, sig: Signals, layer: int, dw: Array, db) -> Array:
    """J_l v for a tangent (dW_l, db_l); shape (N, C)."""
    scale = mlp.sigma_w / math.sqrt(mlp.widths[layer])
    out = scale * jnp.einsum("nkm,mj,nj->nk", sig.deltas[layer], dw, sig.hs[layer])
    if mlp.has_bias:
        out = out + mlp.sigma_b * jnp.einsum("nkm,m->nk", sig.deltas[layer], db)
    return out


def _input_gram(mlp: MLP, sa: Signals, sb: Signals, layer: int, with_bias: bool = True) -> Array:
    """sigma_w^2 h_{l-1}(x_a) h_{l-1}(x_b)^T / M_{l-1} (+ sigma_b^2): shape (Na, Nb)."""
    g = mlp.sigma_w2 * sa.hs[layer] @ sb.hs[layer].T / mlp.widths[layer]
    if mlp.has_bias and with_bias:
        g = g + mlp.sigma_b2
    return g


def _flat(d: Array) -> Array:
    """delta of shape (N, C, M) -> (N*C, M), rows ordered (n, k)."""
    return d.reshape(-1, d.shape[-1])


def _expand(g: Array, c: int) -> Array:
    """An (Na, Nb) sample matrix repeated over output pairs: entry ((n,k),(n',k')) = g[n, n']."""
    return jnp.repeat(jnp.repeat(g, c, axis=0), c, axis=1)


def layer_grams(mlp: MLP, sa: Signals, sb: Signals | None = None) -> list[Array]:
    """K_l(x_a, x_b) = J_l(x_a) J_l(x_b)^T for every layer, each (Na*C, Nb*C) (S.68 without 1/N)."""
    sb = sa if sb is None else sb
    c = mlp.widths[-1]
    out = []
    for layer in range(mlp.depth):
        dd = _flat(sa.deltas[layer]) @ _flat(sb.deltas[layer]).T
        out.append(dd * _expand(_input_gram(mlp, sa, sb, layer), c))
    return out


def _vjp_all(mlp: MLP, sig: Signals, cs) -> tuple[list, list | None]:
    ws, bs = [], []
    for layer in range(mlp.depth):
        dw, db = _layer_vjp(mlp, sig, layer, cs[layer])
        ws.append(dw)
        bs.append(db)
    return ws, (bs if mlp.has_bias else None)


def _jvp_all(mlp: MLP, sig: Signals, ws, bs) -> Array:
    return sum(
        _layer_jvp(mlp, sig, layer, ws[layer], None if bs is None else bs[layer])
        for layer in range(mlp.depth)
    )


def _as_update(mlp: MLP, ws, bs) -> MLP:
    """A pytree shaped like ``mlp`` holding the given per-layer arrays (for eqx.apply_updates)."""
    out = eqx.tree_at(lambda m: m.weights, mlp, tuple(ws))
    if mlp.has_bias:
        out = eqx.tree_at(lambda m: m.biases, out, tuple(bs))
    return out


def ntk(mlp: MLP, sig: Signals, test: Signals | None = None) -> Array:
    """The empirical NTK Theta(x', x) = J(x') J(x)^T / N (eq. 6, S.53), (N'C, NC)."""
    test = sig if test is None else test
    return sum(layer_grams(mlp, test, sig)) / sig.f.shape[0]


def check_mlp(mlp) -> None:
    """A TypeError unless ``mlp`` is a :class:`MLP`."""
    if not isinstance(mlp, MLP):
        raise TypeError(f"mlp must be a dlnsim.wide.MLP, got {type(mlp).__name__}")


def check_data(mlp: MLP, x, y, name: str = "x") -> tuple[Array, Array]:
    """Inputs x (N, M_0) and targets y (N, C) of real numbers that fit ``mlp``; finite when
    concrete (under a trace only the shapes and dtypes are checked)."""
    yname = "y" + name[1:]
    dtype = mlp.weights[0].dtype
    x = as_real_array(name, x, 2, dtype=dtype)
    y = as_real_array(yname, y, dtype=dtype)
    m0, c = mlp.widths[0], mlp.widths[-1]
    if y.ndim != 2:
        raise ValueError(f"{yname} must be a 2-D array (N, C) = (N, {c}), got shape {tuple(y.shape)}")
    if x.shape[1] != m0 or y.shape[1] != c:
        raise ValueError(
            f"{name} and {yname} must be (N, {m0}) and (N, {c}) for an MLP with widths {mlp.widths}, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] != y.shape[0] or x.shape[0] < 1:
        raise ValueError(
            f"{name} and {yname} must have the same number N >= 1 of samples, "
            f"got {x.shape[0]} and {y.shape[0]}"
        )
    return x, y
