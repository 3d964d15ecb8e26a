"""Bernacchia et al. 2018, Fig. 1D: online NGD (eqs. 20-21) against minibatch SGD on a deep tanh
autoencoder, here on scikit-learn's 8x8 digits in place of MNIST.

The paper's claim (sec. 5): with alpha = 1, M = 1000 and K = 1, "Despite our NGD steps only
approximating the true natural gradient, it outperformed SGD in terms of data efficiency (Fig. 1D,
top)". The figure runs the paper's M = 1000; a variant with M = 250 sits beside it (labelled), since
the digits' 1500 training images are 40x fewer than MNIST's 60000.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.random as jr
import numpy as np

from .._experiments import Reproduction, claim, new_figure, register
from .._online import FeedforwardNet, OnlineRun
from .exactng_common import (
    NGD_BATCH,
    SGD_RATES,
    SOURCE,
    Budget,
    Curve,
    SGDBaseline,
    draw_panel,
    first_reach,
    glorot_net,
    grid_checks,
    lambda_checks,
    online_ngd,
    run_settings,
    same_start_check,
    sgd_baseline,
    split_key,
    tail_median,
)

DIGITS_WIDTHS = (64, 32, 16, 8, 4, 8, 16, 32, 64)  # MNIST's 784, 400, 200, 100, 50, ... scaled to 64 inputs
PAPER_WIDTHS = (784, 400, 200, 100, 50, 100, 200, 400, 784)
N_TEST = 297  # 1797 digits: 1500 for training, 297 for the test
VARIANT_BATCH = 250  # the variant's NGD minibatch
FINAL = 0.1  # the final error is the median of the last 10 % of the records


def _digits(key, n_test: int):
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a test dependency
        raise ValueError("exactng-fig1d needs scikit-learn (sklearn.datasets.load_digits)") from None
    x = np.asarray(load_digits().data, dtype=np.float64) / 16.0
    order = np.random.default_rng(np.asarray(jr.key_data(key)).ravel().tolist()).permutation(x.shape[0])
    x = x[order]
    return x[n_test:], x[:n_test]


# ---------------------------------------------------------------- computation


@dataclass(frozen=True)
class AutoencoderResult:
    """SGD's baseline, NGD at the paper's M = 1000 and the M = 250 variant, on the same examples."""

    budget: Budget
    train_samples: int
    sgd: SGDBaseline
    ngd: OnlineRun
    variant: OnlineRun

    @property
    def variant_budget(self) -> Budget:
        return self.budget.with_ngd_batch(VARIANT_BATCH)

    @property
    def sgd_final(self) -> float:
        return tail_median(self.sgd.run.test_loss, FINAL)

    def final_ratio(self, run: OnlineRun) -> float:
        """NGD's over SGD's final test error at the same examples seen."""
        return tail_median(run.test_loss, FINAL) / self.sgd_final

    def reach_fraction(self, run: OnlineRun) -> float:
        """The examples NGD needs to reach SGD's final test error, over SGD's examples (inf: never)."""
        return first_reach(run.examples, run.test_loss, self.sgd_final) / self.budget.examples


def compute_autoencoder(*, fast: bool, seed: int) -> AutoencoderResult:
    budget = Budget(30, 15) if fast else Budget(400, 80)  # 3e4 / 4e5 examples at M = 1000
    k_data, k_net, k_train = jr.split(jr.PRNGKey(seed), 3)
    x_tr, x_te = _digits(k_data, N_TEST)
    rng = np.random.default_rng(np.asarray(jr.key_data(k_net)).ravel().tolist())
    weights = glorot_net(rng, DIGITS_WIDTHS).weights
    net = FeedforwardNet.from_weights(
        [np.concatenate([w, np.zeros((w.shape[0], 1))], axis=1) for w in weights],
        activation="tanh",
        bias=True,
    )
    k_sgd, k_ngd = split_key(k_train)
    test = (x_te, x_te)
    sgd = sgd_baseline(net, x_tr, x_tr, test, budget, k_sgd)
    ngd = online_ngd(net, x_tr, x_tr, test, budget, k_ngd)
    variant = online_ngd(net, x_tr, x_tr, test, budget.with_ngd_batch(VARIANT_BATCH), k_ngd)
    return AutoencoderResult(budget, int(x_tr.shape[0]), sgd, ngd, variant)


# ---------------------------------------------------------------- checks


def autoencoder_checks(res: AutoencoderResult) -> list:
    """The paper's claim of data efficiency at M = 1000 and the software checks of all runs (the
    M = 250 variant is not the paper's setting, so it carries no claim: see the findings)."""
    return [
        claim(
            "NGD / SGD final test error at the same examples seen (M = 1000)",
            res.final_ratio(res.ngd),
            1.0,
            "<",
            basis=(
                "paper: sec. 5, NGD 'outperformed SGD in terms of data efficiency' (Fig. 1D, top): "
                "a ratio below 1"
            ),
        ),
        claim(
            "examples NGD (M = 1000) needs to reach SGD's final test error / SGD's examples",
            res.reach_fraction(res.ngd),
            1.0,
            "<",
            basis="paper: sec. 5, NGD more data-efficient than SGD (Fig. 1D, top): a fraction below 1",
        ),
        same_start_check(res.sgd.run.test_loss[0], res.ngd.test_loss[0]),
        *lambda_checks(res.ngd, "NGD (M = 1000)"),
        *lambda_checks(res.variant, f"variant NGD (M = {VARIANT_BATCH})"),
        *grid_checks(res.sgd),
    ]


