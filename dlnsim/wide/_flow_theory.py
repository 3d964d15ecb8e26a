"""NTK theory of the wide flows in continuous time (Karakida & Osawa 2020 in the limit of small eta).

**Isotropic Fishers.** In the NTK regime J stays at its initial value, so the training residual
r = f - y obeys dr/dt = J d theta/dt = -J (G~ + rho I)^+ J^T r / N = -Theta_bar r (S.4 with eta = 1 per
unit time). Where Theta_bar = alpha I (Karakida & Osawa 2020, Thm 4.1: exact alpha = 1, bd alpha = L,
K-FAC alpha = N L, ...) this is dr/dt = -alpha r, so

    f_t - y = e^(-alpha t) (f_0 - y),

the small-eta limit of Cor. 4.2's f_t - y = (1 - eta alpha)^(t / eta) (f_0 - y).

**Exact q-NGD.** By push-through, d theta/dt = -J^T (Theta + rho)^(-s) r / N with Theta = J J^T / N
(the empirical NTK, eq. 6) and s = 1/q, so dr/dt = -Theta (Theta + rho)^(-s) r. With Theta = V diag(lambda)
V^T frozen at initialisation,

    r(t) = V exp(-kappa t) V^T r_0,   kappa_k = lambda_k (lambda_k + rho)^(-s),

so at rho = 0 the residual decays along the NTK eigenvectors with rates lambda_k^(1 - 1/q): q = 1 gives
e^(-t) in every direction, q = inf gradient flow on the NTK (rates lambda_k, Jacot et al. 2018). On test
inputs df(x')/dt = -Theta(x', x) (Theta + rho)^(-s) r, whose integral is the kernel predictor

    f_t(x') = f_0(x') - Theta(x', x) V diag((1 - e^(-kappa_k t)) / lambda_k) V^T r_0

(the zero modes of Theta do not move f, since Theta(x', x) v = 0 for J^T v = 0). The eigenvalues are
host-side numpy (set-up time), cut at ``THEORY_RCOND`` times the largest.
"""

from __future__ import annotations

import math

import numpy as np

from .._checks import as_real_array
from ._flow import FlowTask, as_flow_task
from ._hyperparameters import concrete
from ._kernels import analytic_kernels
from ._mlp import MLP, ntk, signals

# NTK eigenvalues at or below this fraction of the largest count as zero modes (rate 0).
THEORY_RCOND = 1e-10


def isotropic_flow_residual(r0, alpha: float, times) -> np.ndarray:
    """f_t - y = e^(-alpha t) (f_0 - y) for Theta_bar = alpha I (module docstring; Karakida & Osawa
    2020, Thm 4.1 and the small-eta limit of Cor. 4.2): shape (T,) + r0.shape."""
    r0 = as_real_array("r0", r0, numpy=True)
    times = as_real_array("times", times, 1, numpy=True)
    return np.exp(-float(alpha) * times).reshape((-1,) + (1,) * r0.ndim) * r0


