"""Shared names of the Huh 2020 reproductions ("Curvature-corrected learning dynamics in deep linear
neural networks"): the five rules, their labels and colours."""

from __future__ import annotations

import math

import numpy as np

SOURCE = "Huh 2020"
RULES = ("sgd", "ngd", "sqrt-ngd", "ngd-d", "sqrt-ngd-d")
LABELS = {"sgd": "SGD", "ngd": "NGD", "sqrt-ngd": "sqrt-NGD", "ngd-d": "NGD-d", "sqrt-ngd-d": "sqrt-NGD-d"}
_COLORS = {
    "sgd": "tab:blue",
    "ngd": "tab:orange",
    "sqrt-ngd": "tab:green",
    "ngd-d": "tab:red",
    "sqrt-ngd-d": "tab:purple",
}


def _rule_q(rule: str) -> tuple[float, bool]:
    """(q, block_diagonal) of one of the five rules."""
    q = {"sgd": math.inf, "ngd": 1.0, "sqrt-ngd": 2.0, "ngd-d": 1.0, "sqrt-ngd-d": 2.0}[rule]
    return q, rule.endswith("-d")


def _log_grid(first: float, t1: float, n: int) -> np.ndarray:
    """0 followed by n - 1 log-spaced times from ``first`` to exactly ``t1``."""
    ts = np.concatenate([[0.0], np.geomspace(first, t1, n - 1)])
    ts[-1] = t1
    return ts
