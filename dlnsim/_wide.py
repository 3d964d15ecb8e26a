"""Wide nonlinear networks trained by natural gradient with approximate Fisher information.

Karakida & Osawa 2020 (main text eqs. 1-3, 8-9, 15-23; supplement S.64-S.167). Conventions:

- NTK parameterisation (eq. 1): u_l = (sigma_w / sqrt(M_{l-1})) W_l h_{l-1} + sigma_b b_l, h_l = phi(u_l),
  f = u_L, with every entry of W_l and b_l drawn from N(0, 1) (eq. 2).
- MSE loss L = 1/(2N) sum_n ||f(x_n) - y_n||^2 (eq. 3); its gradient is J^T r / N with r = f - y.
- Fisher G = J^T J / N (eq. 8), damped G + rho I; the update is theta <- theta - eta G^+ grad L, with
  the Moore-Penrose pseudo-inverse when rho = 0 (eq. 9).
- Theta_bar(x', x) = J(x') G^+ J(x)^T / N (S.4): one step moves f by -eta Theta_bar r.

Every approximation is applied through sample-space matrices of size N*C (per-layer Grams
K_l = J_l J_l^T, unit blocks K_{l,i}, Kronecker factors) or, for the entry-wise ones, through O(P)
diagonals; no P x P matrix is ever formed. The signals are the forward activations h_{l-1} and the
exact back-propagated derivatives delta_l = df/du_l (S.64-S.65), so that
df/dW_l = (sigma_w / sqrt(M_{l-1})) delta_l h_{l-1}^T and df/db_l = sigma_b delta_l.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import (
    as_real_array,
    check_depth,
    check_integer,
    check_key,
    check_nonnegative,
    check_positive,
    check_real,
    check_widths,
)
from ._linalg import eigh, inv
from ._tasks import read_xy_npz

ACTIVATIONS = ("relu", "tanh", "erf", "shifted-relu", "identity")
FISHERS = ("exact", "bd", "tri-diagonal", "kfac", "unit-wise", "diagonal", "quasi-diagonal")
LAYERWISE = ("exact", "bd", "tri-diagonal")
LOSSES = ("mse", "cross-entropy")

_RCOND = 1e-10  # eigenvalues below this fraction of the largest are treated as zero (pseudo-inverse)


# ----------------------------------------------------------------------------------------------
# activations


def check_activation(activation: str, shift: float = 0.0) -> str:
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    shift = check_nonnegative("shift", shift)
    if shift != 0.0 and activation != "shifted-relu":
        raise ValueError(f"shift applies to the shifted-relu activation only, not {activation!r}")
    return activation


def activation_fn(activation: str, shift: float = 0.0):
    """phi(u). ``shifted-relu`` is phi_s(u) = u for u >= -s, -s otherwise (S.156)."""
    check_activation(activation, shift)
    if activation == "relu":
        return jax.nn.relu
    if activation == "tanh":
        return jnp.tanh
    if activation == "erf":
        return jax.scipy.special.erf
    if activation == "shifted-relu":
        return lambda u: jnp.maximum(u, -shift)
    return lambda u: u


def activation_derivative(activation: str, shift: float = 0.0):
    """phi'(u); for the (shifted) relu the derivative at the kink is taken as 0."""
    check_activation(activation, shift)
    if activation == "relu":
        return lambda u: (u > 0).astype(u.dtype)
    if activation == "tanh":
        return lambda u: 1.0 - jnp.tanh(u) ** 2
    if activation == "erf":
        return lambda u: 2.0 / math.sqrt(math.pi) * jnp.exp(-(u**2))
    if activation == "shifted-relu":
        return lambda u: (u > -shift).astype(u.dtype)
    return jnp.ones_like


# ----------------------------------------------------------------------------------------------
# the network


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


# ----------------------------------------------------------------------------------------------
# linear algebra in sample space


def _sym_pinv(m: Array, shift: float = 0.0, rcond: float = _RCOND) -> Array:
    """(m + shift I)^+ for a symmetric (batched) m via eigh; with shift > 0 a plain inverse."""
    m = 0.5 * (m + jnp.swapaxes(m, -1, -2))
    evals, evecs = eigh(m)
    evals = evals + shift
    top = jnp.max(jnp.abs(evals), axis=-1, keepdims=True)
    keep = jnp.abs(evals) > rcond * top
    inv = jnp.where(keep, 1.0 / jnp.where(keep, evals, 1.0), 0.0)
    return (evecs * inv[..., None, :]) @ jnp.swapaxes(evecs, -1, -2)


def tridiagonal_sigma(depth: int) -> np.ndarray:
    """The L x L block tri-diagonal pattern Sigma: ones on the diagonal and first off-diagonals (eq. 19)."""
    s = np.eye(depth) + np.eye(depth, k=1) + np.eye(depth, k=-1)
    return s


def layer_sigma(fisher: str, depth: int) -> np.ndarray:
    """Sigma of a layer-wise Fisher G = S^T (Sigma x I) S / N (eq. 15): 11^T, I or tri-diagonal."""
    if fisher == "exact":
        return np.ones((depth, depth))
    if fisher == "bd":
        return np.eye(depth)
    if fisher == "tri-diagonal":
        return tridiagonal_sigma(depth)
    raise ValueError(f"{fisher!r} is not a layer-wise Fisher; choose one of {', '.join(LAYERWISE)}")


