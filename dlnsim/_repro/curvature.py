"""Reproductions of the figures of Huh 2020 ("Curvature-corrected learning dynamics in deep linear
neural networks"): Figs. 1-3 and S.I. Figs. S1-S2, registered with ``dlnsim reproduce``.

Each ``run(fast, seed)`` is a thin layer over the public API: :func:`dlnsim.simulate`,
:func:`dlnsim.vector_field`, :mod:`dlnsim.analytic` (mode fields, invariants, frames, eq. 21,
scaling laws), :func:`dlnsim.student_teacher`, and the axes-level plotting helpers behind
``dlnsim phase`` and ``dlnsim compare``.
"""

from __future__ import annotations

import math

import numpy as np

from .._experiments import Reproduction, check, new_figure, register

SOURCE = "Huh 2020"
RULES = ("sgd", "ngd", "sqrt-ngd", "ngd-d", "sqrt-ngd-d")
LABELS = {"sgd": "SGD", "ngd": "NGD", "sqrt-ngd": "sqrt-NGD", "ngd-d": "NGD-d", "sqrt-ngd-d": "sqrt-NGD-d"}
_COLORS = {
    "sgd": "tab:blue",
    "ngd": "tab:orange",
    "sqrt-ngd": "tab:green",
    "ngd-d": "tab:red",
    "sqrt-ngd-d": "tab:purple",
}


def _rule_q(rule: str) -> tuple[float, bool]:
    """(q, block_diagonal) of one of the five rules."""
    q = {"sgd": math.inf, "ngd": 1.0, "sqrt-ngd": 2.0, "ngd-d": 1.0, "sqrt-ngd-d": 2.0}[rule]
    return q, rule.endswith("-d")


def _log_grid(first: float, t1: float, n: int) -> np.ndarray:
    """0 followed by n - 1 log-spaced times from ``first`` to exactly ``t1``."""
    ts = np.concatenate([[0.0], np.geomspace(first, t1, n - 1)])
    ts[-1] = t1
    return ts


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


# ---------------------------------------------------------------------------------------------
# Fig. 3: generalization dynamics in the student-teacher task


