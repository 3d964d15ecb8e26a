"""Public API of dlnsim's wide nonlinear networks: NGD with approximate Fisher information and the
infinite-width theory that predicts it (Karakida & Osawa 2020).

Modules by concept, imports flowing one way: ``_activations`` -> ``_mlp`` (network, signals, Jacobian
products, Grams) -> ``_kernels`` (analytic kernels) -> ``_fisher`` (the interface and the layer-wise
family) -> ``_fisher_kfac``, ``_fisher_diag`` -> ``_factory`` (names to classes) -> ``_data`` ->
``_train`` (NGD, one ``lax.scan``) -> ``_theory`` (alpha, predictions, ``compare_with_theory``);
``_model_flow`` (flows of any equinox model from autodiff Jacobians) -> ``_flow`` (the
curvature-corrected flows in continuous time) -> ``_flow_theory`` (their NTK theory).
"""

from ._activations import (
    ACTIVATIONS,
    AbstractActivation,
    Erf,
    Identity,
    Relu,
    ShiftedRelu,
    Tanh,
    activation_named,
)
from ._data import WideTask, digits_task, forster_transform, load_wide_data, normalize_inputs, synthetic_task
from ._factory import FISHERS, Fisher, as_fisher, fisher_class, natural_gradient, precondition, theta_bar
from ._fisher import (
    LAYERWISE,
    AbstractFisher,
    AbstractLayerwiseFisher,
    BlockDiagonalFisher,
    ExactFisher,
    TriDiagonalFisher,
    layer_sigma,
    layerwise_alpha,
    tridiagonal_alpha,
)
from ._fisher_diag import DiagonalFisher, QuasiDiagonalFisher, UnitWiseFisher
from ._fisher_kfac import KFACFisher
from ._flow import FLOW_RULES, FisherFlow, FlowTask, FlowTrajectory, as_flow_task, flow_field, simulate_flow
from ._flow_theory import (
    analytic_flow_kernels,
    flow_theory,
    isotropic_flow_residual,
    ntk_flow_prediction,
    ntk_flow_rates,
)
from ._hyperparameters import ENTRYWISE_RCOND, PINV_RCOND
from ._kernels import Kernels, active_fraction, analytic_kernels, empirical_kernels, signal_variances
from ._losses import LOSSES, AbstractLoss, CrossEntropy, SquaredError, loss_named
from ._mlp import MLP, Signals, layer_grams, ntk, signals
from ._model_flow import (
    MODEL_FISHERS,
    AbstractModelFisher,
    Batched,
    BlockDiagonalModelFisher,
    DiagonalModelFisher,
    ExactModelFisher,
    ModelFlow,
    module_blocks,
)
from ._theory import (
    TheoryComparison,
    alpha_theory,
    analytic_theta_bar,
    compare_with_theory,
    gd_optimal_learning_rate,
    isotropy,
    linearized_dynamics,
    predicted_train_residual,
)
from ._train import NGD, NGDState, TrainResult, ngd, run_ngd, task_loss, train

__all__ = [
    "MODEL_FISHERS",
    "AbstractModelFisher",
    "BlockDiagonalModelFisher",
    "DiagonalModelFisher",
    "ExactModelFisher",
    "Batched",
    "ModelFlow",
    "module_blocks",
    "ACTIVATIONS",
    "ENTRYWISE_RCOND",
    "FISHERS",
    "FLOW_RULES",
    "LAYERWISE",
    "LOSSES",
    "PINV_RCOND",
    "AbstractActivation",
    "AbstractFisher",
    "AbstractLayerwiseFisher",
    "AbstractLoss",
    "CrossEntropy",
    "BlockDiagonalFisher",
    "DiagonalFisher",
    "Erf",
    "ExactFisher",
    "Fisher",
    "FisherFlow",
    "FlowTask",
    "FlowTrajectory",
    "Identity",
    "KFACFisher",
    "Kernels",
    "MLP",
    "NGD",
    "NGDState",
    "QuasiDiagonalFisher",
    "Relu",
    "ShiftedRelu",
    "SquaredError",
    "Signals",
    "Tanh",
    "TrainResult",
    "TriDiagonalFisher",
    "UnitWiseFisher",
    "WideTask",
    "activation_named",
    "active_fraction",
    "alpha_theory",
    "analytic_flow_kernels",
    "analytic_kernels",
    "analytic_theta_bar",
    "as_fisher",
    "as_flow_task",
    "TheoryComparison",
    "compare_with_theory",
    "digits_task",
    "empirical_kernels",
    "fisher_class",
    "flow_field",
    "flow_theory",
    "forster_transform",
    "gd_optimal_learning_rate",
    "isotropic_flow_residual",
    "isotropy",
    "layer_grams",
    "layer_sigma",
    "layerwise_alpha",
    "linearized_dynamics",
    "load_wide_data",
    "loss_named",
    "natural_gradient",
    "ngd",
    "normalize_inputs",
    "ntk",
    "ntk_flow_prediction",
    "ntk_flow_rates",
    "precondition",
    "predicted_train_residual",
    "run_ngd",
    "signal_variances",
    "signals",
    "simulate_flow",
    "synthetic_task",
    "task_loss",
    "theta_bar",
    "train",
    "tridiagonal_alpha",
]
