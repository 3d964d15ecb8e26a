"""The out-of-process half of :class:`dlnsim.StallWatchdog` (Linux).

Run as a script by file path, with the standard library only (it never imports dlnsim or jax):

    python -I _stall_monitor.py PID STALL_SECONDS POLL MIN_CPU WHAT STACKS_FILE

It samples the CPU time of process PID (all its threads, from /proc/PID/stat) every POLL
seconds. Its standard input carries lines ``+PATH`` and ``-PATH``: the unfinished outputs and
lock files the watched process would leave behind. End of input (the watched process finished
its computation, or died) ends the monitor. When PID has used less than MIN_CPU CPU seconds for
STALL_SECONDS, the monitor, none of whose steps need the watched process's GIL:

1. sends SIGUSR1, on which the watched process's ``faulthandler`` writes every thread's Python
   stack to STACKS_FILE (in C, without the GIL);
2. removes the registered paths;
3. writes one line to the shared standard error;
4. sends SIGQUIT, whose handler in the watched process is libc's ``_exit`` (called with the
   signal number, 3: the stall exit code); SIGKILL if the process is still there 5 s later.
"""

import os
import select
import shutil
import signal
import sys
import time


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (field 3, the state, comes first)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` (fields 14 and 15 of /proc/PID/stat)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs: an exited process that its parent has not reaped yet (a zombie,
    state Z or X in /proc/PID/stat) counts as gone, so the monitor ends as soon as it exits."""
    try:
        state = _stat(pid)[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def _stop(pid: int, idle: float, what: str, stacks: str, paths: set[str]) -> None:
    os.kill(pid, signal.SIGUSR1)
    time.sleep(1.0)  # faulthandler writes synchronously in its signal handler
    for path in sorted(paths, reverse=True):
        _remove(path)
    sys.stderr.write(
        f"Error: {what} used no CPU for {idle:.0f} s and looks deadlocked; stopped. "
        f"Thread stacks: {stacks}. Native stacks: py-spy dump --native --pid PID on a rerun. "
        "See docs/known-problems.md.\n"
    )
    sys.stderr.flush()
    os.kill(pid, signal.SIGQUIT)
    for _ in range(50):
        time.sleep(0.1)
        if not _alive(pid):
            return
    os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    pid, stall, poll, min_cpu = int(argv[1]), float(argv[2]), float(argv[3]), float(argv[4])
    what, stacks = argv[5], argv[6]
    paths: set[str] = set()
    pending = b""
    last_cpu, last_progress = cpu_seconds(pid), time.monotonic()
    while True:
        ready, _, _ = select.select([0], [], [], poll)
        if ready:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                return 0  # the watched process is done with the watchdog, or gone
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                path = os.fsdecode(line[1:])
                if line.startswith(b"+"):
                    paths.add(path)
                elif line.startswith(b"-"):
                    paths.discard(path)
        try:
            cpu = cpu_seconds(pid)
        except OSError:
            return 0
        now = time.monotonic()
        if cpu - last_cpu >= min_cpu:
            last_cpu, last_progress = cpu, now
        elif now - last_progress >= stall:
            _stop(pid, now - last_progress, what, stacks, paths)
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
