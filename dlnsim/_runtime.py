"""Process-level guards: LAPACK threads and a stall watchdog (for jaxlib's batched-LAPACK
deadlock on CPU; docs/known-problems.md).

Nothing here runs on import; the CLI and the tests call these explicitly.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ._outputs import TEMPORARY, remove_temporary


def limit_lapack_threads(threads: int = 1):
    """Limits the OpenBLAS threads behind jax's CPU LAPACK kernels (eigh, SVD, solves) to ``threads``.

    jax's CPU eigh and SVD call the LAPACK that SciPy ships (OpenBLAS), whose worker threads
    compete with XLA's own thread pool. On a 2-core machine this made a 64 x 64 SVD take
    about 190 ms instead of 0.7 ms, and a 256 x 256 SVD 2.7 s instead of 20-30 ms, whenever
    other work was running (measured; docs/numerics.md has the figures). The ``dlnsim`` CLI and the
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
_MONITOR = Path(__file__).with_name("_stall_monitor.py")


def _monitor_available() -> bool:
    """The out-of-process monitor needs /proc (Linux) and SIGQUIT == 3, the stall exit code."""
    return os.path.exists(f"/proc/{os.getpid()}/stat") and int(signal.SIGQUIT) == STALL_EXIT_CODE


def _libc():
    libc = ctypes.CDLL(None)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    return libc


def _exit_on_sigquit():
    """Makes SIGQUIT end the process at once through libc's ``_exit(SIGQUIT)``, i.e. exit code 3,
    without the GIL (a Python-level handler would wait for it). Returns the previous handler."""
    libc = _libc()
    return libc.signal(int(signal.SIGQUIT), ctypes.cast(libc._exit, ctypes.c_void_p).value)


def _restore_sigquit(previous) -> None:
    _libc().signal(int(signal.SIGQUIT), previous)


class StallWatchdog:
    """Reports a process that has stopped using the CPU while it should be computing.

    A deadlocked XLA program (every thread waiting on a futex) uses no CPU at all, while a
    slow one uses it all the time. When the process's CPU time (all threads) has not grown by
    ``min_cpu`` seconds for ``stall_seconds``, the watchdog writes one line to stderr and every
    thread's Python stack to a file it names, removes this process's unfinished outputs and
    lock files (:func:`dlnsim.claim_output`), and ends the process with exit code 3.

    On Linux the watching is done by a small monitor process (``dlnsim/_stall_monitor.py``,
    standard library only) and every step of the report works without the GIL: the stacks are
    written by :mod:`faulthandler` on SIGUSR1 and the exit is libc's ``_exit`` on SIGQUIT, so a
    main thread blocked inside a compiled call while holding the GIL is caught too. While the
    watchdog is active, SIGUSR1 dumps the stacks and SIGQUIT (Ctrl-\\) ends the process with code
    3. Elsewhere a Python thread does the watching, which a GIL held by a blocked call defeats.

    Only meaningful when the computation runs on the CPU (a GPU run waits on the device with
    the CPU idle): the CLI enables it on the CPU backend only.

    Args:
        what: names the computation in the report.
        stall_seconds: how long without CPU progress counts as a stall; ``None`` reads the
            environment variable ``DLNSIM_STALL_SECONDS`` (default 120; 0 disables the watchdog).
        poll: sampling interval in seconds.
        min_cpu: CPU seconds per window below which nothing is deemed to run.
        in_process: watch from a thread of this process instead of a monitor process (the
            default, ``None``, uses the monitor where it is available).
    """

    def __init__(
        self,
        what: str,
        *,
        stall_seconds: float | None = None,
        poll: float = 1.0,
        min_cpu: float = 0.01,
        in_process: bool | None = None,
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
        self.in_process = (not _monitor_available()) if in_process is None else bool(in_process)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._monitor: subprocess.Popen | None = None

    # -- in-process thread (fallback) ------------------------------------------------------

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
            "See docs/known-problems.md.\n"
        )
        sys.stderr.flush()
        try:
            remove_temporary()
        except Exception:  # noqa: BLE001, S110  (best effort before exiting)
            pass
        os._exit(STALL_EXIT_CODE)

    # -- monitor process ---------------------------------------------------------------------

    def _start_monitor(self) -> None:
        fd, path = tempfile.mkstemp(prefix=f"dlnsim-stall-{os.getpid()}-", suffix=".txt")
        self._stacks_path = path
        self._stacks = os.fdopen(fd, "w")
        faulthandler.register(signal.SIGUSR1, file=self._stacks, all_threads=True, chain=False)
        self._previous_sigquit = _exit_on_sigquit()
        self._monitor = subprocess.Popen(
            [
                sys.executable,
                "-I",
                str(_MONITOR),
                str(os.getpid()),
                repr(self.stall_seconds),
                repr(self.poll),
                repr(self.min_cpu),
                self.what,
                path,
            ],  # fmt: skip
            stdin=subprocess.PIPE,
            start_new_session=True,  # the terminal's Ctrl-C goes to this process only
        )
        self._registry = TEMPORARY
        for p in TEMPORARY:
            self._tell("+", p)
        TEMPORARY.listeners.append(self._tell)

    def _tell(self, sign: str, path) -> None:
        try:
            self._monitor.stdin.write(sign.encode() + os.fsencode(os.path.abspath(path)) + b"\n")
            self._monitor.stdin.flush()
        except (OSError, ValueError):
            pass  # the monitor is gone; nothing to keep in step

    def _stop_monitor(self) -> None:
        with contextlib.suppress(ValueError):
            self._registry.listeners.remove(self._tell)
        with contextlib.suppress(OSError):
            self._monitor.stdin.close()
        try:
            self._monitor.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._monitor.kill()
            self._monitor.wait()
        faulthandler.unregister(signal.SIGUSR1)
        _restore_sigquit(self._previous_sigquit)
        self._stacks.close()
        with contextlib.suppress(OSError):
            os.unlink(self._stacks_path)

    def __enter__(self) -> StallWatchdog:
        if self.stall_seconds > 0:
            if self.in_process:
                self._thread = threading.Thread(target=self._watch, name="dlnsim-watchdog", daemon=True)
                self._thread.start()
            else:
                self._start_monitor()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._monitor is not None:
            self._stop_monitor()
