"""Plots of trajectories: loss curves and per-mode map strengths (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ._simulation import Trajectory  # noqa: E402

_COLORS = plt.get_cmap("tab10").colors


def _positive_time(tr: Trajectory):
    keep = tr.times > 0
    return keep, tr.times[keep]


def plot_loss(trajectories: Sequence[Trajectory], path: str, *, title: str | None = None) -> None:
    """Task loss (and train/test loss where the task has data) against time, log-log axes."""
    has_test = any(tr.test_loss is not None for tr in trajectories)
    fig, axes = plt.subplots(1, 2 if has_test else 1, figsize=(11 if has_test else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for i, tr in enumerate(trajectories):
        keep, t = _positive_time(tr)
        loss = tr.train_loss if tr.train_loss is not None else tr.loss
        ax.plot(t, np.maximum(loss[keep], 1e-300), color=_COLORS[i % 10], label=tr.rule)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="time t (units of 1/eta)",
        ylabel="train loss" if has_test else "loss",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    if has_test:
        ax = axes[0, 1]
        for i, tr in enumerate(trajectories):
            if tr.test_loss is None:
                continue
            keep, t = _positive_time(tr)
            ax.plot(t, tr.test_loss[keep], color=_COLORS[i % 10], label=tr.rule)
            j = int(np.argmin(tr.test_loss))
            ax.plot(tr.times[j], tr.test_loss[j], "o", color=_COLORS[i % 10], ms=4)
        ax.set(xscale="log", yscale="log", xlabel="time t", ylabel="test loss (fresh samples)")
        ax.set_title("dots: early-stopping optimum", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_modes(
    trajectories: Sequence[Trajectory], path: str, *, max_modes: int = 8, title: str | None = None
) -> None:
    """Map strength u_k^T W Sigma_x v_k of the strongest data modes, one panel per rule.

    Dashed lines mark each mode's target s_k; dots mark the time a mode reaches half of it.
    """
    n = len(trajectories)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    for ax, tr in zip(axes.ravel(), trajectories, strict=False):
        keep, t = _positive_time(tr)
        half = tr.half_times()
        for k in range(min(max_modes, tr.mode_targets.size)):
            c = _COLORS[k % 10]
            ax.plot(t, tr.mode_strengths[keep, k], color=c, lw=1.2)
            ax.axhline(tr.mode_targets[k], color=c, ls="--", lw=0.7)
            if np.isfinite(half[k]) and half[k] > 0:
                ax.plot(half[k], 0.5 * tr.mode_targets[k], "o", color="k", ms=3)
        ax.set(xscale="log", xlabel="time t", title=tr.rule)
        ax.grid(alpha=0.3, which="both")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes[0, 0].set_ylabel("mode strength  u_k^T W Sigma_x v_k")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["plot_loss", "plot_modes"]
