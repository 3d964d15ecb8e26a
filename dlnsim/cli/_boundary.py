"""The CLI's boundary with the process: float64 and thread set-up, output claiming, the stall
watchdog, and the translation of every failure into one ``Error: ...`` line and an exit code.

Exit codes: 0 success; 1 a run failed (dynamics blew up, a reproduction's check failed, out of
memory); 2 bad input (options, data, output path); 3 a stalled process (see
:class:`dlnsim.StallWatchdog`); 130 interrupted; 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import NoReturn

import jax
import typer

from .. import _outputs
from .._checks import DynamicsBlowUpError
from .._runtime import StallWatchdog, limit_lapack_threads

EXIT_BAD_INPUT = 2
EXIT_FAILED_RUN = 1
EXIT_INTERRUPTED = 130

SEED_MAX = 2**63 - 1


def configure() -> None:
    """float64, and one LAPACK thread unless OPENBLAS_NUM_THREADS says otherwise (see
    :func:`dlnsim.limit_lapack_threads`)."""
    jax.config.update("jax_enable_x64", True)
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        limit_lapack_threads(1)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Ends the command with one ``Error: message`` line on stderr and exit ``code``."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def cli_words(message: str) -> str:
    """A library message in the CLI's terms (its keyword arguments are options here)."""
    return message.replace("`max_steps`", "max_steps").replace("max_steps", "--max-steps")


def check_seed(seed) -> int:
    """The seed as an int; ValueError unless it is an integer from 0 to 2^63 - 1."""
    if isinstance(seed, bool) or int(seed) != seed or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"--seed must be an integer from 0 to 2^63 - 1, got {seed!r}")
    return int(seed)


@contextlib.contextmanager
def computing(what: str):
    """The stall watchdog (CPU backend only: a GPU run waits on the device with the CPU idle)."""
    if jax.default_backend() != "cpu":
        yield
        return
    with StallWatchdog(what):  # on a stall it removes this process's temps and locks
        yield


def claim(ctx: typer.Context, out: Path, overwrite: bool, what: str, needed_bytes: int = 0):
    """Checks and locks ``out`` before any computation (see :mod:`dlnsim._outputs`) and starts
    the stall watchdog; both end with the command. Raises ValueError (exit 2) for a path that
    dlnsim may not write."""
    target = _outputs.claim_output(
        out, overwrite=overwrite, needed_bytes=needed_bytes, command="dlnsim " + " ".join(sys.argv[1:])
    )
    ctx.with_resource(target)
    if not ctx.meta.get("dlnsim.watchdog"):  # one per command
        ctx.meta["dlnsim.watchdog"] = True
        ctx.with_resource(computing(what))
    return target


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON with a final newline."""
    path.write_text(json.dumps(obj, indent=2) + "\n")


def run_command_line(app: typer.Typer, argv: list[str] | None = None) -> NoReturn:
    """Runs ``app`` on ``argv`` (default: ``sys.argv``) and exits; every failure ends in one
    ``Error: ...`` line on stderr and the exit code of the module docstring."""
    configure()
    _outputs.terminate_on_signals()
    try:
        code = app(args=argv, prog_name="dlnsim", standalone_mode=False)
    except typer.TyperException as err:  # typer's own (vendored click) parse errors
        if type(err).__name__ == "NoArgsIsHelpError":
            # The error carries the help text; typer's rich formatter has printed it already and
            # left the message empty, so it is echoed only where it was not printed.
            if err.format_message():
                typer.echo(err.format_message())
            sys.exit(0)
        where = f" (see '{err.ctx.command_path} --help')" if getattr(err, "ctx", None) else ""
        message = " ".join(err.format_message().split())
        typer.echo(f"Error: {message}{where}", err=True)
        code = err.exit_code
    except typer.Abort as err:
        if isinstance(err.__cause__, EOFError):
            typer.echo("Error: unexpected end of input (an empty or truncated file?)", err=True)
            code = EXIT_BAD_INPUT
        else:
            typer.echo("Error: interrupted", err=True)
            code = EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001  (the last line of defence: one line, never a traceback)
        code = report_unexpected(err)
    sys.exit(code if isinstance(code, int) else 0)


def report_unexpected(err: Exception) -> int:
    """One line for an error that escaped the command's own checks; the traceback goes to a file."""
    first = " ".join(str(err).split())[:300] or type(err).__name__
    if isinstance(err, (ValueError, TypeError, OverflowError)):
        typer.echo(f"Error: {first}", err=True)
        return EXIT_BAD_INPUT
    if isinstance(err, DynamicsBlowUpError):
        typer.echo(f"Error: {first}", err=True)
        return EXIT_FAILED_RUN
    if isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in str(err) or "Out of memory" in str(err):
        typer.echo("Error: out of memory; reduce the widths, --saves or --samples", err=True)
        return EXIT_FAILED_RUN
    fd, path = tempfile.mkstemp(prefix="dlnsim-error-", suffix=".txt")
    with open(fd, "w") as f:
        traceback.print_exception(err, file=f)
    typer.echo(
        f"Error: internal error {type(err).__name__}: {first} (traceback in {path}; please report it)",
        err=True,
    )
    return EXIT_FAILED_RUN


__all__ = [
    "SEED_MAX",
    "check_seed",
    "claim",
    "cli_words",
    "computing",
    "configure",
    "fail",
    "report_unexpected",
    "run_command_line",
    "write_json",
]