# ----------------------------------------------------------------------------------------------
# Fisher approximations


@dataclass(frozen=True)
class Fisher:
    """A Fisher approximation and its options.

    Attributes:
        name: one of ``FISHERS``.
        damping: rho >= 0 added to the Fisher (each Kronecker factor for ``kfac``); 0 is the
            pseudo-inverse (zero-damping limit). Train ``unit-wise`` with a small rho > 0 (Lemma C.3):
            at rho = 0 the update of unit i scales as 1 / |W_{L,i}| and leaves the linear regime.
        kfac_bias: ``"augmented"`` treats the bias as an extra input column [sigma_w h / sqrt(M); sigma_b]
            (S.B.3.3, first approach); ``"block"`` keeps K-FAC for the weights and a per-layer bias
            block grad_b f^T grad_b f / N^2 (S.123-S.124), which lets the Forster transform act on the
            inputs alone.
        loss: ``mse`` or ``cross-entropy`` (layer-wise only, S.157-S.167).
        ce_damping: rho~ added to the softmax Hessian Lambda (S.158).
    """

    name: str
    damping: float = 0.0
    kfac_bias: str = "augmented"
    loss: str = "mse"
    ce_damping: float = 1e-4

    def __post_init__(self):
        if self.name not in FISHERS:
            raise ValueError(f"unknown fisher {self.name!r}; choose one of {', '.join(FISHERS)}")
        check_nonnegative("damping", self.damping)
        check_nonnegative("ce_damping", self.ce_damping)
        if self.kfac_bias not in ("augmented", "block"):
            raise ValueError(f"kfac_bias must be 'augmented' or 'block', got {self.kfac_bias!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.loss == "cross-entropy" and self.name not in LAYERWISE:
            raise ValueError(
                f"cross-entropy NGD is layer-wise only (S.157-S.167): choose one of {', '.join(LAYERWISE)}, "
                f"not {self.name!r}"
            )
        if self.loss == "cross-entropy" and self.ce_damping == 0:
            raise ValueError(
                "cross-entropy NGD needs ce_damping > 0: the softmax Hessian is singular (S.158)"
            )

    def check_depth(self, depth: int) -> None:
        """Refuses the singular tri-diagonal Fisher (L = 2 mod 3, Lemma 4.3) without damping."""
        if self.name == "tri-diagonal" and depth % 3 == 2 and self.damping == 0:
            raise ValueError(
                f"the tri-diagonal Fisher is singular at depth L={depth} (L = 2 mod 3, Karakida & Osawa "
                "2020, Lemma 4.3) and its pseudo-inverse NGD diverges; use damping > 0 (--damping) or "
                "another depth"
            )


def as_fisher(fisher, damping: float | None = None, **kwargs) -> Fisher:
    if isinstance(fisher, Fisher):
        return fisher
    return Fisher(str(fisher), 0.0 if damping is None else float(damping), **kwargs)


class _Precond(NamedTuple):
    """What one Fisher needs to precondition and to form Theta_bar; arrays only (jit-friendly)."""

    mats: tuple  # per-method sample-space matrices


def _softmax_hessian(f: Array, ce_damping: float) -> Array:
    """Lambda + rho~ I: block-diagonal over samples, diag(sigma) - sigma sigma^T per sample (S.158)."""
    p = jax.nn.softmax(f, axis=-1)
    n, c = p.shape
    blocks = jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :] + ce_damping * jnp.eye(c)
    out = jnp.zeros((n * c, n * c), dtype=f.dtype)
    idx = jnp.arange(n)
    out = out.reshape(n, c, n, c).at[idx, :, idx, :].set(blocks).reshape(n * c, n * c)
    return out


def _layerwise_operator(grams, sigma: np.ndarray, metric: Array | None, n: int, damping: float) -> Array:
    """P of shape (L, NC, NC) with Delta theta_l = J_l^T P_l r equal to (G + rho I)^+ J^T r / N.

    G = S^T (Sigma x Lambda) S / N with S = blockdiag(J_l) (eq. 15, S.72-S.74, S.163); Lambda = I (MSE)
    or the damped softmax Hessian. With K_l = V_l D_l V_l^T and Z = blockdiag(V_l D_l^{1/2}):
    G = U C U^T / N with C = Z^T (Sigma x Lambda) Z and orthonormal U = S^T blockdiag(V_l D_l^{-1/2}),
    so G^+ grad L = S^T blockdiag(V_l D_l^{-1/2}) C^+ Z^T (1 x I) r exactly (Moore-Penrose, any rank).
    """
    L = len(grams)
    nc = grams[0].shape[0]
    zs, zinv = [], []
    for k in grams:
        evals, evecs = eigh(0.5 * (k + k.T))
        keep = evals > _RCOND * jnp.max(evals)
        root = jnp.where(keep, jnp.sqrt(jnp.where(keep, evals, 1.0)), 0.0)
        zs.append(evecs * root)
        zinv.append(evecs * jnp.where(keep, 1.0 / jnp.where(keep, root, 1.0), 0.0))
    lam = jnp.eye(nc, dtype=grams[0].dtype) if metric is None else metric
    sig = jnp.asarray(sigma, dtype=grams[0].dtype)
    big = jnp.block([[sig[a, b] * zs[a].T @ lam @ zs[b] for b in range(L)] for a in range(L)])
    if damping > 0:
        ginv = inv(big + n * damping * jnp.eye(big.shape[0]))
    else:
        ginv = _general_pinv(big)
    rhs = jnp.concatenate([z.T for z in zs], axis=0)  # Z^T (1 x I): (L*NC, NC)
    coef = ginv @ rhs
    return jnp.stack([zinv[layer] @ coef[layer * nc : (layer + 1) * nc] for layer in range(L)])


