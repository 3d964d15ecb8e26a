"""Infinite-width theory of wide networks: analytic kernels, alpha, predicted NGD and GD dynamics.

Karakida & Osawa 2020, supplement sec. E (S.168-S.178) for the kernels, S.71 / S.92-S.94 /
S.105-S.111 / S.128-S.141, S.156 for the coefficient alpha, and S.26 for the linearised dynamics.

Conventions (as in :mod:`dlnsim._wide`): A_0(x', x) = x' x^T / M_0; A_l = E[phi(u) phi(u')] over
u_l ~ N(0, Q_l), Q_l = sigma_w^2 A_{l-1} + sigma_b^2 (S.69, S.174); Xi_l = E[phi'(u) phi'(u')] (S.70);
B_L = 1 and B_l = sigma_w^2 Xi_l o B_{l+1} (S.171), the limit of delta_l(x') . delta_l(x) with
delta_l = df/du_l; the per-layer kernel Theta_l = sigma_w^2 B_l o A_{l-1} + sigma_b^2 B_l (S.68) and the
NTK sum_l Theta_l (S.169). These are the un-normalised kernels J_l J_l^T; the paper's Theta divides
by N (S.168).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from ._checks import as_real_array, check_depth, check_integer, check_nonnegative, check_positive, check_real
from ._wide import (
    LAYERWISE,
    MLP,
    _check_task_fits,
    as_fisher,
    check_activation,
    layer_sigma,
)

_QUAD_NODES = 80  # Gauss-Legendre nodes per half-line piece for activations without closed forms


# ----------------------------------------------------------------------------------------------
# Gaussian expectations


def _gauss_legendre_pieces(kink: float, n: int = 80, cut: float = 12.0):
    """Nodes and N(0, 1)-weights on [-cut, kink] and [kink, cut]: exact-to-round-off quadrature of a
    Gaussian integral whose integrand is smooth on either side of ``kink``."""
    kink = min(max(kink, -cut), cut)
    t, w = np.polynomial.legendre.leggauss(n)
    zs, ws = [], []
    for a, b in ((-cut, kink), (kink, cut)):
        if b > a:
            zs.append(0.5 * (b - a) * t + 0.5 * (b + a))
            ws.append(0.5 * (b - a) * w)
    z, w = np.concatenate(zs), np.concatenate(ws)
    return z, w * np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)


def _np_phi(activation: str, shift: float, derivative: bool):
    """phi or phi' in numpy (the kernels are evaluated on the host)."""
    if activation == "tanh":
        return (lambda u: 1.0 - np.tanh(u) ** 2) if derivative else np.tanh
    if activation == "shifted-relu":
        return (lambda u: (u > -shift).astype(float)) if derivative else (lambda u: np.maximum(u, -shift))
    if activation == "relu":
        return (lambda u: (u > 0).astype(float)) if derivative else (lambda u: np.maximum(u, 0.0))
    if activation == "erf":
        return (lambda u: 2.0 / math.sqrt(math.pi) * np.exp(-(u**2))) if derivative else special.erf
    return np.ones_like if derivative else (lambda u: u)


def _second_moment(activation: str, shift: float, q: np.ndarray, derivative: bool = False) -> np.ndarray:
    """E[g(u)^2] for u ~ N(0, q), g = phi or phi' (S.175); closed forms except for tanh."""
    q = np.asarray(q, float)
    if activation == "relu":
        return np.full_like(q, 0.5) if derivative else q / 2.0
    if activation == "identity":
        return np.ones_like(q) if derivative else q
    if activation == "erf":
        if derivative:
            return 4.0 / math.pi / np.sqrt(1.0 + 4.0 * q)
        return 2.0 / math.pi * np.arcsin(2.0 * q / (1.0 + 2.0 * q))
    if activation == "shifted-relu":
        a = shift / np.sqrt(q)
        if derivative:
            return special.ndtr(a)
        return shift**2 * special.ndtr(-a) + q * (
            special.ndtr(a) - a * np.exp(-0.5 * a**2) / math.sqrt(2 * math.pi)
        )
    z, w = _gauss_legendre_pieces(0.0, _QUAD_NODES)
    g = _np_phi(activation, shift, derivative)
    return np.sum(w * g(np.sqrt(q)[..., None] * z) ** 2, axis=-1)


