"""``dlnsim flow``: a curvature-corrected flow of a wide MLP in continuous time (SGD, NGD, q-NGD,
sqrt-NGD, damped NGD with any Fisher approximation), set against the NTK theory (Karakida & Osawa
2020 in the limit of small eta; :mod:`dlnsim.wide._flow_theory`)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated

import jax.random as jr
import numpy as np
import typer

from .._checks import DynamicsBlowUpError, check_depth, check_integer, check_nonnegative, check_positive
from .._resources import wide_widths
from ..wide import (
    FLOW_RULES,
    MLP,
    fisher_class,
    flow_field,
    flow_theory,
    simulate_flow,
    synthetic_task,
)
from ._boundary import check_seed, claim, cli_words, fail, write_json
from ._options import Overwrite, out_option


def _check_options(*, rule, fisher, depth, width, samples, t1, saves, q, rho) -> None:
    """One-line ValueErrors for the options of ``dlnsim flow``."""
    if rule not in FLOW_RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(FLOW_RULES)}")
    fisher_class(fisher)
    check_depth(depth)
    check_integer("width", width, 1)
    check_integer("samples", samples, 1)
    check_integer("saves", saves, 2)
    check_positive("t1", t1)
    if rho is not None:
        check_nonnegative("rho", rho)
    if q is not None and rule != "qngd":
        raise ValueError(f"--q applies only to --rule qngd, not {rule!r}")


def residual_figure(times, residuals, theory, title: str, theory_name: str):
    """|f_t - y| per training sample on a log axis, measured (dots) and theory (lines)."""
    from matplotlib.figure import Figure  # matplotlib loads only when a command draws

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    res = np.abs(residuals.reshape(len(times), -1))
    floor = 1e-16 * max(float(res.max()), 1e-300)
    for k in range(res.shape[1]):
        (line,) = ax.semilogy(times, np.maximum(res[:, k], floor), "o", ms=3)
        if theory is not None:
            th = np.abs(theory.reshape(len(times), -1)[:, k])
            ax.semilogy(times, np.maximum(th, floor), "-", color=line.get_color(), lw=1)
    ax.set(xlabel="time t", ylabel="|f_t(x_n) - y_n|", title=title)
    ax.plot([], [], "ko", ms=3, label="measured")
    if theory is not None:
        ax.plot([], [], "k-", lw=1, label=f"theory: {theory_name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def flow(
    ctx: typer.Context,
    rule: Annotated[str, typer.Option(help="sgd | ngd | qngd | sqrt-ngd | damped-ngd.")] = "sqrt-ngd",
    fisher: Annotated[
        str, typer.Option(help="exact | bd | tri-diagonal | kfac | unit-wise | diagonal | quasi-diagonal.")
    ] = "exact",
    q: Annotated[
        float | None, typer.Option(help="Curvature power for --rule qngd (q >= 1; inf = sgd).")
    ] = None,
    rho: Annotated[
        float | None, typer.Option(help="Damping rho >= 0 of the Fisher (damped-ngd needs rho > 0).")
    ] = None,
    activation: Annotated[str, typer.Option(help="relu | tanh | erf | shifted-relu | identity.")] = "tanh",
    width: Annotated[int, typer.Option(help="Width M of every hidden layer.")] = 512,
    depth: Annotated[int, typer.Option(help="Number of weight layers L (>= 1).")] = 3,
    samples: Annotated[int, typer.Option(help="Training samples N (synthetic Gaussian inputs, M0 = 8).")] = 8,
    t1: Annotated[float, typer.Option(help="Final time of the flow.")] = 3.0,
    saves: Annotated[int, typer.Option(help="Number of evenly spaced save times in [0, t1] (>= 2).")] = 61,
    seed: Annotated[int, typer.Option(help="Seed for the data and the initial weights (0 to 2^63 - 1).")] = 0,
    out: Annotated[Path | None, out_option("Output directory (default runs/flow-<rule>-<fisher>).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Integrate a curvature-corrected flow of a wide MLP, -(G~ + rho I)^(-1/q) grad L, against the NTK
    theory. Writes summary.json, trajectory.npz and residual.png."""
    try:
        _check_options(rule=rule, fisher=fisher, depth=depth, width=width, samples=samples, t1=t1,
                       saves=saves, q=q, rho=rho)  # fmt: skip
        field = flow_field(rule, fisher=fisher, q=q, rho=rho)
        k_data, k_net = jr.split(jr.PRNGKey(check_seed(seed)))
        task = synthetic_task(k_data, samples, 8, test_samples=16)
        net = MLP(wide_widths(depth, width, 8, 1), activation, key=k_net)
        field.fisher.check_depth(depth)
        out = Path(out) if out is not None else Path("runs") / f"flow-{rule}-{fisher}"
        target = claim(ctx, out, overwrite, "dlnsim flow", 16 * saves * (samples + 16) + (2 << 20))
    except ValueError as err:
        fail(str(err))
    start = time.perf_counter()
    times = np.linspace(0.0, t1, saves)
    try:
        traj = simulate_flow(net, field, task, t1, saveat=times)
        theory, theory_test, theory_name = flow_theory(field, net, task, times)
    except DynamicsBlowUpError as err:
        fail(cli_words(str(err)), code=1)
    except ValueError as err:
        fail(str(err))
    deviation = None if theory is None else float(np.abs(traj.residuals - theory).max())
    summary = {
        "rule": rule,
        "fisher": fisher,
        "q": None if math.isinf(field.q) else float(field.q),
        "rho": float(field.rho),
        "activation": activation,
        "depth": depth,
        "width": width,
        "samples": samples,
        "t1": t1,
        "seed": seed,
        "task": task.description,
        "theory": theory_name,
        "max_deviation_from_theory": deviation,
        "train_loss": traj.train_loss.tolist(),
        "test_loss": traj.test_loss.tolist(),
        "solver_steps": traj.num_steps,
        "wall_time_s": round(time.perf_counter() - start, 3),
    }
    arrays = {"times": traj.times, "residuals": traj.residuals, "train_loss": traj.train_loss,
              "test_outputs": traj.test_outputs, "test_loss": traj.test_loss}  # fmt: skip
    if theory is not None:
        arrays["theory_residuals"] = theory
    if theory_test is not None:
        arrays["theory_test_outputs"] = theory_test
    title = f"{rule} ({fisher}), L={depth}, M={width}, N={samples}, {activation}"
    with target.writing() as tmp:
        write_json(tmp / "summary.json", summary)
        np.savez(tmp / "trajectory.npz", **arrays)
        residual_figure(traj.times, traj.residuals, theory, title, theory_name).savefig(
            tmp / "residual.png", dpi=110
        )
    q_text = "inf" if summary["q"] is None else f"{summary['q']:g}"
    typer.echo(
        f"{rule} flow ({fisher} Fisher, q={q_text}, rho={summary['rho']:g}), L={depth}, M={width}, "
        f"N={samples}: train loss {traj.train_loss[0]:.3e} -> {traj.train_loss[-1]:.3e} at t={t1:g}; "
        + (
            "no theory for this setting"
            if deviation is None
            else f"max deviation from theory {deviation:.3e}"
        )
    )
    typer.echo(f"wrote {out}/summary.json, trajectory.npz, residual.png")


__all__ = ["flow", "residual_figure"]
