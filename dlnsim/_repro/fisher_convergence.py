"""Karakida & Osawa 2020, Figs. 1(a), 1(b) and S.1: training under BD, tri-diagonal and unit-wise NGD
against the (1 - eta alpha)^t theory (see :mod:`.fisher_common` for the shared conventions)."""

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
    _floor,
    _key,
    _residual_deviation,
    _style,
    _theory_outputs,
)

# ----------------------------------------------------------------------------------------------
# Fig. 1(a): BD-NGD against the NTK theory, and GD at its optimal learning rate


@register(
    "fisher-fig1a",
    title="BD-NGD training follows (1 - eta alpha)^t with alpha = L, faster than GD at its optimal rate",
    source=f"{PAPER}, Fig. 1(a), eq. 18",
)
def fig1a(*, fast: bool, seed: int) -> Reproduction:
    depth, samples = 3, 16
    steps = 4 if fast else 6
    widths = (64, 1024) if fast else (256, 1024, 4096)
    seeds = 2 if fast else 4
    rates = (1.0, 0.5, 0.25)  # eta = c / alpha
    sweep_rate = 0.5
    task = wide.digits_task(_key(seed, 0), samples, classes=(0, 7), test_samples=50)

    def net(width, i):
        return wide.MLP.uniform(
            depth=depth,
            width=width,
            input_dim=task.input_dim,
            key=_key(seed, 1, width, i),
            sigma_w2=SIGMA_W2,
            sigma_b2=SIGMA_B2,
        )

    # deviation from the theory against width, eta = 0.5 / L
    dev = np.zeros((len(widths), seeds))
    for a, width in enumerate(widths):
        for i in range(seeds):
            res = wide.compare_with_theory(
                net(width, i), task, "bd", learning_rate=sweep_rate / depth, steps=steps
            )
            dev[a, i] = res["max_deviation"]
    # the loss curves at the widest width, seed 0, for each learning rate
    curves = {}
    for c in rates:
        curves[c] = wide.compare_with_theory(
            net(widths[-1], 0), task, "bd", learning_rate=c / depth, steps=steps
        )
    ref = curves[sweep_rate]
    gd_loss = np.asarray(ref["gd_theory_loss"])
    t = np.arange(steps + 1)

    fig, axes = new_figure(1, 2, panel_size=(4.8, 3.8))
    ax = axes[0, 0]
    for j, c in enumerate(rates):
        color = f"C{j}"
        ax.plot(
            t, _floor(curves[c]["train_loss"]), "o", color=color, label=f"BD-NGD, eta = {c:g}/L (measured)"
        )
        ax.plot(t, _floor(curves[c]["theory_loss"]), "-", color=color, lw=1.2)
    ax.plot(
        t, gd_loss, "k--", label=f"GD, eta_opt = 2/(lmin+lmax) = {ref['gd_learning_rate']:.3g} (NTK theory)"
    )
    ax.plot([], [], "-", color="gray", label="lines: theory (1 - eta L)^(2t) L_0")
    ax.set_ylim(1e-12, 3 * max(gd_loss.max(), 1.0))
    _style(
        ax,
        xlabel="step t",
        ylabel="training loss",
        title=f"Fig. 1(a): BD-NGD, L={depth}, M={widths[-1]}, digits 0 vs 7, N={samples}",
    )
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[0, 1]
    for i in range(seeds):
        ax.plot(widths, dev[:, i], "o", color="C1", alpha=0.5, label="seeds" if i == 0 else None)
    med = np.median(dev, axis=1)
    ax.plot(widths, med, "s-", color="C3", label="median over seeds")
    w = np.asarray(widths, float)
    ax.plot(w, med[0] * np.sqrt(w[0] / w), "k:", label="slope M^(-1/2)")
    _style(
        ax,
        xlabel="width M",
        xticks=widths,
        ylabel="max_t |f_t - f_t^theory| / |f_0 - y|",
        logx=True,
        title=f"deviation from (1 - eta L)^t, eta = {sweep_rate:g}/L",
    )
    ax.legend(fontsize=7)

    final = {c: curves[c]["train_loss"][-1] for c in rates}
    checks = [
        check("BD alpha measured - L (widest net)", abs(ref["alpha_measured"] - depth), 1e-8),
        check("BD Theta_bar condition number - 1", ref["isotropy_condition_number"] - 1.0, 1e-8),
        check(f"median deviation at M={widths[-1]}", med[-1], 3.0 / math.sqrt(widths[-1])),
        check(f"median deviation drop M={widths[0]} -> M={widths[-1]}", med[0] / med[-1], 2.0, ">="),
        check(
            f"eta = 1/L (optimal, Cor. 4.2) / eta = 0.5/L: loss after {steps} steps",
            final[1.0] / final[0.5],
            1e-2,
        ),
        check(f"BD-NGD (eta = 0.25/L) / GD-optimal loss after {steps} steps", final[0.25] / gd_loss[-1], 0.5),
    ]
    settings = {
        "paper": "L=3, M=4096, sigma_w^2=2, sigma_b^2=0.5, MNIST 0 vs 7 (N=100 as in Fig. S.1)",
        "dataset": task.description + " (stand-in for MNIST)",
        "depth": depth,
        "widths": list(widths),
        "samples": samples,
        "steps": steps,
        "seeds_per_width": seeds,
        "learning_rates": [f"{c}/L" for c in rates],
        "deviation_sweep_rate": f"{sweep_rate}/L",
        "sigma_w2": SIGMA_W2,
        "sigma_b2": SIGMA_B2,
        "damping": 0.0,
        "gd": "linearised GD on the empirical NTK at eta = 2/(lambda_min + lambda_max)",
        "gd_ntk_condition_number": ref["gd_ntk_condition_number"],
        "deviation_median": med.tolist(),
        "deviations": "N=16 rather than 100: the 8x8 digits span 51 dimensions and their Grams are "
        "ill-conditioned (cond Theta_3 ~ 5e5 at N = 32), so larger N needs much wider nets for the same "
        "agreement; at N = 32 the median deviation was 0.07, 0.03, 0.04 at M = 256, 1024, 4096",
    }
    arrays = {"steps": t, "widths": np.asarray(widths), "deviation": dev, "gd_theory_loss": gd_loss}
    for c in rates:
        arrays[f"loss_eta{c:g}"] = np.asarray(curves[c]["train_loss"])
        arrays[f"theory_eta{c:g}"] = np.asarray(curves[c]["theory_loss"])
    return Reproduction("fisher-fig1a", fig, checks, settings, arrays)


