"""Option definitions shared by the commands, and the checks of their values.

Each option is a typer ``Annotated`` alias (its type and help) defined once here. The options of a
deep-linear run (net and task, then integration) are grouped as frozen dataclasses,
:class:`SetupOptions` and :class:`SolveOptions`: a command takes one parameter per group and
:func:`with_option_groups` spreads each group's fields into the command line in place, so every
command that runs a deep linear net has the same options, defaults and help, written once.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from typer.models import OptionInfo

from .._checks import check_positive

TASKS = ("student-teacher", "student-teacher-unwhitened", "teacher")
SOLVERS = ("tsit5", "kvaerno5")
MAX_STEPS = 2_000_000

# Times below this cannot be split into a save grid and plotted on log axes without running
# into float64's subnormal range (2.2e-308); no learning-rule time scale is anywhere near it.
MIN_TIME = 1e-250

# --- options of a learning rule ---------------------------------------------------------------
Rule = Annotated[str, typer.Option(help="Learning rule; see `dlnsim rules`.")]
RuleList = Annotated[str, typer.Option(help="Comma-separated rules.")]
RULE_LIST_DEFAULT = "sgd,ngd,sqrt-ngd,ngd-d,sqrt-ngd-d"
Q = Annotated[float | None, typer.Option(help="Curvature power for qngd / qngd-d (q >= 1; inf = sgd).")]
QForEntries = Annotated[float | None, typer.Option(help="q for qngd / qngd-d entries.")]
Eps = Annotated[float | None, typer.Option(help="Damping for damped-ngd (eps >= 0).")]
EpsForEntry = Annotated[float | None, typer.Option(help="eps for a damped-ngd entry.")]

# --- the net and its task ---------------------------------------------------------------------
Depth = Annotated[int, typer.Option(help="Number of weight layers d (>= 1).")]
Width = Annotated[
    int, typer.Option(help="Width of every layer (input, hidden and output; with --data, the hidden layers).")
]
Widths = Annotated[
    str | None, typer.Option(help="Explicit widths n_0,...,n_d, e.g. 5,3,2,3,4 (overrides --depth/--width).")
]
Init = Annotated[str, typer.Option(help="small | orthogonal | balanced | xavier | aligned.")]
Scale = Annotated[
    float | None,
    typer.Option(help="Init scale: largest singular value for 'small' (default 0.05), else a multiplier."),
]
Seed = Annotated[int, typer.Option(help="Seed for the task and the initial weights (0 to 2^63 - 1).")]
TaskName = Annotated[
    str,
    typer.Option(
        help="student-teacher (Huh 2020 Fig. 3 setting, whitened training inputs, needs --samples >= "
        "the width) | student-teacher-unwhitened (raw Gaussian training inputs) | teacher (noise-free)."
    ),
]
Rank = Annotated[int, typer.Option(help="Teacher rank.")]
Snr = Annotated[float, typer.Option(help="Signal-to-noise ratio of the student-teacher data.")]
Samples = Annotated[int, typer.Option(help="Training samples P of the student-teacher data.")]
Data = Annotated[
    Path | None,
    typer.Option(help="Your own .npz with arrays x (P, n_in) and y (P, n_out); overrides --task."),
]

# --- integration ------------------------------------------------------------------------------
T1 = Annotated[
    float | None,
    typer.Option(help="End time; by default run until the loss reaches --loss-tol x initial or --t-max."),
]
TMax = Annotated[float, typer.Option(help="Longest time for a run to convergence.")]
LossTol = Annotated[float, typer.Option(help="Convergence: stop when loss <= loss_tol x initial loss.")]
Saves = Annotated[int, typer.Option(help="Number of saved times.")]
Curvature = Annotated[
    str,
    typer.Option(
        help="How full rules apply the exact curvature: auto | dense | krylov | balanced "
        "(balanced is exact only for balanced weights with white inputs)."
    ),
]
Solver = Annotated[
    str,
    typer.Option(
        help="ODE solver: tsit5 (explicit, default) | kvaerno5 (implicit, dense Jacobian; fewer steps on "
        "long SGD plateaus of small nets, far slower once P is in the thousands)."
    ),
]
MaxSteps = Annotated[
    int, typer.Option(help="Most solver steps per run; a run that needs more stops with a message.")
]
Progress = Annotated[bool, typer.Option(help="Show a progress bar (tqdm) on solves longer than a second.")]

# --- output -----------------------------------------------------------------------------------
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace an earlier dlnsim result at --out (never anything else).")
]


def out_option(help: str) -> OptionInfo:
    """The ``--out`` option of one command (its default directory differs per command)."""
    return typer.Option(help=help)


@dataclasses.dataclass(frozen=True)
class SetupOptions:
    """The deep linear net and its task (``dlnsim run``, ``compare`` and ``sweep``)."""

    depth: Depth = 4
    width: Width = 16
    widths: Widths = None
    init: Init = "small"
    scale: Scale = None
    seed: Seed = 0
    task: TaskName = "student-teacher"
    rank: Rank = 3
    snr: Snr = 10.0
    samples: Samples = 16
    data: Data = None

    @property
    def task_name(self) -> str:
        """The task as recorded in summaries: ``data`` for a user's file, else ``--task``."""
        return "data" if self.data else self.task


