"""What the Bernacchia et al. 2018 Fig. 1 reproductions share: the example budget, the SGD baseline
with its learning-rate grid search, the online NGD run (eqs. 20-21), the software checks of both,
and the drawing of one panel.

Panels A-C live in :mod:`dlnsim._repro.exactng_linear`, panel D in
:mod:`dlnsim._repro.exactng_autoencoder`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.random as jr
import numpy as np

from .._experiments import Check, check
from .._online import (
    FeedforwardNet,
    OnlineNGD,
    OnlineRun,
    OnlineSGD,
    levenberg_marquardt,
    sgd_learning_rate_search,
    train,
)

SOURCE = "Bernacchia et al. 2018, Fig. 1"
SGD_RATES = tuple(0.000625 * 2.0**k for k in range(12))  # 0.000625 ... 1.28
NGD_COLOR, SGD_COLOR = "tab:red", "black"
NGD_RATE = 1.0  # alpha = 1 (Fig. 1 caption)
NGD_BATCH = 1000  # M = 1000 (Fig. 1 caption, sec. 5)
SGD_BATCH = 20  # M = 20 (Fig. 1 caption)
LAMBDA0 = 1.0  # the initial lambda_0 of eq. 20: our choice, the paper does not give it


@dataclass(frozen=True)
class Budget:
    """Steps of each algorithm; both see the same number of examples and record at the same counts."""

    ngd_steps: int
    records: int
    ngd_batch: int = NGD_BATCH
    sgd_batch: int = SGD_BATCH

    @property
    def examples(self) -> int:
        return self.ngd_steps * self.ngd_batch

    @property
    def sgd_steps(self) -> int:
        return self.examples // self.sgd_batch

    def record_every(self, batch: int) -> int:
        steps = self.examples // batch
        if steps % self.records:
            raise ValueError(f"{steps} steps do not split into {self.records} records")
        return steps // self.records

    def with_ngd_batch(self, batch: int) -> Budget:
        """The same examples and records, NGD with minibatch ``batch``."""
        return Budget(self.examples // batch, self.records, batch, self.sgd_batch)


@dataclass(frozen=True)
class SGDBaseline:
    """SGD's grid search (final whole-training-set loss per rate), the chosen index and its run."""

    grid: np.ndarray
    best: int
    run: OnlineRun

    @property
    def rate(self) -> float:
        return SGD_RATES[self.best]


def glorot_net(rng: np.random.Generator, widths) -> FeedforwardNet:
    """A deep linear net with Glorot-normal weights, N(0, 2 / (n_in + n_out))."""
    return FeedforwardNet.from_weights(
        [
            rng.normal(0.0, np.sqrt(2.0 / (i + o)), size=(o, i))
            for i, o in zip(widths[:-1], widths[1:], strict=True)
        ]
    )


def first_reach(examples: np.ndarray, loss: np.ndarray, level: float) -> float:
    """Examples seen when ``loss`` first falls to ``level`` (inf if never)."""
    hit = np.nonzero(loss <= level)[0]
    return float(examples[hit[0]]) if hit.size else float("inf")


def tail_median(loss: np.ndarray, fraction: float = 0.25) -> float:
    """The median of the last ``fraction`` of the records (the initial record excluded)."""
    n = max(1, int(round(fraction * (len(loss) - 1))))
    return float(np.median(loss[-n:]))


def sgd_baseline(net, x_train, y_train, test, budget: Budget, key) -> SGDBaseline:
    """The grid search over :data:`SGD_RATES` (lowest final training loss after the whole budget, every
    rate on the same minibatches) and the SGD run at the chosen rate, on those minibatches again."""
    grid = sgd_learning_rate_search(
        net, SGD_RATES, x_train, y_train, steps=budget.sgd_steps, key=key, batch_size=budget.sgd_batch
    )
    best = int(np.argmin(np.where(np.isfinite(grid), grid, np.inf)))
    run = train(
        net,
        OnlineSGD(SGD_RATES[best], budget.sgd_batch),
        x_train,
        y_train,
        steps=budget.sgd_steps,
        key=key,
        record_every=budget.record_every(budget.sgd_batch),
        test=test,
    )
    return SGDBaseline(np.asarray(grid), best, run)


