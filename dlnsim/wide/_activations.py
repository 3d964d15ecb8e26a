"""Activations phi of the wide networks and their derivatives phi' (Karakida & Osawa 2020, eq. 1, S.156).

The names are the strings the CLI and :class:`dlnsim.wide.MLP` take; ``shifted-relu`` is
phi_s(u) = max(u, -s) (S.156).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from .._checks import check_nonnegative

ACTIVATIONS = ("relu", "tanh", "erf", "shifted-relu", "identity")


def check_activation(activation: str, shift: float = 0.0) -> str:
    """The activation's name, or a one-line ValueError (unknown name, or a shift on another activation)."""
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    shift = check_nonnegative("shift", shift)
    if shift != 0.0 and activation != "shifted-relu":
        raise ValueError(f"shift applies to the shifted-relu activation only, not {activation!r}")
    return activation


def activation_fn(activation: str, shift: float = 0.0) -> Callable:
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


def activation_derivative(activation: str, shift: float = 0.0) -> Callable:
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
