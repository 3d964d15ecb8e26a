"""``dlnsim reproduce``: the source papers' figures, each with its quantitative checks (see
:mod:`dlnsim.experiments`; the reproductions load on first use of its registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import experiments
from ._boundary import check_seed, claim, fail
from ._options import Overwrite, out_option


def _list_figures() -> None:
    """One line per figure id: its verdict at the paper's settings, title and source."""
    width = max((len(i) for i in experiments.EXPERIMENTS), default=0)
    vwidth = max(len(v) for v in experiments.VERDICTS)
    for exp in experiments.EXPERIMENTS.values():
        verdict = (exp.verdict or "-").ljust(vwidth)
        typer.echo(f"{exp.id.ljust(width)}  {verdict}  {exp.title}  [{exp.source}]")
    typer.echo(
        "verdict: how the full-size run compares with the paper's claims "
        "(reproduces / partly / disagrees); see each run's metrics.json"
    )


def reproduce(
    ctx: typer.Context,
    figure_id: Annotated[
        str | None,
        typer.Argument(metavar="ID", help="A figure id from --list, or 'all' to run every figure."),
    ] = None,
    list_figures: Annotated[bool, typer.Option("--list", help="List the figure ids and exit.")] = False,
    fast: Annotated[
        bool,
        typer.Option(
            "--fast", help="Shrunken sizes (about a minute each on 2 cores); the checks still apply."
        ),
    ] = False,
    out: Annotated[
        Path | None,
        out_option("Output directory [default: reproductions/ID]; with 'all', one subdirectory per id."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Base random seed (0 to 2^63 - 1).")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Reproduce a figure of the source papers: writes figure.png/.pdf, metrics.json and data.npz.

    Each figure checks dlnsim's own correctness (conservation laws, closed forms, dense references)
    and the paper's claims, which give its verdict: reproduces, partly or disagrees. Exits 1 when a
    software check fails; a claim that does not hold is reported as a finding (exit 0).
    """
    registry = experiments.EXPERIMENTS
    if list_figures:
        _list_figures()
        return
    if figure_id is None:
        fail("give a figure id (see 'dlnsim reproduce --list') or 'all'")
    ids = list(registry) if figure_id == "all" else [figure_id]
    if figure_id != "all" and figure_id not in registry:
        fail(f"unknown figure id {figure_id!r}; allowed: all, {', '.join(registry)}")
    base = Path("reproductions") if out is None else out
    try:
        check_seed(seed)
        targets = {fid: base / fid if (figure_id == "all" or out is None) else base for fid in ids}
        claims = {fid: claim(ctx, t, overwrite, f"dlnsim reproduce {fid}") for fid, t in targets.items()}
    except ValueError as err:
        fail(str(err))
    failed = []
    for fid in ids:
        exp = registry[fid]
        typer.echo(f"{fid}: {exp.title} [{exp.source}]{' (fast)' if fast else ''}")
        try:
            rep = experiments.reproduce(fid, fast=fast, seed=seed, out=claims[fid])
        except ValueError as err:
            fail(f"{fid}: {err}")
        for c in rep.checks:
            typer.echo(f"  {c}")
        for finding in rep.findings:
            typer.echo(f"  finding: {finding}")
        held = rep.claims
        verdict = f"verdict {rep.verdict} ({sum(c.passed for c in held)}/{len(held)} claims hold)"
        software = "software checks passed" if rep.passed else f"{len(rep.failed)} software checks FAILED"
        typer.echo(f"  {software}; {verdict}; {rep.wall_seconds:.1f} s; wrote {targets[fid]}")
        if not rep.passed:
            failed.append(fid)
    if failed:
        typer.echo(f"software checks failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


__all__ = ["reproduce"]
