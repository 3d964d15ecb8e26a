"""``dlnsim rules``: the learning rules, each with its paper equation."""

from __future__ import annotations

import typer

from .._rules import RULES


def rules() -> None:
    """List the learning rules, each with one line and its paper equation."""
    width = max(len(n) for n in RULES)
    for info in RULES.values():
        typer.echo(f"{info.name.ljust(width)}  {info.summary}  [{info.reference}]")


__all__ = ["rules"]
