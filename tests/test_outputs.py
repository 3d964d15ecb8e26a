"""The output-directory contract (dlnsim._outputs): nothing the user owns is ever replaced."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dlnsim._outputs import MANIFEST, OutputError, claim_output, read_manifest


def leftovers(parent: Path) -> list[str]:
    """Temp folders, moved-aside folders and lock files that a write may leave beside ``out``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def write(out, overwrite=False, files=("a.txt",)):
    with claim_output(out, overwrite=overwrite) as target, target.writing() as tmp:
        for name in files:
            (tmp / name).write_text(name)
    return out


def test_new_directory_gets_the_files_and_a_manifest(tmp_path):
    out = write(tmp_path / "runs" / "r1", files=("a.txt", "b.txt"))
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "a.txt", "b.txt"])
    assert read_manifest(out)["files"] == ["a.txt", "b.txt"]
    assert leftovers(out.parent) == []
    assert (out.stat().st_mode & 0o777) == 0o777 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_empty_directory_is_replaced(tmp_path):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty")
    assert (tmp_path / "empty" / "a.txt").read_text() == "a.txt"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: (p.mkdir(), (p / "mine.txt").write_text("user data")), "did not write"),
        (lambda p: p.write_text("a user's file"), "not a directory"),
        (lambda p: p.symlink_to(p.parent), "not a directory"),
    ],
    ids=["foreign-dir", "file", "symlink"],
)
def test_foreign_paths_are_refused_and_left_untouched(tmp_path, make, message):
    out = tmp_path / "out"
    make(out)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(OutputError, match=message):
        claim_output(out, overwrite=True)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("path", [".", "", ".."])
def test_the_working_directory_and_its_parents_are_refused(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="working directory|empty"):
        claim_output(Path(path), overwrite=True)


def test_own_results_need_overwrite_and_nothing_foreign_inside(tmp_path):
    out = write(tmp_path / "r")
    with pytest.raises(OutputError, match="--overwrite"):
        claim_output(out)
    write(out, overwrite=True, files=("c.txt",))
    assert read_manifest(out)["files"] == ["c.txt"] and not (out / "a.txt").exists()
    (out / "notes.md").write_text("my notes")
    with pytest.raises(OutputError, match=r"did not write \(notes.md\)"):
        claim_output(out, overwrite=True)
    assert (out / "notes.md").read_text() == "my notes"


def test_a_failed_write_leaves_the_old_result_and_no_temp(tmp_path):
    out = write(tmp_path / "r")
    with pytest.raises(RuntimeError), claim_output(out, overwrite=True) as target, target.writing() as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert read_manifest(out)["files"] == ["a.txt"]
    assert leftovers(tmp_path) == []


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "r"
    with claim_output(out):
        with pytest.raises(OutputError, match="another dlnsim process"):
            claim_output(out)
    with claim_output(out):  # released
        pass
    assert leftovers(tmp_path) == []


def test_stale_temp_folders_of_a_killed_run_are_removed_by_the_next_claim(tmp_path):
    (tmp_path / ".r.tmp-abc").mkdir()
    (tmp_path / ".r.tmp-abc" / "partial.npz").write_text("x")
    (tmp_path / ".r.old-123").mkdir()
    (tmp_path / ".other.tmp-xyz").mkdir()  # another output's: not ours to touch
    write(tmp_path / "r")
    assert leftovers(tmp_path) == [".other.tmp-xyz"]


def test_permission_and_disk_space_are_checked_before_computing(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root ignores permission bits
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked)
    with pytest.raises(OutputError, match="no permission"):
        claim_output(locked / "r")
    with pytest.raises(OutputError, match="MiB free"):
        claim_output(tmp_path / "r", needed_bytes=1 << 60)
    assert not (tmp_path / "r").exists()


_SIGTERM_CHILD = """
import os, signal, sys, time
from pathlib import Path
import dlnsim._outputs as outputs
outputs.terminate_on_signals()
out, when = Path(sys.argv[1]), sys.argv[2]
if when == "swap":  # SIGTERM arrives between moving the old result aside and renaming the new one
    real = os.rename
    def rename(src, dst):
        real(src, dst)
        if ".old-" in str(dst):
            os.kill(os.getpid(), signal.SIGTERM)
    outputs.os.rename = rename
with outputs.claim_output(out, overwrite=True) as target, target.writing() as tmp:
    (tmp / "new.txt").write_text("new")
    if when == "write":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
print("finished")
"""


@pytest.mark.parametrize("when", ["write", "swap"])
def test_sigterm_leaves_the_old_or_the_new_result_never_a_mixture(tmp_path, when):
    out = write(tmp_path / "r", files=("old.txt",))
    script = tmp_path.parent / f"child-{when}.py"
    script.write_text(_SIGTERM_CHILD)
    proc = subprocess.run([sys.executable, str(script), str(out), when], capture_output=True, text=True)
    assert proc.returncode == 143, proc.stderr
    files = read_manifest(out)["files"]
    assert files == (["old.txt"] if when == "write" else ["new.txt"])
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, *files])
    assert leftovers(tmp_path) == []


def _cli(args, cwd, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "dlnsim", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


RUN = ["run", "--depth", "2", "--width", "4", "--saves", "50", "--no-progress"]


def test_cli_sigterm_at_any_moment_leaves_no_partial_output(tmp_path):
    """SIGTERM at several moments of a CLI run (setup, compute, plotting and writing): the
    directory afterwards is absent or complete, and nothing else is left beside it."""
    lock = tmp_path / ".r.dlnsim-lock"
    outcomes = []
    # the run takes about 3 s from taking its lock to writing its result (with the suite's
    # compile flags), so these delays land in setup, compute and writing
    for delay in (0.0, 1.0, 2.0):
        proc = _cli([*RUN, "--t1", "30", "--out", "r", "--overwrite"], tmp_path)
        deadline = time.monotonic() + 120
        while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
        out = tmp_path / "r"
        # -15: the run had finished and Python was shutting down, which restores the default
        # SIGTERM action; the result must then be complete (checked below)
        assert proc.returncode in (0, 143) or (proc.returncode == -signal.SIGTERM and out.exists()), err
        assert "Traceback" not in err
        outcomes.append(proc.returncode)
        if out.exists():
            files = read_manifest(out)["files"]
            assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, *files])
            assert json.loads((out / "summary.json").read_text())["rule"] == "sqrt-ngd"
        assert leftovers(tmp_path) == []
    assert 143 in outcomes


def test_cli_refuses_a_second_run_on_the_same_out(tmp_path):
    with claim_output(tmp_path / "r"):
        proc = _cli([*RUN, "--t1", "1", "--out", "r"], tmp_path)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [err.strip()] and "another dlnsim process" in err
    assert not (tmp_path / "r").exists()


def test_writers_in_two_processes_never_interleave(tmp_path):
    """Two processes racing for the same path: exactly one writes, the other is refused."""
    child = textwrap.dedent(
        """
        import sys, time
        from dlnsim._outputs import OutputError, claim_output
        try:
            with claim_output(sys.argv[1]) as t, t.writing() as tmp:
                (tmp / "who.txt").write_text(sys.argv[2])
                time.sleep(1.0)
        except OutputError as err:
            print("refused", err)
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", child, str(tmp_path / "r"), str(i)], stdout=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert sum("refused" in o for o in outs) == 1
    assert (tmp_path / "r" / "who.txt").read_text() in ("0", "1")
    assert leftovers(tmp_path) == []