def _general_pinv(m: Array) -> Array:
    """Moore-Penrose pseudo-inverse of a symmetric, possibly indefinite, matrix."""
    m = 0.5 * (m + m.T)
    evals, evecs = eigh(m)
    keep = jnp.abs(evals) > _RCOND * jnp.max(jnp.abs(evals))
    inv = jnp.where(keep, 1.0 / jnp.where(keep, evals, 1.0), 0.0)
    return (evecs * inv) @ evecs.T


def _kfac_factors(mlp: MLP, sig: Signals, fisher: Fisher):
    """Sample-space K-FAC factors (S.95) for every layer, and the S.123 bias blocks if any.

    For layer l: Pb_l = (Bg_l / N + rho)^+ with Bg_l = delta_l delta_l^T (NC x NC), except the output
    layer, where B*_L = I_C / N as in S.95 so that (B*_L + rho)^{-1} = 1 / (1/N + rho); and
    Pa_l = (Ag_{l-1} / N + rho)^+ with Ag = h~ h~^T, h~ = [sigma_w h / sqrt(M); sigma_b] (augmented)
    or sigma_w h / sqrt(M) (block bias).
    """
    n, c = sig.f.shape
    rho = fisher.damping
    augmented = mlp.has_bias and fisher.kfac_bias == "augmented"
    pbs, pas, pbias = [], [], []
    for layer in range(mlp.depth):
        if layer == mlp.depth - 1:
            pbs.append(jnp.eye(n * c, dtype=sig.f.dtype) / (1.0 / n + rho))
        else:
            bg = _flat(sig.deltas[layer]) @ _flat(sig.deltas[layer]).T
            pbs.append(_sym_pinv(bg / n, rho))
        ag = _input_gram(mlp, sig, sig, layer, with_bias=augmented)
        pas.append(_sym_pinv(ag / n, rho))
        if mlp.has_bias and not augmented:
            kb = mlp.sigma_b2 * _flat(sig.deltas[layer]) @ _flat(sig.deltas[layer]).T
            pbias.append(_sym_pinv(kb, n * n * rho))
    return pbs, pas, pbias


def _unit_grams(mlp: MLP, sa: Signals, sb: Signals, layer: int) -> Array:
    """K_{l,i}(x_a, x_b) for every unit i of layer l: (M_l, Na*C, Nb*C) (S.131)."""
    c = mlp.widths[-1]
    ga = _expand(_input_gram(mlp, sa, sb, layer), c)
    da, db = _flat(sa.deltas[layer]).T, _flat(sb.deltas[layer]).T  # (M_l, NC)
    return da[:, :, None] * ga[None] * db[:, None, :]


def _diag_fisher(mlp: MLP, sig: Signals):
    """Entries of diag(J^T J) / N per layer, and for quasi-diagonal the bias-weight couplings."""
    n = sig.f.shape[0]
    out = []
    for layer in range(mlp.depth):
        s = jnp.sum(sig.deltas[layer] ** 2, axis=1)  # (N, M_l): sum over outputs of delta^2
        scale2 = mlp.sigma_w2 / mlp.widths[layer]
        ww = scale2 * s.T @ (sig.hs[layer] ** 2) / n  # (M_l, M_{layer-1})
        bb = mlp.sigma_b2 * jnp.sum(s, axis=0) / n if mlp.has_bias else None
        wb = (
            mlp.sigma_b * math.sqrt(scale2) * s.T @ sig.hs[layer] / n if mlp.has_bias else None
        )  # (M_l, M_{layer-1}): G_{0j} couplings of quasi-diagonal
        out.append((ww, bb, wb))
    return out


def _safe_inv(d: Array, rcond: float = 1e-12) -> Array:
    keep = d > rcond * jnp.max(d)
    return jnp.where(keep, 1.0 / jnp.where(keep, d, 1.0), 0.0)