def ntk_flow_rates(theta, q: float, rho: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lambda, kappa, V): the NTK eigenvalues, the decay rates kappa = lambda (lambda + rho)^(-1/q) of
    exact q-NGD (0 on zero modes) and the eigenvectors (module docstring)."""
    theta = as_real_array("theta", theta, 2, numpy=True)
    lam, vecs = np.linalg.eigh(0.5 * (theta + theta.T))
    live = lam > THEORY_RCOND * lam.max()
    s = 0.0 if math.isinf(q) else 1.0 / q
    kappa = np.where(live, np.where(live, lam, 1.0) * (np.where(live, lam, 1.0) + rho) ** (-s), 0.0)
    return np.where(live, lam, 0.0), kappa, vecs


def analytic_flow_kernels(mlp: MLP, task) -> tuple[np.ndarray, np.ndarray | None]:
    """The infinite-width NTK Theta(x, x) and Theta(x', x) in the normalisation J J^T / N of the flows,
    (NC, NC) and (N'C, NC) over (sample, output) pairs (S.168-S.178 via
    :func:`~dlnsim.wide.analytic_kernels`; the outputs are independent, Theta x I_C)."""
    task = as_flow_task(task)
    n, c = task.y.shape
    options = dict(depth=mlp.depth, activation=mlp.activation, sigma_w2=mlp.sigma_w2, sigma_b2=mlp.sigma_b2,
                   bias=mlp.has_bias, shift=mlp.shift)  # fmt: skip
    x = np.asarray(task.x)
    train = np.kron(analytic_kernels(x, **options).ntk, np.eye(c)) / n
    if not task.has_test:
        return train, None
    return train, np.kron(analytic_kernels(np.asarray(task.x_test), x, **options).ntk, np.eye(c)) / n


def ntk_flow_prediction(
    mlp: MLP, task, times, *, q: float = 1.0, rho: float = 0.0, kernels=None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The NTK-regime prediction of exact q-NGD from the initial network ``mlp``: the training residual
    r(t) (T, N, C) and the test outputs f_t(x') (T, N', C) by the kernel predictor, or None without a
    test set (module docstring). ``kernels``: (Theta(x, x), Theta(x', x) or None) to use instead of the
    empirical NTK at initialisation, e.g. the infinite-width :func:`analytic_flow_kernels`."""
    task: FlowTask = as_flow_task(task)
    times = as_real_array("times", times, 1, numpy=True)
    sig = signals(mlp, task.x)
    n, c = sig.f.shape
    r0 = np.asarray(sig.f - task.y).reshape(-1)
    theta = np.asarray(ntk(mlp, sig)) if kernels is None else np.asarray(kernels[0])
    lam, kappa, vecs = ntk_flow_rates(theta, q, rho)
    coeff = vecs.T @ r0
    decay = np.exp(-np.outer(times, kappa))  # (T, NC)
    residual = (decay * coeff) @ vecs.T
    if not task.has_test:
        return residual.reshape(-1, n, c), None
    test_sig = signals(mlp, task.x_test)
    # Theta(x', x): (N'C, NC)
    cross = np.asarray(ntk(mlp, sig, test_sig)) if kernels is None else np.asarray(kernels[1])
    moved = np.where(lam > 0, (1.0 - decay) / np.where(lam > 0, lam, 1.0), 0.0) * coeff
    f_test = np.asarray(test_sig.f).reshape(-1) - moved @ (cross @ vecs).T
    return residual.reshape(-1, n, c), f_test.reshape(len(times), -1, c)


def flow_theory(field, mlp: MLP, task, times) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """The theory for a :class:`~dlnsim.wide.FisherFlow` from ``mlp``: (train residual, test outputs,
    name). Exact Fisher or q = inf: the NTK prediction (any q, rho); otherwise q = 1 and rho = 0 with a
    theoretical alpha: e^(-alpha t) (no test prediction); else (None, None, "none")."""
    q, rho = field.q, concrete(field.rho)
    exact = field.fisher.name == "exact" and field.fisher.loss_function.linear_residual
    if exact or math.isinf(q):
        train, test = ntk_flow_prediction(mlp, task, times, q=q, rho=rho)
        return train, test, f"NTK, exp(-Theta (Theta + rho)^(-1/q) t) (q={q:g}, rho={rho:g})"
    task = as_flow_task(task)
    alpha = field.fisher.alpha(mlp, task.n_samples) if q == 1.0 else None
    if alpha is None:
        return None, None, "none"
    r0 = np.asarray(mlp(task.x) - task.y)
    return isotropic_flow_residual(r0, alpha, times), None, f"isotropic, exp(-alpha t) (alpha={alpha:g})"


__all__ = [
    "THEORY_RCOND",
    "analytic_flow_kernels",
    "flow_theory",
    "isotropic_flow_residual",
    "ntk_flow_prediction",
    "ntk_flow_rates",
]
