"""Activations phi of the wide networks, one class each, with their Gaussian moments.

Karakida & Osawa 2020, eq. 1 and S.156 (phi), S.170-S.178 (the Gaussian expectations the
infinite-width kernels need). Each activation gives phi and phi' in JAX (for the network) and in
numpy (for the host-side kernels), E[g(u)^2] and E[g(u) g(v)] for g = phi or phi' under a centred
Gaussian (closed forms where they exist, Gauss-Legendre quadrature otherwise; S.175-S.177) and the
active fraction P(phi'(u) != 0) (S.140-S.141). ``shifted-relu`` is phi_s(u) = max(u, -s) (S.156).

The names are the strings the CLI and :class:`dlnsim.wide.MLP` take; they resolve to a class once,
in :func:`activation_named`, so no code below branches on a name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from .._checks import check_nonnegative

_QUAD_NODES = 80  # Gauss-Legendre nodes per half-line piece for activations without closed forms


def gauss_legendre_pieces(kink: float, n: int = 80, cut: float = 12.0):
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


@dataclass(frozen=True)
class AbstractActivation:
    """An activation phi. Subclasses give ``__call__`` and ``derivative`` (JAX) and ``host``
    (numpy); the Gaussian moments default to quadrature and are overridden by closed forms."""

    name: ClassVar[str]

    def __call__(self, u):
        """phi(u) (JAX)."""
        raise NotImplementedError

    def derivative(self, u):
        """phi'(u) (JAX); for the (shifted) relu the derivative at the kink is taken as 0."""
        raise NotImplementedError

    def host(self, derivative: bool = False) -> Callable:
        """phi or phi' in numpy (the kernels are evaluated on the host)."""
        raise NotImplementedError

    def active_fraction(self, q: float) -> float:
        """gamma = P(phi'(u) != 0) for u ~ N(0, q) (S.140-S.141)."""
        return 1.0

    def second_moment(self, q: np.ndarray, derivative: bool = False) -> np.ndarray:
        """E[g(u)^2] for u ~ N(0, q), g = phi or phi' (S.175)."""
        q = np.asarray(q, float)
        z, w = gauss_legendre_pieces(0.0, _QUAD_NODES)
        g = self.host(derivative)
        return np.sum(w * g(np.sqrt(q)[..., None] * z) ** 2, axis=-1)

    def cross_moment(self, q1, q2, cov, derivative: bool) -> np.ndarray:
        """E[g(u) g(v)] for (u, v) ~ N(0, [[q1, Q], [Q, q2]]) entry-wise; q1 (N1,), q2 (N2,), Q (N1, N2)
        (S.170, S.172)."""
        q1, q2, cov = np.asarray(q1, float), np.asarray(q2, float), np.asarray(cov, float)
        root = np.sqrt(np.outer(q1, q2))
        c = np.clip(cov / root, -1.0, 1.0)
        return self._cross(q1, q2, cov, root, c, derivative)

    def _cross(self, q1, q2, cov, root, c, derivative):
        """By default a two-dimensional Gauss-Legendre rule on [-12, 12]^2 with
        v = sqrt(q2) (c u1 + sqrt(1 - c^2) u2) (error below 1e-12 for tanh at q <= 4; Gauss-Hermite
        converges slowly for tanh, whose poles lie near the real axis)."""
        g = self.host(derivative)
        s = np.sqrt(1.0 - c**2)
        out = np.empty_like(cov)
        z, w = gauss_legendre_pieces(0.0, _QUAD_NODES)
        for i in range(cov.shape[0]):
            gu = g(math.sqrt(q1[i]) * z)  # (n,)
            v = np.sqrt(q2)[:, None, None] * (
                c[i][:, None, None] * z[None, :, None] + s[i][:, None, None] * z
            )
            out[i] = np.einsum("a,b,a,jab->j", w, w, gu, g(v))
        return out


@dataclass(frozen=True)
class Relu(AbstractActivation):
    """phi(u) = max(u, 0); arc-cosine kernels in closed form (S.176-S.177)."""

    name: ClassVar[str] = "relu"

    def __call__(self, u):
        return jax.nn.relu(u)

    def derivative(self, u):
        return (u > 0).astype(u.dtype)

    def host(self, derivative=False):
        return (lambda u: (u > 0).astype(float)) if derivative else (lambda u: np.maximum(u, 0.0))

    def active_fraction(self, q):
        return 0.5

    def second_moment(self, q, derivative=False):
        q = np.asarray(q, float)
        return np.full_like(q, 0.5) if derivative else q / 2.0

    def _cross(self, q1, q2, cov, root, c, derivative):
        if derivative:
            return (math.pi - np.arccos(c)) / (2.0 * math.pi)
        return root / (2.0 * math.pi) * (np.sqrt(1.0 - c**2) + (math.pi - np.arccos(c)) * c)


