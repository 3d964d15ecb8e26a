"""Huh 2020, Figs. 1 and 2: phase portraits of one singular mode under the five rules, and the
balanced map learning curves for several stiffness values p (eqs. 7, 12-16, 20-22, 24-26)."""

from __future__ import annotations

import math

import numpy as np

from .._experiments import Reproduction, check, new_figure, register
from .curvature_common import _COLORS, LABELS, RULES, SOURCE, _log_grid, _rule_q

# ---------------------------------------------------------------------------------------------
# Fig. 1: phase portraits of one mode of a d = 2 net


@register(
    "curvature-fig1",
    title="phase portraits of one mode of a d = 2 net under SGD, NGD, sqrt-NGD, NGD-d, sqrt-NGD-d",
    source=f"{SOURCE}, Fig. 1 (eqs. 7, 12-16, 24-26)",
)
def fig1(*, fast: bool, seed: int) -> Reproduction:
    """Huh 2020, Fig. 1: the normalised mode field, contours sigma_1 sigma_2, invariant paths and one
    trajectory per rule with markers at equal times; beside it, aligned full-matrix runs.

    The full-matrix nets have widths (2, 2, 2): mode 1 starts at the plotted (sigma_1, sigma_2), mode
    2 elsewhere, so the run also tests that the modes decouple. Checks: the full-matrix runs keep
    eq. 7 (full rules) / eq. 25 (block rules) invariants, follow the mode ODE, NGD and NGD-d reach
    the same sigma_1 sigma_2 at equal times and follow sigma* + (sigma_0 - sigma*) e^(-t) (eq. 12),
    and sqrt-NGD / sqrt-NGD-d move at speed |sigma_Delta| (eqs. 16, 26).
    """
    import diffrax
    import jax.numpy as jnp
    import jax.random as jr

    from .. import analytic
    from .._models import DeepLinearNet
    from .._plotting import draw_phase_portraits
    from .._rules import vector_field
    from .._simulation import simulate
    from .._tasks import Task, random_teacher

    sigma_star, start, t1 = 1.0, (0.25, 1.3), 4.0
    marker_times = (0.25, 0.5, 1.0, 2.0)
    second_mode = (0.5, 0.2)  # (sigma_1, sigma_2) of the full-matrix net's second mode, sigma* = 0.5
    key_teacher, key_net = jr.split(jr.PRNGKey(seed))
    teacher = random_teacher(key_teacher, 2, 2, spectrum=[sigma_star, 0.5 * sigma_star])
    task = Task(teacher)
    layer_sv = np.array([[start[0], second_mode[0]], [start[1], second_mode[1]]])
    net = DeepLinearNet((2, 2, 2), key=key_net, init="aligned", teacher=teacher, singular_values=layer_sv)

    fig, axes = new_figure(2, 5, panel_size=(3.3, 3.3))
    fields = [(LABELS[r], analytic.mode_field_of(vector_field(r))) for r in RULES]
    markers, ode_ts, ode_paths = draw_phase_portraits(
        axes[0], fields, sigma_star=sigma_star, start=start, t1=t1, marker_times=marker_times
    )
    axes[0, 0].set_ylabel("sigma_2")
    # the full-matrix runs save on the phase portraits' time grid, which contains the marker times
    ts = ode_ts
    marks = np.searchsorted(ts, marker_times)
    frames = analytic.aligned_frames(net.weights, teacher)

    checks, arrays = [], {"times": ts}
    maps, drifts, speeds = {}, {}, {}
    for ax, rule in zip(axes[0], RULES, strict=True):
        traj = simulate(net, rule, task, t1, saveat=diffrax.SaveAt(ts=jnp.asarray(ts)))
        q, block = _rule_q(rule)
        layers = analytic.project_onto_modes(traj.weights, frames)  # (T, d, modes)
        ode = ode_paths[RULES.index(rule)]  # the mode ODE from the same start, on the same grid
        inv = np.asarray(analytic.mode_invariants(np.moveaxis(layers, 0, -1), q, block))  # (d-1, m, T)
        drift = np.abs(inv - inv[..., :1]).max(axis=(0, 1)) / np.abs(inv[..., 0]).max()
        drifts[rule] = drift
        invariant = (
            "eq. 25: sigma_1/sigma_2"
            if rule == "ngd-d"
            else ("eq. 25: |s1|^a - |s2|^a" if block else "eq. 7: sigma_1^2 - sigma_2^2")
        )
        checks.append(
            check(f"{LABELS[rule]}: full-matrix drift of the {invariant} (relative)", drift.max(), 1e-7)
        )
        checks.append(
            check(
                f"{LABELS[rule]}: max |full-matrix (sigma_1, sigma_2) - mode ODE| / max sigma_i",
                np.abs(layers[:, :, 0] - ode).max() / np.abs(ode).max(),
                1e-6,
            )
        )
        maps[rule] = layers[:, 0, 0] * layers[:, 1, 0]
        sigma_delta = np.sqrt(2.0 * traj.loss)  # sqrt(sum_k sigma_Delta,k^2) with Sigma_x = I
        speeds[rule] = traj.parameter_speed / np.where(sigma_delta > 0, sigma_delta, np.nan)
        arrays[f"{rule}_layer_values"] = layers
        arrays[f"{rule}_mode_ode_path"] = ode
        at = np.concatenate([[0], marks, [ts.size - 1]])
        ax.plot(
            layers[at, 0, 0],
            layers[at, 1, 0],
            "o",
            mfc="none",
            mec="k",
            ms=7,
            mew=1.0,
            label="full matrix at t = 0, markers, t1",
            zorder=6,
        )
        ax.plot([], [], color="tab:blue", lw=1.8, label="mode ODE")
        ax.plot([], [], "o", color="tab:red", ms=4, label=f"t = {', '.join(f'{m:g}' for m in marker_times)}")
        ax.legend(fontsize=6, loc="upper right")
    arrays["mode_ode_times"] = ode_ts

    closed_form = sigma_star + (start[0] * start[1] - sigma_star) * np.exp(-ts)  # eq. 12: NGD map
    checks.append(
        check(
            "NGD vs NGD-d: max |sigma_1 sigma_2| difference at the markers (full matrix)",
            np.abs(maps["ngd"][marks] - maps["ngd-d"][marks]).max(),
            1e-8,
        )
    )
    checks.append(
        check(
            "NGD vs NGD-d: same difference from the mode ODEs (phase-portrait markers)",
            np.abs(np.subtract(markers["NGD"]["map_at_markers"], markers["NGD-d"]["map_at_markers"])).max(),
            1e-8,
        )
    )
    for rule in ("ngd", "ngd-d"):
        checks.append(
            check(
                f"{LABELS[rule]}: max |sigma_1 sigma_2 - (sigma* + (sigma0 - sigma*) e^-t)|",
                np.abs(maps[rule] - closed_form).max(),
                1e-7,
            )
        )
    for rule in ("sqrt-ngd", "sqrt-ngd-d"):
        checks.append(
            check(
                f"{LABELS[rule]}: max | ||dtheta/dt|| / |sigma_Delta| - 1 | (eqs. 16, 26)",
                np.nanmax(np.abs(speeds[rule] - 1.0)),
                1e-6,
            )
        )
    # footnote 7 (Jensen): NGD-d moves the parameters faster than NGD along the whole run
    checks.append(
        check(
            "NGD-d / NGD parameter speed, minimum over the run (footnote 7, >= 1)",
            np.nanmin(speeds["ngd-d"] / speeds["ngd"]),
            1.0,
            ">=",
        )
    )
    # SGD's normalised speed grows with the coupling (||j|| = ||sigma||): not constant
    checks.append(
        check(
            "SGD: max/min of ||dtheta/dt|| / |sigma_Delta| along the run (not constant)",
            np.nanmax(speeds["sgd"]) / np.nanmin(speeds["sgd"]),
            1.05,
            ">",
        )
    )

    ax = axes[1, 0]
    for rule in RULES:
        ax.plot(ts, maps[rule], color=_COLORS[rule], label=LABELS[rule])
    ax.plot(ts, closed_form, "k:", lw=2, label="eq. 12 closed form")
    ax.axhline(sigma_star, color="k", lw=0.6, ls="--")
    ax.set(xlabel="time t", ylabel="sigma_1 sigma_2 (mode 1)", title="map strength, full matrix")
    ax.legend(fontsize=6)
    ax = axes[1, 1]
    for rule in RULES:
        ax.semilogy(ts[1:], np.maximum(drifts[rule][1:], 1e-17), color=_COLORS[rule], label=LABELS[rule])
    ax.set(xlabel="time t", ylabel="relative invariant drift", title="eq. 7 / eq. 25 invariants")
    ax.legend(fontsize=6)
    ax = axes[1, 2]
    for rule in RULES:
        ax.plot(ts, speeds[rule], color=_COLORS[rule], label=LABELS[rule])
    ax.set(
        xlabel="time t",
        ylabel="||dtheta/dt|| / |sigma_Delta|",
        yscale="log",
        title="normalised speed (sqrt rules: 1)",
    )
    ax.legend(fontsize=6)
    for ax in axes[1, 3:]:
        ax.axis("off")
    axes[1, 3].text(
        0.0,
        0.95,
        "Top: one mode of a d = 2 net, sigma* = 1.\nGrey: field / |sigma_Delta|; grey contours:\n"
        "sigma_1 sigma_2 = const (black: sigma*);\nred lines: invariant paths; blue: mode-ODE\n"
        "trajectory, red dots at equal times;\nopen circles: aligned full-matrix run.",
        fontsize=7,
        va="top",
        transform=axes[1, 3].transAxes,
    )
    fig.suptitle("Huh 2020 Fig. 1: learning dynamics of one singular mode (d = 2)", fontsize=11)
    for rule in RULES:
        arrays[f"{rule}_map"] = maps[rule]
        arrays[f"{rule}_invariant_drift"] = drifts[rule]
        arrays[f"{rule}_normalised_speed"] = speeds[rule]
    settings = {
        "sigma_star": sigma_star,
        "start": list(start),
        "t1": t1,
        "marker_times": list(marker_times),
        "full_matrix_widths": [2, 2, 2],
        "full_matrix_second_mode": list(second_mode),
        "full_matrix_second_sigma_star": 0.5 * sigma_star,
        "saves": int(ts.size),
        "seed": seed,
        "markers": markers,
        "note": "the paper's figure shows one mode; the full-matrix check nets are this small at both "
        "sizes, so fast and default runs are the same",
    }
    return Reproduction("curvature-fig1", fig, checks, settings, arrays)