def _cross_moment(
    activation: str, shift: float, q1: np.ndarray, q2: np.ndarray, cov: np.ndarray, derivative: bool
) -> np.ndarray:
    """E[g(u) g(v)] for (u, v) ~ N(0, [[q1, Q], [Q, q2]]) entry-wise; q1 (N1,), q2 (N2,), Q (N1, N2).

    Closed forms: relu (S.176-S.177, arc-cosine kernels), erf (Williams 1997), identity. Other
    activations use Gaussian quadrature of S.170 / S.172 with v = sqrt(q2) (c u1 + sqrt(1 - c^2) u2):
    shifted relu integrates u2 in closed form and u1 by Gauss-Legendre split at the kink (round-off
    accurate); tanh uses a two-dimensional Gauss-Legendre rule on [-12, 12]^2 (error below 1e-12 for
    q <= 4; Gauss-Hermite converges slowly for tanh, whose poles lie near the real axis).
    """
    q1, q2, cov = np.asarray(q1, float), np.asarray(q2, float), np.asarray(cov, float)
    root = np.sqrt(np.outer(q1, q2))
    c = np.clip(cov / root, -1.0, 1.0)
    if activation == "relu":
        if derivative:
            return (math.pi - np.arccos(c)) / (2.0 * math.pi)
        return root / (2.0 * math.pi) * (np.sqrt(1.0 - c**2) + (math.pi - np.arccos(c)) * c)
    if activation == "identity":
        return np.ones_like(cov) if derivative else cov
    if activation == "erf":
        d1, d2 = 1.0 + 2.0 * q1, 1.0 + 2.0 * q2
        if derivative:
            return 4.0 / math.pi / np.sqrt(np.outer(d1, d2) - 4.0 * cov**2)
        return 2.0 / math.pi * np.arcsin(np.clip(2.0 * cov / np.sqrt(np.outer(d1, d2)), -1.0, 1.0))
    g = _np_phi(activation, shift, derivative)
    s = np.sqrt(1.0 - c**2)
    out = np.empty_like(cov)
    if activation == "shifted-relu":
        for i in range(cov.shape[0]):
            z, w = _gauss_legendre_pieces(-shift / math.sqrt(q1[i]))
            gu = g(math.sqrt(q1[i]) * z)  # (n,)
            mu = np.sqrt(q2)[:, None] * c[i][:, None] * z  # (N2, n): mean of v given u1
            sd = np.sqrt(q2)[:, None] * s[i][:, None] * np.ones_like(z)
            ok = sd > 1e-12
            t = np.where(ok, (mu + shift) / np.where(ok, sd, 1.0), 0.0)
            if derivative:
                inner = np.where(ok, special.ndtr(t), (mu > -shift).astype(float))
            else:
                smooth = (
                    -shift
                    + (mu + shift) * special.ndtr(t)
                    + sd * np.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
                )
                inner = np.where(ok, smooth, np.maximum(mu, -shift))
            out[i] = inner @ (w * gu)
        return out
    z, w = _gauss_legendre_pieces(0.0, _QUAD_NODES)
    for i in range(cov.shape[0]):
        gu = g(math.sqrt(q1[i]) * z)  # (n,)
        v = np.sqrt(q2)[:, None, None] * (c[i][:, None, None] * z[None, :, None] + s[i][:, None, None] * z)
        out[i] = np.einsum("a,b,a,jab->j", w, w, gu, g(v))
    return out


# ----------------------------------------------------------------------------------------------
# analytic kernels


