"""Input validation, the library's error types, and small run-time utilities.

Every user-facing check raises :class:`ValueError` with a one-line message that says what is
allowed; the CLI turns these into exit code 2 without a traceback.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

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


def check_depth(depth: int) -> int:
    if isinstance(depth, bool) or int(depth) != depth or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    return int(depth)


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    widths = tuple(widths)
    if len(widths) < 2:
        raise ValueError(
            f"widths must list at least an input and an output width (depth >= 1), got {widths!r}"
        )
    for n in widths:
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"every width must be an integer >= 1, got {widths!r}")
    return tuple(int(n) for n in widths)


def check_q(q: float) -> float:
    q = float(q)
    if math.isnan(q) or q < 1:
        raise ValueError(f"q must be >= 1 (q=1 is NGD, q=2 sqrt-NGD, q=inf SGD), got {q!r}")
    return q


def check_nonnegative(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_finite(name: str, array) -> np.ndarray:
    """Checks on concrete values only; under a JAX trace it returns the tracer unchecked."""
    try:
        arr = np.asarray(array)
    except Exception:  # a tracer: checks happen on concrete inputs only
        return array
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf); all entries must be finite")
    return array


@contextlib.contextmanager
def atomic_directory(out: Path):
    """Yields a fresh temporary directory that replaces ``out`` only if the block succeeds."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def limit_lapack_threads(threads: int = 1):
    """Limits the OpenBLAS threads behind jax's CPU LAPACK kernels (eigh, SVD, solves) to ``threads``.

    jax's CPU eigh and SVD call the LAPACK that SciPy ships (OpenBLAS), whose worker threads
    compete with XLA's own thread pool. On a 2-core machine this made a 64 x 64 SVD take
    about 190 ms instead of 0.7 ms, and a 256 x 256 SVD 2.7 s instead of 20-30 ms, whenever
    other work was running (measured; the README has the figures). The ``dlnsim`` CLI and the
    tests call this with 1; call it in your own scripts, or set ``OPENBLAS_NUM_THREADS=1``
    before Python starts. Importing dlnsim never changes thread settings.

    Returns the ``threadpoolctl.threadpool_limits`` object (use it as a context manager to
    restore the previous limits on exit).
    """
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    import scipy.linalg  # noqa: F401  (loads the LAPACK that jax's CPU kernels call)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(int(threads), user_api="blas")