def online_ngd(net, x_train, y_train, test, budget: Budget, key, *, output_cov=None) -> OnlineRun:
    """Online NGD (eqs. 20-21): alpha = 1, K = 1, lambda_0 = :data:`LAMBDA0`, minibatch
    ``budget.ngd_batch``; ``output_cov`` is the Sigma~ of eq. 6 (identity when None)."""
    method = OnlineNGD(
        learning_rate=NGD_RATE, batch_size=budget.ngd_batch, lam=LAMBDA0, output_cov=output_cov
    )
    return train(
        net,
        method,
        x_train,
        y_train,
        steps=budget.ngd_steps,
        key=key,
        record_every=budget.record_every(budget.ngd_batch),
        test=test,
    )


# ---------------------------------------------------------------- software checks


def lambda_checks(ngd: OnlineRun, label: str = "NGD") -> list:
    """lambda_k stays finite and positive, starts at lambda_0 and follows eq. 21 from rho_k."""
    lam, rho = ngd.lam, ngd.rho
    bad = int(np.sum(~np.isfinite(lam) | (lam <= 0)))
    follows = np.asarray(levenberg_marquardt(lam[:-1], rho[:-1]))
    rule_error = float(np.max(np.abs(lam[1:] - follows) / lam[1:])) if len(lam) > 1 else 0.0
    return [
        check(
            f"{label} steps whose damping lambda_k is non-finite or <= 0 (eq. 21)",
            bad,
            0,
            basis="exact: eq. 21 multiplies lambda_0 > 0 by 3/2 or 2/3, so lambda_k stays finite and > 0",
        ),
        check(
            f"{label}: |lambda_0 - initial lambda| / lambda_0",
            abs(lam[0] - LAMBDA0) / LAMBDA0,
            0.0,
            basis="exact: the first step uses the initial damping as given",
        ),
        check(
            f"{label}: max relative deviation of lambda_(k+1) from eq. 21 applied to (lambda_k, rho_k)",
            rule_error,
            1e-12,
            basis="precision: the same float64 products by 3/2 and 2/3 (XLA may reorder by one ulp)",
        ),
    ]


def grid_checks(sgd: SGDBaseline) -> list:
    """The chosen rate is bracketed by the grid, and the SGD run is the run the grid scored."""
    scored = float(sgd.grid[sgd.best])
    return [
        check(
            "chosen SGD rate is interior to the grid (steps from its nearer end)",
            min(sgd.best, len(SGD_RATES) - 1 - sgd.best),
            1,
            ">=",
            basis="exact: an optimum with a worse rate on each side is bracketed by the grid",
        ),
        check(
            "|SGD run's final training loss / the grid's score of its rate - 1|",
            abs(sgd.run.train_loss[-1] / scored - 1.0),
            1e-6,
            basis="precision: the same minibatches in float64; vmapped and single runs differ by round-off",
        ),
    ]


def same_start_check(sgd_test0: float, ngd_test0: float) -> Check:
    """Both algorithms start from the same network (Fig. 1 caption)."""
    return check(
        "|NGD / SGD initial test loss - 1| (same initial network)",
        abs(ngd_test0 / sgd_test0 - 1.0),
        1e-12,
        basis="precision: one network, the loss evaluated in float64 with and without the Sigma~ scale",
    )


