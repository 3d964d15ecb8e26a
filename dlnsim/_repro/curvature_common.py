"""Shared names of the Huh 2020 reproductions ("Curvature-corrected learning dynamics in deep linear
neural networks"): the five rules, their labels and colours, and eq. 21's p = 2 closed form."""

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


def _lambert_w(log_z):
    """The principal branch W(z) for real z = exp(log_z) > 0, by Newton's method on u = ln W
    (e^u + u = ln z is convex and increasing in u, so Newton converges from any start)."""
    log_z = np.asarray(log_z, dtype=float)
    big = log_z > 1.0
    u = np.where(big, np.log(np.where(big, log_z - np.log(np.where(big, log_z, 1.0)), 1.0)), log_z)
    for _ in range(100):
        eu = np.exp(u)
        u = u - (eu + u - log_z) / (eu + 1.0)
    return np.exp(u)


def p2_map_trajectory(t, *, sigma_star: float, sigma0: float, rate: float = 1.0):
    """The p = 2 solution of eq. 21 (Huh 2020), sigma' = -rate (sigma - sigma*) sigma^2, from 0 <
    sigma0 < sigma*: sigma(t) = sigma* / (1 + W((1/x0 - 1) e^(1/x0 - 1 - rate sigma*^2 t))), x0 =
    sigma0/sigma*, W the Lambert function. It follows from rate sigma*^2 t = [ln(x/(1-x)) - 1/x]
    between x0 and x = sigma/sigma*; the paper's text announces this case but its formula is lost in
    our copy. p = 2 is the d -> infinity limit of SGD (p = 2 - 2/d), reached by no finite net."""
    x0 = sigma0 / sigma_star
    u0 = 1.0 / x0 - 1.0
    log_z = math.log(u0) + u0 - rate * sigma_star**2 * np.asarray(t, dtype=float)
    return sigma_star / (1.0 + _lambert_w(log_z))


def p2_half_max_time(*, sigma_star: float, sigma0: float, rate: float = 1.0) -> float:
    """Time for the p = 2 map to reach sigma*/2: (1/x0 - 2 + ln((1 - x0)/x0)) / (rate sigma*^2)."""
    x0 = sigma0 / sigma_star
    return (1.0 / x0 - 2.0 + math.log((1.0 - x0) / x0)) / (rate * sigma_star**2)


def _p2_by_ode(ts, sigma_stars, sigma0):
    """eq. 21 at p = 2 integrated numerically (Tsit5, rtol 1e-10): the closed form's reference."""
    import diffrax
    import jax.numpy as jnp

    star = jnp.asarray(sigma_stars)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, s, args: (star - s) * s**2), diffrax.Tsit5(), 0.0, float(ts[-1]), None,
        jnp.asarray(sigma0), saveat=diffrax.SaveAt(ts=jnp.asarray(ts)), max_steps=200_000,
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-14),
    )  # fmt: skip
    return np.asarray(sol.ys)