def _entrywise_apply(mlp: MLP, diag, grads_w, grads_b, fisher: Fisher):
    """Applies the diagonal or quasi-diagonal (Ollivier 2015) inverse to a gradient."""
    rho = fisher.damping
    ws, bs = [], []
    for layer, (ww, bb, wb) in enumerate(diag):
        gw = grads_w[layer]
        if fisher.name == "diagonal" or not mlp.has_bias:
            ws.append(_safe_inv(ww + rho) * gw if rho == 0 else gw / (ww + rho))
            if mlp.has_bias:
                bs.append(_safe_inv(bb + rho) * grads_b[layer] if rho == 0 else grads_b[layer] / (bb + rho))
            continue
        # quasi-diagonal: for each unit solve the 2x2 (bias, w_j) systems for w_j, then the bias row
        a00 = (bb + rho)[:, None]
        ajj = ww + rho
        a0j = wb
        g0 = grads_b[layer][:, None]
        det = a00 * ajj - a0j**2
        tr = a00 + ajj
        scale = jnp.max(tr)
        regular = det > 1e-12 * tr**2
        vj_reg = (a00 * gw - a0j * g0) / jnp.where(regular, det, 1.0)
        # rank-one 2x2 block M: pseudo-inverse M / tr(M)^2
        vj_sing = jnp.where(tr > 1e-14 * scale, (ajj * gw + a0j * g0) / jnp.where(tr > 0, tr, 1.0) ** 2, 0.0)
        vj = jnp.where(regular, vj_reg, vj_sing)
        a00v = a00[:, 0]
        v0 = jnp.where(
            a00v > 1e-14 * scale,
            (grads_b[layer] - jnp.sum(a0j * vj, axis=1)) / jnp.where(a00v > 0, a00v, 1.0),
            0.0,
        )
        ws.append(vj)
        bs.append(v0)
    return ws, (bs if mlp.has_bias else None)


def _residual_cotangent(fisher: Fisher, f: Array, y: Array) -> Array:
    """r = df of the loss per sample: f - y (MSE) or softmax(f) - y (cross-entropy)."""
    if fisher.loss == "cross-entropy":
        return jax.nn.softmax(f, axis=-1) - y
    return f - y


def precondition(mlp: MLP, sig: Signals, fisher: Fisher):
    """Everything a Fisher needs from the training signals; pass to ``natural_gradient`` / ``theta_bar``."""
    n, c = sig.f.shape
    rho = fisher.damping
    if fisher.name in LAYERWISE:
        grams = layer_grams(mlp, sig)
        if fisher.name == "exact" and fisher.loss == "mse":
            p = _sym_pinv(sum(grams), n * rho)
            return _Precond((jnp.broadcast_to(p, (mlp.depth, n * c, n * c)),))
        metric = _softmax_hessian(sig.f, fisher.ce_damping) if fisher.loss == "cross-entropy" else None
        return _Precond((_layerwise_operator(grams, layer_sigma(fisher.name, mlp.depth), metric, n, rho),))
    if fisher.name == "kfac":
        pbs, pas, pbias = _kfac_factors(mlp, sig, fisher)
        return _Precond((tuple(pbs), tuple(pas), tuple(pbias)))
    if fisher.name == "unit-wise":
        return _Precond(
            tuple(_sym_pinv(_unit_grams(mlp, sig, sig, layer), n * rho) for layer in range(mlp.depth))
        )
    return _Precond((tuple(_diag_fisher(mlp, sig)),))


def natural_gradient(mlp: MLP, sig: Signals, residual: Array, fisher: Fisher, pre: _Precond | None = None):
    """(G + rho I)^+ grad L for the residual r (N, C) as per-layer lists ``(ws, bs)``.

    grad L = J^T r / N. Layer-wise Fishers return J_l^T P_l r; K-FAC applies its two factors in
    sample space; unit-wise applies J_{l,i}^T (K_{l,i} + N rho)^+ r per unit; the entry-wise ones
    scale the gradient.
    """
    fisher = as_fisher(fisher)
    pre = precondition(mlp, sig, fisher) if pre is None else pre
    n, c = residual.shape
    r = residual.reshape(-1)
    if fisher.name in LAYERWISE:
        (p,) = pre.mats
        cs = [(p[layer] @ r).reshape(n, c) for layer in range(mlp.depth)]
        return _vjp_all(mlp, sig, cs)
    if fisher.name == "kfac":
        pbs, pas, pbias = pre.mats
        augmented = mlp.has_bias and fisher.kfac_bias == "augmented"
        ws, bs = [], []
        for layer in range(mlp.depth):
            htil = (mlp.sigma_w / math.sqrt(mlp.widths[layer])) * sig.hs[layer]
            if augmented:
                htil = jnp.concatenate([htil, mlp.sigma_b * jnp.ones((n, 1), htil.dtype)], axis=1)
            u = jnp.repeat(pas[layer] @ htil, c, axis=0)  # E Pa h~: (NC, M+1)
            x = pbs[layer] @ (r[:, None] * u)
            full = _flat(sig.deltas[layer]).T @ x / n  # delta^T Pb diag(r) E Pa h~ / N
            if augmented:
                ws.append(full[:, :-1])
                bs.append(full[:, -1])
            else:
                ws.append(full)
                if mlp.has_bias:
                    cb = (n * pbias[layer] @ r).reshape(n, c)
                    bs.append(mlp.sigma_b * jnp.einsum("nk,nkm->m", cb, sig.deltas[layer]))
        return ws, (bs if mlp.has_bias else None)
    if fisher.name == "unit-wise":
        ws, bs = [], []
        for layer in range(mlp.depth):
            coef = pre.mats[layer] @ r  # (M_l, NC)
            d = _flat(sig.deltas[layer]).T  # (M_l, NC)
            cd = (coef * d).reshape(-1, n, c).sum(-1)  # (M_l, N)
            ws.append((mlp.sigma_w / math.sqrt(mlp.widths[layer])) * cd @ sig.hs[layer])
            if mlp.has_bias:
                bs.append(mlp.sigma_b * cd.sum(-1))
        return ws, (bs if mlp.has_bias else None)
    gw, gb = _vjp_all(mlp, sig, [residual / n] * mlp.depth)
    return _entrywise_apply(mlp, pre.mats[0], gw, gb, fisher)


