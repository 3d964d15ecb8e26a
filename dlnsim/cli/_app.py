"""The typer application: its commands, one module per group, registered in the order of
``dlnsim --help``, and the console-script entry point :func:`main`."""

from __future__ import annotations

import typer

from ._boundary import configure, run_command_line
from ._flow import flow
from ._info import rules
from ._phase import phase
from ._reproduce import reproduce
from ._run import compare, run
from ._sweep import sweep
from ._wide import wide

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Exact learning dynamics of deep linear networks under curvature-corrected rules.",
)


@app.callback()
def _entry() -> None:
    """Exact learning dynamics of deep linear networks under curvature-corrected rules."""
    configure()


for _command in (run, compare, sweep, phase, wide, flow, reproduce, rules):
    app.command(_command.__name__)(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every failure ends in one ``Error: ...`` line on stderr.

    Exit codes: 0 success; 1 a run failed (dynamics blew up, a reproduction's check failed, out
    of memory); 2 bad input (options, data, output path); 3 a stalled process (see
    :class:`dlnsim.StallWatchdog`); 130 interrupted; 143 terminated (SIGTERM).
    """
    run_command_line(app, argv)


__all__ = ["app", "main"]