# ----------------------------------------------------------------------------------------------
# Fig. 1(b): tri-diagonal NGD at L = 0, 1, 2 (mod 3) across damping


def _pinv_alpha(depth: int) -> tuple[float, float, float]:
    """1^T Sigma^+ 1 of the tri-diagonal Sigma, its smallest |eigenvalue|, and |1 . n| for its null
    vector n (L = 2 mod 3): when 1 is orthogonal to null(Sigma) the zero-damping limit stays finite."""
    sigma = wide.layer_sigma("tri-diagonal", depth)
    evals, evecs = np.linalg.eigh(sigma)
    one = np.ones(depth)
    small = int(np.argmin(np.abs(evals)))
    return (
        float(one @ np.linalg.pinv(sigma) @ one),
        float(abs(evals[small])),
        float(abs(one @ evecs[:, small])),
    )


@register(
    "fisher-fig1b",
    title="tri-diagonal NGD across damping at L = 0, 1, 2 (mod 3): the rho -> 0 limit and the singular Sigma",
    source=f"{PAPER}, Fig. 1(b), Lemma 4.3",
)
def fig1b(*, fast: bool, seed: int) -> Reproduction:
    depths = (3, 4, 5)
    samples, steps = 16, 5
    width = 256 if fast else 2048
    dampings = (1e-2, 1e-5, 1e-8) if fast else (1e-1, 1e-2, 1e-4, 1e-6, 1e-8)
    rate = 0.5  # eta = rate / alpha, alpha = 1^T Sigma^+ 1 (= 1^T Sigma^-1 1 for L = 0, 1 mod 3)
    task = wide.digits_task(_key(seed, 0), samples, classes=(0, 7), test_samples=20)
    y = np.asarray(task.y_train)
    t = np.arange(steps + 1)
    fig, axes = new_figure(1, 3, panel_size=(4.2, 3.6))
    checks, arrays, alphas, info = [], {"steps": t, "dampings": np.asarray(dampings)}, {}, {}
    for k, depth in enumerate(depths):
        mlp = wide.MLP.uniform(
            depth=depth,
            width=width,
            input_dim=task.input_dim,
            key=_key(seed, 1, depth),
            sigma_w2=SIGMA_W2,
            sigma_b2=SIGMA_B2,
        )
        alpha0, eig_min, overlap = _pinv_alpha(depth)
        singular = depth % 3 == 2
        lr = rate / alpha0
        sig = wide.signals(mlp, task.x_train)
        loss0 = float(wide.task_loss(mlp(task.x_train), task.y_train))
        ax = axes[0, k]
        alpha_rho, devs = [], []
        for j, rho in enumerate(dampings):
            fisher = wide.Fisher("tri-diagonal", damping=rho)
            alpha_rho.append(wide.isotropy(wide.theta_bar(mlp, sig, fisher))[0])
            run = wide.train(mlp, task, wide.NGD(fisher, lr), steps)
            devs.append(
                _residual_deviation(run.f_train, _theory_outputs(run.f_train[0], y, alpha0, lr, steps), y)
            )
            arrays[f"loss_L{depth}_rho{rho:g}"] = run.train_loss
            ax.plot(t, _floor(run.train_loss), "o-", ms=4, lw=0.8, color=f"C{j}", label=f"rho = {rho:g}")
        theory = loss0 * (1 - lr * alpha0) ** (2 * t)
        name = "1^T Sigma^+ 1" if singular else "1^T Sigma^-1 1"
        ax.plot(t, theory, "k-", lw=2, alpha=0.6, label=f"theory rho -> 0: alpha = {name} = {alpha0:g}")
        label = "Sigma singular" if singular else "Sigma pos. def."
        _style(
            ax,
            xlabel="step t",
            ylabel="training loss",
            title=f"L = {depth} (= {depth % 3} mod 3): {label}\neta = {rate:g}/alpha",
        )
        ax.legend(fontsize=7, loc="lower left")
        dist = np.abs(np.asarray(alpha_rho) - alpha0)
        checks += [
            check(f"L={depth}: |alpha(rho={dampings[-1]:g}) - {name}| / alpha", dist[-1] / alpha0, 1e-3),
            check(
                f"L={depth}: alpha(rho) approaches it monotonically (max ratio of successive distances)",
                float(np.max(dist[1:] / dist[:-1])),
                1.0,
                "<",
            ),
            check(
                f"L={depth}: deviation from (1 - eta alpha)^t at rho={dampings[-1]:g}",
                devs[-1],
                5.0 / math.sqrt(width),  # finite-width O(M^-1/2), heavy-tailed over inits (fig1a)
            ),
        ]
        if singular:
            checks += [
                check(f"L={depth}: smallest |eigenvalue| of Sigma (singular, Lemma 4.3)", eig_min, 1e-12),
                check(f"L={depth}: |1 . null(Sigma)| (1 is orthogonal to the null space)", overlap, 1e-12),
            ]
        alphas[depth] = alpha_rho
        info[depth] = {"alpha_limit": alpha0, "sigma_min_abs_eigenvalue": eig_min, "deviation": devs}
        arrays[f"alpha_L{depth}"] = np.asarray(alpha_rho)
    fig.suptitle(
        f"{PAPER}, Fig. 1(b): block tri-diagonal NGD, M = {width}, digits 0 vs 7, N = {samples} "
        "(markers: measured; black: rho -> 0 theory)",
        fontsize=10,
    )
    settings = {
        "paper": "L = 3, 4, 5 across damping on MNIST; the paper reports that L = 2 (mod 3) "
        "explodes as rho -> 0",
        "dataset": task.description + " (stand-in for MNIST)",
        "depths": list(depths),
        "width": width,
        "samples": samples,
        "steps": steps,
        "dampings": list(dampings),
        "learning_rate": f"{rate}/alpha with alpha = 1^T Sigma^+ 1 (1, 2, 2 for L = 3, 4, 5)",
        "alpha_measured": {str(d): a for d, a in alphas.items()},
        "per_depth": {str(d): v for d, v in info.items()},
        "sigma_w2": SIGMA_W2,
        "sigma_b2": SIGMA_B2,
        "deviations": "Not reproduced: the explosion at L = 2 (mod 3). Sigma's null vector (1,-1,0,1,-1,...) "
        "is orthogonal to 1, so in exact arithmetic the damped update has a finite rho -> 0 limit with "
        "alpha = 1^T Sigma^+ 1 = 2 for L = 5, and float64 sample-space NGD converges at every damping tried. "
        "The paper's explosion is consistent with round-off amplified by 1/rho in a lower-precision "
        "parameter-space inverse; we did not reproduce that setting.",
    }
    return Reproduction("fisher-fig1b", fig, checks, settings, arrays)


