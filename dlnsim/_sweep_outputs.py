"""Resumable sweeps with outputs (``dlnsim sweep``): chunks kept beside the output directory,
a tidy table, a summary and a plot (see :mod:`dlnsim._sweep` for the computation)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from ._budget import ResourceEstimate, _estimate
from ._checks import check_integer
from ._outputs import claim_output, read_manifest
from ._resources import estimate_linear_run
from ._sharding import is_writer
from ._sweep import SweepSpec, build_groups, curvature_method, run_groups
from ._table import ChunkStore, read_table, write_table

PLOT_PARAMETERS = ("q", "eps", "scale", "snr", "depth", "seed_index")
PLOT_FIGURES = ("loss_final", "half_time", "threshold_time", "max_conservation_drift", "t_final")


@dataclass(frozen=True)
class SweepOutcome:
    """What :func:`run_sweep` did: all rows, how many it computed now, and where it wrote."""

    rows: list[dict]
    computed: int
    resumed: int
    out: object
    already_complete: bool = False

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if str(r["status"]).startswith("failed")]


def estimate_bytes(spec: SweepSpec) -> int:
    """Bytes a sweep writes: a row per element (about 0.5 KiB in JSON, Parquet and CSV), the plot."""
    return 512 * spec.size() * 3 + (4 << 20)


ROW_BYTES = 2048  # one row in memory (a dict of ~20 entries), generously


def estimate_sweep(spec: SweepSpec, chunk_size: int = 64) -> ResourceEstimate:
    """Memory and set-up time of a sweep, from its sizes alone: the largest chunk of any rule at
    the largest depth (as :func:`dlnsim._resources.estimate_linear_run` counts a batch), plus
    the rows of every element."""
    n = spec.size()
    widths = (spec.width,) * (max(spec.depths) + 1)
    batch = min(check_integer("chunk_size", chunk_size, 1), n)
    worst = None
    for rule in spec.rules:
        for q in spec.q if rule in ("qngd", "qngd-d") else (None,):
            method = curvature_method(spec, rule) or "auto"
            est = estimate_linear_run(widths, saves=spec.saves, rule=rule, q=q, batch=batch, method=method)
            if worst is None or est.total_bytes > worst.total_bytes:
                worst = est
    parts = {**worst.breakdown, f"rows of {n} elements": n * ROW_BYTES}
    hints = {**worst.hints, f"rows of {n} elements": ("--seeds", "fewer values per option")}
    return _estimate(parts, worst.time_breakdown, hints, worst.time_notes)


def run_sweep(
    spec: SweepSpec,
    out,
    *,
    overwrite: bool = False,
    chunk_size: int = 64,
    mesh=None,
    progress: bool = True,
    command: str = "",
    plot_x: str | None = None,
    plot_y: str = "loss_final",
    target=None,
) -> SweepOutcome:
    """Runs a sweep into the directory ``out``, resumably.

    Finished chunks are kept beside ``out`` (``.NAME.partial``); rerunning the same sweep on the
    same ``out`` skips the elements already finished, and a completed sweep is not run again.
    When every element is done, ``out`` receives ``table.parquet`` and ``table.csv`` (a row per
    element), ``summary.json`` and a plot of ``plot_y`` against ``plot_x`` (default: the first
    parameter that varies) with the median over seeds and the min-max band. In a multi-process
    run (:func:`dlnsim._sharding.initialize_distributed`), process 0 reads and writes the files
    and every process computes its share of each chunk. ``target``: ``out`` already claimed
    (:func:`dlnsim.claim_output`) by the caller, who then also releases it.
    """

    if plot_y not in PLOT_FIGURES:
        raise ValueError(f"unknown figure {plot_y!r}; choose one of {', '.join(PLOT_FIGURES)}")
    if plot_x is not None and plot_x not in PLOT_PARAMETERS:
        raise ValueError(f"unknown parameter {plot_x!r}; choose one of {', '.join(PLOT_PARAMETERS)}")
    check_integer("chunk_size", chunk_size, 1)
    elements = spec.elements()
    writer = is_writer()
    out = Path(out)
    done_before = is_complete(spec, out) and not overwrite
    if jax.process_count() > 1:
        done_before = bool(multihost_utils.broadcast_one_to_all(np.asarray(done_before)))
    if done_before:
        rows = read_table(out / "table.parquet") if writer else []
        return SweepOutcome(rows, 0, len(elements), out, already_complete=True)
    owned = target is None
    if writer and owned:
        target = claim_output(out, overwrite=overwrite, needed_bytes=estimate_bytes(spec), command=command)
    try:
        return _run_claimed(
            spec, out, target if writer else None, elements, overwrite=overwrite, chunk_size=chunk_size,
            mesh=mesh, progress=progress, plot_x=plot_x, plot_y=plot_y,
        )  # fmt: skip
    finally:
        if writer and owned:
            target.release()


def _run_claimed(spec, out, target, elements, *, overwrite, chunk_size, mesh, progress, plot_x, plot_y):
    """run_sweep on a claimed ``out`` (``target`` None on the processes that do not write)."""
    key = spec.key()
    store = None
    finished = np.zeros(len(elements), dtype=bool)
    if target is not None:
        if overwrite:
            target.discard_partial()
        store = ChunkStore(target.partial, key, what=f"--out {out}")
        for i in store.finished():
            if 0 <= i < len(elements):
                finished[i] = True
    if jax.process_count() > 1:
        finished = np.asarray(multihost_utils.broadcast_one_to_all(finished))
    todo = [el for el in elements if not finished[el["element"]]]
    bar = None
    if target is not None and progress and todo:
        import tqdm

        bar = tqdm.tqdm(total=len(todo), unit="element", delay=1.0, desc="sweep")

    def on_chunk(rows):
        if store is not None:
            store.add(rows)
        if bar is not None:
            bar.update(len(rows))

    try:
        run_groups(spec, build_groups(spec, todo), chunk_size=chunk_size, mesh=mesh, on_chunk=on_chunk)
    finally:
        if bar is not None:
            bar.close()
    if target is None:
        return SweepOutcome([], len(todo), len(elements) - len(todo), out)
    rows = store.rows()
    with target.writing(extra={"sweep": key}) as tmp:
        write_table(rows, tmp)
        failed = [r for r in rows if str(r["status"]).startswith("failed")]
        summary = {
            "elements": len(rows),
            "failed": [{"element": r["element"], "status": r["status"]} for r in failed],
            "settings": key,
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        figure = plot_sweep_table(rows, x=plot_x, y=plot_y)
        figure.savefig(tmp / f"{plot_y}.png", dpi=120)
    target.discard_partial()
    return SweepOutcome(rows, len(todo), len(elements) - len(todo), out)


def is_complete(spec: SweepSpec, out) -> bool:
    """Whether ``out`` holds this sweep's finished table (same settings)."""
    out = Path(out)
    manifest = read_manifest(out) if out.is_dir() else None
    return bool(manifest and manifest.get("sweep") == spec.key())