@dataclasses.dataclass(frozen=True)
class SolveOptions:
    """How a deep-linear run is integrated and saved."""

    t1: T1 = None
    t_max: TMax = 1e4
    loss_tol: LossTol = 1e-6
    saves: Saves = 600
    curvature: Curvature = "auto"
    solver: Solver = "tsit5"
    max_steps: MaxSteps = MAX_STEPS

    def check(self) -> None:
        """Refuses (ValueError) non-positive times and tolerances, too few saves, a bad step budget
        and an unknown solver."""
        for name in ("t1", "t_max", "loss_tol"):
            v = getattr(self, name)
            if v is not None:
                check_positive(name.replace("_", "-"), v)
        for name in ("t1", "t_max"):
            v = getattr(self, name)
            if v is not None and v < MIN_TIME:
                raise ValueError(f"--{name.replace('_', '-')} must be >= {MIN_TIME:g}, got {v!r}")
        if int(self.saves) < 2:
            raise ValueError(f"saves must be >= 2, got {self.saves}")
        steps = self.max_steps
        if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
            raise ValueError(f"--max-steps must be an integer >= 1, got {steps!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"--solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")


_OPTION_GROUPS = (SetupOptions, SolveOptions)


def with_option_groups(command: Callable[..., None]) -> Callable[..., None]:
    """Spreads each parameter of ``command`` annotated with an option group (:class:`SetupOptions`,
    :class:`SolveOptions`) into that group's options, in place, for typer; the command receives
    the group as one frozen dataclass."""
    signature = inspect.signature(command, eval_str=True)
    groups = {n: p.annotation for n, p in signature.parameters.items() if p.annotation in _OPTION_GROUPS}
    parameters = []
    for name, param in signature.parameters.items():
        if name not in groups:
            parameters.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        hints = typing.get_type_hints(groups[name], include_extras=True)
        for f in dataclasses.fields(groups[name]):
            parameters.append(
                inspect.Parameter(
                    f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]
                )
            )

    @functools.wraps(command)
    def spread(**values):
        for name, group in groups.items():
            values[name] = group(**{f.name: values.pop(f.name) for f in dataclasses.fields(group)})
        return command(**values)

    spread.__signature__ = signature.replace(parameters=parameters)
    spread.__annotations__ = {p.name: p.annotation for p in parameters} | {
        "return": signature.return_annotation
    }
    return spread


def check_unused(names, *, q, eps) -> None:
    """compare/phase: --q and --eps must reach a rule that takes them."""
    if q is not None and not {"qngd", "qngd-d"} & set(names):
        raise ValueError("--q applies to qngd and qngd-d, and --rules lists neither; drop --q or add one")
    if eps is not None and "damped-ngd" not in names:
        raise ValueError("--eps applies to damped-ngd, which --rules does not list; drop --eps or add it")


def split_rules(rules: str) -> list[str]:
    """The rule names of a comma-separated ``--rules``."""
    return [r.strip() for r in rules.split(",") if r.strip()]


__all__ = [
    "MAX_STEPS",
    "MIN_TIME",
    "SOLVERS",
    "TASKS",
    "SetupOptions",
    "SolveOptions",
    "check_unused",
    "out_option",
    "split_rules",
    "with_option_groups",
]