def step_matched(res: AutoencoderResult) -> tuple[int, float, float]:
    """NGD's steps at M = 1000 over the whole budget, and the test error of both NGD runs after that
    many steps (the variant's record at the same step count: it sees 4x fewer examples there)."""
    steps = res.budget.ngd_steps
    var_every = res.variant_budget.record_every(VARIANT_BATCH)
    at = steps // var_every
    return steps, float(res.ngd.test_loss[-1]), float(res.variant.test_loss[at])


def autoencoder_findings(res: AutoencoderResult) -> list[str]:
    """What the paper's setting and the variant show, in numbers."""
    paper_ratio, paper_reach = res.final_ratio(res.ngd), res.reach_fraction(res.ngd)
    var_ratio, var_reach = res.final_ratio(res.variant), res.reach_fraction(res.variant)
    passes = NGD_BATCH / res.train_samples
    steps, paper_at, var_at = step_matched(res)

    def reach(x):
        return "never" if not np.isfinite(x) else f"after {x:.2f} x SGD's examples"

    def final(run, which):
        return tail_median(getattr(run, which), FINAL)

    return [
        f"At the paper's M = 1000 (each NGD step sees {passes:.2f} of the {res.train_samples} training "
        f"digits), NGD's final test error is {paper_ratio:.3f} x SGD's after {res.budget.examples:.3g} "
        f"examples and it reaches SGD's final error {reach(paper_reach)}.",
        f"Variant M = {VARIANT_BATCH} (not the paper's setting; 4 x more NGD steps for the same examples): "
        f"NGD / SGD final test error {var_ratio:.3f}, SGD's final error reached {reach(var_reach)}.",
        f"At equal NGD steps ({steps}): test error {paper_at:.4g} at M = 1000 ({steps * NGD_BATCH:.3g} "
        f"examples) and {var_at:.4g} at M = {VARIANT_BATCH} ({steps * VARIANT_BATCH:.3g} examples).",
        f"Final training / test error: SGD {final(res.sgd.run, 'train_loss'):.4g} / {res.sgd_final:.4g}, "
        f"NGD M = 1000 {final(res.ngd, 'train_loss'):.4g} / {final(res.ngd, 'test_loss'):.4g}, "
        f"NGD M = {VARIANT_BATCH} {final(res.variant, 'train_loss'):.4g} / "
        f"{final(res.variant, 'test_loss'):.4g}.",
    ]


# ---------------------------------------------------------------- drawing


def draw_autoencoder(res: AutoencoderResult, *, fast: bool):
    fig, axes = new_figure(2, 2, panel_size=(5.2, 3.8))
    curves = [
        Curve(f"online NGD (M = {NGD_BATCH}, alpha = 1): paper", res.ngd, res.ngd.test_loss),
        Curve(f"variant: online NGD (M = {VARIANT_BATCH})", res.variant, res.variant.test_loss, ":"),
    ]
    draw_panel(
        axes.ravel(),
        res.sgd,
        curves,
        res.budget,
        min_loss=None,
        ylabel="test reconstruction error 1/2 <||x - x_hat||^2>",
        grid_label=f"SGD training error after {res.budget.examples:.2g} examples",
    )
    size = "fast size, " if fast else ""
    fig.suptitle(
        f"{SOURCE}D: tanh autoencoder {'-'.join(map(str, DIGITS_WIDTHS))} (linear output), {size}"
        f"sklearn 8x8 digits in place of MNIST,\nlayer sizes scaled from 784-400-200-100-50-...-784; "
        f"SGD (black) vs online NGD (red; dotted: the M = {VARIANT_BATCH} variant)",
        fontsize=10,
    )
    return fig


# ---------------------------------------------------------------- the registered run