def _varying(rows, names) -> list[str]:
    return [n for n in names if len({r.get(n) for r in rows}) > 1]


def plot_sweep_table(rows: Sequence[dict], *, x: str | None = None, y: str = "loss_final"):
    """``y`` against ``x`` (default: the first varying parameter): per series (the rule and any
    other varying parameter), the median over seeds and the min-max band. Returns a
    ``matplotlib.figure.Figure`` (no pyplot state)."""
    from matplotlib.figure import Figure

    params = [p for p in PLOT_PARAMETERS if p != "seed_index"]
    x = x or next(iter(_varying(rows, params)), "seed_index")
    series_keys = ["rule"] + [p for p in _varying(rows, params) if p != x]
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    series: dict = {}
    for r in rows:
        if r.get(y) is None or r.get(x) is None:
            continue
        series.setdefault(tuple(r[k] for k in series_keys), {}).setdefault(r[x], []).append(float(r[y]))
    for label, points in sorted(series.items(), key=lambda kv: str(kv[0])):
        xs = sorted(points)
        vals = [np.asarray(points[v]) for v in xs]
        med = [float(np.median(v)) for v in vals]
        name = ", ".join(
            f"{k}={v}" if k != "rule" else str(v) for k, v in zip(series_keys, label, strict=True)
        )
        (line,) = ax.plot(xs, med, marker="o", label=name)
        ax.fill_between(
            xs, [v.min() for v in vals], [v.max() for v in vals], color=line.get_color(), alpha=0.2
        )
    positive = [float(r[y]) for r in rows if r.get(y) is not None]
    if positive and min(positive) > 0:
        ax.set_yscale("log")
    if x in ("scale", "eps") and all(float(r[x]) > 0 for r in rows if r.get(x) is not None):
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y + " (median over seeds, min-max band)")
    if series:
        ax.legend(fontsize="small")
    return fig
