"""Output directories: dlnsim only ever replaces what it wrote itself.

The contract (issue 12) of every command that writes a directory:

- The directory is checked before any computation (:func:`claim_output`): a path that is
  not a directory dlnsim wrote (a file, the working directory or one of its parents, a
  non-empty directory without dlnsim's manifest) is refused with a one-line
  :class:`OutputError`. An empty directory is accepted (it is replaced by the results).
- A directory that dlnsim wrote carries a manifest, ``.dlnsim-output.json``, listing its files.
  It is replaced only with ``overwrite=True``, and only while it holds nothing but the files the
  manifest lists.
- Write permission and free disk space are checked up front.
- Only one process writes a given path at a time: a lock file beside it (``.NAME.dlnsim-lock``,
  ``fcntl.flock``) is held from the claim to the end of the write; a second run is refused.
- Results are written into a temporary sibling (``.NAME.tmp-*``) that replaces the target only
  when it is complete; SIGINT and SIGTERM are held back during the swap, so an interrupt at any
  moment leaves either the old directory or the new one, never a mixture or a stray temp folder
  (stray ones from a process killed with SIGKILL are removed by the next claim of that path).
- Folders are created with the mode the umask gives (not ``mkdtemp``'s 0700).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = ".dlnsim-output.json"
_LOCK_SUFFIX = ".dlnsim-lock"


class _Temporaries:
    """The paths this process would leave behind if it stopped now (see terminate_on_signals),
    with listeners told of each change (the stall watchdog's monitor process keeps a copy)."""

    def __init__(self):
        self._paths: set[Path] = set()
        self.listeners: list = []

    def add(self, path: Path) -> None:
        self._paths.add(path)
        for listener in self.listeners:
            listener("+", path)

    def discard(self, path: Path) -> None:
        if path in self._paths:
            self._paths.discard(path)
            for listener in self.listeners:
                listener("-", path)

    def __iter__(self):
        return iter(list(self._paths))


TEMPORARY = _Temporaries()


class OutputError(ValueError):
    """An output path that dlnsim may not write (the CLI exits with code 2)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _display(path: Path) -> str:
    return str(path) if str(path) else "''"


def read_manifest(path: Path) -> dict | None:
    """The manifest of a directory dlnsim wrote, or None for anything else."""
    try:
        data = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") != "dlnsim" or not isinstance(data.get("files"), list):
        return None
    return data


def _listing(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if not p.is_dir()}


def _check_target(out: Path, overwrite: bool) -> None:
    """Refuses any ``out`` that dlnsim may not replace (see the module docstring)."""
    raw = str(out)
    if raw.strip() == "":
        raise OutputError("--out is empty; give a directory path such as runs/my-run")
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path(resolved.anchor):
        raise OutputError(
            f"--out {_display(out)} is the working directory or one of its parents; "
            "give a new or dlnsim-written subdirectory such as runs/my-run"
        )
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(
            f"--out {out} exists and is not a directory; dlnsim never replaces a file: choose another path"
        )
    if not out.exists():
        return
    manifest = read_manifest(out)
    if manifest is None:
        if any(out.iterdir()):
            raise OutputError(
                f"--out {out} is a non-empty directory that dlnsim did not write; "
                "choose a new path (dlnsim never deletes files it did not write)"
            )
        return
    if not overwrite:
        raise OutputError(f"--out {out} holds an earlier dlnsim result; pass --overwrite to replace it")
    foreign = sorted(_listing(out) - set(manifest["files"]) - {MANIFEST})
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputError(
            f"--out {out} holds files dlnsim did not write ({shown}); move them away or choose another path"
        )


def _writable_ancestor(path: Path) -> Path:
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def _check_space(out: Path, needed_bytes: int) -> None:
    base = _writable_ancestor(out.parent)
    if not base.is_dir():
        raise OutputError(f"--out {out}: {base} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out}: no permission to write in {base}")
    free = shutil.disk_usage(base).free
    if needed_bytes > 0 and free < 1.1 * needed_bytes + (16 << 20):
        raise OutputError(
            f"--out {out}: the results need about {needed_bytes / 2**20:.0f} MiB but {base} has "
            f"{free / 2**20:.0f} MiB free"
        )


def _makedirs(path: Path) -> list[Path]:
    """Creates ``path`` and its parents with the umask's mode; returns those it created."""
    created = []
    p = path
    while not p.exists() and p.parent != p:
        created.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True, mode=0o777)
    return created