@dataclass(frozen=True)
class Kernels:
    """Infinite-width kernels between inputs x1 (N1) and x2 (N2) of a depth-L network (S.168-S.178).

    q[l]: the pre-activation variance q_{l+1} of layer l+1 (l = 0..L-1) on x2, (N2,);
    A[l]: A_l(x1, x2), l = 0..L-1; Xi[l]: Xi_{l+1}, l = 0..L-2; B[l]: B_{l+1}, l = 0..L-1 (B_L = 1);
    layer_ntk[l]: Theta_{l+1} = sigma_w^2 B o A + sigma_b^2 B; ntk: their sum (un-normalised, S.169).
    """

    q: tuple
    A: tuple
    Xi: tuple
    B: tuple
    layer_ntk: tuple
    ntk: np.ndarray


def analytic_kernels(
    x1,
    x2=None,
    *,
    depth: int,
    activation: str = "relu",
    sigma_w2: float = 2.0,
    sigma_b2: float = 0.5,
    bias: bool = True,
    shift: float = 0.0,
) -> Kernels:
    """The analytic A_l, Xi_l, B_l, q_l, per-layer Theta_l and NTK at any depth (S.168-S.178).

    Closed forms for relu and erf (and identity); Gaussian quadrature (Gauss-Legendre) for tanh and
    shifted relu. The inputs need not be normalised (each sample's own variance is used), but the
    paper's setting is ||x|| = 1, where q_l is the same for every sample (S.175, S.178).
    """
    check_activation(activation, shift)
    depth = check_depth(depth)
    sigma_w2, sigma_b2 = check_positive("sigma_w2", sigma_w2), check_nonnegative("sigma_b2", sigma_b2)
    x1 = as_real_array("x1", x1, numpy=True, finite=False)
    x2 = x1 if x2 is None else as_real_array("x2", x2, numpy=True, finite=False)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"inputs must be 2-D with the same input dimension, got {x1.shape} and {x2.shape}")
    if not (np.all(np.isfinite(x1)) and np.all(np.isfinite(x2))):
        raise ValueError("inputs contain non-finite values (NaN or inf); all entries must be finite")
    sb2 = float(sigma_b2) if bias else 0.0
    m0 = x1.shape[1]
    a12 = x1 @ x2.T / m0
    a1, a2 = np.sum(x1**2, 1) / m0, np.sum(x2**2, 1) / m0
    As, Xis, qs = [a12], [], []
    for _ in range(1, depth):
        q1, q2, qq = sigma_w2 * a1 + sb2, sigma_w2 * a2 + sb2, sigma_w2 * As[-1] + sb2
        qs.append(q2)
        Xis.append(_cross_moment(activation, shift, q1, q2, qq, derivative=True))
        As.append(_cross_moment(activation, shift, q1, q2, qq, derivative=False))
        a1 = _second_moment(activation, shift, q1)
        a2 = _second_moment(activation, shift, q2)
    qs.append(sigma_w2 * a2 + sb2)
    Bs = [np.ones_like(a12)]
    for xi in reversed(Xis):
        Bs.append(sigma_w2 * xi * Bs[-1])
    Bs = Bs[::-1]
    thetas = tuple(sigma_w2 * Bs[layer] * As[layer] + sb2 * Bs[layer] for layer in range(depth))
    return Kernels(tuple(qs), tuple(As), tuple(Xis), tuple(Bs), thetas, sum(thetas))


