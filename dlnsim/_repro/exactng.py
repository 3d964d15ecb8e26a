"""Reproductions of Bernacchia et al. 2018, Fig. 1: online NGD (eqs. 20-21) against minibatch SGD.

Panels A-C are deep linear nets that learn a random teacher of their own class from correlated
Gaussian inputs (sec. 5); panel D is a tanh autoencoder, here on scikit-learn's 8x8 digits in place of
MNIST. Every id runs SGD's learning-rate grid search itself and records the grid and the rate chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.random as jr
import numpy as np

from .._experiments import Reproduction, check, new_figure, register
from .._online import FeedforwardNet, OnlineNGD, OnlineRun, OnlineSGD, sgd_learning_rate_search, train
from .._tasks import correlated_input_cov

SOURCE = "Bernacchia et al. 2018, Fig. 1"
SGD_RATES = tuple(0.000625 * 2.0**k for k in range(12))  # 0.000625 ... 1.28
NGD_COLOR, SGD_COLOR = "tab:red", "black"


@dataclass(frozen=True)
class _Budget:
    """Steps of each algorithm; both see the same number of examples and record at the same counts."""

    ngd_steps: int
    records: int
    ngd_batch: int = 1000
    sgd_batch: int = 20

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


def _first_reach(examples: np.ndarray, loss: np.ndarray, level: float) -> float:
    """Examples seen when ``loss`` first falls to ``level`` (inf if never)."""
    hit = np.nonzero(loss <= level)[0]
    return float(examples[hit[0]]) if hit.size else float("inf")


def _compare(net, x_train, y_train, test, budget: _Budget, key, *, ngd_output_cov=None):
    """SGD grid search, the SGD run at the chosen rate and the NGD run, from the same initial net.

    SGD descends 1/2 <||y - x_L||^2>; NGD the loss of eq. 6 with ``ngd_output_cov`` as Sigma~.
    """
    k_sgd, k_ngd = jr.split(key)
    grid = sgd_learning_rate_search(
        net, SGD_RATES, x_train, y_train, steps=budget.sgd_steps, key=k_sgd, batch_size=budget.sgd_batch
    )
    finite = np.where(np.isfinite(grid), grid, np.inf)
    best = int(np.argmin(finite))
    sgd = train(
        net,
        OnlineSGD(SGD_RATES[best], budget.sgd_batch),
        x_train,
        y_train,
        steps=budget.sgd_steps,
        key=k_sgd,
        record_every=budget.record_every(budget.sgd_batch),
        test=test,
    )
    ngd = train(
        net,
        OnlineNGD(learning_rate=1.0, batch_size=budget.ngd_batch, damping=1.0, output_cov=ngd_output_cov),
        x_train,
        y_train,
        steps=budget.ngd_steps,
        key=k_ngd,
        record_every=budget.record_every(budget.ngd_batch),
        test=test,
    )
    return grid, best, sgd, ngd


def _tail_median(loss: np.ndarray, fraction: float = 0.25) -> float:
    n = max(1, int(round(fraction * (len(loss) - 1))))
    return float(np.median(loss[-n:]))


def _lambda_checks(ngd: OnlineRun) -> list:
    lam = ngd.damping
    bad = int(np.sum(~np.isfinite(lam) | (lam <= 0)))
    return [check("NGD steps whose damping lambda is non-finite or <= 0 (eq. 21)", bad, 0)]


def _grid_check(best: int):
    return check(
        "chosen SGD rate is interior to the grid (steps from its nearer end)",
        min(best, len(SGD_RATES) - 1 - best),
        1,
        ">=",
    )


def _run_settings(budget, ngd, sgd, grid, rate, *, output_cov: str, criterion: str, paper_rate: float):
    """The ``ngd`` and ``sgd`` entries of a Fig. 1 panel's settings: what each run used and cost."""
    return {
        "ngd": {
            "learning_rate": 1.0,
            "batch_size": budget.ngd_batch,
            "model_samples_K": 1,
            "initial_damping": 1.0,
            "output_cov": output_cov,
            "steps": budget.ngd_steps,
            "seconds": ngd.seconds,
            "compile_seconds": ngd.compile_seconds,
            "final_damping": float(ngd.damping[-1]),
            "min_damping": float(np.min(ngd.damping)),
            "max_damping": float(np.max(ngd.damping)),
        },
        "sgd": {
            "batch_size": budget.sgd_batch,
            "steps": budget.sgd_steps,
            "learning_rate_grid": list(SGD_RATES),
            "grid_final_train_loss": grid,
            "learning_rate": rate,
            "grid_criterion": (
                f"lowest whole-training-set {criterion} after the full SGD budget, same minibatches"
            ),
            "seconds": sgd.seconds,
            "compile_seconds": sgd.compile_seconds,
            "paper_learning_rate": paper_rate,
        },
    }