@dataclass(frozen=True)
class Tanh(AbstractActivation):
    """phi(u) = tanh(u); its Gaussian moments by quadrature."""

    name: ClassVar[str] = "tanh"

    def __call__(self, u):
        return jnp.tanh(u)

    def derivative(self, u):
        return 1.0 - jnp.tanh(u) ** 2

    def host(self, derivative=False):
        return (lambda u: 1.0 - np.tanh(u) ** 2) if derivative else np.tanh


@dataclass(frozen=True)
class Erf(AbstractActivation):
    """phi(u) = erf(u); moments in closed form (Williams 1997)."""

    name: ClassVar[str] = "erf"

    def __call__(self, u):
        return jax.scipy.special.erf(u)

    def derivative(self, u):
        return 2.0 / math.sqrt(math.pi) * jnp.exp(-(u**2))

    def host(self, derivative=False):
        return (lambda u: 2.0 / math.sqrt(math.pi) * np.exp(-(u**2))) if derivative else special.erf

    def second_moment(self, q, derivative=False):
        q = np.asarray(q, float)
        if derivative:
            return 4.0 / math.pi / np.sqrt(1.0 + 4.0 * q)
        return 2.0 / math.pi * np.arcsin(2.0 * q / (1.0 + 2.0 * q))

    def _cross(self, q1, q2, cov, root, c, derivative):
        d1, d2 = 1.0 + 2.0 * q1, 1.0 + 2.0 * q2
        if derivative:
            return 4.0 / math.pi / np.sqrt(np.outer(d1, d2) - 4.0 * cov**2)
        return 2.0 / math.pi * np.arcsin(np.clip(2.0 * cov / np.sqrt(np.outer(d1, d2)), -1.0, 1.0))


@dataclass(frozen=True)
class ShiftedRelu(AbstractActivation):
    """phi_s(u) = u for u >= -s, -s otherwise (S.156)."""

    name: ClassVar[str] = "shifted-relu"
    shift: float = 0.0

    def __call__(self, u):
        return jnp.maximum(u, -self.shift)

    def derivative(self, u):
        return (u > -self.shift).astype(u.dtype)

    def host(self, derivative=False):
        shift = self.shift
        return (lambda u: (u > -shift).astype(float)) if derivative else (lambda u: np.maximum(u, -shift))

    def active_fraction(self, q):
        return 0.5 + 0.5 * math.erf(self.shift / math.sqrt(2.0 * q))

    def second_moment(self, q, derivative=False):
        q = np.asarray(q, float)
        shift = self.shift
        a = shift / np.sqrt(q)
        if derivative:
            return special.ndtr(a)
        return shift**2 * special.ndtr(-a) + q * (
            special.ndtr(a) - a * np.exp(-0.5 * a**2) / math.sqrt(2 * math.pi)
        )

    def _cross(self, q1, q2, cov, root, c, derivative):
        """u2 integrated in closed form, u1 by Gauss-Legendre split at the kink (round-off accurate)."""
        shift = self.shift
        g = self.host(derivative)
        s = np.sqrt(1.0 - c**2)
        out = np.empty_like(cov)
        for i in range(cov.shape[0]):
            z, w = gauss_legendre_pieces(-shift / math.sqrt(q1[i]))
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


@dataclass(frozen=True)
class Identity(AbstractActivation):
    """phi(u) = u (a deep linear net)."""

    name: ClassVar[str] = "identity"

    def __call__(self, u):
        return u

    def derivative(self, u):
        return jnp.ones_like(u)

    def host(self, derivative=False):
        return np.ones_like if derivative else (lambda u: u)

    def second_moment(self, q, derivative=False):
        q = np.asarray(q, float)
        return np.ones_like(q) if derivative else q

    def _cross(self, q1, q2, cov, root, c, derivative):
        return np.ones_like(cov) if derivative else cov


ACTIVATION_CLASSES: dict[str, type[AbstractActivation]] = {
    cls.name: cls for cls in (Relu, Tanh, Erf, ShiftedRelu, Identity)
}
ACTIVATIONS = tuple(ACTIVATION_CLASSES)


def check_activation(activation: str, shift: float = 0.0) -> str:
    """The activation's name, or a one-line ValueError (unknown name, or a shift on another activation)."""
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    shift = check_nonnegative("shift", shift)
    if shift != 0.0 and activation != "shifted-relu":
        raise ValueError(f"shift applies to the shifted-relu activation only, not {activation!r}")
    return activation


def activation_named(activation: str, shift: float = 0.0) -> AbstractActivation:
    """The activation of this name (and shift, for ``shifted-relu``), checked."""
    check_activation(activation, shift)
    cls = ACTIVATION_CLASSES[activation]
    return cls(shift=float(shift)) if cls is ShiftedRelu else cls()


def activation_fn(activation: str, shift: float = 0.0) -> Callable:
    """phi(u). ``shifted-relu`` is phi_s(u) = u for u >= -s, -s otherwise (S.156)."""
    return activation_named(activation, shift)


def activation_derivative(activation: str, shift: float = 0.0) -> Callable:
    """phi'(u); for the (shifted) relu the derivative at the kink is taken as 0."""
    return activation_named(activation, shift).derivative