def run_settings(budget: Budget, ngd: OnlineRun, sgd: SGDBaseline, *, output_cov, criterion, paper_rate):
    """The ``ngd`` and ``sgd`` entries of a panel's settings: what each run used and cost."""
    return {
        "ngd": {
            "learning_rate": NGD_RATE,
            "batch_size": budget.ngd_batch,
            "model_samples_K": 1,
            "initial_lambda": LAMBDA0,
            "output_cov": output_cov,
            "steps": budget.ngd_steps,
            "seconds": ngd.seconds,
            "compile_seconds": ngd.compile_seconds,
            "final_lambda": float(ngd.lam[-1]),
            "min_lambda": float(np.min(ngd.lam)),
            "max_lambda": float(np.max(ngd.lam)),
        },
        "sgd": {
            "batch_size": budget.sgd_batch,
            "steps": budget.sgd_steps,
            "learning_rate_grid": list(SGD_RATES),
            "grid_final_train_loss": sgd.grid,
            "learning_rate": sgd.rate,
            "grid_criterion": (
                f"lowest whole-training-set {criterion} after the full SGD budget, same minibatches"
            ),
            "seconds": sgd.run.seconds,
            "compile_seconds": sgd.run.compile_seconds,
            "paper_learning_rate": paper_rate,
        },
    }


def split_key(key) -> tuple:
    """The keys of the SGD baseline and of the NGD run."""
    k_sgd, k_ngd = jr.split(key)
    return k_sgd, k_ngd


# ---------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Curve:
    """One NGD run as drawn: its label, line style, test loss (in the plotted units) and run."""

    label: str
    run: OnlineRun
    test: np.ndarray
    style: str = "-"


def draw_panel(axes, sgd: SGDBaseline, curves, budget: Budget, *, min_loss, ylabel, grid_label):
    """Loss against examples and wall-clock, lambda_k of each NGD run and the SGD grid."""
    ax_ex, ax_wc, ax_lam, ax_grid = axes
    s = sgd.run
    for ax, wall in ((ax_ex, False), (ax_wc, True)):
        x_sgd = s.wall_time if wall else s.examples
        ax.plot(
            x_sgd, s.test_loss, color=SGD_COLOR, label=f"SGD (M = {budget.sgd_batch}, alpha = {sgd.rate:g})"
        )
        for c in curves:
            x_ngd = c.run.wall_time if wall else c.run.examples
            ax.plot(x_ngd, c.test, c.style, color=NGD_COLOR, label=c.label)
        if min_loss is not None:
            ax.axhline(min_loss, color="gray", ls="--", lw=1.2, label="minimum achievable loss")
        ax.set(yscale="log", ylabel=ylabel, xlim=(0, None))
        ax.grid(alpha=0.3, which="both")
    ax_ex.set_xlabel("training examples seen")
    ax_ex.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    ax_ex.legend(fontsize=8)
    ax_wc.set_xlabel("wall-clock time of the updates (s, shared 2-core CPU)")
    for c in curves:
        ax_lam.plot(np.arange(1, len(c.run.lam) + 1), c.run.lam, c.style, color=NGD_COLOR, label=c.label)
    ax_lam.set(yscale="log", xlabel="NGD iteration k", ylabel="damping lambda_k (eq. 21)")
    if len(curves) > 1:
        ax_lam.legend(fontsize=8)
    ax_lam.grid(alpha=0.3, which="both")
    grid = sgd.grid
    shown = np.where(np.isfinite(grid), grid, np.nan)
    ax_grid.plot(SGD_RATES, shown, "o-", color=SGD_COLOR)
    ax_grid.plot(
        SGD_RATES[sgd.best], shown[sgd.best], "o", ms=11, mfc="none", color="tab:blue", label="chosen"
    )
    diverged = ~np.isfinite(grid) | (grid > 1e6 * np.nanmin(shown))
    if diverged.any():
        ax_grid.plot(
            np.asarray(SGD_RATES)[diverged], np.full(diverged.sum(), np.nanmax(shown)), "x", color="gray"
        )
    ax_grid.set(xscale="log", yscale="log", xlabel="SGD learning rate alpha", ylabel=grid_label)
    ax_grid.legend(fontsize=8)
    ax_grid.grid(alpha=0.3, which="both")