def empirical_kernels(mlp: MLP, x1, x2=None) -> dict:
    """The finite-width counterparts of :func:`analytic_kernels` for the first output (k = 0):
    A_l = h_l(x1) h_l(x2)^T / M_l, B_l = delta_l(x1) . delta_l(x2), Theta_l = J_l J_l^T, and the NTK."""

    from ._wide import _check_mlp, layer_grams, signals

    _check_mlp(mlp)
    dtype = mlp.weights[0].dtype
    x1 = as_real_array("x1", x1, 2, dtype=dtype)
    x2 = None if x2 is None else as_real_array("x2", x2, 2, dtype=dtype)
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and x.shape[1] != mlp.widths[0]:
            raise ValueError(f"{name} must be (N, {mlp.widths[0]}) for widths {mlp.widths}, got {x.shape}")
    s1 = signals(mlp, x1)
    s2 = s1 if x2 is None else signals(mlp, x2)
    c = mlp.widths[-1]
    A = tuple(np.asarray(s1.hs[layer] @ s2.hs[layer].T) / mlp.widths[layer] for layer in range(mlp.depth))
    B = tuple(np.asarray(s1.deltas[layer][:, 0] @ s2.deltas[layer][:, 0].T) for layer in range(mlp.depth))
    grams = [np.asarray(g)[::c, ::c] for g in layer_grams(mlp, s1, s2)]
    return {"A": A, "B": B, "layer_ntk": tuple(grams), "ntk": sum(grams)}


def signal_variances(
    *, depth: int, input_dim: int, activation: str = "relu", sigma_w2: float = 2.0, sigma_b2: float = 0.5,
    bias: bool = True, shift: float = 0.0,
) -> np.ndarray:  # fmt: skip
    """q_1..q_L for unit-norm inputs: q_1 = sigma_w^2 / M_0 + sigma_b^2 and
    q_{l+1} = sigma_w^2 E[phi^2] + sigma_b^2
    (S.175, S.178)."""
    check_activation(activation, shift)
    depth, input_dim = check_depth(depth), check_integer("input_dim", input_dim)
    sigma_w2, sigma_b2 = check_positive("sigma_w2", sigma_w2), check_nonnegative("sigma_b2", sigma_b2)
    sb2 = float(sigma_b2) if bias else 0.0
    q = [sigma_w2 / input_dim + sb2]
    for _ in range(depth - 1):
        q.append(sigma_w2 * float(_second_moment(activation, shift, np.asarray([q[-1]]))[0]) + sb2)
    return np.asarray(q)


def active_fraction(activation: str, q: float, shift: float = 0.0) -> float:
    """gamma_l = P(phi'(u) != 0) for u ~ N(0, q_l) (S.140-S.141): 1/2 for relu, 1 for tanh / erf /
    identity, 1/2 + erf(s / sqrt(2 q)) / 2 for shifted relu (S.156)."""
    check_activation(activation, shift)
    q = check_positive("q", q)
    if activation == "relu":
        return 0.5
    if activation == "shifted-relu":
        return 0.5 + 0.5 * math.erf(shift / math.sqrt(2.0 * q))
    return 1.0


# ----------------------------------------------------------------------------------------------
# alpha


def layerwise_alpha(fisher: str, depth: int) -> float | None:
    """alpha = 1^T Sigma^{-1} 1 of a layer-wise Fisher (Theorem 4.1): 1 (exact), L (bd), and for the
    tri-diagonal Sigma s (L = 3s) or s + 1 (L = 3s + 1); None when Sigma is singular (L = 3s + 2)."""
    if fisher == "exact":
        return 1.0
    if fisher == "bd":
        return float(depth)
    if fisher == "tri-diagonal":
        if depth % 3 == 2:
            return None
        return tridiagonal_alpha(depth)
    raise ValueError(f"{fisher!r} is not a layer-wise Fisher; choose one of {', '.join(LAYERWISE)}")


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