# ---------------------------------------------------------------------------------------------
# Fig. 2: balanced map learning curves for several stiffness values p (eq. 21)

_FIG2_CASES = ((4, 1.0), (2, 2.0), (4, 2.0), (2, math.inf), (4, math.inf))  # p = 0, 1/2, 3/4, 1, 3/2
_FIG2_FAST_CASES = ((4, 1.0), (4, 2.0), (4, math.inf))  # p = 0, 3/4, 3/2: one per rule


@register(
    "curvature-fig2",
    title="map learning curves and loss for stiffness p = 0, 1/2, 3/4, 1, 3/2; half-max times ~ sigma*^-p",
    source=f"{SOURCE}, Fig. 2 (eqs. 20-22)",
)
def fig2(*, fast: bool, seed: int) -> Reproduction:
    """Huh 2020, Fig. 2: the balanced map dynamics sigma' = -eta~ (sigma - sigma*) sigma^p (eq. 21)
    for several stiffness values p = 2(d-1)(q-1)/(dq), with half-max points and loss profiles.

    Each p is one (depth, rule) pair: NGD d = 4 (p = 0), sqrt-NGD d = 2 (1/2) and d = 4 (3/4), SGD
    d = 2 (1) and d = 4 (3/2). Measured curves are full-matrix runs from balanced, aligned weights
    (one mode per teacher singular value sigma*); theory is ``analytic.balanced_map_trajectory``.
    Initial map strengths: sigma0 = sigma*/100 for p >= 1 as in the paper; for p < 1 the paper
    starts at 0, which the full-matrix rules cannot leave (zero weights give zero update), so the
    runs start at sigma0 = 1e-4 sigma* and the theory uses the same sigma0.
    """
    import diffrax
    import jax.numpy as jnp
    import jax.random as jr

    from .. import analytic
    from .._models import DeepLinearNet
    from .._simulation import simulate
    from .._tasks import Task, random_teacher

    sigma_stars = np.array([3.0, 2.0, 1.0]) if fast else np.array([4.0, 3.0, 2.0, 1.0, 0.5])
    saves = 600 if fast else 1500
    n = sigma_stars.size
    key_teacher, key_net = jr.split(jr.PRNGKey(seed))
    teacher = random_teacher(key_teacher, n, n, spectrum=sigma_stars)
    task = Task(teacher)
    cases_run = _FIG2_FAST_CASES if fast else _FIG2_CASES
    fig, axes = new_figure(2, len(cases_run), panel_size=(3.3, 3.0))
    checks, arrays, cases = [], {"sigma_star": sigma_stars}, []
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for col, (depth, q) in enumerate(cases_run):
        rule = {1.0: "ngd", 2.0: "sqrt-ngd", math.inf: "sgd"}[q]
        p = analytic.stiffness(depth, q)
        ratio = 1e-2 if p >= 1 else 1e-4
        sigma0 = ratio * sigma_stars
        half_theory = np.array(
            [
                analytic.half_max_time(depth=depth, q=q, sigma_star=s, sigma0=s0)
                for s, s0 in zip(sigma_stars, sigma0, strict=True)
            ]
        )
        t1 = 4.0 * half_theory.max() + 6.0 / analytic.calibrated_learning_rate(depth, q)  # incl. the tail
        ts = _log_grid(1e-3 * half_theory.min(), t1, saves)
        net = DeepLinearNet(
            (n,) * (depth + 1),
            key=jr.fold_in(key_net, col),
            init="aligned",
            teacher=teacher,
            singular_values=sigma0 ** (1.0 / depth),
        )
        traj = simulate(net, rule, task, t1, saveat=diffrax.SaveAt(ts=jnp.asarray(ts)))
        theory = np.stack(
            [
                analytic.balanced_map_trajectory(traj.times, depth=depth, q=q, sigma_star=s, sigma0=s0)
                for s, s0 in zip(sigma_stars, sigma0, strict=True)
            ],
            axis=1,
        )
        measured = traj.mode_strengths
        half_measured = traj.half_times()
        deviation = np.abs(measured - theory).max() / sigma_stars.max()
        half_error = np.abs(half_measured / half_theory - 1.0).max()
        slope = float(np.polyfit(np.log(sigma_stars), np.log(half_measured), 1)[0])
        label = f"p = {p:g} ({LABELS[rule]}, d = {depth})"
        checks += [
            check(f"{label}: max |sigma(t) full matrix - eq. 21| / max sigma*", deviation, 1e-6),
            check(f"{label}: max relative error of half-max times vs half_max_time", half_error, 1e-3),
            check(f"{label}: |fitted exponent of t_half vs sigma* - (-p)|", abs(slope + p), 1e-3),
        ]
        cases.append(
            {
                "depth": depth,
                "q": q,
                "rule": rule,
                "p": p,
                "sigma0_over_sigma_star": ratio,
                "t1": t1,
                "half_max_theory": half_theory,
                "half_max_measured": half_measured,
                "fitted_exponent": slope,
                "max_deviation": deviation,
            }
        )
        keep = traj.times > 0
        loss_theory = 0.5 * np.sum((theory - sigma_stars) ** 2, axis=1)
        top, bottom = axes[0, col], axes[1, col]
        for k, s in enumerate(sigma_stars):
            c = colors[k % len(colors)]
            top.plot(
                traj.times[keep],
                measured[keep, k],
                color=c,
                lw=2.2,
                alpha=0.55,
                label="full matrix" if k == 0 else None,
            )
            top.plot(
                traj.times[keep],
                theory[keep, k],
                ":",
                color="k",
                lw=1.2,
                label="eq. 21 (exact)" if k == 0 else None,
            )
            top.axhline(s, color=c, ls="--", lw=0.7)
            top.plot(
                half_theory[k],
                0.5 * s,
                "o",
                mfc="none",
                mec="k",
                ms=6,
                label="half-max (theory)" if k == 0 else None,
            )
        top.set(
            xscale="log",
            xlabel="time t",
            title=f"{label}\nt_half ~ sigma*^{-p:g}: fit {round(slope, 4) + 0.0:.4f}",
        )
        top.title.set_fontsize(8)
        bottom.plot(
            traj.times[keep], traj.loss[keep], color="tab:gray", lw=2.2, alpha=0.7, label="full matrix"
        )
        bottom.plot(traj.times[keep], loss_theory[keep], "k:", lw=1.2, label="eq. 21 (exact)")
        bottom.set(xscale="log", yscale="log", xlabel="time t", ylim=(1e-10, None))
        for key, value in (
            ("times", traj.times),
            ("measured", measured),
            ("theory", theory),
            ("loss", traj.loss),
            ("loss_theory", loss_theory),
        ):
            arrays[f"p{p:g}_{key}"] = value
    axes[0, 0].set_ylabel("map mode strength sigma(t)")
    axes[1, 0].set_ylabel("loss 1/2 sum_k (sigma_k - sigma*_k)^2")
    axes[0, 0].legend(fontsize=6, loc="upper left")
    axes[1, 0].legend(fontsize=6, loc="lower left")
    fig.suptitle(
        "Huh 2020 Fig. 2: balanced map dynamics (eq. 21), sigma* = "
        f"{', '.join(f'{s:g}' for s in sigma_stars)} (dashed), eta = 1; top: map modes, bottom: loss",
        fontsize=10,
    )
    settings = {
        "sigma_star": sigma_stars,
        "saves": saves,
        "seed": seed,
        "cases": cases,
        "initial_condition": "sigma0 = sigma*/100 for p >= 1 (paper); sigma0 = 1e-4 sigma* for p < 1 "
        "(paper: 0, which full-matrix weights cannot leave); theory curves use the same sigma0",
        "time_axis": "log (the paper's panels span each p's own time range)",
        "fast": "p = 0, 3/4, 3/2 only (d = 4), 3 modes (sigma* = 3, 2, 1), 600 saves; default: five p, "
        "5 modes, 1500 saves"
        if fast
        else None,
    }
    return Reproduction("curvature-fig2", fig, checks, settings, arrays)
