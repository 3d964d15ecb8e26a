"""Infinite-width kernels of wide networks: Gaussian expectations, A_l, Xi_l, B_l, Theta_l and the NTK.

Karakida & Osawa 2020, supplement sec. E (S.168-S.178), and the signal variances q_l and active
fractions gamma_l (S.140-S.141, S.156, S.175, S.178) that the unit-wise alpha uses.

Conventions (as in :mod:`dlnsim.wide._mlp`): A_0(x', x) = x' x^T / M_0; A_l = E[phi(u) phi(u')] over
u_l ~ N(0, Q_l), Q_l = sigma_w^2 A_{l-1} + sigma_b^2 (S.69, S.174); Xi_l = E[phi'(u) phi'(u')] (S.70);
B_L = 1 and B_l = sigma_w^2 Xi_l o B_{l+1} (S.171), the limit of delta_l(x') . delta_l(x) with
delta_l = df/du_l; the per-layer kernel Theta_l = sigma_w^2 B_l o A_{l-1} + sigma_b^2 B_l (S.68) and the
NTK sum_l Theta_l (S.169). These are the un-normalised kernels J_l J_l^T; the paper's Theta divides
by N (S.168). Everything here is evaluated on the host in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._checks import as_real_array, check_depth, check_integer, check_nonnegative, check_positive
from ._activations import activation_named
from ._mlp import MLP, check_mlp, layer_grams, signals

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
    paper's setting is ||x|| = 1, where q_l is the same for every sample (S.175, S.178). The Gaussian
    expectations are the activation's own (:meth:`~dlnsim.wide.AbstractActivation.cross_moment`).
    """
    phi = activation_named(activation, shift)
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
        Xis.append(phi.cross_moment(q1, q2, qq, derivative=True))
        As.append(phi.cross_moment(q1, q2, qq, derivative=False))
        a1 = phi.second_moment(q1)
        a2 = phi.second_moment(q2)
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
    check_mlp(mlp)
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
    phi = activation_named(activation, shift)
    depth, input_dim = check_depth(depth), check_integer("input_dim", input_dim)
    sigma_w2, sigma_b2 = check_positive("sigma_w2", sigma_w2), check_nonnegative("sigma_b2", sigma_b2)
    sb2 = float(sigma_b2) if bias else 0.0
    q = [sigma_w2 / input_dim + sb2]
    for _ in range(depth - 1):
        q.append(sigma_w2 * float(phi.second_moment(np.asarray([q[-1]]))[0]) + sb2)
    return np.asarray(q)


def active_fraction(activation: str, q: float, shift: float = 0.0) -> float:
    """gamma_l = P(phi'(u) != 0) for u ~ N(0, q_l) (S.140-S.141): 1/2 for relu, 1 for tanh / erf /
    identity, 1/2 + erf(s / sqrt(2 q)) / 2 for shifted relu (S.156)."""
    phi = activation_named(activation, shift)
    return phi.active_fraction(check_positive("q", q))
