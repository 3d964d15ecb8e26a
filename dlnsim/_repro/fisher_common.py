"""Shared conventions of the Karakida & Osawa 2020 reproductions (Figs. 1a, 1b, 2, 3, S.1, S.2).

Every figure uses the paper's network conventions (NTK parameterisation, eqs. 1-2; sigma_w^2 = 2;
MSE loss, eq. 3; inputs normalised to ||x|| = 1) with sigma_b^2 = 0.5, except Fig. 2, which uses the
paper's sigma_b = 0 there (a sigma_b^2 = 0.5 variant is reported beside it). MNIST is replaced by
scikit-learn's bundled 8x8 digits (no download): 64 pixels, of which the two-class subsets span 51-54
dimensions, so the sample sizes are smaller than the paper's N = 100 where the theory needs
linearly independent inputs. Each figure states its sizes and deviations in ``settings``.
"""

from __future__ import annotations

import jax.random as jr
import numpy as np

from .. import wide

PAPER = "Karakida & Osawa 2020"
SIGMA_W2, SIGMA_B2 = 2.0, 0.5
UNIT_DAMPING = 1e-12  # the paper's rho for Fig. 3 and Fig. S.2 ("to avoid numerical instability")


def _key(seed: int, *path: int):
    key = jr.PRNGKey(seed)
    for p in path:
        key = jr.fold_in(key, p)
    return key


def _residual_deviation(f, f_theory, y) -> float:
    """max_t ||f_t - f_t^theory|| / ||f_0 - y|| over the training outputs (T+1, N, C)."""
    f, f_theory, y = np.asarray(f), np.asarray(f_theory), np.asarray(y)
    dev = np.linalg.norm((f - f_theory).reshape(f.shape[0], -1), axis=1)
    return float(dev.max() / np.linalg.norm(f[0] - y))


def _theory_outputs(f0, y, alpha: float, learning_rate: float, steps: int):
    """f_t = y + (1 - eta alpha)^t (f_0 - y) (eq. 10 with Theta_bar = alpha I)."""
    return wide.predicted_train_residual(np.asarray(f0) - y, alpha, learning_rate, steps) + y


def _floor(loss, floor=1e-30):
    return np.maximum(np.asarray(loss, float), floor)


def _style(ax, *, xlabel, ylabel, title, logy=True, logx=False, xticks=None):
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    if xticks is not None:  # label the measured widths only (no crowded minor-tick labels)
        from matplotlib.ticker import NullFormatter

        ax.set_xticks(list(xticks), [str(v) for v in xticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")