@dataclass
class OutputTarget:
    """A claimed output directory: locked, checked, and written with :meth:`writing`."""

    path: Path
    overwrite: bool
    command: str = ""
    _lock_fd: int | None = field(default=None, repr=False)
    _lock_path: Path | None = field(default=None, repr=False)
    _created: list[Path] = field(default_factory=list, repr=False)
    _written: bool = field(default=False, repr=False)

    @contextlib.contextmanager
    def writing(self, extra: dict | None = None):
        """Yields a fresh temporary directory; on success it replaces :attr:`path` atomically
        and gets the manifest (with ``extra`` entries added). On any exception (including
        KeyboardInterrupt) it is removed; under :func:`terminate_on_signals` a signal removes it
        too."""
        out = self.path
        _check_target(out, self.overwrite)  # the directory may have changed while computing
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        TEMPORARY.add(tmp)
        try:
            os.chmod(tmp, 0o777 & ~_umask())
            yield tmp
            files = sorted(_listing(tmp))
            manifest = {
                "tool": "dlnsim",
                "version": _version(),
                "command": self.command,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "files": files,
                **(extra or {}),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            with _signals_held():
                _swap_into_place(tmp, out)
            self._written = True
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            TEMPORARY.discard(tmp)

    @property
    def partial(self) -> Path:
        """``.NAME.partial`` beside the output: the finished pieces of a resumable run (a sweep's
        chunks). It survives an interrupted run, is never removed as stale, and does not look
        like a result; the run that completes removes it (:meth:`discard_partial`)."""
        return self.path.parent / f".{self.path.name}.partial"

    def discard_partial(self) -> None:
        """Removes :attr:`partial` (a completed or overwritten resumable run)."""
        if self.partial.is_dir() and not self.partial.is_symlink():
            shutil.rmtree(self.partial)

    def release(self) -> None:
        """Releases the lock (idempotent); :func:`claim_output` used as a context manager does it."""
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            if self._lock_path is not None:
                self._lock_path.unlink()
                TEMPORARY.discard(self._lock_path)
        os.close(self._lock_fd)
        self._lock_fd = None
        if not self._written:  # a refused or failed run leaves no empty parent folders behind
            for folder in self._created:
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def __enter__(self) -> OutputTarget:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("dlnsim")
    except Exception:  # noqa: BLE001  (an uninstalled checkout)
        return "unknown"


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Moves the finished ``tmp`` to ``out``; an existing ``out`` (empty, or dlnsim's own) is
    moved aside first and deleted after."""
    try:
        os.rename(tmp, out)  # also replaces an empty directory
        return
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _signals_held():
    """Blocks SIGINT and SIGTERM in this thread; a signal that arrives meanwhile is delivered
    when the block ends, after the swap has completed."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _acquire_lock(out: Path) -> tuple[int, Path]:
    lock = out.parent / f".{out.name}{_LOCK_SUFFIX}"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            except OSError:
                holder = "?"
            os.close(fd)
            raise OutputError(
                f"--out {out} is being written by another dlnsim process (pid {holder}); "
                "wait for it to finish or choose another path"
            ) from None
        # The holder before us may have unlinked the file after we opened it: lock the live one.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd, lock
        os.close(fd)


def _remove_stale(out: Path) -> None:
    """Temp and moved-aside folders of ``out`` left by a process killed with SIGKILL (we hold
    the lock, so no live process owns them)."""
    for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*"):
        for stale in out.parent.glob(pattern):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)


def claim_output(out, *, overwrite: bool = False, needed_bytes: int = 0, command: str = "") -> OutputTarget:
    """Checks and locks an output directory before any computation.

    Args:
        out: the directory to write.
        overwrite: replace an earlier dlnsim result at ``out`` (never anything else).
        needed_bytes: an estimate of the bytes to be written, checked against free disk space.
        command: recorded in the manifest.

    Raises:
        OutputError: one line saying why ``out`` cannot be written and what to do instead.
    """
    out = Path(out)
    _check_target(out, overwrite)
    _check_space(out, needed_bytes)
    try:
        created = _makedirs(out.parent)
    except OSError as err:
        raise OutputError(f"--out {out}: cannot create {out.parent} ({err.strerror})") from None
    try:
        fd, lock = _acquire_lock(out)
    except BaseException:
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    TEMPORARY.add(lock)
    target = OutputTarget(out, overwrite, command, fd, lock, created)
    try:
        _check_target(out, overwrite)  # re-checked under the lock
        _remove_stale(out)
    except BaseException:
        target.release()
        raise
    return target


def remove_temporary() -> None:
    """Removes this process's unfinished temp folders and its lock files (for a process that is
    about to end without unwinding, e.g. on a signal or a stall)."""
    for path in list(TEMPORARY):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        TEMPORARY.discard(path)


def terminate_on_signals() -> None:
    """On SIGTERM (exit 143) or SIGINT (exit 130), remove the unfinished outputs and end the
    process at once.

    Raising an exception from the handler is not enough: Python swallows one raised while a
    garbage-collection callback runs (jax registers one), and the run would go on. The swap of
    a finished result holds both signals back (see ``OutputTarget.writing``), so a signal never
    lands between moving the old result aside and renaming the new one into place.
    """

    def handler(signum, frame):
        remove_temporary()
        sys.stderr.write("\nError: " + ("interrupted" if signum == signal.SIGINT else "terminated") + "\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