def _plot(axes, sgd, ngd, ngd_test, rate, grid, best, budget, *, min_loss, ylabel, grid_label):
    """Loss against examples and wall-clock, the damping lambda_k and the SGD grid."""
    ax_ex, ax_wc, ax_lam, ax_grid = axes
    for ax, xs in ((ax_ex, (sgd.examples, ngd.examples)), (ax_wc, (sgd.wall_time, ngd.wall_time))):
        ax.plot(
            xs[0], sgd.test_loss, color=SGD_COLOR, label=f"SGD (M = {budget.sgd_batch}, alpha = {rate:g})"
        )
        ax.plot(xs[1], ngd_test, color=NGD_COLOR, label=f"online NGD (M = {budget.ngd_batch}, alpha = 1)")
        if min_loss is not None:
            ax.axhline(min_loss, color="gray", ls="--", lw=1.2, label="minimum achievable loss")
        ax.set(yscale="log", ylabel=ylabel, xlim=(0, None))
        ax.grid(alpha=0.3, which="both")
    ax_ex.set_xlabel("training examples seen")
    ax_ex.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    ax_ex.legend(fontsize=8)
    ax_wc.set_xlabel("wall-clock time of the updates (s, 2-core CPU)")
    steps = np.arange(1, len(ngd.damping) + 1)
    ax_lam.plot(steps, ngd.damping, color=NGD_COLOR)
    ax_lam.set(yscale="log", xlabel="NGD iteration k", ylabel="damping lambda_k (eq. 21)")
    ax_lam.grid(alpha=0.3, which="both")
    shown = np.where(np.isfinite(grid), grid, np.nan)
    ax_grid.plot(SGD_RATES, shown, "o-", color=SGD_COLOR)
    ax_grid.plot(SGD_RATES[best], shown[best], "o", ms=11, mfc="none", color="tab:blue", label="chosen")
    diverged = ~np.isfinite(grid) | (grid > 1e6 * np.nanmin(shown))
    if diverged.any():
        ax_grid.plot(
            np.asarray(SGD_RATES)[diverged], np.full(diverged.sum(), np.nanmax(shown)), "x", color="gray"
        )
    ax_grid.set(xscale="log", yscale="log", xlabel="SGD learning rate alpha", ylabel=grid_label)
    ax_grid.legend(fontsize=8)
    ax_grid.grid(alpha=0.3, which="both")


# ---------------------------------------------------------------- panels A-C: deep linear nets

_LINEAR = {
    "exactng-fig1a": dict(
        panel="A",
        title="L = 16 layers of width 20",
        widths=(20,) * 17,
        fast_widths=(10,) * 9,
    ),
    "exactng-fig1b": dict(
        panel="B",
        title="L = 16, widths 20, 30, ..., 100, ..., 30, 20",
        widths=(20, 30, 40, 50, 60, 70, 80, 90, 100, 90, 80, 70, 60, 50, 40, 30, 20),
        fast_widths=(10, 20, 30, 40, 50, 40, 30, 20, 10),
    ),
    "exactng-fig1c": dict(
        panel="C",
        title="L = 12 bottleneck 200, 80, 34, 20, 10, 5, 2, 5, ..., 80, 200",
        widths=(200, 80, 34, 20, 10, 5, 2, 5, 10, 20, 34, 80, 200),
        fast_widths=(60, 32, 16, 10, 5, 3, 2, 3, 5, 10, 16, 32, 60),
    ),
}
NOISE_VAR = 1e-6  # Sigma~ = 1e-6 I (sec. 5)
LEVEL = 1.5  # "reached the minimum": within this factor of the minimum achievable test loss


