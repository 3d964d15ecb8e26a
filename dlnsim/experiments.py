"""Public API of dlnsim's reproductions of the source papers' figures (``dlnsim reproduce``).

``EXPERIMENTS`` maps each id to its :class:`Experiment`; :func:`reproduce` runs one and writes its
figure, ``metrics.json`` (the list of :class:`Check` results) and the arrays behind the figure.
The built-in reproductions are loaded on first use of ``EXPERIMENTS``.
"""

from ._experiments import (
    EXPERIMENTS,
    Check,
    Experiment,
    Reproduction,
    check,
    experiment,
    metrics,
    new_figure,
    register,
    reproduce,
    write_reproduction,
)

__all__ = [
    "EXPERIMENTS",
    "Check",
    "Experiment",
    "Reproduction",
    "check",
    "experiment",
    "metrics",
    "new_figure",
    "register",
    "reproduce",
    "write_reproduction",
]
