"""K-FAC in sample space (Karakida & Osawa 2020, S.95-S.124; Martens & Grosse 2015).

Layer l's block is approximated by the Kronecker product B*_l x A_{l-1} of the back-propagated and
input covariances (S.95), each damped by rho. Applied in sample space with the factors
Pb_l = (delta_l delta_l^T / N + rho)^+ (NC x NC) and Pa_l = (h~ h~^T / N + rho)^+ (N x N). The bias is
either an extra input column (``augmented``, S.B.3.3) or its own per-layer block (``block``, S.123-S.124).

With a ``power`` s each damped factor is raised to -s, (B*_l + rho)^(-s) x (A_{l-1} + rho)^(-s), and by
push-through f(D^T D / N) D^T = D^T f(D D^T / N) the factors stay N-sized: Pb_l = (delta delta^T / N +
rho)^(-s), Pa_l = (h~ h~^T / N + rho)^(-s), the output factor (1/N + rho)^(-s) I, and the S.123 bias block
(K_b / N^2 + rho)^(-s) / N^2.
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._fisher import AbstractFisher, psd_pinv
from ._mlp import MLP, Signals, _expand, _flat, _input_gram

KFAC_BIAS = ("augmented", "block")


class KFACFisher(AbstractFisher):
    """K-FAC (S.95): Theta_bar = N L I for M_0 >= N (S.105-S.107) and N (L - 1) + M_0 after the Forster
    transform for M_0 < N (S.108-S.111).

    Attributes:
        kfac_bias: ``"augmented"`` treats the bias as an extra input column [sigma_w h / sqrt(M); sigma_b]
            (S.B.3.3, first approach); ``"block"`` keeps K-FAC for the weights and a per-layer bias block
            grad_b f^T grad_b f / N^2 (S.123-S.124), which lets the Forster transform act on the inputs
            alone (static).
    """

    kfac_bias: str = eqx.field(default="augmented", static=True)
    name: ClassVar[str] = "kfac"

    def __check_init__(self):
        if self.kfac_bias not in KFAC_BIAS:
            raise ValueError(f"kfac_bias must be 'augmented' or 'block', got {self.kfac_bias!r}")

    def _augmented(self, mlp: MLP) -> bool:
        return mlp.has_bias and self.kfac_bias == "augmented"

    def prepare(self, mlp: MLP, sig: Signals, *, power=None) -> tuple[tuple, tuple, tuple]:
        """Sample-space K-FAC factors (S.95) for every layer, and the S.123 bias blocks if any.

        For layer l: Pb_l = (Bg_l / N + rho)^+ with Bg_l = delta_l delta_l^T (NC x NC), except the output
        layer, where B*_L = I_C / N as in S.95 so that (B*_L + rho)^{-1} = 1 / (1/N + rho); and
        Pa_l = (Ag_{l-1} / N + rho)^+ with Ag = h~ h~^T, h~ = [sigma_w h / sqrt(M); sigma_b] (augmented)
        or sigma_w h / sqrt(M) (block bias). With ``power`` s every factor is raised to -s instead of
        -1 (see the module docstring).
        """
        n, c = sig.f.shape
        rho = self.rho
        augmented = self._augmented(mlp)
        if power is not None:
            return self._prepare_power(mlp, sig, power)
        pbs, pas, pbias = [], [], []
        for layer in range(mlp.depth):
            if layer == mlp.depth - 1:
                pbs.append(jnp.eye(n * c, dtype=sig.f.dtype) / (1.0 / n + rho))
            else:
                bg = _flat(sig.deltas[layer]) @ _flat(sig.deltas[layer]).T
                pbs.append(psd_pinv(bg / n, rho, self.rcond))
            ag = _input_gram(mlp, sig, sig, layer, with_bias=augmented)
            pas.append(psd_pinv(ag / n, rho, self.rcond))
            if mlp.has_bias and not augmented:
                kb = mlp.sigma_b2 * _flat(sig.deltas[layer]) @ _flat(sig.deltas[layer]).T
                pbias.append(psd_pinv(kb, n * n * rho, self.rcond))
        return tuple(pbs), tuple(pas), tuple(pbias)

    def _prepare_power(self, mlp: MLP, sig: Signals, power) -> tuple[tuple, tuple, tuple]:
        """The factors raised to -s (module docstring); with s = 1 they equal :meth:`prepare`'s."""
        n, c = sig.f.shape
        rho = self.rho
        augmented = self._augmented(mlp)
        pbs, pas, pbias = [], [], []
        for layer in range(mlp.depth):
            if layer == mlp.depth - 1:
                pbs.append(jnp.eye(n * c, dtype=sig.f.dtype) * (1.0 / n + rho) ** (-power))
            else:
                bg = _flat(sig.deltas[layer]) @ _flat(sig.deltas[layer]).T
                pbs.append(psd_pinv(bg / n, rho, self.rcond, power))
            ag = _input_gram(mlp, sig, sig, layer, with_bias=augmented)
            pas.append(psd_pinv(ag / n, rho, self.rcond, power))
            if mlp.has_bias and not augmented:
                kb = mlp.sigma_b2 * _flat(sig.deltas[layer]) @ _flat(sig.deltas[layer]).T
                pbias.append(psd_pinv(kb / n**2, rho, self.rcond, power) / n**2)
        return tuple(pbs), tuple(pas), tuple(pbias)

    def apply(self, mlp, sig, prepared, residual, *, power=None):
        """delta_l^T Pb_l diag(r) E Pa_l h~_l / N per layer (S.96-S.104), and the bias blocks' update."""
        pbs, pas, pbias = prepared
        n, c = residual.shape
        r = residual.reshape(-1)
        augmented = self._augmented(mlp)
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

    def theta_bar(self, mlp, sig, prepared, test):
        """(1/N) sum_l [delta' Pb delta^T] o [E h~' Pa h~^T E^T] (S.96-S.105), plus the S.123 bias blocks."""
        pbs, pas, pbias = prepared
        n, c = sig.f.shape
        augmented = self._augmented(mlp)
        out = 0.0
        for layer in range(mlp.depth):
            bpart = _flat(test.deltas[layer]) @ _flat(sig.deltas[layer]).T @ pbs[layer]
            apart = _expand(_input_gram(mlp, test, sig, layer, with_bias=augmented) @ pas[layer], c)
            out = out + bpart * apart / n
            if mlp.has_bias and not augmented:
                kb = mlp.sigma_b2 * _flat(test.deltas[layer]) @ _flat(sig.deltas[layer]).T
                out = out + n * kb @ pbias[layer]
        return out

    def undamped_alpha(self, mlp, n_samples, *, forster=False):
        """N L for M_0 >= N (S.107), N (L - 1) + M_0 for M_0 < N (S.109-S.111; isotropic only after the
        Forster transform). Both need every hidden B_l = delta_l delta_l^T invertible (Lemma B.2), which
        fails at small widths when two inputs share a relu activation pattern. With the augmented bias
        the input Gram has rank min(N, M_0 + 1). With the S.123 bias block the biases add N (L - 1) + 1
        (N per hidden layer, 1 from the output bias, whose block is rank one: the 1 1^T term of S.124),
        so Theta_bar is not exactly isotropic then."""
        L, n, m0 = mlp.depth, int(n_samples), mlp.widths[0]
        augmented = self._augmented(mlp)
        alpha = n * (L - 1) + min(n, m0 + (1 if augmented else 0))
        if mlp.has_bias and not augmented:
            alpha += n * (L - 1) + 1
        return float(alpha)

    def analytic_theta_bar(self, kernels_test, kernels_train, *, sigma_w2, sigma_b2, bias):
        """N sum_l B_l(x', x) B_l^{-1} o A~_{l-1}(x', x) A~_{l-1}^{-1} with B_L(x', x) B_L^{-1} replaced by
        1 1^T and A~ = sigma_w^2 A + sigma_b^2 (S.105-S.106, S.B.3.3; augmented or no bias, M_0 >= N)."""
        kt, kx = kernels_test, kernels_train
        L, n = len(kx.A), kx.A[0].shape[0]
        sb2 = sigma_b2 if bias else 0.0
        out = 0.0
        for layer in range(L):
            bpart = np.ones_like(kt.A[0]) if layer == L - 1 else kt.B[layer] @ np.linalg.inv(kx.B[layer])
            a_t, a_x = sigma_w2 * kt.A[layer] + sb2, sigma_w2 * kx.A[layer] + sb2
            out = out + n * bpart * (a_t @ np.linalg.inv(a_x))
        return out
