"""Unit-wise, diagonal and quasi-diagonal Fishers (Karakida & Osawa 2020, S.125-S.156; Ollivier 2015).

The unit-wise Fisher keeps, for every unit i of every layer, the block of its incoming weights and
bias, and is applied in sample space through the unit Grams K_{l,i} = J_{l,i} J_{l,i}^T (S.131). The
diagonal Fisher keeps diag(G); the quasi-diagonal one (Ollivier 2015) also keeps each unit's
bias-weight couplings G_{0j}. The entry-wise ones have no isotropy theory (Fig. 3).

A ``power`` s raises each unit block (K_{l,i} / N + rho)^(-s) (push-through, as the exact Fisher) and
each diagonal entry (d + rho)^(-s). The quasi-diagonal update is the exact inverse of a metric that is
not block-diagonal (it couples each unit's bias with all of its weights), so it takes s = 1 only, or
s = 0 and any s without biases (where it is the diagonal Fisher).
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._linalg import spectral_power
from ._fisher import AbstractFisher, psd_pinv
from ._hyperparameters import ENTRYWISE_RCOND, QUASI_DIAGONAL_ZERO_TRACE, concrete, rank_cutoff
from ._kernels import active_fraction, signal_variances
from ._mlp import MLP, Signals, _expand, _flat, _input_gram, _vjp_all


def unit_grams(mlp: MLP, sa: Signals, sb: Signals, layer: int) -> Float[Array, "M NaC NbC"]:
    """K_{l,i}(x_a, x_b) for every unit i of layer l: (M_l, Na*C, Nb*C) (S.131)."""
    c = mlp.widths[-1]
    ga = _expand(_input_gram(mlp, sa, sb, layer), c)
    da, db = _flat(sa.deltas[layer]).T, _flat(sb.deltas[layer]).T  # (M_l, NC)
    return da[:, :, None] * ga[None] * db[:, None, :]


class UnitWiseFisher(AbstractFisher):
    """The unit-wise Fisher (S.125-S.131), applied as J_{l,i}^T (K_{l,i} + N rho)^+ r per unit.

    Train it with a small rho > 0 (Lemma C.3): at rho = 0 the update of unit i scales as 1 / |W_{L,i}|
    and leaves the linear regime.
    """

    name: ClassVar[str] = "unit-wise"

    def prepare(self, mlp, sig, *, power=None) -> tuple[Array, ...]:
        """(K_{l,i} + N rho I)^+ for every unit, per layer: (M_l, NC, NC); with ``power`` s,
        (K_{l,i} / N + rho I)^(-s) / N."""
        n = sig.f.shape[0]
        if power is not None:
            powered = jax.vmap(psd_pinv, in_axes=(0, None, None, None))
            return tuple(
                powered(unit_grams(mlp, sig, sig, layer) / n, self.rho, self.rcond, power) / n
                for layer in range(mlp.depth)
            )
        pinv = jax.vmap(psd_pinv, in_axes=(0, None, None))
        return tuple(
            pinv(unit_grams(mlp, sig, sig, layer), n * self.rho, self.rcond) for layer in range(mlp.depth)
        )

    def apply(self, mlp, sig, prepared, residual, *, power=None):
        n, c = residual.shape
        r = residual.reshape(-1)
        ws, bs = [], []
        for layer in range(mlp.depth):
            coef = prepared[layer] @ r  # (M_l, NC)
            d = _flat(sig.deltas[layer]).T  # (M_l, NC)
            cd = (coef * d).reshape(-1, n, c).sum(-1)  # (M_l, N)
            ws.append((mlp.sigma_w / math.sqrt(mlp.widths[layer])) * cd @ sig.hs[layer])
            if mlp.has_bias:
                bs.append(mlp.sigma_b * cd.sum(-1))
        return ws, (bs if mlp.has_bias else None)

    def theta_bar(self, mlp, sig, prepared, test):
        """sum_{l,i} K_{l,i}(x', x) (K_{l,i} + N rho)^+ (S.130, S.155)."""
        out = 0.0
        for layer in range(mlp.depth):
            out = out + jnp.einsum("iab,ibc->ac", unit_grams(mlp, test, sig, layer), prepared[layer])
        return out

    def undamped_alpha(self, mlp, n_samples, *, forster=False):
        """sum_{l<L} gamma_l M_l + 1 (S.128, S.141, S.156; the + 1 is the output layer, which S.137 drops
        as negligible), for C = 1 and M_0 >= N (the paper's setting); None otherwise."""
        L, n, m0 = mlp.depth, int(n_samples), mlp.widths[0]
        if mlp.widths[-1] != 1 or m0 < n:
            return None
        q = signal_variances(
            depth=L, input_dim=m0, activation=mlp.activation, sigma_w2=mlp.sigma_w2,
            sigma_b2=mlp.sigma_b2, bias=mlp.has_bias, shift=mlp.shift,
        )  # fmt: skip
        return float(sum(active_fraction(mlp.activation, q[layer], mlp.shift) * mlp.widths[layer + 1]
                         for layer in range(L - 1)) + 1.0)  # fmt: skip


def _entrywise_rcond(value) -> Float[Array, ""]:
    return rank_cutoff("rcond", value, ENTRYWISE_RCOND)


def diagonal_entries(mlp: MLP, sig: Signals) -> tuple:
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
    return tuple(out)


def _cut_inverse(d: Array, rcond) -> Array:
    """1/d, or 0 where d is at or below rcond * max(d)."""
    keep = d > rcond * jnp.max(d)
    return jnp.where(keep, 1.0 / jnp.where(keep, d, 1.0), 0.0)


def _scaled(g: Array, d: Array, rho, rcond, power=None) -> Array:
    """g / (d + rho): the cut inverse at rho = 0, a plain division otherwise (chosen on the traced rho).
    With ``power`` s: g (d + rho)^(-s), zero where d + rho <= rcond * max(d) (:func:`spectral_power`)."""
    if power is not None:
        return spectral_power(d, power=power, damping=rho, rcond=rcond) * g
    return jnp.where(rho == 0, _cut_inverse(d + rho, rcond) * g, g / (d + rho))


class DiagonalFisher(AbstractFisher):
    """The diagonal Fisher diag(G) + rho I; not isotropic (Fig. 3), so no alpha."""

    rcond: Float[Array, ""] = eqx.field(default=None, converter=_entrywise_rcond)
    name: ClassVar[str] = "diagonal"

    def prepare(self, mlp, sig, *, power=None):
        return diagonal_entries(mlp, sig)

    def apply(self, mlp, sig, prepared, residual, *, power=None):
        n = residual.shape[0]
        gw, gb = _vjp_all(mlp, sig, [residual / n] * mlp.depth)
        ws, bs = [], []
        for layer, (ww, bb, _) in enumerate(prepared):
            ws.append(_scaled(gw[layer], ww, self.rho, self.rcond, power))
            if mlp.has_bias:
                bs.append(_scaled(gb[layer], bb, self.rho, self.rcond, power))
        return ws, (bs if mlp.has_bias else None)


def check_quasi_diagonal_power(power) -> None:
    """A one-line ValueError for a concrete s != 1 of the quasi-diagonal Fisher with biases."""
    value = None if power is None else concrete(power)
    if value is not None and value != 1.0:
        raise ValueError(
            "the quasi-diagonal Fisher with biases is the inverse of a metric that couples each unit's "
            "bias with all its weights (Ollivier 2015), not a block-diagonal matrix, so (G~ + rho I)^(-1/q) "
            "is defined for q = 1 only; use q = 1, the diagonal Fisher, or a net without biases"
        )


class QuasiDiagonalFisher(AbstractFisher):
    """Ollivier's quasi-diagonal Fisher (Ollivier 2015): per unit, the 2 x 2 systems coupling the bias
    with each incoming weight w_j, then the bias row; the diagonal Fisher without biases."""

    rcond: Float[Array, ""] = eqx.field(default=None, converter=_entrywise_rcond)
    name: ClassVar[str] = "quasi-diagonal"

    def prepare(self, mlp, sig, *, power=None):
        return diagonal_entries(mlp, sig)

    def apply(self, mlp, sig, prepared, residual, *, power=None):
        n = residual.shape[0]
        rho = self.rho
        if mlp.has_bias:
            check_quasi_diagonal_power(power)
        grads_w, grads_b = _vjp_all(mlp, sig, [residual / n] * mlp.depth)
        ws, bs = [], []
        for layer, (ww, bb, wb) in enumerate(prepared):
            gw = grads_w[layer]
            if not mlp.has_bias:
                ws.append(_scaled(gw, ww, rho, self.rcond, power))
                continue
            # for each unit solve the 2x2 (bias, w_j) systems for w_j, then the bias row
            a00 = (bb + rho)[:, None]
            ajj = ww + rho
            a0j = wb
            g0 = grads_b[layer][:, None]
            det = a00 * ajj - a0j**2
            tr = a00 + ajj
            scale = jnp.max(tr)
            regular = det > self.rcond * tr**2
            vj_reg = (a00 * gw - a0j * g0) / jnp.where(regular, det, 1.0)
            # rank-one 2x2 block M: pseudo-inverse M / tr(M)^2
            zero = QUASI_DIAGONAL_ZERO_TRACE * scale
            vj_sing = jnp.where(tr > zero, (ajj * gw + a0j * g0) / jnp.where(tr > 0, tr, 1.0) ** 2, 0.0)
            vj = jnp.where(regular, vj_reg, vj_sing)
            a00v = a00[:, 0]
            v0 = jnp.where(
                a00v > zero,
                (grads_b[layer] - jnp.sum(a0j * vj, axis=1)) / jnp.where(a00v > 0, a00v, 1.0),
                0.0,
            )
            if power is not None:  # s = 1 only (a traced s != 1 gives NaN; see the module docstring)
                vj, v0 = (jnp.where(power == 1.0, v, jnp.nan) for v in (vj, v0))
            ws.append(vj)
            bs.append(v0)
        return ws, (bs if mlp.has_bias else None)