# ----------------------------------------------------------------------------------------------
# Fig. S.1: unit-wise NGD training against theory


FIGS1_NETS = (("tanh", 0.0), ("relu", 0.0), ("shifted-relu", 1.0))


@register(
    "fisher-figS1",
    title="unit-wise NGD follows (1 - eta alpha)^t, alpha = sum_l gamma_l M_l (tanh, relu, shifted relu)",
    source=f"{PAPER}, Fig. S.1, Theorem 5.1, S.128, S.141",
)
def figS1(*, fast: bool, seed: int) -> Reproduction:
    depth, samples, steps, rate = 3, 16, 5, 0.5
    width = 1024 if fast else 4096
    seeds = 2 if fast else 3
    task = wide.digits_task(_key(seed, 5), samples, classes=(0, 7), test_samples=20)
    y = np.asarray(task.y_train)
    fisher = wide.Fisher("unit-wise", damping=UNIT_DAMPING)
    t = np.arange(steps + 1)
    fig, axes = new_figure(1, 3, panel_size=(4.2, 3.6), sharey=True)
    checks, arrays, info = [], {"steps": t}, {}
    for k, (activation, shift) in enumerate(FIGS1_NETS):
        ax = axes[0, k]
        devs, ratios = [], []
        for i in range(seeds):
            mlp = wide.MLP.uniform(
                depth=depth,
                width=width,
                input_dim=task.input_dim,
                activation=activation,
                shift=shift,
                key=_key(seed, 6, k, i),
                sigma_w2=SIGMA_W2,
                sigma_b2=SIGMA_B2,
            )
            alpha = wide.alpha_theory("unit-wise", mlp, samples)  # sum_l gamma_l M_l + 1 (rho -> 0)
            sig = wide.signals(mlp, task.x_train)
            ratios.append(wide.isotropy(wide.theta_bar(mlp, sig, fisher))[0] / alpha)
            lr = rate / alpha
            run = wide.train(mlp, task, wide.NGD(fisher, lr), steps)
            f_theory = _theory_outputs(run.f_train[0], y, alpha, lr, steps)
            devs.append(_residual_deviation(run.f_train, f_theory, y))
            theory_loss = np.asarray([float(wide.task_loss(f, y)) for f in f_theory])
            arrays[f"loss_{activation}_seed{i}"] = run.train_loss
            arrays[f"theory_{activation}_seed{i}"] = theory_loss
            ax.plot(t, run.train_loss, "o", color=f"C{i}", label=f"measured, init {i}")
            ax.plot(
                t,
                theory_loss,
                "-",
                color=f"C{i}",
                lw=1.2,
                label="theory (1 - eta alpha)^(2t) L_0" if i == 0 else None,
            )
        name = activation if not shift else f"{activation}, s = {shift:g}"
        _style(
            ax,
            xlabel="step t",
            ylabel="training loss",
            title=f"{name}: alpha = {(alpha - 1) / width:.4g} M + 1",
        )
        ax.legend(fontsize=7, loc="lower left")
        med = float(np.median(devs))
        info[name] = {
            "alpha_theory": alpha,
            "alpha_over_M": (alpha - 1) / width,
            "alpha_measured_over_theory": ratios,
            "deviation": devs,
        }
        checks += [
            check(f"{name}: median deviation from (1 - eta alpha)^t", med, 3.0 / math.sqrt(width)),
            check(
                f"{name}: max |alpha measured / theory - 1|",
                float(np.max(np.abs(np.asarray(ratios) - 1))),
                0.05,
            ),
        ]
    fig.suptitle(
        f"{PAPER}, Fig. S.1: unit-wise NGD, L = {depth}, M = {width}, digits 0 vs 7, N = {samples}, "
        f"eta = {rate:g}/alpha, rho = {UNIT_DAMPING:g}",
        fontsize=10,
    )
    settings = {
        "paper": "L = 3, C = 1, M = 4096, sigma_w^2 = 2, sigma_b^2 = 0.5, MNIST 0 vs 7, N = 100; "
        "eta = 1/alpha",
        "dataset": task.description + " (stand-in for MNIST)",
        "depth": depth,
        "width": width,
        "samples": samples,
        "steps": steps,
        "seeds": seeds,
        "learning_rate": f"{rate}/alpha (the paper's 1/alpha converges in one step, which hides the rate)",
        "damping": UNIT_DAMPING,
        "per_activation": info,
        "sigma_w2": SIGMA_W2,
        "sigma_b2": SIGMA_B2,
        "deviations": "rho = 1e-12 instead of the zero-damping limit: Lemma C.3 needs rho > 0; at rho = 0 "
        "the "
        "pseudo-inverse also inverts the tiny eigenvalues of each unit block diag(delta_i) A diag(delta_i) "
        "(units with small output weights, and the ill-conditioned digit Gram), the update leaves the linear "
        "regime and the relu deviation is 0.1-0.9 at M = 4096; 1e-12 is the paper's own rho for Figs. 3 and "
        "S.2 and lowers alpha by under 3 %. N = 16 rather than 100: the theory needs M0 >= N and linearly "
        "independent inputs (the 8x8 digits 0 and 7 span 51 dimensions). alpha includes the output layer's "
        "+ 1 that S.137 drops. alpha/M depends on M0 through q_1 = sigma_w^2/M0 + sigma_b^2, so shifted "
        "relu gives a slightly different value from the paper's 1.723 (M0 = 784)",
    }
    return Reproduction("fisher-figS1", fig, checks, settings, arrays)
