"""Process-level guards: LAPACK threads and a stall watchdog (for jaxlib's batched-LAPACK
deadlock on CPU; README, "Known problems").

Nothing here runs on import; the CLI and the tests call these explicitly.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable


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


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


STALL_EXIT_CODE = 3


class StallWatchdog:
    """Reports a process that has stopped using the CPU while it should be computing.

    A deadlocked XLA program (every thread waiting on a futex) uses no CPU at all, while a
    slow one uses it all the time. A daemon thread samples the process's CPU time (all
    threads) every ``poll`` seconds; when it has not grown by ``min_cpu`` seconds for
    ``stall_seconds``, the watchdog writes one line to stderr, the Python stacks of every
    thread to a file it names, calls ``on_stall`` (cleanup), and ends the process with exit
    code 3, since a deadlocked main thread cannot be interrupted.

    Only meaningful when the computation runs on the CPU (a GPU run waits on the device with
    the CPU idle): the CLI enables it on the CPU backend only.

    Args:
        what: names the computation in the report.
        stall_seconds: how long without CPU progress counts as a stall; ``None`` reads the
            environment variable ``DLNSIM_STALL_SECONDS`` (default 120; 0 disables the watchdog).
        poll: sampling interval in seconds.
        min_cpu: CPU seconds per window below which nothing is deemed to run.
        on_stall: called before the process exits (for example, to release a lock).
    """

    def __init__(
        self,
        what: str,
        *,
        stall_seconds: float | None = None,
        poll: float = 1.0,
        min_cpu: float = 0.01,
        on_stall: Callable[[], None] | None = None,
    ):
        if stall_seconds is None:
            raw = os.environ.get("DLNSIM_STALL_SECONDS", "120")
            try:
                stall_seconds = float(raw)
            except ValueError:
                raise ValueError(f"DLNSIM_STALL_SECONDS must be a number of seconds, got {raw!r}") from None
        if not stall_seconds >= 0:
            raise ValueError(f"stall_seconds must be >= 0 (0 disables), got {stall_seconds!r}")
        self.what = what
        self.stall_seconds = float(stall_seconds)
        self.poll = min(float(poll), max(self.stall_seconds / 4, 0.05))
        self.min_cpu = float(min_cpu)
        self.on_stall = on_stall
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _watch(self) -> None:
        last_cpu, last_progress = _cpu_seconds(), time.monotonic()
        while not self._stop.wait(self.poll):
            cpu, now = _cpu_seconds(), time.monotonic()
            if cpu - last_cpu >= self.min_cpu:
                last_cpu, last_progress = cpu, now
            elif now - last_progress >= self.stall_seconds:
                self._report(now - last_progress)

    def _report(self, idle: float) -> None:
        fd, path = tempfile.mkstemp(prefix=f"dlnsim-stall-{os.getpid()}-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            faulthandler.dump_traceback(file=f, all_threads=True)
        sys.stderr.write(
            f"Error: {self.what} used no CPU for {idle:.0f} s and looks deadlocked; stopped. "
            f"Thread stacks: {path}. Native stacks: py-spy dump --native --pid PID on a rerun. "
            "See README, 'Known problems'.\n"
        )
        sys.stderr.flush()
        if self.on_stall is not None:
            try:
                self.on_stall()
            except Exception:  # noqa: BLE001, S110  (best effort before exiting)
                pass
        os._exit(STALL_EXIT_CODE)

    def __enter__(self) -> StallWatchdog:
        if self.stall_seconds > 0:
            self._thread = threading.Thread(target=self._watch, name="dlnsim-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