def _glorot_net(rng: np.random.Generator, widths) -> FeedforwardNet:
    """A deep linear net with Glorot-normal weights, N(0, 2 / (n_in + n_out))."""
    return FeedforwardNet.from_weights(
        [
            rng.normal(0.0, np.sqrt(2.0 / (i + o)), size=(o, i))
            for i, o in zip(widths[:-1], widths[1:], strict=True)
        ]
    )


def _linear_data(widths, key, n_train: int, n_test: int):
    """A random teacher net of the student's class and an independent student, x ~ N(0, Sigma) with
    eigenvalues e^(-5i/n0), y = teacher(x) + N(0, 1e-6 I) (Bernacchia et al. 2018, sec. 5).

    The draws are numpy's (seeded from ``key``): op-by-op JAX draws cost more compilation than
    the training runs at fast size."""
    k_cov, k_rest = jr.split(key)
    rng = np.random.default_rng(np.asarray(jr.key_data(k_rest)).ravel().tolist())
    teacher, student = _glorot_net(rng, widths), _glorot_net(rng, widths)
    cov = np.asarray(jax.jit(correlated_input_cov, static_argnums=1)(k_cov, widths[0]))
    x = rng.standard_normal((n_train + n_test, widths[0])) @ np.linalg.cholesky(cov).T
    clean = x
    for w in teacher.weights:
        clean = clean @ np.asarray(w).T
    y = clean + np.sqrt(NOISE_VAR) * rng.standard_normal(clean.shape)
    min_loss = 0.5 * np.mean(np.sum((y[n_train:] - clean[n_train:]) ** 2, axis=-1))
    return student, float(min_loss), x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _run_linear(id: str, *, fast: bool, seed: int) -> Reproduction:
    spec = _LINEAR[id]
    widths = spec["fast_widths"] if fast else spec["widths"]
    n_train, n_test = 10_000, 1_000
    budget = _Budget(ngd_steps=120, records=20) if fast else _Budget(ngd_steps=300, records=60)
    k_data, k_train = jr.split(jr.PRNGKey(seed))
    student, min_loss, x_tr, y_tr, x_te, y_te = _linear_data(widths, k_data, n_train, n_test)
    grid, best, sgd, ngd = _compare(
        student,
        x_tr,
        y_tr,
        (x_te, y_te),
        budget,
        k_train,
        ngd_output_cov=NOISE_VAR * np.eye(widths[-1]),
    )
    ngd_test = ngd.test_loss * NOISE_VAR  # eq. 6 with Sigma~ = 1e-6 I, back to 1/2 MSE
    rate = SGD_RATES[best]
    level = LEVEL * min_loss
    ngd_reach = _first_reach(ngd.examples, ngd_test, level)
    sgd_reach = _first_reach(sgd.examples, sgd.test_loss, level)
    at_reach = int(np.searchsorted(ngd.examples, ngd_reach)) if np.isfinite(ngd_reach) else -1
    gap = sgd.test_loss[at_reach] / ngd_test[at_reach]
    ngd_time = ngd_reach / ngd.examples[-1] * ngd.seconds
    sgd_time = min(sgd_reach, float(budget.examples)) / budget.examples * sgd.seconds
    ngd_final = _tail_median(ngd_test)
    checks = [
        check("NGD final test loss / minimum achievable (median of last quarter)", ngd_final / min_loss, 1.5),
        check(
            f"examples to reach {LEVEL:g}x the minimum loss, SGD / NGD (SGD censored at its budget)",
            min(sgd_reach, float(budget.examples)) / ngd_reach,
            1.0,
            ">",
        ),
        check(f"SGD / NGD test loss when NGD first reaches {LEVEL:g}x the minimum", gap, 2.0, ">="),
        *_lambda_checks(ngd),
        _grid_check(best),
    ]
    fig, axes = new_figure(2, 2, panel_size=(5.2, 3.8))
    _plot(
        axes.ravel(),
        sgd,
        ngd,
        ngd_test,
        rate,
        grid,
        best,
        budget,
        min_loss=min_loss,
        ylabel="test loss 1/2 <||y - W x||^2>",
        grid_label=f"SGD training loss after {budget.examples:.2g} examples",
    )
    size = "fast size: " if fast else ""
    fig.suptitle(
        f"{SOURCE}{spec['panel']}: deep linear net, {size}widths {'-'.join(map(str, widths))}\n"
        f"SGD (black) vs online NGD with adaptive damping (red); dashed: minimum achievable loss",
        fontsize=10,
    )
    settings = {
        "paper_panel": spec["panel"],
        "paper_architecture": spec["title"],
        "widths": list(widths),
        "fast": fast,
        "seed": seed,
        "train_samples": n_train,
        "test_samples": n_test,
        "input_cov": "random eigenvectors, eigenvalues exp(-5 i / n0) (dlnsim.correlated_input_cov)",
        "output_noise_cov": f"{NOISE_VAR:g} I",
        "init": "teacher and student: independent Glorot-normal nets, N(0, 2 / (n_in + n_out)), same widths",
        "examples_seen": budget.examples,
        **_run_settings(
            budget,
            ngd,
            sgd,
            grid,
            rate,
            output_cov=f"{NOISE_VAR:g} I (the data's Sigma~, as in eq. 6)",
            criterion="loss",
            paper_rate=0.02 if spec["panel"] == "C" else 0.08,
        ),  # fmt: skip
        "min_loss": min_loss,
        "min_loss_expected": 0.5 * widths[-1] * NOISE_VAR,
        f"examples_to_{LEVEL:g}x_min": {"ngd": ngd_reach, "sgd": sgd_reach},
        f"wall_seconds_to_{LEVEL:g}x_min": {
            "ngd": ngd_time,
            "sgd": sgd_time if np.isfinite(sgd_reach) else None,
        },
        "final_test_loss": {"ngd": ngd_final, "sgd": _tail_median(sgd.test_loss)},
        "deviations": [
            "loss shown and descended by SGD is 1/2 <||y - x_L||^2> = Sigma~ x the eq. 6 loss (the paper's "
            "SGD rates are in these units); NGD uses eq. 6 with the data's Sigma~",
            "minibatches are drawn with replacement; the wall-clock axis is the measured mean cost per "
            "update (compiled, on a shared 2-core CPU) times the updates taken",
            "the initial damping lambda_0 = 1 is our choice (the paper does not give it)",
        ]
        + ([f"fast: a smaller net of the same shape, L = {len(widths) - 1}"] if fast else []),
    }
    arrays = {
        "examples": ngd.examples,
        "sgd_test_loss": sgd.test_loss,
        "ngd_test_loss": ngd_test,
        "sgd_wall_time": sgd.wall_time,
        "ngd_wall_time": ngd.wall_time,
        "ngd_damping": ngd.damping,
        "ngd_rho": ngd.rho,
        "sgd_rates": np.asarray(SGD_RATES),
        "sgd_grid_train_loss": grid,
        "min_loss": np.asarray(min_loss),
    }
    return Reproduction(id, fig, checks, settings, arrays)