@register(
    "curvature-fig3",
    title="student-teacher generalization: train/test loss and mode strengths for five rules",
    source=f"{SOURCE}, Fig. 3 (sec. 4)",
)
def fig3(*, fast: bool, seed: int) -> Reproduction:
    """Huh 2020, Fig. 3: a rank-3 teacher (spectrum 3, 2, 1), SNR = 10, P = N samples, a depth-4
    student of width N = 16 from small random weights (largest singular value 0.05) trained by SGD,
    NGD, NGD-d, sqrt-NGD and sqrt-NGD-d: train and test loss, and the net's input-output
    correlation projected on the singular basis of the data's (Sigma_yx).

    Continuous-time flows with the exact pseudo-inverse (no damping, no clipping), run on a log
    time grid until the train loss is within 1e-6 of its minimum (relative to its initial excess)
    or t_max. The checks state the paper's claims as inequalities.
    """
    import diffrax
    import jax.numpy as jnp
    import jax.random as jr

    from .._models import DeepLinearNet, network_map
    from .._plotting import draw_loss, draw_modes
    from .._simulation import simulate
    from .._tasks import student_teacher

    width = 8 if fast else 16
    depth, rank, snr, loss_tol = 4, 3, 10.0, 1e-6
    # the paper's init at both sizes: at N = 8 a larger init (0.1) would shorten SGD's plateaus 4x,
    # but NGD-d's half times then spread by 4 % over the resolved modes (0.4 % at 0.05)
    init_scale = 0.05
    t_max = {"sgd": 3e3 if fast else 1e4}
    default_t_max, saves = 1e3, 300 if fast else 600
    key_task, key_net = jr.split(jr.PRNGKey(seed))
    data = student_teacher(key_task, width=width, rank=rank, snr=snr, samples=width)
    task = data.task
    net = DeepLinearNet((width,) * (depth + 1), key=key_net, init="small", scale=init_scale)
    loss0 = float(task.loss(network_map(net.weights)))
    trajs = {}
    for rule in RULES:
        end = t_max.get(rule, default_t_max)
        ts = _log_grid(1e-3, end, saves)
        traj = simulate(
            net,
            rule,
            data,
            end,
            saveat=diffrax.SaveAt(ts=jnp.asarray(ts)),
            loss_threshold=loss_tol * loss0,
            max_steps=4_000_000,
        )
        trajs[rule] = traj
    _, s_data, _ = task.mode_basis()
    s_data = np.asarray(s_data)
    half = {r: trajs[r].half_times() for r in RULES}
    test_min = {r: float(trajs[r].test_loss.min()) for r in RULES}
    t_test_min = {r: float(trajs[r].times[np.argmin(trajs[r].test_loss)]) for r in RULES}
    test_final = {r: float(trajs[r].test_loss[-1]) for r in RULES}
    excess = {r: float(trajs[r].loss[-1]) / loss0 for r in RULES}

    converging = [r for r in RULES if r != "sgd"]
    checks = []
    for r in converging:
        checks.append(
            check(f"{LABELS[r]}: final train-loss excess / initial (converged)", excess[r], 1.01 * loss_tol)
        )
    test_ls = float(data.test_loss(task.teacher))  # the least-squares (fully overfitted) map
    spread = max(abs(test_final[r] / test_ls - 1.0) for r in converging)
    checks.append(
        check(
            "NGD, NGD-d, sqrt-NGD, sqrt-NGD-d end at the least-squares map's test loss: "
            "max relative difference",
            spread,
            1e-2,
        )
    )
    # SGD from small init is too stiff to integrate to convergence (see settings): it must have
    # learned the signal modes and passed its early-stopping optimum by t_max
    checks.append(
        check(
            f"SGD: signal modes learned by t_max: max t_half(k <= {rank}) / t_max",
            np.max(half["sgd"][:rank]) / t_max["sgd"],
            1.0,
            "<",
        )
    )
    checks.append(
        check(
            "SGD: test loss at t_max / its minimum (overfitting under way, > 1)",
            test_final["sgd"] / test_min["sgd"],
            1.0,
            ">",
        )
    )
    for better, worse in (("sqrt-ngd", "ngd"), ("sqrt-ngd-d", "ngd-d"), ("sgd", "ngd")):
        ratio = test_min[better] / test_min[worse]
        checks.append(check(f"min test loss: {LABELS[better]} / {LABELS[worse]} (< 1)", ratio, 1.0, "<"))
    # modes with targets below 1 % of the strongest are left out: their half times are set by
    # cross-talk at the 1e-4 level (NGD-d's two weakest modes at N = 8 reach half strength at 0.3, 3.1)
    resolved = s_data >= 1e-2 * s_data[0]
    for r in ("ngd", "ngd-d"):
        h = half[r][resolved]
        checks.append(
            check(
                f"{LABELS[r]}: all {h.size} modes with s_k >= 1% s_1 at once: max/min half time",
                h.max() / h.min(),
                1.05,
            )
        )
    for r in ("sgd", "sqrt-ngd", "sqrt-ngd-d"):
        h = np.where(np.isfinite(half[r]), half[r], t_max.get(r, default_t_max))  # never: at least t_max
        checks.append(
            check(
                f"{LABELS[r]}: strong modes first: min t_half(k+1)/t_half(k), signal modes",
                np.min(h[1:rank] / h[: rank - 1]),
                1.0,
                ">",
            )
        )
        checks.append(
            check(
                f"{LABELS[r]}: noise after signal: t_half(first noise; t_max if never) / t_half(last signal)",
                h[rank] / h[rank - 1],
                2.0,
                ">",
            )
        )
    checks.append(
        check(
            "early stopping: t(min test) sqrt-NGD / SGD (< 0.1)",
            t_test_min["sqrt-ngd"] / t_test_min["sgd"],
            0.1,
            "<",
        )
    )

    fig, axes = new_figure(2, 5, panel_size=(3.4, 3.1))
    ax = axes[0, 0]
    idx = np.arange(1, s_data.size + 1)
    ax.bar(idx, s_data, color=["tab:blue" if k < rank else "0.6" for k in range(s_data.size)])
    ax.plot(np.arange(1, rank + 1), [3.0, 2.0, 1.0][:rank], "k_", ms=14, mew=2, label="teacher (noise-free)")
    ax.set(xlabel="mode k", ylabel="singular value s_k of Sigma_yx", title="(A) data mode strengths")
    ax.legend(fontsize=7)
    ordered = [trajs[r] for r in RULES]
    draw_loss(axes[0, 1], axes[0, 2], ordered)
    axes[0, 2].axhline(test_ls, color="k", ls="--", lw=0.8)
    axes[0, 1].set_ylim(1e-8 * float(data.train_loss(network_map(net.weights))), None)
    axes[0, 1].set_title(f"(B) train loss (P = N: minimum {float(data.irreducible_loss):.1g})", fontsize=9)
    axes[0, 2].set_title("(C) test loss (dots: minima; dashed: least squares)", fontsize=9)
    ax = axes[0, 3]
    for r in RULES:
        ax.plot(idx, half[r], "o-", color=_COLORS[r], ms=3, label=LABELS[r])
    ax.axvline(rank + 0.5, color="k", lw=0.6, ls=":")
    ax.set(
        xlabel="mode k (signal | noise)",
        ylabel="time to half strength",
        yscale="log",
        title="mode half-times",
    )
    ax.legend(fontsize=6)
    axes[0, 4].axis("off")
    axes[0, 4].text(
        0.0,
        0.98,
        f"rank-{rank} teacher (3, 2, 1), SNR {snr:g}\nd = {depth}, N = {width}, P = {width} samples\n"
        f"init: largest s.v. {init_scale:g} per layer\nexact pseudo-inverse flows, no damping\n"
        f"stop: train excess <= {loss_tol:g} x initial\n"
        f"t_max: SGD {t_max['sgd']:g}, others {default_t_max:g}",
        fontsize=8,
        va="top",
        transform=axes[0, 4].transAxes,
    )
    draw_modes(axes[1], ordered, max_modes=width)
    for ax, r in zip(axes[1], RULES, strict=True):
        ax.set_title(f"(D) {LABELS[r]}", fontsize=9)
    axes[1, 0].set_ylabel("u_k^T W Sigma_x v_k")
    fig.suptitle("Huh 2020 Fig. 3: curvature correction and generalization (student-teacher)", fontsize=11)

    arrays = {"data_singular_values": s_data}
    for r in RULES:
        tr = trajs[r]
        arrays.update(
            {
                f"{r}_times": tr.times,
                f"{r}_train_loss": tr.train_loss,
                f"{r}_test_loss": tr.test_loss,
                f"{r}_mode_strengths": tr.mode_strengths,
                f"{r}_half_times": half[r],
            }
        )
    settings = {
        "width": width,
        "depth": depth,
        "rank": rank,
        "teacher_spectrum": [3.0, 2.0, 1.0],
        "snr": snr,
        "samples": width,
        "test_samples": 1000,
        "init": "small",
        "init_largest_singular_value": init_scale,
        "seed": seed,
        "loss_tol": loss_tol,
        "t_max": {r: t_max.get(r, default_t_max) for r in RULES},
        "saves": saves,
        "solver": "Tsit5, PID rtol 1e-8 atol 1e-10",
        "irreducible_loss": float(data.irreducible_loss),
        "noise_std": data.noise_std,
        "test_loss_min": test_min,
        "t_test_loss_min": t_test_min,
        "test_loss_final": test_final,
        "test_loss_least_squares": test_ls,
        "half_times": half,
        "stopped_early": {r: trajs[r].stopped_early for r in RULES},
        "deviation_from_paper": "continuous-time flows (eta = 1) with the exact Moore-Penrose pseudo-inverse "
        "of H+ (NGD) and its square root (sqrt-NGD); the paper used discrete steps, Levenberg-Marquardt "
        "damping 1e-5 and update clipping for NGD. SGD from small init is stiff: after its strong modes are "
        "learned, Tsit5 needs steps ~0.05 while the weakest noise modes take t >> 1e4 (157,000 steps to "
        "t = 1e4 at N = 16; implicit solvers with the dense P x P Jacobian are slower still), so SGD "
        "stops at t_max (1e4, fast 3e3) before converging; its checks are the early-stopping claims.",
        "fast": "width N = P = 8 instead of 16, SGD t_max 3e3 instead of 1e4" if fast else None,
    }
    return Reproduction("curvature-fig3", fig, checks, settings, arrays)


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
