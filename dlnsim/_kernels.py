"""Transitional: the analytic kernels and the NTK theory moved to :mod:`dlnsim.wide` (issue 13),
modules ``dlnsim.wide._kernels`` and ``dlnsim.wide._theory``.

This module only re-exports them under their old names for the modules that still import
``dlnsim._kernels`` (the CLI); new code imports from :mod:`dlnsim.wide`.
"""

from .wide._fisher import layerwise_alpha, tridiagonal_alpha
from .wide._kernels import (
    _QUAD_NODES,
    Kernels,
    _cross_moment,
    _second_moment,
    active_fraction,
    analytic_kernels,
    empirical_kernels,
    signal_variances,
)
from .wide._theory import (
    alpha_theory,
    analytic_theta_bar,
    compare_with_theory,
    gd_optimal_learning_rate,
    linearized_dynamics,
    predicted_train_residual,
)

__all__ = [
    "Kernels",
    "_QUAD_NODES",
    "_cross_moment",
    "_second_moment",
    "active_fraction",
    "alpha_theory",
    "analytic_kernels",
    "analytic_theta_bar",
    "compare_with_theory",
    "empirical_kernels",
    "gd_optimal_learning_rate",
    "layerwise_alpha",
    "linearized_dynamics",
    "predicted_train_residual",
    "signal_variances",
    "tridiagonal_alpha",
]
