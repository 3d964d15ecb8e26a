"""Process-level guards: the jaxlib deadlock's regression test and the stall watchdog."""

import faulthandler
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import dlnsim
from dlnsim import _stall_monitor
from dlnsim._runtime import STALL_EXIT_CODE, StallWatchdog

# The case that hung `dlnsim reproduce curvature-fig3 --fast` (issue 12): the observables of 600
# saved states of a block rule, i.e. SVDs of every layer's prefix and suffix products, independent
# of each other, in a jitted lax.map. With the states batched 64 at a time it deadlocked on
# jaxlib 0.10.2 (hung by call 3, 16 and 4 in three runs; 1 of 2 runs of this script) and on 0.9.2
# (a CI run of the sweep tests); states are now mapped unbatched (dlnsim._simulation._observables).
FORMER_HANG = textwrap.dedent(
    """
    import sys
    import jax, jax.random as jr
    jax.config.update("jax_enable_x64", True)
    import dlnsim
    from dlnsim._simulation import _observables

    reps = int(sys.argv[1])
    n, d, states = 16, 4, 600
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(1), n, n, rank=3))
    field = dlnsim.vector_field("sqrt-ngd-d")
    ws = dlnsim.init_weights_batch((n,) * (d + 1), jr.split(jr.PRNGKey(0), states), init="xavier")
    with dlnsim.StallWatchdog("the former deadlock case", stall_seconds=30):
        for r in range(reps):
            jax.block_until_ready(_observables(field, task, None, tuple(w * (1 + 1e-3 * r) for w in ws)))
    print("completed", reps)
    """
)


def test_batched_decompositions_in_a_parallel_loop_do_not_deadlock():
    """Runs the former hang case many times under the watchdog: a deadlock ends the child with
    the watchdog's exit code (3) and its report, rather than hanging the test suite."""
    reps = 40
    proc = subprocess.run(
        [sys.executable, "-c", FORMER_HANG, str(reps)], capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode != STALL_EXIT_CODE, f"deadlocked: {proc.stderr[-2000:]}"
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"completed {reps}" in proc.stdout


STALLING_CHILD = textwrap.dedent(
    """
    import ctypes, sys, time
    from pathlib import Path
    from dlnsim import StallWatchdog, claim_output
    out, how, in_process = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "thread"
    target = claim_output(out)
    with StallWatchdog("a sleeping test", stall_seconds=1.0, poll=0.1, in_process=in_process):
        with target.writing() as tmp:
            (tmp / "partial.txt").write_text("unfinished")
            if how == "sleep":
                time.sleep(60)  # no CPU, like a deadlocked XLA program
            else:
                libc = ctypes.PyDLL(None)  # no CPU and the GIL held, like a blocked jitted call
                for _ in range(60):
                    libc.sleep(60)  # (a signal cuts a libc sleep short; a futex wait resumes)
    print("not reached")
    """
)


@pytest.mark.parametrize(
    "how, in_process",
    [("sleep", False), ("gil-held", False), ("sleep", True)],
    ids=["monitor", "gil", "thread"],
)
def test_watchdog_reports_a_process_that_uses_no_cpu(tmp_path, how, in_process):
    """A stalled process ends with exit code 3, one line, a stacks file, and no unfinished
    output or lock left behind; the monitor process catches a stall that holds the GIL."""
    out = tmp_path / "result"
    proc = subprocess.run(
        [sys.executable, "-c", STALLING_CHILD, str(out), how, "thread" if in_process else "monitor"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == STALL_EXIT_CODE, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "a sleeping test used no CPU" in lines[0] and "looks deadlocked" in lines[0]
    stacks = open(lines[0].split("Thread stacks: ")[1].split(".txt")[0] + ".txt").read()
    assert "<string>" in stacks  # the child's script, in the main thread's stack
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "unfinished output or lock left behind"
    assert "not reached" not in proc.stdout


def test_watchdog_stays_quiet_while_the_cpu_works():
    for in_process in (True, False):
        with StallWatchdog("busy", stall_seconds=0.5, poll=0.05, in_process=in_process) as dog:
            total = 0
            for i in range(3_000_000):  # about a second of pure-Python work
                total += i
        if in_process:
            assert dog._thread is not None and not dog._thread.is_alive()
        else:
            assert dog._monitor is not None and dog._monitor.returncode == 0


def test_monitor_leaves_the_process_as_it_found_it():

    before = signal.getsignal(signal.SIGQUIT)
    with StallWatchdog("x", stall_seconds=30) as dog:
        assert dog._monitor is not None and dog._monitor.poll() is None
    assert dog._monitor.returncode == 0
    assert signal.getsignal(signal.SIGQUIT) == before
    assert not faulthandler.unregister(signal.SIGUSR1)  # nothing left registered
    assert not Path(dog._stacks_path).exists()


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_watchdog_rejects_bad_settings(bad):
    with pytest.raises(ValueError, match="stall_seconds"):
        StallWatchdog("x", stall_seconds=bad)


def test_watchdog_disabled_by_zero(monkeypatch):
    monkeypatch.setenv("DLNSIM_STALL_SECONDS", "0")
    with StallWatchdog("x") as dog:
        pass
    assert dog._thread is None and dog._monitor is None
    monkeypatch.setenv("DLNSIM_STALL_SECONDS", "soon")
    with pytest.raises(ValueError, match="DLNSIM_STALL_SECONDS"):
        StallWatchdog("x")


def test_importing_dlnsim_changes_no_process_state():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import signal, sys, jax, dlnsim; print(jax.config.jax_enable_x64, "
            "signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "
            "sorted(m for m in sys.modules if m.startswith(('matplotlib', 'dlnsim._repro'))))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split(maxsplit=2)
    assert out == ["False", "True", "[]\n"]  # no float64 switch, no handlers, no plotting or reproductions
    assert dlnsim.StallWatchdog is StallWatchdog


def test_the_monitor_counts_an_unreaped_exited_process_as_gone():
    """An exited child that its parent has not reaped yet (a zombie) is gone for the stall monitor,
    so its report returns at once instead of after the 5 s SIGKILL grace (os.kill(pid, 0) still
    succeeds on a zombie)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(200):  # wait for the exit without reaping the child
        with open(f"/proc/{child.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
    os.kill(child.pid, 0)  # still signalable: the old liveness test called it alive
    assert not _stall_monitor._alive(child.pid)
    assert _stall_monitor._alive(os.getpid())
    child.wait()
    assert not _stall_monitor._alive(child.pid)