def theta_bar(
    mlp: MLP, sig: Signals, fisher, pre: _Precond | None = None, test: Signals | None = None
) -> Array:
    """Theta_bar(x', x) = J(x') G^+ J(x)^T / N (S.4), (N'C, NC); x' = the training inputs by default.

    Formed in sample space: layer-wise sum_l K_l(x', x) P_l (S.71-S.74); K-FAC
    (1/N) sum_l [delta' Pb delta^T] o [E h~' Pa h~^T E^T] (S.96-S.105); unit-wise
    sum_{l,i} K_{l,i}(x', x) (K_{l,i} + N rho)^+ (S.130, S.155); the entry-wise ones by applying the
    preconditioner to the N*C unit residuals (O(N C P) each).
    """
    fisher = as_fisher(fisher)
    pre = precondition(mlp, sig, fisher) if pre is None else pre
    test = sig if test is None else test
    n, c = sig.f.shape
    if fisher.name in LAYERWISE:
        (p,) = pre.mats
        grams = layer_grams(mlp, test, sig)
        return sum(grams[layer] @ p[layer] for layer in range(mlp.depth))
    if fisher.name == "kfac":
        pbs, pas, pbias = pre.mats
        augmented = mlp.has_bias and fisher.kfac_bias == "augmented"
        out = 0.0
        for layer in range(mlp.depth):
            bpart = _flat(test.deltas[layer]) @ _flat(sig.deltas[layer]).T @ pbs[layer]
            apart = _expand(_input_gram(mlp, test, sig, layer, with_bias=augmented) @ pas[layer], c)
            out = out + bpart * apart / n
            if mlp.has_bias and not augmented:
                kb = mlp.sigma_b2 * _flat(test.deltas[layer]) @ _flat(sig.deltas[layer]).T
                out = out + n * kb @ pbias[layer]
        return out
    if fisher.name == "unit-wise":
        out = 0.0
        for layer in range(mlp.depth):
            out = out + jnp.einsum("iab,ibc->ac", _unit_grams(mlp, test, sig, layer), pre.mats[layer])
        return out

    def column(e):
        ws, bs = natural_gradient(mlp, sig, e.reshape(n, c), fisher, pre)
        return _jvp_all(mlp, test, ws, bs).reshape(-1)

    eye = jnp.eye(n * c, dtype=sig.f.dtype)
    return jax.lax.map(column, eye).T


def ntk(mlp: MLP, sig: Signals, test: Signals | None = None) -> Array:
    """The empirical NTK Theta(x', x) = J(x') J(x)^T / N (eq. 6, S.53), (N'C, NC)."""
    test = sig if test is None else test
    return sum(layer_grams(mlp, test, sig)) / sig.f.shape[0]


def isotropy(tbar: Array) -> tuple[float, float]:
    """(alpha_measured, condition number): the mean of Theta_bar's diagonal and lambda_max / lambda_min
    over its nonzero eigenvalues (Karakida & Osawa 2020, eq. 12 and Fig. 3)."""
    tb = np.asarray(tbar)
    alpha = float(np.mean(np.diag(tb)))
    ev = np.abs(np.linalg.eigvals(tb))
    ev = ev[ev > 1e-10 * ev.max()]
    return alpha, float(ev.max() / ev.min())


# ----------------------------------------------------------------------------------------------
# the optimiser


CE_RATE = 0.1  # c in eta = c / alpha for cross-entropy (S.167 leaves c free)


def default_learning_rate(fisher: Fisher, alpha: float) -> float:
    """eta = 1/alpha for MSE (one-step convergence, Cor. 4.2); eta = 0.1/alpha for cross-entropy, where
    S.167 gives the rate as c/alpha and a unit step (a Newton step on the logits) leaves the linear
    regime when an initial prediction is confidently wrong."""
    return (CE_RATE if fisher.loss == "cross-entropy" else 1.0) / alpha


def _check_mlp(mlp) -> None:
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


def _check_task_fits(mlp: MLP, task) -> None:
    """A WideTask whose input and output widths are the MLP's."""
    _check_mlp(mlp)
    if not isinstance(task, WideTask):
        raise TypeError(f"task must be a dlnsim.wide.WideTask, got {type(task).__name__}")
    check_data(mlp, task.x_train, task.y_train, "x_train")
    check_data(mlp, task.x_test, task.y_test, "x_test")


class NGDState(NamedTuple):
    step: Array


