"""dlnsim: exact learning dynamics of deep networks under curvature-corrected learning rules.

float64 is not switched on by importing this package; enable it in your own entry point with
``jax.config.update("jax_enable_x64", True)`` (the ``dlnsim`` CLI and the tests do so).
"""

from . import analytic, experiments, wide
from ._checks import DynamicsBlowUpError
from ._curvature import (
    CURVATURE_METHODS,
    AbstractCurvature,
    AbstractGaussNewton,
    BalancedGaussNewton,
    BlockDiagonalGaussNewton,
    CovarianceCurvature,
    DenseGaussNewton,
    GaussNewton,
    KrylovGaussNewton,
    imbalance,
    loss_gradient,
    structurally_full_rank,
)
from ._models import (
    INIT_SCHEMES,
    DeepLinearNet,
    conserved_quantities,
    network_map,
)
from ._online import FeedforwardNet, OnlineNGD, OnlineRun, OnlineSGD, sgd_learning_rate_search
from ._online import train as train_online
from ._outputs import OutputError, claim_output
from ._rules import (
    RULES,
    BernacchiaFlow,
    GradientFlow,
    NaturalGradientFlow,
    RuleInfo,
    vector_field,
)
from ._runtime import StallWatchdog, limit_lapack_threads
from ._sharding import initialize_distributed
from ._simulation import (
    ModeComparison,
    Trajectory,
    TrajectoryBatch,
    compare_with_modes,
    init_weights_batch,
    simulate,
    simulate_batch,
    simulate_discrete,
)
from ._sweep import SweepSpec, sweep
from ._sweep_outputs import SweepOutcome, run_sweep
from ._tasks import (
    StudentTeacherData,
    Task,
    correlated_input_cov,
    determinant_saddle_loss,
    load_regression_data,
    random_teacher,
    student_teacher,
)

__version__ = "0.1.0"

__all__ = [
    "analytic",
    "experiments",
    "wide",
    "AbstractCurvature",
    "AbstractGaussNewton",
    "BalancedGaussNewton",
    "DenseGaussNewton",
    "KrylovGaussNewton",
    "BernacchiaFlow",
    "BlockDiagonalGaussNewton",
    "CovarianceCurvature",
    "DeepLinearNet",
    "DynamicsBlowUpError",
    "FeedforwardNet",
    "GaussNewton",
    "GradientFlow",
    "INIT_SCHEMES",
    "ModeComparison",
    "NaturalGradientFlow",
    "OnlineNGD",
    "OutputError",
    "OnlineRun",
    "OnlineSGD",
    "RULES",
    "RuleInfo",
    "StallWatchdog",
    "StudentTeacherData",
    "SweepOutcome",
    "SweepSpec",
    "Task",
    "Trajectory",
    "TrajectoryBatch",
    "CURVATURE_METHODS",
    "claim_output",
    "compare_with_modes",
    "conserved_quantities",
    "correlated_input_cov",
    "determinant_saddle_loss",
    "imbalance",
    "init_weights_batch",
    "initialize_distributed",
    "limit_lapack_threads",
    "load_regression_data",
    "loss_gradient",
    "network_map",
    "random_teacher",
    "run_sweep",
    "sgd_learning_rate_search",
    "simulate",
    "simulate_batch",
    "simulate_discrete",
    "structurally_full_rank",
    "sweep",
    "student_teacher",
    "train_online",
    "vector_field",
]
