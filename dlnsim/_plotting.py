"""Plots of trajectories: loss curves and per-mode map strengths.

Each plot builds an explicit :class:`matplotlib.figure.Figure` (no pyplot state, no backend
switch): saving renders it with Agg whatever backend the caller has chosen.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import diffrax
import jax.numpy as jnp
import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ._analytic import ModeVectorField, mode_invariants
from ._simulation import ModeComparison, Trajectory, TrajectoryBatch

_COLORS = matplotlib.colormaps["tab10"].colors


def _positive_time(tr: Trajectory):
    keep = tr.times > 0
    return keep, tr.times[keep]


def draw_loss(ax_train, ax_test, trajectories: Sequence[Trajectory]) -> None:
    """Draws task (or train) loss on ``ax_train`` and, if ``ax_test`` is given, the test loss with
    a dot at its minimum (the early-stopping optimum); log-log axes, one colour per trajectory."""
    for i, tr in enumerate(trajectories):
        keep, t = _positive_time(tr)
        loss = tr.train_loss if tr.train_loss is not None else tr.loss
        ax_train.plot(t, np.maximum(loss[keep], 1e-300), color=_COLORS[i % 10], label=tr.rule)
    ax_train.set(
        xscale="log",
        yscale="log",
        xlabel="time t (units of 1/eta)",
        ylabel="train loss" if ax_test is not None else "loss",
    )
    ax_train.legend(fontsize=8)
    ax_train.grid(alpha=0.3, which="both")
    if ax_test is None:
        return
    for i, tr in enumerate(trajectories):
        if tr.test_loss is None:
            continue
        keep, t = _positive_time(tr)
        ax_test.plot(t, tr.test_loss[keep], color=_COLORS[i % 10], label=tr.rule)
        j = int(np.argmin(tr.test_loss))
        ax_test.plot(tr.times[j], tr.test_loss[j], "o", color=_COLORS[i % 10], ms=4)
    ax_test.set(xscale="log", yscale="log", xlabel="time t", ylabel="test loss (fresh samples)")
    ax_test.set_title("dots: early-stopping optimum", fontsize=9)
    ax_test.grid(alpha=0.3, which="both")


def plot_loss(trajectories: Sequence[Trajectory], path: str, *, title: str | None = None) -> None:
    """Task loss (and train/test loss where the task has data) against time, log-log axes."""
    has_test = any(tr.test_loss is not None for tr in trajectories)
    fig = Figure(figsize=(11 if has_test else 6, 4))
    axes = fig.subplots(1, 2 if has_test else 1, squeeze=False)
    draw_loss(axes[0, 0], axes[0, 1] if has_test else None, trajectories)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def draw_modes(
    axes,
    trajectories: Sequence[Trajectory],
    *,
    max_modes: int = 8,
    theory: Sequence[ModeComparison | None] | None = None,
) -> None:
    """Draws each trajectory's mode strengths on its own axis of ``axes`` (see :func:`plot_modes`)."""
    theory = [None] * len(trajectories) if theory is None else list(theory)
    for ax, tr, th in zip(axes, trajectories, theory, strict=False):
        keep, t = _positive_time(tr)
        half = tr.half_times()
        for k in range(min(max_modes, tr.mode_targets.size)):
            c = _COLORS[k % 10]
            ax.plot(t, tr.mode_strengths[keep, k], color=c, lw=1.2)
            ax.axhline(tr.mode_targets[k], color=c, ls="--", lw=0.7)
            if np.isfinite(half[k]) and half[k] > 0:
                ax.plot(half[k], 0.5 * tr.mode_targets[k], "o", color="k", ms=3)
        if th is not None:
            strengths = th.map_strengths_theory() * th.input_eigenvalues
            order = np.argsort(-np.abs(th.sigma_star * th.input_eigenvalues))
            order = [k for k in order if th.sigma_star[k] != 0][:max_modes]
            for n_line, k in enumerate(order):
                ax.plot(
                    th.times[th.times > 0], strengths[th.times > 0, k], ":", color="k", lw=1.4,
                    label="mode ODE" if n_line == 0 else None,
                )  # fmt: skip
            ax.legend(
                fontsize=7, loc="upper left", title=f"max dev {th.max_mode_deviation:.1e}", title_fontsize=7
            )
        ax.set(xscale="log", xlabel="time t", title=tr.rule)
        ax.grid(alpha=0.3, which="both")


