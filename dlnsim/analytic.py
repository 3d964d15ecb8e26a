"""Public API of dlnsim's analytic singular-mode theory (Huh 2020, secs. 3.1-3.3, S.I.2-S.I.3)."""

from ._analytic import (
    ModeVectorField,
    aligned_frames,
    balanced_map_time,
    balanced_map_trajectory,
    calibrated_learning_rate,
    effective_depth,
    half_max_time,
    learning_time_exponent,
    measure_scaling,
    mode_field_of,
    mode_invariants,
    mode_vector_field,
    project_onto_modes,
    saxe_sgd_solution,
    scaling_exponents,
    stiffness,
)

__all__ = [
    "ModeVectorField",
    "aligned_frames",
    "balanced_map_time",
    "balanced_map_trajectory",
    "calibrated_learning_rate",
    "effective_depth",
    "half_max_time",
    "measure_scaling",
    "mode_field_of",
    "learning_time_exponent",
    "mode_invariants",
    "mode_vector_field",
    "project_onto_modes",
    "saxe_sgd_solution",
    "scaling_exponents",
    "stiffness",
]