@dataclass(frozen=True)
class NGD:
    """Discrete NGD in the optax style: ``state = opt.init(mlp)``, then
    ``updates, state = opt.update(mlp, x, y, state)`` and ``mlp = eqx.apply_updates(mlp, updates)``.

    ``updates = -learning_rate * (G + rho I)^+ grad L`` for the chosen Fisher. With
    ``learning_rate=None`` the step is the theory-optimal 1/alpha (Karakida & Osawa 2020, Cor. 4.2),
    alpha from :func:`dlnsim.wide.alpha_theory` for the network and the batch size.
    """

    fisher: Fisher
    learning_rate: float | None = None
    forster: bool = False

    def __post_init__(self):
        if not isinstance(self.fisher, Fisher):
            raise TypeError(
                f"fisher must be a dlnsim.wide.Fisher (see ngd()), got {type(self.fisher).__name__}"
            )
        if self.learning_rate is not None:
            check_positive("learning_rate", self.learning_rate)

    def init(self, mlp: MLP) -> NGDState:
        _check_mlp(mlp)
        self.fisher.check_depth(mlp.depth)
        return NGDState(jnp.zeros((), dtype=jnp.int32))

    def resolve_learning_rate(self, mlp: MLP, n_samples: int) -> float:
        """The given rate, else 1/alpha (MSE) or 0.1/alpha (cross-entropy)."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        from ._kernels import alpha_theory

        alpha = alpha_theory(self.fisher, mlp, n_samples, forster=self.forster)
        if alpha is None:
            raise ValueError(
                f"no theoretical alpha for fisher {self.fisher.name!r} in this setting; pass a learning_rate"
            )
        return default_learning_rate(self.fisher, alpha)

    def update(self, mlp: MLP, x: Array, y: Array, state: NGDState):
        _check_mlp(mlp)
        x, y = check_data(mlp, x, y)
        self.fisher.check_depth(mlp.depth)
        lr = self.resolve_learning_rate(mlp, x.shape[0])
        sig = signals(mlp, x)
        r = _residual_cotangent(self.fisher, sig.f, y)
        ws, bs = natural_gradient(mlp, sig, r, self.fisher)
        ws = [-lr * w for w in ws]
        bs = None if bs is None else [-lr * b for b in bs]
        return _as_update(mlp, ws, bs), NGDState(state.step + 1)


def ngd(
    fisher: str | Fisher = "bd",
    damping: float = 0.0,
    learning_rate: float | None = None,
    *,
    loss: str = "mse",
    kfac_bias: str = "augmented",
    ce_damping: float = 1e-4,
    forster: bool = False,
) -> NGD:
    """An NGD optimiser with the named Fisher approximation, e.g. ``ngd(fisher="bd", damping=0.0)``.

    ``forster=True`` tells the default learning rate that the inputs were Forster-transformed
    (alpha = N(L-1) + M0 for kfac, S.111).
    """
    if learning_rate is not None:
        check_positive("learning_rate", learning_rate)
    if isinstance(fisher, Fisher):
        f = fisher
    else:
        f = Fisher(str(fisher), check_nonnegative("damping", damping), kfac_bias, loss, ce_damping)
    return NGD(f, learning_rate, bool(forster))


# ----------------------------------------------------------------------------------------------
# data


class WideTask(eqx.Module):
    """Training and test data with inputs normalised to ||x|| = 1 (Assumption 2).

    x_train (N, M0), y_train (N, C), x_test (N', M0), y_test (N', C); ``kind`` is ``"binary"``
    (one output, targets +-0.5, predicted class = sign), ``"multiclass"`` (one-hot, argmax) or
    ``"regression"``.
    """

    x_train: Float[Array, "N M0"]
    y_train: Float[Array, "N C"]
    x_test: Float[Array, "Nt M0"]
    y_test: Float[Array, "Nt C"]
    kind: str = eqx.field(static=True)
    description: str = eqx.field(static=True)

    def __check_init__(self):
        if self.kind not in ("binary", "multiclass", "regression"):
            raise ValueError(f"kind must be 'binary', 'multiclass' or 'regression', got {self.kind!r}")
        for name in ("x_train", "y_train", "x_test", "y_test"):
            as_real_array(name, getattr(self, name))
            if getattr(self, name).ndim != 2:
                raise ValueError(f"{name} must be 2-D, got shape {getattr(self, name).shape}")
        if self.x_train.shape[0] != self.y_train.shape[0] or self.x_test.shape[0] != self.y_test.shape[0]:
            raise ValueError(
                f"x and y must have the same number of rows, got {self.x_train.shape}, {self.y_train.shape}, "
                f"{self.x_test.shape}, {self.y_test.shape}"
            )
        if self.x_train.shape[1] != self.x_test.shape[1] or self.y_train.shape[1] != self.y_test.shape[1]:
            raise ValueError("train and test data must have the same input and output dimensions")
        if self.x_train.shape[0] < 1:
            raise ValueError("the task needs at least one training sample")

    @property
    def n_samples(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def outputs(self) -> int:
        return int(self.y_train.shape[1])


def normalize_inputs(x) -> Array:
    """Rows scaled to unit norm (Assumption 2); zero rows are refused."""
    x = as_real_array("x", x, dtype=jnp.result_type(float))
    norms = jnp.linalg.norm(x, axis=-1, keepdims=True)
    if bool(jnp.any(norms == 0)):
        raise ValueError("every input must be nonzero to be normalised to ||x|| = 1")
    return x / norms


def _make_task(x, y, x_test, y_test, kind, description) -> WideTask:
    x, x_test = normalize_inputs(x), normalize_inputs(x_test)
    y = as_real_array("y", y, dtype=x.dtype)
    y_test = as_real_array("y_test", y_test, dtype=x.dtype)
    y = y[:, None] if y.ndim == 1 else y
    y_test = y_test[:, None] if y_test.ndim == 1 else y_test
    return WideTask(x, y, x_test, y_test, kind, description)


def _check_count(name, n, low=1):
    return check_integer(name, n, low)


def synthetic_task(
    key: PRNGKeyArray, samples: int, input_dim: int, *, outputs: int = 1, test_samples: int = 64
) -> WideTask:
    """Gaussian inputs x ~ N(0, I) normalised to ||x|| = 1 (Karakida & Osawa 2020, C.3.1), labelled by
    a random linear teacher: +-0.5 by the sign of v^T x for one output, one-hot argmax V x otherwise."""
    samples = _check_count("samples", samples)
    input_dim = _check_count("input_dim", input_dim)
    outputs = _check_count("outputs", outputs)
    test_samples = _check_count("test_samples", test_samples)
    kx, kt, kv = jr.split(key, 3)
    dtype = jnp.result_type(float)
    x = jr.normal(kx, (samples, input_dim), dtype)
    xt = jr.normal(kt, (test_samples, input_dim), dtype)
    v = jr.normal(kv, (input_dim, outputs), dtype)
    if outputs == 1:
        y, yt = 0.5 * jnp.sign(x @ v), 0.5 * jnp.sign(xt @ v)
        kind = "binary"
    else:
        y = jax.nn.one_hot(jnp.argmax(x @ v, axis=1), outputs, dtype=dtype)
        yt = jax.nn.one_hot(jnp.argmax(xt @ v, axis=1), outputs, dtype=dtype)
        kind = "multiclass"
    desc = f"synthetic Gaussian inputs (M0={input_dim}), random linear teacher, {kind}"
    return _make_task(x, y, xt, yt, kind, desc)


def digits_task(
    key: PRNGKeyArray,
    samples: int,
    *,
    classes: Sequence[int] | None = (0, 7),
    test_samples: int = 200,
    one_hot: bool = False,
) -> WideTask:
    """scikit-learn's bundled 8x8 digits (no download), inputs normalised to ||x|| = 1.

    Two classes (default 0 vs 7, as the MNIST runs of Karakida & Osawa 2020, Fig. S.1) give one
    output with targets +0.5 (first class) and -0.5; more classes give one-hot targets.
    ``classes=None`` uses all ten; ``one_hot=True`` gives one-hot targets for two classes too (for
    cross-entropy). Train and test samples are disjoint random draws.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the install
        raise ValueError(
            "the digits dataset needs scikit-learn: pip install 'dlnsim[wide]' (or scikit-learn)"
        ) from None
    samples = _check_count("samples", samples)
    test_samples = _check_count("test_samples", test_samples)
    classes = tuple(range(10)) if classes is None else tuple(int(c) for c in classes)
    if len(classes) < 2 or len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
        raise ValueError(f"classes must be two or more distinct digits 0-9, got {classes!r}")
    data = load_digits()
    mask = np.isin(data.target, classes)
    x_all = data.data[mask].astype(np.float64)
    t_all = data.target[mask]
    if samples + test_samples > x_all.shape[0]:
        raise ValueError(
            f"digits {classes} have {x_all.shape[0]} images; samples + test_samples must not exceed that, "
            f"got {samples} + {test_samples}"
        )
    perm = np.asarray(jr.permutation(key, x_all.shape[0]))
    idx, idx_t = perm[:samples], perm[samples : samples + test_samples]
    if len(classes) == 2 and not one_hot:
        lab = np.where(t_all == classes[0], 0.5, -0.5)[:, None]
        kind = "binary"
    else:
        pos = {c: i for i, c in enumerate(classes)}
        lab = np.eye(len(classes))[[pos[t] for t in t_all]]
        kind = "multiclass"
    names = " vs ".join(map(str, classes)) if len(classes) == 2 else f"{len(classes)} classes"
    desc = f"sklearn digits ({names}), 8x8 images normalised to ||x|| = 1"
    return _make_task(x_all[idx], lab[idx], x_all[idx_t], lab[idx_t], kind, desc)


