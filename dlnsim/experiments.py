"""Public API of dlnsim's reproductions of the source papers' figures (``dlnsim reproduce``).

``EXPERIMENTS`` maps each id to its :class:`Experiment`; :func:`reproduce` runs one and writes its
figure, ``metrics.json`` (the list of :class:`Check` results) and the arrays behind the figure.
Each check is either a software check (:func:`check`: conservation laws, closed forms, dense
references; a failure is a bug) or a claim of the paper (:func:`claim`; together they give the
figure's verdict: reproduces, partly or disagrees).
The built-in reproductions are loaded on first use of ``EXPERIMENTS``.
"""

from ._experiments import (
    BASES,
    EXPERIMENTS,
    VERDICTS,
    Check,
    Experiment,
    Reproduction,
    check,
    claim,
    experiment,
    metrics,
    new_figure,
    register,
    reproduce,
    verdict_of,
    write_reproduction,
)

__all__ = [
    "BASES",
    "EXPERIMENTS",
    "VERDICTS",
    "Check",
    "Experiment",
    "Reproduction",
    "check",
    "claim",
    "experiment",
    "metrics",
    "new_figure",
    "register",
    "reproduce",
    "verdict_of",
    "write_reproduction",
]