def alpha_theory(fisher, mlp: MLP, n_samples: int, *, forster: bool = False) -> float | None:
    """The theoretical alpha of Theta_bar = alpha I on the training samples, or None where the paper
    gives none (damping > 0, entry-wise Fishers, singular tri-diagonal, unit-wise with C > 1).

    - exact 1, bd L, tri-diagonal 1^T Sigma^{-1} 1 (S.71, S.92-S.94);
    - kfac N L for M_0 >= N (S.107), N (L - 1) + M_0 for M_0 < N (S.109-S.111; isotropic only after the
      Forster transform). Both need every hidden B_l = delta_l delta_l^T invertible (Lemma B.2), which
      fails at small widths when two inputs share a relu activation pattern. With the augmented bias
      the input Gram has rank min(N, M_0 + 1). With the S.123 bias block the biases add N (L - 1) + 1
      (N per hidden layer, 1 from the output bias, whose block is rank one: the 1 1^T term of S.124),
      so Theta_bar is not exactly isotropic then.
    - unit-wise sum_{l<L} gamma_l M_l + 1 (S.128, S.141, S.156; the + 1 is the output layer, which S.137
      drops as negligible), for C = 1 and M_0 >= N (the paper's setting).
    """
    fisher = as_fisher(fisher)
    if fisher.damping > 0:
        return None
    L, n = mlp.depth, int(n_samples)
    if fisher.name in LAYERWISE:
        return layerwise_alpha(fisher.name, L)
    m0 = mlp.widths[0]
    if fisher.name == "kfac":
        augmented = mlp.has_bias and fisher.kfac_bias == "augmented"
        alpha = n * (L - 1) + min(n, m0 + (1 if augmented else 0))
        if mlp.has_bias and not augmented:
            alpha += n * (L - 1) + 1
        return float(alpha)
    if fisher.name == "unit-wise":
        if mlp.widths[-1] != 1 or m0 < n:
            return None
        q = signal_variances(
            depth=L, input_dim=m0, activation=mlp.activation, sigma_w2=mlp.sigma_w2,
            sigma_b2=mlp.sigma_b2, bias=mlp.has_bias, shift=mlp.shift,
        )  # fmt: skip
        return float(sum(active_fraction(mlp.activation, q[layer], mlp.shift) * mlp.widths[layer + 1]
                         for layer in range(L - 1)) + 1.0)  # fmt: skip
    return None


# ----------------------------------------------------------------------------------------------
# predicted dynamics


def predicted_train_residual(r0, alpha: float, learning_rate: float, steps: int) -> np.ndarray:
    """f_t - y = (1 - eta alpha)^t (f_0 - y) on the training samples (eq. 10 with Theta_bar = alpha I)."""
    r0 = as_real_array("r0", r0, numpy=True)
    alpha, learning_rate = check_real("alpha", alpha), check_real("learning_rate", learning_rate)
    steps = check_integer("steps", steps, 0)
    factor = (1.0 - learning_rate * alpha) ** np.arange(steps + 1)
    return factor.reshape((-1,) + (1,) * r0.ndim) * r0


def linearized_dynamics(tbar, tbar_test, f0, f0_test, y, learning_rate: float, steps: int):
    """The linearised model's outputs under theta <- theta - eta G_0^+ grad L (S.24-S.26):
    g_{t+1} = (I - eta Theta_bar) g_t on the training samples and
    f_{t+1}(x') = f_t(x') - eta Theta_bar(x', x) g_t, which sums to S.26. With Theta_bar the NTK it is GD.

    tbar (NC, NC), tbar_test (N'C, NC), f0 (N, C), f0_test (N', C), y (N, C). Returns (f_train, f_test)
    of shapes (T+1, N, C) and (T+1, N', C).
    """
    tbar, tbar_test = (
        as_real_array("tbar", tbar, 2, numpy=True),
        as_real_array("tbar_test", tbar_test, 2, numpy=True),
    )
    f0, f0_test = as_real_array("f0", f0, 2, numpy=True), as_real_array("f0_test", f0_test, 2, numpy=True)
    y = as_real_array("y", y, 2, numpy=True)
    learning_rate, steps = check_real("learning_rate", learning_rate), check_integer("steps", steps, 0)
    if y.shape != f0.shape or tbar.shape != (f0.size, f0.size) or tbar_test.shape != (f0_test.size, f0.size):
        raise ValueError(
            f"shapes must be tbar (NC, NC), tbar_test (N'C, NC), f0 and y (N, C), f0_test (N', C); got "
            f"{tbar.shape}, {tbar_test.shape}, {f0.shape}, {y.shape}, {f0_test.shape}"
        )
    g = (f0 - y).reshape(-1)
    ft = f0_test.reshape(-1).copy()
    train, test = [f0.reshape(-1).copy()], [ft.copy()]
    for _ in range(int(steps)):
        ft = ft - learning_rate * tbar_test @ g
        g = g - learning_rate * tbar @ g
        train.append(g + y.reshape(-1))
        test.append(ft.copy())
    return np.stack(train).reshape(-1, *f0.shape), np.stack(test).reshape(-1, *f0_test.shape)


