"""Huh 2020, Figs. S1 and S2: scaling laws of the update size and loss rate with the weight scale
(S.I.16-17), and the conservation law in a 3-layer net (eq. 4)."""

from __future__ import annotations

import numpy as np

from .._experiments import Reproduction, check, new_figure, register
from .curvature_common import _COLORS, LABELS, RULES, SOURCE, _rule_q

# ---------------------------------------------------------------------------------------------
# Fig. S1: scaling laws of the update size and loss rate with the weight scale


@register(
    "curvature-figS1",
    title="scaling of ||dw/dt||/sqrt(L) and |dL/dt|/L with the weight scale a, across d and q",
    source=f"{SOURCE}, Fig. S1 (S.I.16-S.I.17)",
)
def fig_s1(*, fast: bool, seed: int) -> Reproduction:
    """Huh 2020, Fig. S1: ||dtheta/dt|| / sqrt(L) ~ a^((d-1)(1-2/q)) and |dL/dt| / L ~ a^((d-1)(2-2/q))
    (S.I.16-17) for SGD, sqrt-NGD, NGD, NGD-d and sqrt-NGD-d at depths 2, 3, 4, measured with the
    full-matrix fields (``analytic.measure_scaling``) on balanced weights (exact) and on Xavier
    Gaussian weights (mean and standard deviation over seeds; same slope, shifted).
    """
    import jax.random as jr

    from .. import analytic

    depths = (2, 3, 4)
    width = 4 if fast else 6
    n_xavier = 3 if fast else 10
    scales = np.geomspace(0.01, 0.5, 5 if fast else 8)
    fig, axes = new_figure(2, len(depths), panel_size=(3.8, 3.3))
    checks, arrays, fits = [], {"scales": scales}, {}
    base_key = jr.PRNGKey(seed)
    for col, depth in enumerate(depths):
        for rule in RULES:
            q, _ = _rule_q(rule)
            theory = analytic.scaling_exponents(depth, q)
            bal = analytic.measure_scaling(
                rule,
                depth=depth,
                scales=scales,
                width=width,
                init="balanced",
                key=jr.fold_in(base_key, 1000 + depth),
            )
            xav = [
                analytic.measure_scaling(
                    rule,
                    depth=depth,
                    scales=scales,
                    width=width,
                    init="xavier",
                    key=jr.fold_in(base_key, 100 * depth + s),
                )
                for s in range(n_xavier)
            ]
            label = f"{LABELS[rule]}, d = {depth}"
            err_bal = max(
                abs(bal["update_exponent"] - theory["update"]),
                abs(bal["loss_rate_exponent"] - theory["loss_rate"]),
            )
            err_xav = max(
                max(abs(m["update_exponent"] - theory["update"]) for m in xav),
                max(abs(m["loss_rate_exponent"] - theory["loss_rate"]) for m in xav),
            )
            checks.append(check(f"{label}: balanced, max |fitted - S.I.16/17 exponent|", err_bal, 1e-6))
            checks.append(
                check(f"{label}: Xavier ({n_xavier} seeds), max |fitted - S.I.16/17 exponent|", err_xav, 0.05)
            )
            fits[f"{rule}_d{depth}"] = {
                "theory": theory,
                "balanced": [bal["update_exponent"], bal["loss_rate_exponent"]],
                "xavier": [[m["update_exponent"], m["loss_rate_exponent"]] for m in xav],
            }
            for row, quantity in enumerate(("update", "loss_rate")):
                ax = axes[row, col]
                xv = np.stack([m[quantity] for m in xav])
                # geometric mean and s.d.: NGD-d's update sizes over seeds are heavy-tailed
                log_v = np.log(xv)
                mean, spread = np.exp(log_v.mean(axis=0)), np.exp(log_v.std(axis=0))
                ax.errorbar(
                    scales,
                    mean,
                    yerr=[mean - mean / spread, mean * spread - mean],
                    fmt="o-",
                    color=_COLORS[rule],
                    ms=3,
                    lw=1,
                    capsize=2,
                    label=f"{LABELS[rule]} (Xavier)" if col == 0 else None,
                )
                ax.plot(
                    scales,
                    bal[quantity],
                    ":",
                    color=_COLORS[rule],
                    lw=2.2,
                    label=f"{LABELS[rule]} balanced" if col == 0 else None,
                )
                arrays[f"{rule}_d{depth}_{quantity}_balanced"] = bal[quantity]
                arrays[f"{rule}_d{depth}_{quantity}_xavier"] = xv
            arrays[f"{rule}_d{depth}_theory"] = np.array([theory["update"], theory["loss_rate"]])
        # the paper's block-diagonal remarks, on the Xavier means
        ratio_ngd = np.mean(arrays[f"ngd-d_d{depth}_update_xavier"] / arrays[f"ngd_d{depth}_update_xavier"])
        checks.append(
            check(f"d = {depth}: NGD-d / NGD parameter update size (Xavier mean, > 1)", ratio_ngd, 1.0, ">")
        )
        bal_d, bal_full = (arrays[f"{r}_d{depth}_update_balanced"] for r in ("sqrt-ngd-d", "sqrt-ngd"))
        same = np.abs(bal_d / bal_full - 1).max()
        checks.append(
            check(f"d = {depth}: balanced sqrt-NGD-d vs sqrt-NGD update, max relative difference", same, 1e-8)
        )
        axes[0, col].set_title(f"d = {depth}", fontsize=10)
    from matplotlib.ticker import NullFormatter

    for ax in axes.ravel():
        ax.set(xscale="log", yscale="log", xlabel="weight scale a")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("||dw/dt|| / sqrt(L)   (S.I.16)")
    axes[1, 0].set_ylabel("|dL/dt| / L   (S.I.17)")
    axes[0, 0].legend(fontsize=6, ncol=2)
    fig.suptitle(
        "Huh 2020 Fig. S1: scaling laws; dotted: balanced weights (slope = theory), "
        f"markers: Xavier weights (geometric mean ± s.d. over {n_xavier} seeds)",
        fontsize=10,
    )
    settings = {
        "depths": list(depths),
        "width": width,
        "scales": scales,
        "xavier_seeds": n_xavier,
        "seed": seed,
        "task": "random full-rank teacher, whitened inputs (analytic.measure_scaling)",
        "fits": fits,
        "fast": "width 4, 5 scales, 3 Xavier seeds (default: width 6, 8 scales, 10 seeds)" if fast else None,
    }
    return Reproduction("curvature-figS1", fig, checks, settings, arrays)


