"""Karakida & Osawa 2020, Figs. 2, 3 and S.2: the converged predictors' test accuracy, the isotropy
condition number against width, and alpha of unit-wise NGD (see :mod:`.fisher_common`)."""

from __future__ import annotations

import math

import numpy as np

from .. import wide
from .._experiments import Reproduction, check, new_figure, register
from .fisher_common import (
    PAPER,
    SIGMA_B2,
    SIGMA_W2,
    UNIT_DAMPING,
    _key,
    _style,
)

# ----------------------------------------------------------------------------------------------
# Fig. 2: test accuracy of the converged infinite-width predictors


def _gaussian_draws(cov: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws from N(0, cov) through a symmetric square root (cov may be near-singular)."""
    evals, evecs = np.linalg.eigh(0.5 * (cov + cov.T))
    root = evecs * np.sqrt(np.clip(evals, 0.0, None))
    return rng.standard_normal((n, cov.shape[0])) @ root.T


FIG2_FISHERS = ("exact", "bd", "tri-diagonal", "kfac")


@register(
    "fisher-fig2",
    title="test accuracy of converged exact, BD, tri-diagonal and K-FAC NGD (infinite width, f_0 draws)",
    source=f"{PAPER}, Fig. 2, Sec. 4.4, S.53, S.71, S.105",
)
def fig2(*, fast: bool, seed: int) -> Reproduction:
    depth, test_samples = 3, 150
    sizes = (10, 20, 40) if fast else (10, 20, 40, 80, 160)
    kfac_max = 40  # K-FAC's Theta_bar needs invertible A_0 (S.105): N <= rank of the digit images
    draws = 10 if fast else 30
    pairs = ((0, 7), (3, 8))
    kw = {"depth": depth, "activation": "relu", "sigma_w2": SIGMA_W2, "sigma_b2": SIGMA_B2}
    fig, axes = new_figure(1, 2, panel_size=(4.8, 4.0), sharey=True)
    checks, arrays, summary = [], {"sizes": np.asarray(sizes)}, {}
    iso_err = 0.0
    for p, pair in enumerate(pairs):
        ax = axes[0, p]
        means = np.full((len(FIG2_FISHERS), len(sizes)), np.nan)
        mean_pred = np.full_like(means, np.nan)
        for a, n in enumerate(sizes):
            task = wide.digits_task(_key(seed, 2, p, n), n, classes=pair, test_samples=test_samples)
            x, xt = np.asarray(task.x_train), np.asarray(task.x_test)
            y, yt = np.asarray(task.y_train)[:, 0], np.asarray(task.y_test)[:, 0]
            k_train = wide.analytic_kernels(x, **kw)
            k_test = wide.analytic_kernels(xt, x, **kw)
            # f_0 is a Gaussian process with the output kernel sigma_w^2 A_{L-1} + sigma_b^2 (S.174)
            k_all = wide.analytic_kernels(np.concatenate([x, xt]), **kw)
            cov = SIGMA_W2 * k_all.A[-1] + SIGMA_B2
            f0 = _gaussian_draws(cov, draws, np.random.default_rng([seed, p, n]))
            f0_train, f0_test = f0[:, :n], f0[:, n:]
            for b, name in enumerate(FIG2_FISHERS):
                if name == "kfac" and n > kfac_max:
                    continue
                tbar = wide.analytic_theta_bar(name, k_train, k_train, sigma_w2=SIGMA_W2, sigma_b2=SIGMA_B2)
                tbar_test = wide.analytic_theta_bar(
                    name, k_test, k_train, sigma_w2=SIGMA_W2, sigma_b2=SIGMA_B2
                )
                alpha = float(np.mean(np.diag(tbar)))
                iso_err = max(iso_err, float(np.abs(tbar / alpha - np.eye(n)).max()))
                # converged predictor: f_inf(x') = f_0(x') - Theta_bar(x', x) (f_0(x) - y) / alpha
                f_inf = f0_test - (f0_train - y) @ tbar_test.T / alpha
                acc = np.mean(np.sign(f_inf) == np.sign(yt), axis=1)
                means[b, a] = acc.mean()
                # the average over initialisations (f_0 = 0): kernel regression with Theta_bar / alpha
                mean_pred[b, a] = np.mean(np.sign(y @ tbar_test.T) == np.sign(yt))
                arrays[f"acc_{pair[0]}v{pair[1]}_{name}_N{n}"] = acc
                jitter = (b - 1.5) * 0.04
                ax.plot(n * np.exp(jitter) * np.ones(draws), acc, "o", ms=3, alpha=0.35, color=f"C{b}")
        for b, name in enumerate(FIG2_FISHERS):
            ax.plot(sizes, means[b], "-", color=f"C{b}", lw=1.5, label=name)
            ax.plot(sizes, mean_pred[b], "--", color=f"C{b}", lw=1.0)
        ax.plot([], [], "k-", label="mean over f_0 draws (circles)")
        ax.plot([], [], "k--", label="f_0 = 0 (average over init.)")
        _style(
            ax,
            xlabel="training samples N",
            ylabel="test accuracy",
            logx=True,
            logy=False,
            title=f"Fig. 2: digits {pair[0]} vs {pair[1]}, L={depth}, M -> inf",
        )
        ax.legend(fontsize=7, loc="lower left", ncol=2)
        layerwise = means[:3]  # exact, bd, tri-diagonal
        spread = np.max(layerwise, axis=0) - np.min(layerwise, axis=0)
        spread_mean = np.nanmax(mean_pred, axis=0) - np.nanmin(mean_pred, axis=0)
        kfac_gap = np.nanmax(means[:3] - means[3])
        summary[f"{pair[0]} vs {pair[1]}"] = {
            "mean_accuracy_over_draws": means.tolist(),
            "accuracy_f0_zero": mean_pred.tolist(),
            "layerwise_spread": spread.tolist(),
            "kfac_gap_over_draws": float(kfac_gap),
        }
        tag = f"digits {pair[0]} vs {pair[1]}"
        checks += [
            check(
                f"{tag}: lowest mean accuracy over f_0 draws, exact/BD/tri-diagonal",
                float(layerwise.min()),
                0.85,
                ">=",
            ),
            check(f"{tag}: spread of that mean across exact/BD/tri-diagonal", float(spread.max()), 0.05),
            check(
                f"{tag}: lowest accuracy at f_0 = 0, all four incl. K-FAC",
                float(np.nanmin(mean_pred)),
                0.9,
                ">=",
            ),
            check(f"{tag}: spread at f_0 = 0 across all four", float(np.nanmax(spread_mean)), 0.05),
            check(
                f"{tag}: K-FAC mean accuracy over f_0 draws (above chance 0.5)",
                float(np.nanmin(means[3])),
                0.6,
                ">=",
            ),
        ]
    checks.insert(0, check("analytic Theta_bar(x, x) = alpha I: max |Theta_bar / alpha - I|", iso_err, 1e-8))
    fig.suptitle(
        f"{PAPER}, Fig. 2: converged NGD predictors from analytic kernels; circles: f_0 draws", fontsize=10
    )
    settings = {
        "paper": "L = 3 ReLU, analytic kernels, MNIST and CIFAR-10; each circle one random initialisation",
        "dataset": "sklearn 8x8 digits: 0 vs 7 and 3 vs 8 in place of MNIST and CIFAR-10",
        "depth": depth,
        "sizes": list(sizes),
        "test_samples": test_samples,
        "f0_draws": draws,
        "kfac_max_samples": kfac_max,
        "fishers": list(FIG2_FISHERS),
        "summary": summary,
        "predictor": "f_inf(x') = f_0(x') - Theta_bar(x', x)(f_0(x) - y)/alpha (eq. 10 at t -> inf, S.26); "
        "f_0 drawn from the Gaussian process with kernel sigma_w^2 A_2 + sigma_b^2",
        "sigma_w2": SIGMA_W2,
        "sigma_b2": SIGMA_B2,
        "finding": "exact, BD and tri-diagonal give the same accuracy to within a few per cent, as the paper "
        "says; K-FAC matches them for the average over initialisations (f_0 = 0) but loses 0.2-0.3 accuracy "
        "per draw on these digits: its Theta_bar(x', x)/alpha cancels the random f_0 on test points "
        "less well",
    }
    return Reproduction("fisher-fig2", fig, checks, settings, arrays)


# ----------------------------------------------------------------------------------------------
# Fig. 3: isotropy condition number against width


FIG3_FISHERS = ("ntk", "bd", "unit-wise", "diagonal", "quasi-diagonal")


@register(
    "fisher-fig3",
    title="condition number of Theta_bar against width: ~1 for BD and unit-wise, >> 1 for NTK and entry-wise",
    source=f"{PAPER}, Fig. 3, Appendix C.3.1",
)
def fig3(*, fast: bool, seed: int) -> Reproduction:
    depth = 3
    samples, input_dim = (40, 50) if fast else (80, 100)
    widths = (64, 256) if fast else (128, 256, 512, 1024, 2048)  # M >= N, else Theta_L is singular
    seeds = 1 if fast else 2
    task = wide.synthetic_task(_key(seed, 3), samples, input_dim, test_samples=1)
    cond = np.zeros((len(FIG3_FISHERS), len(widths), seeds))
    for a, width in enumerate(widths):
        for i in range(seeds):
            mlp = wide.MLP.uniform(
                depth=depth,
                width=width,
                input_dim=input_dim,
                key=_key(seed, 4, width, i),
                sigma_w2=SIGMA_W2,
                sigma_b2=SIGMA_B2,
            )
            sig = wide.signals(mlp, task.x_train)
            for b, name in enumerate(FIG3_FISHERS):
                if name == "ntk":
                    ev = np.linalg.eigvalsh(np.asarray(wide.ntk(mlp, sig)))
                    cond[b, a, i] = ev.max() / ev.min()
                else:
                    fisher = wide.Fisher(name, damping=UNIT_DAMPING)
                    cond[b, a, i] = wide.isotropy(wide.theta_bar(mlp, sig, fisher))[1]
    fig, axes = new_figure(1, 1, panel_size=(5.6, 4.2))
    ax = axes[0, 0]
    colors = {"ntk": "k", "bd": "C3", "unit-wise": "C0", "diagonal": "C2", "quasi-diagonal": "c"}
    labels = {
        "ntk": "NTK (GD)",
        "bd": "BD",
        "unit-wise": "unit-wise",
        "diagonal": "diagonal (entry-wise)",
        "quasi-diagonal": "quasi-diagonal",
    }
    for b, name in enumerate(FIG3_FISHERS):
        for i in range(seeds):
            ax.plot(
                widths,
                cond[b, :, i],
                "o",
                color=colors[name],
                alpha=0.7,
                label=labels[name] if i == 0 else None,
            )
        ax.plot(widths, np.median(cond[b], axis=1), "-", color=colors[name], lw=0.8)
    ax.axhline(1.0, color="gray", ls=":", lw=1)
    _style(
        ax,
        xlabel="width M",
        xticks=widths,
        ylabel="condition number lambda_max / lambda_min of Theta_bar",
        logx=True,
        title=f"Fig. 3: ReLU L={depth}, Gaussian inputs M0={input_dim}, N={samples}, rho=1e-12",
    )
    ax.legend(fontsize=8, loc="center right")
    med = np.median(cond, axis=2)  # (fisher, width)
    idx = {name: b for b, name in enumerate(FIG3_FISHERS)}
    checks = [
        check(
            f"BD: condition number - 1 at M={widths[-1]} (rho = 1e-12)",
            float(cond[idx["bd"], -1].max() - 1.0),
            1e-3,
        ),
        check(
            f"unit-wise: condition number - 1 at M={widths[-1]}", float(med[idx["unit-wise"], -1] - 1.0), 0.15
        ),
        check(
            f"unit-wise: condition number - 1 shrinks M={widths[0]} -> {widths[-1]} (ratio)",
            float((med[idx["unit-wise"], 0] - 1) / (med[idx["unit-wise"], -1] - 1)),
            2.0,
            ">=",
        ),
        check(f"NTK: condition number at M={widths[-1]}", float(med[idx["ntk"], -1]), 20.0, ">="),
        check(
            "diagonal: smallest condition number (all widths) stays >> 1",
            float(cond[idx["diagonal"]].min()),
            3.0,
            ">=",
        ),
        check(
            "quasi-diagonal: smallest condition number (all widths) stays >> 1",
            float(cond[idx["quasi-diagonal"]].min()),
            3.0,
            ">=",
        ),
        check(
            "entry-wise better conditioned than NTK: max ratio diagonal / NTK",
            float((cond[idx["diagonal"]] / cond[idx["ntk"]]).max()),
            1.0,
            "<",
        ),
        check(
            "entry-wise better conditioned than NTK: max ratio quasi-diagonal / NTK",
            float((cond[idx["quasi-diagonal"]] / cond[idx["ntk"]]).max()),
            1.0,
            "<",
        ),
    ]
    settings = {
        "paper": "ReLU, L = 3, C = 1, M0 = 100, N = 80, sigma_w^2 = 2, sigma_b^2 = 0.5, rho = 1e-12, "
        "x ~ N(0, I)" + ("; fast: N = 40, M0 = 50" if fast else ""),
        "dataset": task.description,
        "depth": depth,
        "samples": samples,
        "input_dim": input_dim,
        "widths": list(widths),
        "seeds_per_width": seeds,
        "damping": UNIT_DAMPING,
        "median_condition_number": {name: med[b].tolist() for b, name in enumerate(FIG3_FISHERS)},
        "sigma_w2": SIGMA_W2,
        "sigma_b2": SIGMA_B2,
        "ntk": "condition number of the empirical NTK J J^T / N (GD's Theta_bar)",
    }
    arrays = {"widths": np.asarray(widths), "condition_number": cond, "fishers": np.asarray(FIG3_FISHERS)}
    return Reproduction("fisher-fig3", fig, checks, settings, arrays)


# ----------------------------------------------------------------------------------------------
# Fig. S.2: alpha / M of unit-wise NGD against the shift of shifted relu


def _alpha_s156(shift: float, width: int, q) -> float:
    """S.156: alpha = sum_{l<L} (1/2 + erf(s / sqrt(2 q_l)) / 2) M_l, per unit of M (+ 1/M for the output)."""
    return sum(0.5 + 0.5 * math.erf(shift / math.sqrt(2.0 * ql)) for ql in q[:-1]) + 1.0 / width


@register(
    "fisher-figS2",
    title="alpha / M of unit-wise NGD against the shift s of shifted relu: numeric against S.156",
    source=f"{PAPER}, Fig. S.2, S.141, S.156",
)
def figS2(*, fast: bool, seed: int) -> Reproduction:
    depth, samples = 3, 10
    width = 1024 if fast else 4096
    seeds = 2 if fast else 3
    shifts = np.linspace(0.0, 3.0, 5 if fast else 13)
    task = wide.synthetic_task(_key(seed, 7), samples, samples, test_samples=1)
    fisher = wide.Fisher("unit-wise", damping=UNIT_DAMPING)
    numeric = np.zeros((len(shifts), seeds))
    theory = np.zeros(len(shifts))
    library = np.zeros(len(shifts))
    for a, s in enumerate(shifts):
        for i in range(seeds):
            # the same weights for every shift: only the activation changes
            mlp = wide.MLP.uniform(
                depth=depth,
                width=width,
                input_dim=samples,
                activation="shifted-relu",
                shift=float(s),
                key=_key(seed, 8, i),
                sigma_w2=SIGMA_W2,
                sigma_b2=SIGMA_B2,
            )
            tbar = wide.theta_bar(mlp, wide.signals(mlp, task.x_train), fisher)
            numeric[a, i] = float(np.mean(np.diag(np.asarray(tbar)))) / width
        q = wide.signal_variances(
            depth=depth,
            input_dim=samples,
            activation="shifted-relu",
            sigma_w2=SIGMA_W2,
            sigma_b2=SIGMA_B2,
            shift=float(s),
        )
        theory[a] = _alpha_s156(float(s), width, q)
        library[a] = wide.alpha_theory("unit-wise", mlp, samples) / width
    fig, axes = new_figure(1, 1, panel_size=(5.4, 4.0))
    ax = axes[0, 0]
    fine = np.linspace(0.0, 3.0, 121)
    q_fine = [
        wide.signal_variances(
            depth=depth,
            input_dim=samples,
            activation="shifted-relu",
            sigma_w2=SIGMA_W2,
            sigma_b2=SIGMA_B2,
            shift=float(s),
        )
        for s in fine
    ]
    ax.plot(
        fine,
        [_alpha_s156(float(s), width, q) for s, q in zip(fine, q_fine, strict=True)],
        "k-",
        label="theory S.156 (+ 1/M output layer)",
    )
    for i in range(seeds):
        ax.plot(
            shifts, numeric[:, i], "o", color=f"C{i}", alpha=0.8, label=f"numeric diag(Theta_bar)/M, init {i}"
        )
    _style(
        ax,
        xlabel="shift s",
        ylabel="alpha / M",
        logy=False,
        title=f"Fig. S.2: shifted relu, L={depth}, M={width}, M0=N={samples}, rho=1e-12",
    )
    ax.legend(fontsize=8, loc="lower right")
    err = np.abs(numeric - theory[:, None])
    checks = [
        check("max |alpha/M numeric - S.156| (all shifts, inits)", float(err.max()), 3.0 / math.sqrt(width)),
        check(
            "S.156 here = dlnsim.wide.alpha_theory (max difference)",
            float(np.abs(theory - library).max()),
            1e-12,
        ),
        check(
            "s = 0 (relu): |alpha/M numeric - 1|",
            float(np.abs(numeric[0] - 1.0).max()),
            3.0 / math.sqrt(width),
        ),
        check(
            "alpha/M rises with s: numeric(s=3) - numeric(s=0)",
            float(numeric[-1].mean() - numeric[0].mean()),
            0.9,
            ">=",
        ),
    ]
    settings = {
        "paper": "L = 3, M_l = 4096, M0 = N = 10, sigma_w^2 = 2, sigma_b^2 = 0.5, rho = 1e-12, x ~ N(0, I)",
        "dataset": task.description,
        "depth": depth,
        "width": width,
        "samples": samples,
        "seeds": seeds,
        "shifts": shifts.tolist(),
        "damping": UNIT_DAMPING,
        "sigma_w2": SIGMA_W2,
        "sigma_b2": SIGMA_B2,
        "theory": "S.156 with q_l from S.175 for unit-norm inputs, plus 1/M for the output layer",
        "max_abs_error": float(err.max()),
    }
    arrays = {"shifts": shifts, "alpha_over_M_numeric": numeric, "alpha_over_M_theory": theory}
    return Reproduction("fisher-figS2", fig, checks, settings, arrays)