def gd_optimal_learning_rate(ntk_eigenvalues) -> float:
    """eta = 2 / (lambda_min + lambda_max) of GD on the NTK (LeCun et al. 1998; Karakida & Osawa 2020,
    Fig. 1)."""
    ev = as_real_array("ntk_eigenvalues", ntk_eigenvalues, 1, numpy=True)
    if ev.size < 1 or ev.min() + ev.max() <= 0:
        raise ValueError("ntk_eigenvalues must be a non-empty list whose smallest plus largest value is > 0")
    return 2.0 / (ev.min() + ev.max())


def analytic_theta_bar(fisher, kernels_test: Kernels, kernels_train: Kernels, *, outputs: int = 1,
                       bias: bool = True, sigma_w2: float = 2.0,
                       sigma_b2: float = 0.5) -> np.ndarray:  # fmt: skip
    """Infinite-width Theta_bar(x', x) (N'C, NC) from analytic kernels ``kernels_test`` = K(x', x) and
    ``kernels_train`` = K(x, x), for the Fishers with a closed form:

    - exact: Theta(x', x) Theta^{-1} (S.53);
    - bd, tri-diagonal: sum_l (Sigma^{-1} 1)_l Theta_l(x', x) Theta_l^{-1} (S.71);
    - kfac (augmented or no bias, M_0 >= N): N sum_l B_l(x', x) B_l^{-1} o A~_{l-1}(x', x) A~_{l-1}^{-1},
      with B_L(x', x) B_L^{-1} replaced by 1 1^T and A~ = sigma_w^2 A + sigma_b^2 (S.105-S.106, S.B.3.3).
    """
    fisher = as_fisher(fisher)
    if fisher.damping > 0 or fisher.loss != "mse":
        raise ValueError("the analytic Theta_bar is for the MSE loss in the zero-damping limit")
    kt, kx = kernels_test, kernels_train
    L = len(kx.A)
    n = kx.A[0].shape[0]
    if fisher.name == "exact":
        out = kt.ntk @ np.linalg.inv(kx.ntk)
    elif fisher.name in ("bd", "tri-diagonal"):
        sigma = layer_sigma(fisher.name, L)
        if fisher.name == "tri-diagonal" and L % 3 == 2:
            raise ValueError(f"the tri-diagonal Sigma is singular at L={L} (Lemma 4.3)")
        w = np.linalg.solve(sigma, np.ones(L))
        out = sum(w[layer] * kt.layer_ntk[layer] @ np.linalg.inv(kx.layer_ntk[layer]) for layer in range(L))
    elif fisher.name == "kfac":
        sb2 = sigma_b2 if bias else 0.0
        out = 0.0
        for layer in range(L):
            bpart = np.ones_like(kt.A[0]) if layer == L - 1 else kt.B[layer] @ np.linalg.inv(kx.B[layer])
            a_t, a_x = sigma_w2 * kt.A[layer] + sb2, sigma_w2 * kx.A[layer] + sb2
            out = out + n * bpart * (a_t @ np.linalg.inv(a_x))
    else:
        raise ValueError(
            f"no analytic Theta_bar for {fisher.name!r}; available for exact, bd, tri-diagonal and kfac"
        )
    return np.kron(out, np.eye(outputs))