def _settings(res: AutoencoderResult, *, fast: bool, seed: int) -> dict:
    vb = res.variant_budget
    return {
        "paper_panel": "D",
        "widths": list(DIGITS_WIDTHS),
        "paper_widths": list(PAPER_WIDTHS),
        "activation": "tanh in every hidden layer, linear output layer, biases (initially zero)",
        "dataset": "sklearn.datasets.load_digits, pixels / 16, random split",
        "train_samples": res.train_samples,
        "test_samples": N_TEST,
        "fast": fast,
        "seed": seed,
        "examples_seen": res.budget.examples,
        **run_settings(res.budget, res.ngd, res.sgd, output_cov="I", criterion="error", paper_rate=0.04),
        "variant_ngd": {
            "what": f"the paper's NGD with minibatch M = {VARIANT_BATCH} in place of 1000 (a variant, "
            "not the paper's setting; it carries no claim)",
            "reason": "the 1500 training digits are 40x fewer than MNIST's 60000, so M = 1000 averages "
            "two thirds of the training set per step; M = 250 keeps M / P nearer MNIST's 1000 / 60000 "
            "and takes 4x more steps for the same examples",
            "batch_size": vb.ngd_batch,
            "steps": vb.ngd_steps,
            "seconds": res.variant.seconds,
            "final_lambda": float(res.variant.lam[-1]),
            "final_test_error_over_sgd": res.final_ratio(res.variant),
            "examples_to_sgd_final_error_over_sgd_examples": res.reach_fraction(res.variant),
        },
        "final_test_error": {"ngd": tail_median(res.ngd.test_loss, FINAL), "sgd": res.sgd_final},
        "ngd_examples_to_sgd_final_error": res.reach_fraction(res.ngd) * res.budget.examples,
        "wall_clock (recorded, not a claim)": {
            "ngd_seconds_to_sgd_final_error": res.reach_fraction(res.ngd) * res.ngd.seconds,
            "sgd_seconds": res.sgd.run.seconds,
            "why_not_a_claim": "the paper's 'outperformed SGD only modestly in wall-clock time' is about "
            "a 784-input net on its hardware; timings on this shared 2-core CPU vary from run to run, "
            "and the 64-input net changes the cost ratio",
        },
        "deviations": [
            "8x8 digits (1797 images) instead of MNIST (not shipped with any installed package; no "
            "downloads); the layer sizes are scaled to 64 inputs (784 -> 400 -> 200 -> 100 -> 50 halves "
            "at each layer, so 64 -> 32 -> 16 -> 8 -> 4)",
            f"examples seen: {res.budget.examples:.3g} (the paper's number is not given), "
            f"{res.budget.examples / res.train_samples:.0f} passes over the 1500 training digits",
            "the paper's 'random' initial weights are not specified: Glorot-normal, zero biases",
            "the paper's SGD grid is not given: 12 rates 0.000625 * 2^k (k = 0..11), which contain 0.04",
            "minibatches are drawn with replacement; the wall-clock axis is the measured mean cost per "
            "update times the updates taken",
            f"the initial damping lambda_0 = {res.ngd.lam[0]:g} is our choice (the paper does not give it)",
            f"the variant NGD with M = {VARIANT_BATCH} is drawn beside the paper's M = 1000 (dotted)",
        ]
        + (["fast: fewer examples seen (3e4 instead of 4e5)"] if fast else []),
    }


# The verdict of the full-size run (seed 0), set from its result.
VERDICT = "disagrees"  # NGD at the paper's M = 1000 does not beat SGD on the 8x8 digits


@register(
    "exactng-fig1d",
    title="tanh autoencoder on 8x8 digits (MNIST in the paper): SGD vs online NGD",
    source=SOURCE + "D",
    verdict=VERDICT,
)
def run_fig1d(*, fast: bool, seed: int) -> Reproduction:
    res = compute_autoencoder(fast=fast, seed=seed)
    checks = autoencoder_checks(res)
    fig = draw_autoencoder(res, fast=fast)
    arrays = {
        "examples": res.ngd.examples,
        "sgd_test_error": res.sgd.run.test_loss,
        "ngd_test_error": res.ngd.test_loss,
        "variant_ngd_test_error": res.variant.test_loss,
        "variant_ngd_examples": res.variant.examples,
        "sgd_wall_time": res.sgd.run.wall_time,
        "ngd_wall_time": res.ngd.wall_time,
        "variant_ngd_wall_time": res.variant.wall_time,
        "ngd_lambda": res.ngd.lam,
        "ngd_rho": res.ngd.rho,
        "variant_ngd_lambda": res.variant.lam,
        "sgd_rates": np.asarray(SGD_RATES),
        "sgd_grid_train_error": res.sgd.grid,
    }
    return Reproduction(
        "exactng-fig1d", fig, checks, _settings(res, fast=fast, seed=seed), arrays, autoencoder_findings(res)
    )