# ---------------------------------------------------------------------------------------------
# Fig. S2: the conservation law in a 3-layer net


@register(
    "curvature-figS2",
    title="conservation of W_i W_i^T - W_{i+1}^T W_{i+1} in a 3-layer net: kept by SGD/NGD/sqrt-NGD, "
    "broken by NGD-d",
    source=f"{SOURCE}, Fig. S2 (eq. 4, sec. 4)",
)
def fig_s2(*, fast: bool, seed: int) -> Reproduction:
    """Huh 2020, Fig. S2: the weights of a depth-3 net of width 2 (the caption's D = 2) and the
    quantities C_i = W_i W_i^T - W_{i+1}^T W_{i+1} (eq. 4) over time, for each rule.

    The full rules conserve C_i (Theorem 1); NGD-d breaks it and the weights grow unbalanced;
    sqrt-NGD-d also breaks it, but the weights stay close to balanced (sec. 4, "Weight balance").
    """
    import diffrax
    import jax.numpy as jnp
    import jax.random as jr

    from .._curvature import imbalance
    from .._models import DeepLinearNet
    from .._simulation import simulate
    from .._tasks import Task, random_teacher

    width, depth, t1, init_scale = 2, 3, 20.0, 0.3
    saves = 201 if fast else 801
    key_teacher, key_net = jr.split(jr.PRNGKey(seed))
    task = Task(random_teacher(key_teacher, width, width))
    net = DeepLinearNet((width,) * (depth + 1), key=key_net, init="small", scale=init_scale)
    ts = jnp.linspace(0.0, t1, saves)
    fig, axes = new_figure(3, len(RULES), panel_size=(3.1, 2.6), sharex=True)
    checks, arrays, summary = [], {"times": np.asarray(ts)}, {}
    for col, rule in enumerate(RULES):
        traj = simulate(net, rule, task, t1, saveat=diffrax.SaveAt(ts=ts))
        ws = traj.weights
        cs = [
            np.einsum("tij,tkj->tik", ws[i], ws[i]) - np.einsum("tji,tjk->tik", ws[i + 1], ws[i + 1])
            for i in range(depth - 1)
        ]
        drift = traj.conservation_drift
        balance = np.array([imbalance(tuple(w[k] for w in ws)) for k in range(0, traj.times.size, 10)])
        summary[rule] = {
            "max_drift": float(drift.max()),
            "imbalance_initial": float(balance[0]),
            "imbalance_final": float(imbalance(tuple(w[-1] for w in ws))),
            "loss_final": float(traj.loss[-1]),
        }
        ax = axes[0, col]
        for i, (w, c) in enumerate(zip(ws, ("tab:blue", "tab:orange", "tab:green"), strict=True)):
            ax.plot(traj.times, w.reshape(w.shape[0], -1), color=c, lw=1, label=f"W_{i + 1}")
        ax.set_title(LABELS[rule], fontsize=10)
        ax = axes[1, col]
        for i, (c_i, ls) in enumerate(zip(cs, ("-", "--"), strict=True)):
            ax.plot(traj.times, c_i.reshape(c_i.shape[0], -1), ls, color=("tab:red", "tab:purple")[i], lw=1)
        ax = axes[2, col]
        ax.semilogy(
            traj.times[1:], np.maximum(drift[1:], 1e-17), color="k", label="max_i ||C_i(t) - C_i(0)||"
        )
        ax.semilogy(traj.times[::10], balance, "o", color="tab:gray", ms=2.5, label="imbalance")
        ax.set(xlabel="time t", ylim=(1e-12, 10.0))
        arrays.update(
            {
                f"{rule}_drift": drift,
                f"{rule}_loss": traj.loss,
                **{f"{rule}_W{i + 1}": w for i, w in enumerate(ws)},
                **{f"{rule}_C{i + 1}": c for i, c in enumerate(cs)},
            }
        )
    for rule in ("sgd", "ngd", "sqrt-ngd"):
        checks.append(
            check(
                f"{LABELS[rule]}: max_t max_i ||C_i(t) - C_i(0)||_F (conserved)",
                summary[rule]["max_drift"],
                1e-7,
            )
        )
    checks.append(
        check("NGD-d: max_t max_i ||C_i(t) - C_i(0)||_F (broken)", summary["ngd-d"]["max_drift"], 0.1, ">")
    )
    checks.append(
        check("sqrt-NGD-d: max drift (also broken, > 1e-3)", summary["sqrt-ngd-d"]["max_drift"], 1e-3, ">")
    )
    imb = {r: summary[r]["imbalance_final"] for r in RULES}
    checks.append(
        check(
            "final imbalance: NGD-d / NGD (NGD-d unbalances the layers, > 10)",
            imb["ngd-d"] / imb["ngd"],
            10.0,
            ">",
        )
    )
    checks.append(
        check(
            "final imbalance: NGD-d / sqrt-NGD-d (sqrt-NGD-d stays closer to balance, > 2)",
            imb["ngd-d"] / imb["sqrt-ngd-d"],
            2.0,
            ">",
        )
    )
    for rule in RULES:
        checks.append(check(f"{LABELS[rule]}: final loss (converged)", summary[rule]["loss_final"], 1e-6))
    axes[0, 0].set_ylabel("weight entries")
    axes[1, 0].set_ylabel("entries of C_1 (-), C_2 (--)")
    axes[2, 0].set_ylabel("drift, imbalance")
    axes[0, 0].legend(*[list(x)[::4] for x in axes[0, 0].get_legend_handles_labels()], fontsize=6)
    axes[2, 0].legend(fontsize=6)
    fig.suptitle(
        f"Huh 2020 Fig. S2: conservation law (eq. 4), d = {depth}, width {width}, small random init "
        f"(largest s.v. {init_scale:g}); C_i = W_i W_i^T - W_(i+1)^T W_(i+1)",
        fontsize=10,
    )
    settings = {
        "width": width,
        "depth": depth,
        "t1": t1,
        "init": "small",
        "init_largest_singular_value": init_scale,
        "teacher": "random_teacher(width, width), spectrum 2, 1; whitened inputs",
        "saves": saves,
        "seed": seed,
        "summary": summary,
        "note": "the paper gives no sizes beyond the caption's '3-layer network (D = 2)'; read as depth 3, "
        "width 2. Fast and default differ only in the number of saves.",
    }
    return Reproduction("curvature-figS2", fig, checks, settings, arrays)