# ----------------------------------------------------------------------------------------------
# measurement against theory


def _cross_entropy_theory(f0, y, alpha: float, learning_rate: float, steps: int, ce_damping: float):
    """Function-space layer-wise NGD for cross-entropy (S.164-S.167), stepped discretely:
    f_{t+1} = f_t - eta alpha (Lambda(f_t) + rho~ I)^{-1} (softmax(f_t) - y), per sample."""
    f = np.asarray(f0, float).copy()
    y = np.asarray(y, float)
    out = [f.copy()]
    c = f.shape[1]
    for _ in range(int(steps)):
        p = np.exp(f - f.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        lam = np.einsum("nk,kj->nkj", p, np.eye(c)) - p[:, :, None] * p[:, None, :] + ce_damping * np.eye(c)
        f = f - learning_rate * alpha * np.linalg.solve(lam, (p - y)[..., None])[..., 0]
        out.append(f.copy())
    return np.stack(out)


def _accuracy(f, y, kind: str) -> float | None:
    f, y = np.asarray(f), np.asarray(y)
    if kind == "binary":
        return float(np.mean(np.sign(f[:, 0]) == np.sign(y[:, 0])))
    if kind == "multiclass":
        return float(np.mean(np.argmax(f, 1) == np.argmax(y, 1)))
    return None


def _loss_curve(fs, y, loss: str) -> np.ndarray:
    from ._wide import task_loss

    return np.asarray([float(task_loss(f, y, loss)) for f in fs])


def compare_with_theory(
    mlp: MLP, task, fisher, *, learning_rate: float | None = None, steps: int = 10, forster: bool = False
) -> dict:
    """Trains ``mlp`` on ``task`` with discrete NGD and sets the run against the theory.

    Measures Theta_bar = J G^+ J^T / N on the training samples (alpha = mean of its diagonal, and the
    isotropy condition number), runs ``steps`` NGD steps (by default eta = 1/alpha with the theory's
    alpha, 0.1/alpha for cross-entropy), and predicts:

    - training: f_t - y = (1 - eta alpha)^t (f_0 - y) (eq. 10; S.164-S.167 for cross-entropy); for the
      entry-wise Fishers, which have no isotropy theory, the linearised model with the measured
      Theta_bar (S.26), and the default rate 2 / (lambda_min + lambda_max) of that Theta_bar;
    - test: the linearised model S.26 with this approximation's measured Theta_bar(x', x);
    - GD on the NTK with eta = 2 / (lambda_min + lambda_max), for comparison.

    Returns a dict with the summary numbers (JSON-ready) and ``"curves"``: per-step arrays.
    """
    from ._wide import NGD, default_learning_rate, isotropy, ntk, precondition, signals, theta_bar, train

    _check_task_fits(mlp, task)
    fisher = as_fisher(fisher)
    fisher.check_depth(mlp.depth)
    if learning_rate is not None:
        learning_rate = check_positive("learning_rate", learning_rate)
    steps = check_integer("steps", steps, 0)
    n = task.n_samples
    sig, sig_t = signals(mlp, task.x_train), signals(mlp, task.x_test)
    pre = precondition(mlp, sig, fisher)
    tbar = np.asarray(theta_bar(mlp, sig, fisher, pre))
    tbar_test = np.asarray(theta_bar(mlp, sig, fisher, pre, test=sig_t))
    alpha_measured, cond = isotropy(tbar)
    alpha_th = alpha_theory(fisher, mlp, n, forster=forster)
    ev_bar = np.abs(np.linalg.eigvals(tbar))
    ev_bar = ev_bar[ev_bar > 1e-10 * ev_bar.max()]
    if learning_rate is not None:
        lr = float(learning_rate)
    elif alpha_th is not None:
        lr = default_learning_rate(fisher, alpha_th)
    else:  # no isotropy theory: the optimal rate of the linearised model with the measured Theta_bar
        lr = 2.0 / (ev_bar.min() + ev_bar.max())
    run = train(mlp, task, NGD(fisher, lr, forster), steps)
    y, yt = np.asarray(task.y_train), np.asarray(task.y_test)
    f0, f0t = run.f_train[0], run.f_test[0]
    if fisher.loss == "cross-entropy":
        alpha_used = alpha_th if alpha_th is not None else alpha_measured
        f_theory = _cross_entropy_theory(f0, y, alpha_used, lr, steps, fisher.ce_damping)
        f_lin_test = None
    else:
        f_lin, f_lin_test = linearized_dynamics(tbar, tbar_test, f0, f0t, y, lr, steps)
        if alpha_th is not None:
            f_theory = predicted_train_residual(f0 - y, alpha_th, lr, steps) + y
        else:
            f_theory = f_lin
    theory_loss = _loss_curve(f_theory, y, fisher.loss)
    scale = float(np.linalg.norm(f0 - y))
    dev = np.linalg.norm((run.f_train - f_theory).reshape(steps + 1, -1), axis=1) / scale
    # GD on the NTK
    k = np.asarray(ntk(mlp, sig))
    k_test = np.asarray(ntk(mlp, sig, sig_t))
    ev = np.linalg.eigvalsh(0.5 * (k + k.T))
    lr_gd = gd_optimal_learning_rate(ev)
    gd_train, gd_test = linearized_dynamics(k, k_test, f0, f0t, y, lr_gd, steps)
    out = {
        "fisher": fisher.name,
        "loss": fisher.loss,
        "damping": fisher.damping,
        "depth": mlp.depth,
        "widths": list(mlp.widths),
        "activation": mlp.activation,
        "shift": mlp.shift,
        "sigma_w2": mlp.sigma_w2,
        "sigma_b2": mlp.sigma_b2,
        "bias": mlp.has_bias,
        "samples": n,
        "test_samples": int(task.x_test.shape[0]),
        "n_params": mlp.n_params,
        "task": task.description,
        "forster": bool(forster),
        "alpha_theory": alpha_th,
        "alpha_measured": alpha_measured,
        "isotropy_condition_number": cond,
        "theta_bar_offdiag_max": float(np.abs(tbar - np.diag(np.diag(tbar))).max()),
        "theory": "(1 - eta alpha)^t"
        if alpha_th is not None or fisher.loss != "mse"
        else "S.26, measured Theta_bar",
        "learning_rate": lr,
        "steps": int(steps),
        "train_loss": run.train_loss.tolist(),
        "theory_loss": theory_loss.tolist(),
        "max_deviation": float(dev.max()),
        "deviation": dev.tolist(),
        "test_loss": run.test_loss.tolist(),
        "test_loss_theory": None if f_lin_test is None else _loss_curve(f_lin_test, yt, "mse").tolist(),
        "test_max_deviation": None
        if f_lin_test is None
        else float(np.abs(run.f_test - f_lin_test).max() / max(np.abs(f0t).max(), 1e-300)),
        "test_accuracy_initial": _accuracy(f0t, yt, task.kind),
        "test_accuracy_final": _accuracy(run.f_test[-1], yt, task.kind),
        "test_accuracy_theory_final": None
        if f_lin_test is None
        else _accuracy(f_lin_test[-1], yt, task.kind),
        "gd_ntk_eigenvalues": ev.tolist(),
        "gd_ntk_condition_number": float(ev.max() / ev.min()),
        "gd_learning_rate": lr_gd,
        "gd_theory_loss": _loss_curve(gd_train, y, "mse").tolist(),
        "gd_theory_test_loss": _loss_curve(gd_test, yt, "mse").tolist(),
    }
    return out