def plot_modes(
    trajectories: Sequence[Trajectory],
    path: str,
    *,
    max_modes: int = 8,
    title: str | None = None,
    theory: Sequence[ModeComparison | None] | None = None,
) -> None:
    """Map strength u_k^T W Sigma_x v_k of the strongest data modes, one panel per rule.

    Dashed lines mark each mode's target s_k; dots mark the time a mode reaches half of it.
    ``theory`` (one :class:`ModeComparison` or None per trajectory) overlays the integrated
    singular-mode ODEs as black dotted lines.
    """
    n = len(trajectories)
    cols = min(n, 3)
    rows = -(-n // cols)
    width = max(4.2 * cols, 6.0)
    fig = Figure(figsize=(width, 3.4 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    draw_modes(axes.ravel(), trajectories, max_modes=max_modes, theory=theory)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes[0, 0].set_ylabel("mode strength  u_k^T W Sigma_x v_k")
    if title:
        fig.suptitle(textwrap.fill(title, int(12 * width)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_sweep(result: TrajectoryBatch, path: str, *, title: str | None = None) -> None:
    """Loss of every seed of a sweep (thin lines) and their median on the common save grid."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    curves = [tr for tr in result.trajectories if tr is not None]
    for tr in curves:
        keep, t = _positive_time(tr)
        loss = tr.train_loss if tr.train_loss is not None else tr.loss
        ax.plot(t, np.maximum(loss[keep], 1e-300), color="tab:blue", lw=0.6, alpha=0.35)
    if curves:
        longest = max(curves, key=lambda tr: tr.times.size)
        grid = longest.times[longest.times > 0]
        stacked = np.full((len(curves), grid.size), np.nan)
        for i, tr in enumerate(curves):
            loss = tr.train_loss if tr.train_loss is not None else tr.loss
            n = min(grid.size, int(np.sum(tr.times > 0)))
            stacked[i, :n] = loss[tr.times > 0][:n]
        ax.plot(grid, np.nanmedian(stacked, axis=0), color="k", lw=1.8, label="median")
        ax.legend(fontsize=8)
    failed = len(result) - len(curves)
    ax.set(xscale="log", yscale="log", xlabel="time t", ylabel="loss")
    ax.set_title(f"{len(curves)} seeds" + (f", {failed} failed" if failed else ""), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(textwrap.fill(title, 90), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def draw_phase_portraits(
    axes,
    fields: Sequence[tuple[str, ModeVectorField]],
    *,
    sigma_star: float = 1.0,
    start: tuple[float, float] = (0.25, 1.3),
    t1: float = 4.0,
    marker_times: Sequence[float] = (0.25, 0.5, 1.0, 2.0),
) -> tuple[dict, np.ndarray, list[np.ndarray]]:
    """Draws one phase portrait per field on ``axes`` (see :func:`plot_phase_portraits`).

    Returns the per-rule marker summary, the save times and each rule's integrated path
    (shape (T, 2)) of the singular-mode ODE.
    """

    marker_times = np.asarray(sorted(marker_times), dtype=float)
    ts = np.union1d(np.linspace(0.0, t1, 400), marker_times[marker_times <= t1])
    marks = np.searchsorted(ts, marker_times[marker_times <= t1])
    paths = []
    y0 = jnp.asarray(start, dtype=float)
    for _, field in fields:
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, float(ts[-1]), None, y0,
            args=sigma_star, saveat=diffrax.SaveAt(ts=jnp.asarray(ts)), max_steps=100_000,
            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
        )  # fmt: skip
        paths.append(np.asarray(sol.ys))
    hi = max(1.5 * max(max(start), np.sqrt(sigma_star)), 1.1 * max(np.nanmax(p) for p in paths))
    grid = np.linspace(hi / 40, hi, 17)
    s1, s2 = np.meshgrid(grid, grid)
    fine = np.linspace(hi / 200, hi, 200)
    f1, f2 = np.meshgrid(fine, fine)
    out = {}
    for ax, (label, field), path_ in zip(axes, fields, paths, strict=True):
        vel = np.asarray(field(0.0, jnp.stack([jnp.asarray(s1), jnp.asarray(s2)]), sigma_star))
        disp = np.abs(s1 * s2 - sigma_star)
        with np.errstate(divide="ignore", invalid="ignore"):
            norm_vel = vel / np.where(disp > 1e-9, disp, np.nan)
        amp = np.hypot(norm_vel[0], norm_vel[1])
        cap = 2.0 * np.nanmedian(amp)
        shrink = np.minimum(1.0, cap / np.where(amp > 0, amp, 1.0))
        ax.quiver(s1, s2, norm_vel[0] * shrink, norm_vel[1] * shrink, color="0.55", width=0.004)
        levels = sigma_star * np.array([0.1, 0.4, 0.7, 1.5, 2.0, 3.0])
        ax.contour(f1, f2, f1 * f2, levels=levels, colors="0.7", linewidths=0.6)
        ax.contour(f1, f2, f1 * f2, levels=[sigma_star], colors="k", linewidths=1.6)
        invariant = np.asarray(mode_invariants(np.stack([f1, f2]), field.q, field.block_diagonal))[0]
        if field.block_diagonal and field.q == 1.0:
            invariant = np.log(invariant)  # NGD-d conserves sigma_1 / sigma_2: rays through 0
        ax.contour(f1, f2, invariant, levels=9, colors="tab:red", linewidths=0.5, alpha=0.6)
        ax.plot(path_[:, 0], path_[:, 1], color="tab:blue", lw=1.8)
        ax.plot(path_[marks, 0], path_[marks, 1], "o", color="tab:red", ms=4, zorder=5)
        ax.plot(*start, "s", color="tab:blue", ms=4)
        ax.set(xlim=(0, hi), ylim=(0, hi), xlabel="sigma_1", aspect="equal", title=label)
        out[label] = {
            "marker_times": marker_times[marker_times <= t1].tolist(),
            "map_at_markers": (path_[marks, 0] * path_[marks, 1]).tolist(),
            "end": path_[-1].tolist(),
        }
    return out, ts, paths


def plot_phase_portraits(
    fields: Sequence[tuple[str, ModeVectorField]],
    path: str,
    *,
    sigma_star: float = 1.0,
    start: tuple[float, float] = (0.25, 1.3),
    t1: float = 4.0,
    marker_times: Sequence[float] = (0.25, 0.5, 1.0, 2.0),
) -> dict:
    """Phase portraits of one singular mode of a d = 2 net in the (sigma_1, sigma_2) plane.

    Huh 2020, Fig. 1: the displacement-normalised vector field [sigma_1', sigma_2'] / |sigma_Delta|,
    contour lines sigma_1 sigma_2 = const (the optimum sigma_1 sigma_2 = sigma* in black), the rule's
    invariant paths (red: hyperbolas for full rules, rays for NGD-d, parallel lines for
    sqrt-NGD-d), one trajectory from ``start`` and red dots at ``marker_times``. Returns, per
    rule, the map sigma_1 sigma_2 at the marker times.
    """
    n = len(fields)
    fig = Figure(figsize=(3.4 * n, 3.6))
    axes = fig.subplots(1, n, squeeze=False)
    out, _, _ = draw_phase_portraits(
        axes[0], fields, sigma_star=sigma_star, start=start, t1=t1, marker_times=marker_times
    )
    axes[0, 0].set_ylabel("sigma_2")
    fig.suptitle(
        f"one mode of a d = 2 net, sigma* = {sigma_star:g}: normalised field, contours sigma_1 sigma_2, "
        "invariant paths (red), markers at equal times",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    return out


__all__ = [
    "draw_loss",
    "draw_modes",
    "draw_phase_portraits",
    "plot_loss",
    "plot_modes",
    "plot_phase_portraits",
    "plot_sweep",
]
