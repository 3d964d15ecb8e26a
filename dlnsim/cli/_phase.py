"""``dlnsim phase``: phase portraits of one singular mode of a d = 2 net (Huh 2020, Fig. 1)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from .._analytic import mode_field_of
from .._checks import check_positive
from .._rules import vector_field
from ._boundary import claim, fail, write_json
from ._options import (
    RULE_LIST_DEFAULT,
    EpsForEntry,
    Overwrite,
    QForEntries,
    RuleList,
    check_unused,
    out_option,
    split_rules,
)

# A phase portrait integrates each rule's mode ODE over a grid of starts to t1: the flows reach
# their fixed points by t ~ 10 (Huh 2020, Fig. 1 uses t <= 4), and past 1e6 the plot shows nothing
# new while the solver (and its markers at fixed fractions of t1) leave any useful range.
PHASE_T1_RANGE = (1e-6, 1e6)


def _parse_start(start: str) -> tuple[float, ...]:
    """``--start`` as two positive numbers (sigma_1, sigma_2); ValueError otherwise."""
    try:
        y0 = tuple(float(v) for v in start.split(","))
    except ValueError:
        y0 = ()
    if len(y0) != 2 or not all(math.isfinite(v) and v > 0 for v in y0):
        raise ValueError(f"--start must be two positive numbers like 0.25,1.3, got {start!r}")
    return y0


def phase(
    ctx: typer.Context,
    rules: RuleList = RULE_LIST_DEFAULT,
    q: QForEntries = None,
    eps: EpsForEntry = None,
    sigma_star: Annotated[float, typer.Option(help="The mode's target strength sigma*.")] = 1.0,
    start: Annotated[str, typer.Option(help="Initial (sigma_1, sigma_2).")] = "0.25,1.3",
    t1: Annotated[float, typer.Option(help="Length of each trajectory (at most 1e6).")] = 4.0,
    out: Annotated[Path, out_option("Output directory.")] = Path("runs/phase"),
    overwrite: Overwrite = False,
) -> None:
    """Phase portraits of one mode of a d = 2 net in the (sigma_1, sigma_2) plane (Huh 2020, Fig. 1)."""
    names = split_rules(rules)
    try:
        if not names or len(set(names)) != len(names):
            raise ValueError(f"--rules needs distinct rule names, got {rules!r}")
        fields = [
            (n, mode_field_of(vector_field(
                n, q=q if n in ("qngd", "qngd-d") else None, eps=eps if n == "damped-ngd" else None
            )))
            for n in names
        ]  # fmt: skip
        y0 = _parse_start(start)
        check_positive("sigma-star", sigma_star)
        check_positive("t1", t1)
        if not PHASE_T1_RANGE[0] <= t1 <= PHASE_T1_RANGE[1]:
            raise ValueError(f"--t1 must be from {PHASE_T1_RANGE[0]:g} to {PHASE_T1_RANGE[1]:g}, got {t1!r}")
        check_unused(names, q=q, eps=eps)
        target = claim(ctx, out, overwrite, "dlnsim phase")
    except ValueError as err:
        fail(str(err))
    from ._figures import plot_phase_portraits  # matplotlib loads only when a command draws

    with target.writing() as tmp:
        markers = plot_phase_portraits(fields, str(tmp / "phase.png"), sigma_star=sigma_star, start=y0, t1=t1)
        write_json(tmp / "summary.json", {"sigma_star": sigma_star, "start": list(y0), "rules": markers})
    for name, m in markers.items():
        values = ", ".join(f"{v:.4f}" for v in m["map_at_markers"])
        typer.echo(f"{name:<12} sigma_1 sigma_2 at t = {m['marker_times']}: {values}")
    typer.echo(f"wrote {out}/phase.png, summary.json")


__all__ = ["PHASE_T1_RANGE", "phase"]
