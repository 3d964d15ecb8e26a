"""Transitional: the wide networks moved to the package :mod:`dlnsim.wide` (issue 13).

This module only re-exports, from the new package, the names that other modules import from
``dlnsim._wide`` (the CLI, the reproductions, the resource estimates, benchmarks and tests), under
their old names. New code imports from :mod:`dlnsim.wide`; this module goes once they do.
"""

from .wide import (
    ACTIVATIONS,
    FISHERS,
    MLP,
    NGD,
    Fisher,
    NGDState,
    Signals,
    TrainResult,
    WideTask,
    as_fisher,
    digits_task,
    forster_transform,
    isotropy,
    layer_grams,
    layer_sigma,
    load_wide_data,
    natural_gradient,
    ngd,
    normalize_inputs,
    ntk,
    precondition,
    signals,
    synthetic_task,
    task_loss,
    theta_bar,
    train,
)
from .wide._activations import activation_derivative, activation_fn, check_activation
from .wide._data import check_task_fits as _check_task_fits
from .wide._fisher import CE_RATE, LAYERWISE, LOSSES, tridiagonal_sigma
from .wide._fisher import layerwise_operator as _layerwise_operator
from .wide._fisher import softmax_hessian as _softmax_hessian
from .wide._fisher_diag import unit_grams as _unit_grams
from .wide._hyperparameters import PINV_RCOND as _RCOND
from .wide._mlp import check_data
from .wide._mlp import check_mlp as _check_mlp
from .wide._train import default_learning_rate

__all__ = [
    "ACTIVATIONS",
    "CE_RATE",
    "FISHERS",
    "LAYERWISE",
    "LOSSES",
    "MLP",
    "NGD",
    "Fisher",
    "NGDState",
    "Signals",
    "TrainResult",
    "WideTask",
    "_RCOND",
    "_check_mlp",
    "_check_task_fits",
    "_layerwise_operator",
    "_softmax_hessian",
    "_unit_grams",
    "activation_derivative",
    "activation_fn",
    "as_fisher",
    "check_activation",
    "check_data",
    "default_learning_rate",
    "digits_task",
    "forster_transform",
    "isotropy",
    "layer_grams",
    "layer_sigma",
    "load_wide_data",
    "natural_gradient",
    "ngd",
    "normalize_inputs",
    "ntk",
    "precondition",
    "signals",
    "synthetic_task",
    "task_loss",
    "theta_bar",
    "train",
    "tridiagonal_sigma",
]