def _register_linear(id: str):
    spec = _LINEAR[id]

    @register(
        id, title=f"deep linear net ({spec['title']}): SGD vs online NGD", source=SOURCE + spec["panel"]
    )
    def run(*, fast: bool, seed: int) -> Reproduction:
        return _run_linear(id, fast=fast, seed=seed)

    return run


for _id in _LINEAR:
    _register_linear(_id)


# ---------------------------------------------------------------- panel D: tanh autoencoder

DIGITS_WIDTHS = (64, 32, 16, 8, 4, 8, 16, 32, 64)  # MNIST's 784, 400, 200, 100, 50, ... scaled to 64 inputs


def _digits(key, n_test: int):
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a test dependency
        raise ValueError("exactng-fig1d needs scikit-learn (sklearn.datasets.load_digits)") from None
    x = np.asarray(load_digits().data, dtype=np.float64) / 16.0
    order = np.random.default_rng(np.asarray(jr.key_data(key)).ravel().tolist()).permutation(x.shape[0])
    x = x[order]
    return x[n_test:], x[:n_test]


@register(
    "exactng-fig1d",
    title="tanh autoencoder on 8x8 digits (MNIST in the paper): SGD vs online NGD",
    source=SOURCE + "D",
)
def run_fig1d(*, fast: bool, seed: int) -> Reproduction:
    n_test = 297
    budget = _Budget(120, 20, ngd_batch=250) if fast else _Budget(1600, 80, ngd_batch=250)
    k_data, k_net, k_train = jr.split(jr.PRNGKey(seed), 3)
    x_tr, x_te = _digits(k_data, n_test)
    rng = np.random.default_rng(np.asarray(jr.key_data(k_net)).ravel().tolist())
    weights = _glorot_net(rng, DIGITS_WIDTHS).weights
    net = FeedforwardNet.from_weights(
        [np.concatenate([w, np.zeros((w.shape[0], 1))], axis=1) for w in weights],
        activation="tanh",
        bias=True,
    )
    grid, best, sgd, ngd = _compare(net, x_tr, x_tr, (x_te, x_te), budget, k_train)
    rate = SGD_RATES[best]
    sgd_final = _tail_median(sgd.test_loss, 0.1)
    ngd_final = _tail_median(ngd.test_loss, 0.1)
    ngd_reach = _first_reach(ngd.examples, ngd.test_loss, sgd_final)
    checks = [
        check("NGD / SGD final test error at the same examples seen", ngd_final / sgd_final, 1.0, "<"),
        check(
            "examples NGD needs to reach SGD's final test error / SGD's examples",
            ngd_reach / budget.examples,
            1.0,
            "<",
        ),
        *_lambda_checks(ngd),
        _grid_check(best),
    ]
    fig, axes = new_figure(2, 2, panel_size=(5.2, 3.8))
    _plot(
        axes.ravel(),
        sgd,
        ngd,
        ngd.test_loss,
        rate,
        grid,
        best,
        budget,
        min_loss=None,
        ylabel="test reconstruction error 1/2 <||x - x_hat||^2>",
        grid_label=f"SGD training error after {budget.examples:.2g} examples",
    )
    size = "fast size, " if fast else ""
    fig.suptitle(
        f"{SOURCE}D: tanh autoencoder {'-'.join(map(str, DIGITS_WIDTHS))} (linear output), {size}"
        f"sklearn 8x8 digits in place of MNIST,\nlayer sizes scaled from 784-400-200-100-50-...-784; "
        f"SGD (black) vs online NGD (red)",
        fontsize=10,
    )
    settings = {
        "paper_panel": "D",
        "widths": list(DIGITS_WIDTHS),
        "paper_widths": [784, 400, 200, 100, 50, 100, 200, 400, 784],
        "activation": "tanh in every hidden layer, linear output layer, biases (initially zero)",
        "dataset": "sklearn.datasets.load_digits, pixels / 16, random split",
        "train_samples": int(x_tr.shape[0]),
        "test_samples": n_test,
        "fast": fast,
        "seed": seed,
        "examples_seen": budget.examples,
        **_run_settings(budget, ngd, sgd, grid, rate, output_cov="I", criterion="error", paper_rate=0.04),
        "final_test_error": {"ngd": ngd_final, "sgd": sgd_final},
        "ngd_examples_to_sgd_final_error": ngd_reach,
        "ngd_wall_time_to_sgd_final_error": ngd_reach / budget.examples * ngd.seconds,
        "sgd_wall_time": sgd.seconds,
        "deviations": [
            "8x8 digits (1797 images) instead of MNIST; the layer sizes are scaled to 64 inputs "
            "(784 -> 400 -> 200 -> 100 -> 50 halves at each layer, so 64 -> 32 -> 16 -> 8 -> 4)",
            "NGD minibatch M = 250, not the paper's 1000: the 1500 training images are 40x fewer than "
            "MNIST's; with M = 1000 (two thirds of the training set per step) NGD only matched SGD "
            "(NGD / SGD test error 1.01 at 6e4 and at 4e5 examples, seed 0)",
            "minibatches are drawn with replacement; the wall-clock axis is the measured mean cost per "
            "update times the updates taken",
            "the initial damping lambda_0 = 1 is our choice (the paper does not give it)",
        ]
        + (["fast: fewer examples seen (3e4 instead of 4e5)"] if fast else []),
    }
    arrays = {
        "examples": ngd.examples,
        "sgd_test_error": sgd.test_loss,
        "ngd_test_error": ngd.test_loss,
        "sgd_wall_time": sgd.wall_time,
        "ngd_wall_time": ngd.wall_time,
        "ngd_damping": ngd.damping,
        "ngd_rho": ngd.rho,
        "sgd_rates": np.asarray(SGD_RATES),
        "sgd_grid_train_error": grid,
    }
    return Reproduction("exactng-fig1d", fig, checks, settings, arrays)
