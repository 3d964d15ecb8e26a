"""``dlnsim run`` (one learning rule) and ``dlnsim compare`` (several rules from the same task and
initial weights) on a deep linear net."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from .._checks import DynamicsBlowUpError
from .._rules import rule_q
from ._boundary import claim, cli_words, fail, write_json
from ._linear import (
    check_curvature,
    check_linear_resources,
    print_table,
    rule_field,
    run_rule,
    save_npz,
    setup_from,
    stop_note,
    trajectory_bytes,
)
from ._options import (
    RULE_LIST_DEFAULT,
    Eps,
    EpsForEntry,
    Overwrite,
    Progress,
    Q,
    QForEntries,
    Rule,
    RuleList,
    SetupOptions,
    SolveOptions,
    check_unused,
    out_option,
    split_rules,
    with_option_groups,
)


@with_option_groups
def run(
    ctx: typer.Context,
    rule: Rule = "sqrt-ngd",
    q: Q = None,
    eps: Eps = None,
    setup: SetupOptions = SetupOptions(),
    solve: SolveOptions = SolveOptions(),
    overwrite: Overwrite = False,
    out: Annotated[Path | None, out_option("Output directory (default runs/<rule>-d<depth>).")] = None,
    progress: Progress = True,
) -> None:
    """Integrate one learning rule and write summary.json, trajectory.npz and plots."""
    try:
        solve.check()
        field = rule_field(rule, q, eps, solve.curvature)
        check_linear_resources("this run", setup, solve, rule=rule, q=q)
        built = setup_from(setup)
        check_curvature(solve.curvature, built.net.widths)
        out = Path(out) if out is not None else Path("runs") / f"{rule}-d{built.net.depth}"
        target = claim(ctx, out, overwrite, "dlnsim run", trajectory_bytes(built.net.widths, solve.saves))
    except ValueError as err:
        fail(str(err))
    try:
        traj, summary, theory = run_rule(
            built, rule, field, setup, solve, q=rule_q(rule, q), eps=eps, init=setup.init,
            progress=progress, analytic=setup.init == "aligned",
        )  # fmt: skip
    except DynamicsBlowUpError as err:
        fail(cli_words(str(err)), code=1)
    title = f"{rule}, d={traj.depth}, widths {list(traj.widths)}; {built.description}"
    from ._figures import plot_loss, plot_modes  # matplotlib loads only when a command draws

    with target.writing() as tmp:
        write_json(tmp / "summary.json", summary)
        save_npz(tmp / "trajectory.npz", traj, built)
        plot_loss([traj], str(tmp / "loss.png"), title=title)
        plot_modes([traj], str(tmp / "modes.png"), title=title, theory=[theory])
    print_table([summary])
    note = stop_note(summary, solve)
    if note is not None:
        typer.echo(note)
    typer.echo(f"wrote {out}/summary.json, trajectory.npz, loss.png, modes.png")


@with_option_groups
def compare(
    ctx: typer.Context,
    rules: RuleList = RULE_LIST_DEFAULT,
    q: QForEntries = None,
    eps: EpsForEntry = None,
    setup: SetupOptions = SetupOptions(),
    solve: SolveOptions = SolveOptions(),
    overwrite: Overwrite = False,
    analytic: Annotated[
        bool,
        typer.Option("--analytic", help="Aligned init; integrate the singular-mode ODEs beside each run."),
    ] = False,
    out: Annotated[Path, out_option("Output directory.")] = Path("runs/compare"),
    progress: Progress = True,
) -> None:
    """Run several rules from the same task and initial weights; overlay plots and a table."""
    names = split_rules(rules)
    try:
        if analytic and setup.init not in ("small", "aligned"):
            raise ValueError(
                f"--analytic uses the aligned init; it cannot be combined with --init {setup.init}"
            )
        setup = dataclasses.replace(setup, init="aligned" if analytic else setup.init)
        if not names:
            raise ValueError("--rules needs at least one rule name")
        if len(set(names)) != len(names):
            raise ValueError(f"--rules lists a rule twice: {rules}")
        solve.check()
        fields = {n: rule_field(n, q, eps, solve.curvature, strict=False) for n in names}
        check_linear_resources("this comparison", setup, solve, rule=names, q=q)
        built = setup_from(setup)
        check_curvature(solve.curvature, built.net.widths)
        check_unused(names, q=q, eps=eps)
        target = claim(
            ctx, out, overwrite, "dlnsim compare", trajectory_bytes(built.net.widths, solve.saves, len(names))
        )
    except ValueError as err:
        fail(str(err))
    trajs, rows, theories, failures = [], [], [], {}
    for name in names:
        qq = q if name in ("qngd", "qngd-d") else None
        try:
            traj, row, theory = run_rule(
                built, name, fields[name], setup, solve, q=rule_q(name, qq),
                eps=eps if name == "damped-ngd" else None, init=setup.init, progress=progress,
                analytic=analytic,
            )  # fmt: skip
        except DynamicsBlowUpError as err:
            failures[name] = {"time": err.time, "reason": err.reason, "hint": err.hint}
            typer.echo(f"{name}: {cli_words(str(err))}", err=True)
            continue
        trajs.append(traj)
        rows.append(row)
        theories.append(theory)
    title = f"d={built.net.depth}, widths {list(built.net.widths)}; {built.description}"
    from ._figures import plot_loss, plot_modes  # matplotlib loads only when a command draws

    with target.writing() as tmp:
        write_json(tmp / "summary.json", {"rules": rows, "failed": failures})
        if trajs:
            (tmp / "trajectories").mkdir()
            for traj in trajs:
                save_npz(tmp / "trajectories" / f"{traj.rule}.npz", traj, built)
            plot_loss(trajs, str(tmp / "loss.png"), title=title)
            plot_modes(trajs, str(tmp / "modes.png"), title=title, theory=theories)
    if rows:
        print_table(rows)
        typer.echo("time to half of each mode's strength (strongest modes first):")
        for r in rows:
            half = ", ".join("-" if h is None else f"{h:.3g}" for h in r["mode_half_times"][:6])
            typer.echo(f"  {r['rule']:<12} {half}")
    typer.echo(f"wrote {out}/summary.json, loss.png, modes.png, trajectories/")
    if failures:
        raise typer.Exit(1)


__all__ = ["compare", "run"]
