"""The figures the commands write, each an explicit :class:`matplotlib.figure.Figure` (no pyplot
state, no backend switch). Imported by a command only when it draws, so ``import dlnsim.cli``
does not load matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .._plotting import plot_loss, plot_modes, plot_phase_portraits, plot_sweep


def wide_loss_figure(summary: dict) -> Figure:
    """Measured against theory (Karakida & Osawa 2020): training loss per step, with the NGD
    theory and GD on the NTK, and test loss with the linearised model (S.26)."""
    t = np.arange(len(summary["train_loss"]))
    floor = 1e-30
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    ax = axes[0]
    ax.semilogy(t, np.maximum(summary["train_loss"], floor), "o", label=f"{summary['fisher']}-NGD, measured")
    ax.semilogy(t, np.maximum(summary["theory_loss"], floor), "-", label=f"theory ({summary['theory']})")
    ax.semilogy(t, np.maximum(summary["gd_theory_loss"], floor), "--", label="GD on the NTK (theory)")
    ax.set(xlabel="step t", ylabel="training loss", title=f"alpha theory {summary['alpha_theory']}, "
           f"measured {summary['alpha_measured']:.6g}")  # fmt: skip
    ax.set_ylim(bottom=max(1e-12, min(summary["train_loss"][0] * 1e-12, 1e-6)))
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(t, summary["test_loss"], "o", label="measured")
    if summary["test_loss_theory"] is not None:
        ax.plot(t, summary["test_loss_theory"], "-", label="linearised model (S.26)")
    ax.plot(t, summary["gd_theory_test_loss"], "--", label="GD on the NTK (theory)")
    ax.set(xlabel="step t", ylabel="test loss")
    ax.set_title(summary["task"][:70], fontsize=8)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"L={summary['depth']}, widths {summary['widths'][1:-1][:3]}..., {summary['activation']}, "
        f"N={summary['samples']}, eta={summary['learning_rate']:.4g}", fontsize=9,
    )  # fmt: skip
    fig.tight_layout()
    return fig


def plot_wide(summary: dict, path: Path) -> None:
    """Writes :func:`wide_loss_figure` to ``path``."""
    wide_loss_figure(summary).savefig(path, dpi=110)


__all__ = ["plot_loss", "plot_modes", "plot_phase_portraits", "plot_sweep", "plot_wide", "wide_loss_figure"]