def load_wide_data(path: str, *, test_fraction: float = 0.25, key: PRNGKeyArray | None = None) -> WideTask:
    """A user's ``.npz`` with ``x`` (N, M0) and ``y`` (N,) or (N, C); optional ``x_test``, ``y_test``.

    Without test arrays, a random ``test_fraction`` of the rows is held out. Inputs are normalised
    to ||x|| = 1; the task is treated as regression.
    """
    test_fraction = check_real("test_fraction", test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be a number between 0 and 1, got {test_fraction!r}")
    if key is not None:
        check_key(key)
    data = read_xy_npz(path, "'x' (N, M0) and 'y' (N,) or (N, C)", optional=("x_test", "y_test"))
    x, y = data["x"], data["y"]
    y = y[:, None] if y.ndim == 1 else y
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x must be (N, M0) and y (N,) or (N, C) with the same N, got {x.shape} and {y.shape}"
        )
    if ("x_test" in data) != ("y_test" in data):
        raise ValueError(f"{path!r} must hold both x_test and y_test, or neither")
    if "x_test" in data:
        xt, yt = data["x_test"], data["y_test"]
        yt = yt[:, None] if yt.ndim == 1 else yt
        if xt.ndim != 2 or xt.shape[1] != x.shape[1] or yt.shape != (xt.shape[0], y.shape[1]):
            raise ValueError(f"x_test and y_test must be (N_test, {x.shape[1]}) and (N_test, {y.shape[1]})")
    else:
        n_test = int(round(test_fraction * x.shape[0]))
        if n_test < 1 or n_test >= x.shape[0]:
            raise ValueError(
                f"{path!r} has {x.shape[0]} rows: too few to hold out a test set; add x_test, y_test"
            )
        perm = np.asarray(jr.permutation(jr.PRNGKey(0) if key is None else key, x.shape[0]))
        x, y, xt, yt = x[perm[n_test:]], y[perm[n_test:]], x[perm[:n_test]], y[perm[:n_test]]
    return _make_task(x, y, xt, yt, "regression", f"data from {path}")


