"""``dlnsim sweep``: a grid of rules, hyperparameters, depths and seeds, one compiled program per
structure, sharded over every device (and every process of a ``jax.distributed`` run), resumable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from .. import _sweep, _sweep_outputs
from .._budget import check_resources
from .._sharding import initialize_distributed, is_writer
from .._sweep_outputs import PLOT_FIGURES, PLOT_PARAMETERS
from ._boundary import claim, computing, fail
from ._options import (
    Curvature,
    Init,
    LossTol,
    MaxSteps,
    Overwrite,
    Progress,
    Rank,
    Samples,
    Seed,
    Width,
    out_option,
)


def _numbers(option: str, text: str | None, kind=float) -> tuple:
    """The values of a comma-separated option (``inf`` allowed for floats)."""
    if text is None:
        return ()
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"{option} needs at least one value, e.g. {option} 1,2")
    try:
        values = tuple(kind(t) for t in items)
    except ValueError:
        raise ValueError(f"{option} takes comma-separated numbers, got {text!r}") from None
    if kind is float and any(math.isnan(v) for v in values):
        raise ValueError(f"{option} values must be numbers, got {text!r}")
    return values


def sweep(
    ctx: typer.Context,
    rule: Annotated[str, typer.Option(help="Comma-separated rules; see `dlnsim rules`.")] = "sqrt-ngd",
    q: Annotated[
        str | None, typer.Option(help="Comma-separated q for qngd / qngd-d (q >= 1; inf = sgd).")
    ] = None,
    eps: Annotated[str | None, typer.Option(help="Comma-separated eps for damped-ngd (eps >= 0).")] = None,
    scale: Annotated[
        str, typer.Option(help="Comma-separated init scales (for 'small', the largest singular value).")
    ] = "0.05",
    depth: Annotated[str, typer.Option(help="Comma-separated depths d (>= 1).")] = "4",
    width: Width = 16,
    seeds: Annotated[int, typer.Option(help="Initial-weight seeds per combination.")] = 16,
    seed: Seed = 0,
    init: Init = "small",
    task: Annotated[
        str, typer.Option(help="teacher (noise-free, white inputs) | student-teacher (Huh 2020 Fig. 3).")
    ] = "teacher",
    snr: Annotated[str, typer.Option(help="Comma-separated SNRs of the student-teacher data.")] = "10",
    rank: Rank = 3,
    samples: Samples = 16,
    t1: Annotated[
        float, typer.Option(help="End time; losses are saved log-spaced over [1e-6 t1, t1].")
    ] = 100.0,
    saves: Annotated[int, typer.Option(help="Saved times per element (for half-times and plots).")] = 200,
    loss_tol: LossTol = 1e-6,
    max_steps: MaxSteps = 100_000,
    curvature: Curvature = "auto",
    dtype: Annotated[
        str, typer.Option(help="float64 | float32 (GPU speed; matmuls at precision 'highest').")
    ] = "float64",
    chunk_size: Annotated[int, typer.Option(help="Elements per compiled batch (and per saved chunk).")] = 64,
    plot_x: Annotated[
        str | None, typer.Option(help="Parameter on the plot's x axis (default: the first varying).")
    ] = None,
    plot_y: Annotated[str, typer.Option(help="Figure on the plot's y axis.")] = "loss_final",
    coordinator: Annotated[
        str | None, typer.Option(help="host:port of process 0, to join a jax.distributed run.")
    ] = None,
    num_processes: Annotated[int | None, typer.Option(help="Processes in the jax.distributed run.")] = None,
    process_id: Annotated[int | None, typer.Option(help="This process's index in the run.")] = None,
    overwrite: Overwrite = False,
    out: Annotated[Path | None, out_option("Output directory (default runs/sweep-<rules>).")] = None,
    progress: Progress = True,
) -> None:
    """A grid of rules x q x eps x init scale x depth x SNR x seeds. Elements that share a
    structure run as one vmapped, sharded solve; a failed element is recorded and the others go
    on. Finished chunks are kept, so rerunning the same command resumes an interrupted sweep.
    Writes table.parquet and table.csv (a row per element), summary.json and a plot."""
    try:
        distributed = coordinator is not None or num_processes is not None or process_id is not None
        if distributed:
            if coordinator is None or num_processes is None or process_id is None:
                raise ValueError(
                    "a jax.distributed run needs --coordinator, --num-processes and --process-id"
                )
            initialize_distributed(coordinator, num_processes, process_id)
        rules = tuple(r.strip() for r in rule.split(",") if r.strip())
        spec = _sweep.SweepSpec(
            rules=rules, depths=_numbers("--depth", depth, int), width=width, q=_numbers("--q", q),
            eps=_numbers("--eps", eps), scales=_numbers("--scale", scale), snrs=_numbers("--snr", snr),
            seeds=seeds, seed=seed, init=init, task=task, rank=rank, samples=samples, t1=t1, saves=saves,
            loss_tol=loss_tol, max_steps=max_steps, method=None if curvature == "auto" else curvature,
            dtype=dtype,
        )  # fmt: skip
        if plot_y not in PLOT_FIGURES:
            raise ValueError(f"--plot-y must be one of {', '.join(PLOT_FIGURES)}, got {plot_y!r}")
        if plot_x is not None and plot_x not in PLOT_PARAMETERS:
            raise ValueError(f"--plot-x must be one of {', '.join(PLOT_PARAMETERS)}, got {plot_x!r}")
        check_resources(_sweep_outputs.estimate_sweep(spec, chunk_size), what="this sweep")
        out = Path(out) if out is not None else Path("runs") / f"sweep-{'-'.join(rules)}"
        if _sweep_outputs.is_complete(spec, out) and not overwrite:
            typer.echo(f"{out} already holds this sweep's table ({spec.size()} elements); nothing to run")
            return
        target = None
        if is_writer():
            target = claim(ctx, out, overwrite, "dlnsim sweep", _sweep_outputs.estimate_bytes(spec))
        else:
            ctx.with_resource(computing("dlnsim sweep"))
    except ValueError as err:
        fail(str(err))
    outcome = _sweep_outputs.run_sweep(
        spec, out, overwrite=overwrite, chunk_size=chunk_size, progress=progress, plot_x=plot_x,
        plot_y=plot_y, target=target,
    )  # fmt: skip
    if not is_writer():
        return
    failed = outcome.failed
    typer.echo(
        f"{len(outcome.rows)} elements ({outcome.computed} run now, {outcome.resumed} resumed); "
        f"{len(failed)} failed"
    )
    if failed:
        typer.echo(f"see the status column of {out}/table.csv")
    typer.echo(f"wrote {out}/table.parquet, table.csv, summary.json, {plot_y}.png")


__all__ = ["sweep"]
