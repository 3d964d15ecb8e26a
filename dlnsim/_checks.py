"""Input validation, the library's error types, and small run-time utilities.

Every user-facing check raises :class:`ValueError` with a one-line message that says what is
allowed; the CLI turns these into exit code 2 without a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class DynamicsBlowUpError(RuntimeError):
    """An integration failed: a non-finite state, a stalled step size or too many steps.

    Attributes:
        time: the last time the solver reached.
        reason: a short description of the failure.
        hint: what to try instead.
    """

    def __init__(self, time: float, reason: str, hint: str):
        self.time = float(time)
        self.reason = reason
        self.hint = hint
        super().__init__(f"dynamics blew up at t={self.time:.6g}: {reason}. Hint: {hint}")


def _describe(value) -> str:
    """A short description of a rejected value for a one-line message."""
    if value is None or isinstance(value, bool | np.bool_ | str | bytes):
        return repr(value)
    dtype = getattr(value, "dtype", None)
    if dtype is not None and np.ndim(value) > 0:
        return f"an array of dtype {dtype} and shape {tuple(np.shape(value))}"
    text = repr(value)
    return text if len(text) <= 60 and "\n" not in text else f"a {type(value).__name__}"


def _real_scalar(name: str, value, allowed: str) -> float:
    """``float(value)`` for a real number (not a bool, string, complex or array), else a ValueError."""
    dtype = getattr(value, "dtype", None)
    is_real = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not is_real and dtype is not None and np.ndim(value) == 0:
        is_real = _is_real_dtype(dtype)
    if not is_real:
        raise ValueError(f"{name} must be {allowed}, got {_describe(value)}")
    try:
        return float(value)
    except Exception:  # a tracer: these options are static numbers, not traced values
        raise ValueError(f"{name} must be a concrete number ({allowed}), got a traced value") from None


def check_integer(name: str, value, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (integral floats such as 3.0 are accepted; bools are not)."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        if value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {int(value)}")
        return int(value)
    number = _real_scalar(name, value, f"an integer >= {minimum}")
    if not math.isfinite(number) or number != int(number) or number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {_describe(value)}")
    return int(number)


def check_depth(depth: int) -> int:
    return check_integer("depth", depth, 1)


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    try:
        if isinstance(widths, str | bytes):
            raise TypeError
        widths = tuple(widths)
    except TypeError:
        raise ValueError(
            f"widths must be a sequence of integers >= 1 like (16, 16, 16), got {_describe(widths)}"
        ) from None
    if len(widths) < 2:
        raise ValueError(
            f"widths must list at least an input and an output width (depth >= 1), got {widths!r}"
        )
    for n in widths:
        try:
            check_integer("width", n, 1)
        except ValueError:
            raise ValueError(f"every width must be an integer >= 1, got {widths!r}") from None
    return tuple(int(n) for n in widths)


def check_q(q: float) -> float:
    allowed = ">= 1 (q=1 is NGD, q=2 sqrt-NGD, q=inf SGD)"
    q = _real_scalar("q", q, f"a number {allowed}")
    if math.isnan(q) or q < 1:
        raise ValueError(f"q must be {allowed}, got {q!r}")
    return q


def check_nonnegative(name: str, value: float) -> float:
    value = _real_scalar(name, value, "a finite number >= 0")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_positive(name: str, value: float) -> float:
    value = _real_scalar(name, value, "a finite number > 0")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_real(name: str, value: float) -> float:
    """Any finite real number."""
    value = _real_scalar(name, value, "a finite number")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def check_rcond(name: str, value: float | None) -> float | None:
    """A relative rank cutoff: None (the default) or a finite number in [0, 1)."""
    if value is None:
        return None
    allowed = (
        "None or a finite number >= 0 and < 1 (a relative eigenvalue cutoff; 1 would cut every direction)"
    )
    value = _real_scalar(name, value, allowed)
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def _is_real_dtype(dtype) -> bool:
    import jax.numpy as jnp

    try:
        return bool(jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer))
    except TypeError:
        return False


def is_traced(value) -> bool:
    """Whether ``value`` is a JAX tracer (under ``jit``, ``vmap`` or a derivative)."""
    import jax

    return isinstance(value, jax.core.Tracer)


def as_real_array(name: str, value, ndim=None, *, dtype=None, finite: bool = True, numpy: bool = False):
    """``value`` as an array of real numbers, or a one-line ValueError naming ``name``.

    The single rule for array inputs: integer and floating-point values are accepted; complex,
    bool, object, string and other dtypes are refused (never cast, so no imaginary part is
    dropped with a ComplexWarning). ``ndim`` (an int or a tuple of ints) restricts the number of
    dimensions. With ``finite`` (the default) NaN and inf are refused too, on concrete values
    only: under a JAX trace the values are not known and only the dtype and shape are checked.

    Returns a JAX array (a NumPy float64 array with ``numpy=True``) of dtype ``dtype``; by default
    floating inputs keep their precision and integers become the default float type.
    """
    import jax.numpy as jnp

    arr = value
    if not (hasattr(value, "dtype") and hasattr(value, "shape")):
        try:
            arr = np.asarray(value)
        except Exception:
            try:  # e.g. a list of traced values
                arr = jnp.asarray(value)
            except Exception:
                raise ValueError(
                    f"{name} must be an array of real numbers, got {_describe(value)} (ragged or not numeric)"
                ) from None
    if not _is_real_dtype(arr.dtype):
        kind = "None" if value is None else f"dtype {arr.dtype}"
        if isinstance(value, str | bytes):
            kind = f"the string {value!r}"
        raise ValueError(
            f"{name} must hold real numbers (integer or floating point), got {kind}; "
            "complex, bool, object and string values are not accepted"
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{n}-D" for n in allowed)
            raise ValueError(f"{name} must be a {want} array, got shape {tuple(arr.shape)}")
    if numpy:
        if is_traced(arr):
            raise ValueError(f"{name} must be a concrete array, not a traced value")
        out = np.asarray(arr, dtype=np.float64 if dtype is None else dtype)
    else:
        if dtype is None:
            dtype = arr.dtype if jnp.issubdtype(arr.dtype, jnp.floating) else jnp.result_type(float)
        out = jnp.asarray(arr, dtype=dtype)
    if finite:
        check_finite(name, out)
    return out


def check_covariance(name: str, cov, size: int | None = None, *, definite: bool = False):
    """A symmetric positive semi-definite (``definite``: positive definite) matrix as a NumPy array.

    ``size`` is the required n of an n x n matrix. Symmetry and the smallest eigenvalue are
    checked to max(1e-10, 100 eps) times max(1, max |C|), with eps that of the input's precision;
    positive definite also needs a condition number below 1 / (10 n eps), so that its inverse is
    meaningful.
    """
    import jax.numpy as jnp

    in_dtype = getattr(cov, "dtype", None)
    floating = in_dtype is not None and _is_real_dtype(in_dtype) and jnp.issubdtype(in_dtype, jnp.floating)
    eps = float(jnp.finfo(in_dtype if floating else np.float64).eps)
    c = as_real_array(name, cov, 2, numpy=True)
    if c.shape[0] != c.shape[1] or c.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {c.shape}")
    if size is not None and c.shape[0] != size:
        raise ValueError(f"{name} must be ({size}, {size}) to match the output width {size}, got {c.shape}")
    tol = max(1e-10, 100 * eps) * max(1.0, float(np.abs(c).max(initial=0.0)))
    if not np.allclose(c, c.T, rtol=0.0, atol=tol):
        raise ValueError(f"{name} must be symmetric, got max |C - C^T| = {np.abs(c - c.T).max():.3g}")
    evals = np.linalg.eigvalsh(0.5 * (c + c.T))
    if definite:
        if evals[0] <= 10 * c.shape[0] * eps * evals[-1] or evals[-1] <= 0:
            raise ValueError(
                f"{name} must be positive definite (its inverse is used), got smallest eigenvalue "
                f"{evals[0]:.3g} and largest {evals[-1]:.3g}"
            )
    elif evals[0] < -tol:
        raise ValueError(f"{name} must be positive semi-definite, got smallest eigenvalue {evals[0]:.3g}")
    return c


def check_key(key, name: str = "key"):
    """A single JAX PRNG key (a typed key from ``jax.random.key`` or a raw ``jax.random.PRNGKey``)."""
    import jax
    import jax.numpy as jnp

    dtype = getattr(key, "dtype", None)
    if dtype is not None:
        if jnp.issubdtype(dtype, jax.dtypes.prng_key) and np.ndim(key) == 0:
            return key
        if dtype == np.uint32 and np.ndim(key) == 1:
            return key
    raise TypeError(
        f"{name} must be one JAX PRNG key such as jax.random.PRNGKey(0) or jax.random.key(0), "
        f"got {_describe(key)}"
    )


def check_finite(name: str, array) -> np.ndarray:
    """Checks on concrete values only; under a JAX trace it returns the tracer unchecked."""
    try:
        arr = np.asarray(array)
    except Exception:  # a tracer: checks happen on concrete inputs only
        return array
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf); all entries must be finite")
    return array