def forster_transform(x, *, tol: float = 1e-12, max_iter: int = 10_000) -> Array:
    """Forster transform of N > M0 unit inputs: X~ with X~^T X~ = (N/M0) I and ||x~_n|| = 1 (S.110).

    Iterates x <- (M0/N X^T X)^{-1/2} x, renormalised, until the frame is tight to ``tol``; raises a
    ValueError when the points are not in general position (no fixed point).
    """
    tol = check_positive("tol", tol)
    max_iter = check_integer("max_iter", max_iter, 1)
    x = np.asarray(normalize_inputs(x))
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (N, M0), got shape {x.shape}")
    n, m0 = x.shape
    if n <= m0:
        raise ValueError(f"the Forster transform is for N > M0 (here N={n}, M0={m0}); it is not needed")
    rank = int(np.linalg.matrix_rank(x))
    if rank < m0:
        raise ValueError(
            f"the Forster transform needs inputs that span all M0={m0} dimensions; these span {rank} "
            "(e.g. pixels that are zero in every image)"
        )
    target = n / m0
    for _ in range(int(max_iter)):
        s = x.T @ x
        err = np.abs(s / target - np.eye(m0)).max()
        if err < tol:
            return jnp.asarray(x)
        evals, evecs = np.linalg.eigh(s / target)
        if evals.min() <= 1e-14:
            break
        x = x @ (evecs / np.sqrt(evals)) @ evecs.T
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    raise ValueError("the Forster transform did not converge: the inputs are not in general position")


# ----------------------------------------------------------------------------------------------
# training


@dataclass
class TrainResult:
    """Outputs (N, C) and losses per step of discrete NGD, t = 0..T."""

    f_train: np.ndarray  # (T+1, N, C)
    f_test: np.ndarray  # (T+1, N', C)
    train_loss: np.ndarray  # (T+1,)
    test_loss: np.ndarray  # (T+1,)
    learning_rate: float
    mlp: MLP


def task_loss(f, y, loss: str = "mse"):
    """MSE 1/(2N) sum ||f - y||^2 (eq. 3) or mean cross-entropy of softmax(f) against y."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    f, y = jnp.asarray(f), jnp.asarray(y)
    if loss == "cross-entropy":
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(f, axis=-1), axis=-1))
    return 0.5 * jnp.mean(jnp.sum((f - y) ** 2, axis=-1))


@eqx.filter_jit
def _train_step(opt: NGD, mlp: MLP, state: NGDState, x, y, x_test):
    """One full-batch NGD step and the new outputs; compiled once per optimiser and shapes (the
    optimiser, a frozen dataclass, is a static argument), so repeated runs and seeds reuse it."""
    upd, state = opt.update(mlp, x, y, state)
    mlp = eqx.apply_updates(mlp, upd)
    return mlp, state, mlp(x), mlp(x_test)


def train(mlp: MLP, task: WideTask, optimizer: NGD, steps: int) -> TrainResult:
    """Runs ``steps`` NGD steps on the whole training set (full batch) and records f on train/test."""
    steps = _check_count("steps", steps, low=0)
    _check_task_fits(mlp, task)
    if not isinstance(optimizer, NGD):
        raise TypeError(f"optimizer must be a dlnsim.wide.NGD (see ngd()), got {type(optimizer).__name__}")
    state = optimizer.init(mlp)
    lr = optimizer.resolve_learning_rate(mlp, task.n_samples)
    opt = NGD(optimizer.fisher, lr, optimizer.forster)
    loss = optimizer.fisher.loss
    ftr, fte = [np.asarray(mlp(task.x_train))], [np.asarray(mlp(task.x_test))]
    for _ in range(steps):
        mlp, state, a, b = _train_step(opt, mlp, state, task.x_train, task.y_train, task.x_test)
        ftr.append(np.asarray(a))
        fte.append(np.asarray(b))
    ftr, fte = np.stack(ftr), np.stack(fte)
    if not np.all(np.isfinite(ftr)):
        raise FloatingPointError(
            "NGD training diverged (non-finite outputs); lower the learning rate or damp"
        )
    tl = np.asarray([float(task_loss(f, task.y_train, loss)) for f in ftr])
    te = np.asarray([float(task_loss(f, task.y_test, loss)) for f in fte])
    return TrainResult(ftr, fte, tl, te, lr, mlp)
