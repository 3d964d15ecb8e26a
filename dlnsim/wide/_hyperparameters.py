"""Numeric hyperparameters as array leaves, and the wide Fishers' rank cutoffs.

A Fisher's damping rho, the softmax-Hessian damping rho~, the rank cutoff rcond and the NGD
learning rate eta are stored as 0-d float arrays, not static fields: ``eqx.filter_jit`` traces
them, so a new value reuses the compiled program, and ``jax.vmap`` can batch them. Concrete
values are checked with the one-line messages of :mod:`dlnsim._checks`; a traced value (inside
``jit`` or ``vmap``) is checked for its dtype and shape only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import check_nonnegative, check_positive, check_rcond, is_traced

# The wide Fishers' pseudo-inverse cutoff: eigenvalues of a sample-space matrix (K_l, the Kronecker
# factors, the unit Grams, the coupled layer-wise matrix) at or below PINV_RCOND times the largest
# count as zero, so that G^+ is the Moore-Penrose inverse of Karakida & Osawa 2020, eq. 9. Kept at
# 1e-10 rather than dlnsim._linalg.default_rcond (10 * size * eps, 7e-14 for N = 32): on the digits
# (0 vs 7, N = 32, L = 3, M = 256, as in examples/wide_ngd.py and the reproductions) four unit-wise
# Grams have an eigenvalue at 3e-12 to 5e-11 of their largest, which default_rcond would keep and
# invert (measured 2026-12-02); the dense references use 1e-10 too (tests/wide_reference.py).
PINV_RCOND = 1e-10
# The diagonal and quasi-diagonal Fishers' cutoff on their diagonal entries and 2 x 2 unit blocks
# (Ollivier 2015): an entry at or below ENTRYWISE_RCOND times the largest is a zero direction.
ENTRYWISE_RCOND = 1e-12
# The quasi-diagonal Fisher treats a 2 x 2 block (or its bias entry) whose trace is at or below this
# fraction of the largest trace as zero.
QUASI_DIAGONAL_ZERO_TRACE = 1e-14


def _float_dtype():
    return jnp.result_type(float)


def _traced_scalar(name: str, value) -> Array:
    if jnp.ndim(value) != 0 or not (
        jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
    ):
        raise ValueError(f"{name} must be a real scalar, got a traced array of shape {jnp.shape(value)}")
    return value.astype(_float_dtype()) if jnp.issubdtype(value.dtype, jnp.integer) else value


def hyperparameter(name: str, value, *, positive: bool = False) -> Float[Array, ""]:
    """``value`` as a 0-d float array leaf: >= 0 (or > 0 with ``positive``) and finite when concrete."""
    if is_traced(value):
        return _traced_scalar(name, value)
    number = check_positive(name, value) if positive else check_nonnegative(name, value)
    return jnp.asarray(number, dtype=_float_dtype())


def rank_cutoff(name: str, value, default: float) -> Float[Array, ""]:
    """A relative rank cutoff in [0, 1) as a 0-d float array leaf; None gives ``default``."""
    if is_traced(value):
        return _traced_scalar(name, value)
    number = check_rcond(name, value)
    return jnp.asarray(default if number is None else number, dtype=_float_dtype())


def concrete(value) -> float | None:
    """``float(value)``, or None for a traced value (the checks that need a number are skipped)."""
    if isinstance(value, jax.core.Tracer):
        return None
    return float(value)
