"""Transitional: the command line moved to the package :mod:`dlnsim.cli` (one module per command
group). This module re-exports its entry points and the names it used to define, so
``from dlnsim._cli import app, main`` and ``python -m dlnsim._cli`` keep working; new code imports
from :mod:`dlnsim.cli`."""

from .cli import app, main
from .cli._boundary import SEED_MAX
from .cli._boundary import check_seed as _check_seed
from .cli._boundary import claim as _claim
from .cli._boundary import computing as _computing
from .cli._boundary import report_unexpected as _report_unexpected
from .cli._linear import Setup, build_setup
from .cli._options import MAX_STEPS, MIN_TIME, SOLVERS, TASKS
from .cli._phase import PHASE_T1_RANGE
from .cli._wide import WIDE_DATASETS

__all__ = [
    "MAX_STEPS",
    "MIN_TIME",
    "PHASE_T1_RANGE",
    "SEED_MAX",
    "SOLVERS",
    "TASKS",
    "WIDE_DATASETS",
    "Setup",
    "app",
    "build_setup",
    "main",
    "_check_seed",
    "_claim",
    "_computing",
    "_report_unexpected",
]

if __name__ == "__main__":
    main()
