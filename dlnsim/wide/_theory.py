"""NTK theory of NGD on wide networks: alpha, Theta_bar's isotropy, predicted trajectories, and the
comparison of a trained network with them (Karakida & Osawa 2020).

Eq. 10 and Cor. 4.2 for the isotropic prediction f_t - y = (1 - eta alpha)^t (f_0 - y); S.24-S.26 for
the linearised model; S.53, S.71, S.105 for the infinite-width Theta_bar; S.164-S.167 for cross-entropy.
Alpha itself is a method of each Fisher (:meth:`dlnsim.wide.AbstractFisher.alpha`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .._checks import as_real_array, check_integer, check_positive, check_real
from ._data import WideTask, check_task_fits
from ._factory import as_fisher
from ._kernels import Kernels
from ._losses import SquaredError
from ._mlp import MLP, ntk, signals
from ._train import NGD, train

# Eigenvalues of a measured Theta_bar at or below this fraction of the largest count as zero when its
# isotropy condition number and the linearised model's default rate are measured (host-side numpy).
THETA_BAR_RCOND = 1e-10


def alpha_theory(fisher, mlp: MLP, n_samples: int, *, forster: bool = False) -> float | None:
    """The theoretical alpha of Theta_bar = alpha I on the training samples, or None where the paper
    gives none (damping > 0, entry-wise Fishers, singular tri-diagonal, unit-wise with C > 1):
    exact 1, bd L, tri-diagonal 1^T Sigma^{-1} 1 (S.71, S.92-S.94); kfac N L or N (L - 1) + M_0
    (S.107-S.111); unit-wise sum_{l<L} gamma_l M_l + 1 (S.128, S.141, S.156). See each Fisher's
    ``undamped_alpha``."""
    return as_fisher(fisher).alpha(mlp, n_samples, forster=forster)


def isotropy(tbar) -> tuple[float, float]:
    """(alpha_measured, condition number): the mean of Theta_bar's diagonal and lambda_max / lambda_min
    over its nonzero eigenvalues (Karakida & Osawa 2020, eq. 12 and Fig. 3)."""
    tb = np.asarray(tbar)
    alpha = float(np.mean(np.diag(tb)))
    ev = np.abs(np.linalg.eigvals(tb))
    ev = ev[ev > THETA_BAR_RCOND * ev.max()]
    return alpha, float(ev.max() / ev.min())


# ----------------------------------------------------------------------------------------------
# predicted dynamics


def predicted_train_residual(r0, alpha: float, learning_rate: float, steps: int) -> np.ndarray:
    """f_t - y = (1 - eta alpha)^t (f_0 - y) on the training samples (eq. 10 with Theta_bar = alpha I)."""
    r0 = as_real_array("r0", r0, numpy=True)
    alpha, learning_rate = check_real("alpha", alpha), check_real("learning_rate", learning_rate)
    steps = check_integer("steps", steps, 0)
    factor = (1.0 - learning_rate * alpha) ** np.arange(steps + 1)
    return factor.reshape((-1,) + (1,) * r0.ndim) * r0


def linearized_dynamics(tbar, tbar_test, f0, f0_test, y, learning_rate: float, steps: int):
    """The linearised model's outputs under theta <- theta - eta G_0^+ grad L (S.24-S.26):
    g_{t+1} = (I - eta Theta_bar) g_t on the training samples and
    f_{t+1}(x') = f_t(x') - eta Theta_bar(x', x) g_t, which sums to S.26. With Theta_bar the NTK it is GD.

    tbar (NC, NC), tbar_test (N'C, NC), f0 (N, C), f0_test (N', C), y (N, C). Returns (f_train, f_test)
    of shapes (T+1, N, C) and (T+1, N', C).
    """
    tbar, tbar_test = (
        as_real_array("tbar", tbar, 2, numpy=True),
        as_real_array("tbar_test", tbar_test, 2, numpy=True),
    )
    f0, f0_test = as_real_array("f0", f0, 2, numpy=True), as_real_array("f0_test", f0_test, 2, numpy=True)
    y = as_real_array("y", y, 2, numpy=True)
    learning_rate, steps = check_real("learning_rate", learning_rate), check_integer("steps", steps, 0)
    if y.shape != f0.shape or tbar.shape != (f0.size, f0.size) or tbar_test.shape != (f0_test.size, f0.size):
        raise ValueError(
            f"shapes must be tbar (NC, NC), tbar_test (N'C, NC), f0 and y (N, C), f0_test (N', C); got "
            f"{tbar.shape}, {tbar_test.shape}, {f0.shape}, {y.shape}, {f0_test.shape}"
        )
    g = (f0 - y).reshape(-1)
    ft = f0_test.reshape(-1).copy()
    train, test = [f0.reshape(-1).copy()], [ft.copy()]
    for _ in range(int(steps)):
        ft = ft - learning_rate * tbar_test @ g
        g = g - learning_rate * tbar @ g
        train.append(g + y.reshape(-1))
        test.append(ft.copy())
    return np.stack(train).reshape(-1, *f0.shape), np.stack(test).reshape(-1, *f0_test.shape)


def gd_optimal_learning_rate(ntk_eigenvalues) -> float:
    """eta = 2 / (lambda_min + lambda_max) of GD on the NTK (LeCun et al. 1998; Karakida & Osawa 2020,
    Fig. 1)."""
    ev = as_real_array("ntk_eigenvalues", ntk_eigenvalues, 1, numpy=True)
    if ev.size < 1 or ev.min() + ev.max() <= 0:
        raise ValueError("ntk_eigenvalues must be a non-empty list whose smallest plus largest value is > 0")
    return 2.0 / (ev.min() + ev.max())


def analytic_theta_bar(fisher, kernels_test: Kernels, kernels_train: Kernels, *, outputs: int = 1,
                       bias: bool = True, sigma_w2: float = 2.0,
                       sigma_b2: float = 0.5) -> np.ndarray:  # fmt: skip
    """Infinite-width Theta_bar(x', x) (N'C, NC) from analytic kernels ``kernels_test`` = K(x', x) and
    ``kernels_train`` = K(x, x), for the Fishers with a closed form (each Fisher's
    ``analytic_theta_bar``):

    - exact: Theta(x', x) Theta^{-1} (S.53);
    - bd, tri-diagonal: sum_l (Sigma^{-1} 1)_l Theta_l(x', x) Theta_l^{-1} (S.71);
    - kfac (augmented or no bias, M_0 >= N): N sum_l B_l(x', x) B_l^{-1} o A~_{l-1}(x', x) A~_{l-1}^{-1},
      with B_L(x', x) B_L^{-1} replaced by 1 1^T and A~ = sigma_w^2 A + sigma_b^2 (S.105-S.106, S.B.3.3).
    """
    fisher = as_fisher(fisher)
    if float(fisher.rho) > 0 or not fisher.loss_function.linear_residual:
        raise ValueError("the analytic Theta_bar is for the MSE loss in the zero-damping limit")
    out = fisher.analytic_theta_bar(
        kernels_test, kernels_train, sigma_w2=sigma_w2, sigma_b2=sigma_b2, bias=bias
    )
    return np.kron(out, np.eye(outputs))


# ----------------------------------------------------------------------------------------------
# measurement against theory


def _cross_entropy_theory(f0, y, alpha: float, learning_rate: float, steps: int, ce_damping: float):
    """Function-space layer-wise NGD for cross-entropy (S.164-S.167), stepped discretely:
    f_{t+1} = f_t - eta alpha (Lambda(f_t) + rho~ I)^{-1} (softmax(f_t) - y), per sample."""
    f = np.asarray(f0, float).copy()
    y = np.asarray(y, float)
    out = [f.copy()]
    c = f.shape[1]
    for _ in range(int(steps)):
        p = np.exp(f - f.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        lam = np.einsum("nk,kj->nkj", p, np.eye(c)) - p[:, :, None] * p[:, None, :] + ce_damping * np.eye(c)
        f = f - learning_rate * alpha * np.linalg.solve(lam, (p - y)[..., None])[..., 0]
        out.append(f.copy())
    return np.stack(out)


def _accuracy(f, y, kind: str) -> float | None:
    f, y = np.asarray(f), np.asarray(y)
    if kind == "binary":
        return float(np.mean(np.sign(f[:, 0]) == np.sign(y[:, 0])))
    if kind == "multiclass":
        return float(np.mean(np.argmax(f, 1) == np.argmax(y, 1)))
    return None


@dataclass(frozen=True)
class TheoryComparison:
    """A discrete NGD run on a wide net set against the NTK theory (:func:`compare_with_theory`).

    The setting: ``fisher``, ``loss``, ``rho`` (the Fisher's damping ρ; ``damping`` is its old
    name), ``depth``, ``widths``,
    ``activation``, ``shift``, ``sigma_w2``, ``sigma_b2``, ``bias``, ``samples``, ``test_samples``,
    ``n_params``, ``task`` (its description), ``forster``, ``learning_rate`` (η) and ``steps``.

    Attributes:
        alpha_theory: the theory's α (None where the paper gives none).
        alpha_measured: the mean of the measured Θ̄'s diagonal.
        isotropy_condition_number: λ_max / λ_min of the measured Θ̄ (1 when isotropic).
        theta_bar_offdiag_max: the largest off-diagonal entry of the measured Θ̄.
        theory: which prediction the curves follow: ``"(1 - eta alpha)^t"`` (eq. 10) or
            ``"S.26, measured Theta_bar"`` (the linearised model).
        train_loss, theory_loss: the training loss per step, measured and predicted (steps + 1).
        deviation: ||f_t - f_t^theory|| / ||f_0 - y|| per step; :attr:`max_deviation` is its maximum.
        test_loss, test_loss_theory: the test loss per step, measured and by the linearised model
            (None for cross-entropy).
        test_max_deviation: the largest test-output deviation from the linearised model, relative to
            max |f_0(x')| (None for cross-entropy).
        test_accuracy_initial, test_accuracy_final, test_accuracy_theory_final: classification
            accuracies (None for a regression task).
        gd_ntk_eigenvalues, gd_learning_rate, gd_theory_loss, gd_theory_test_loss: gradient descent
            on the NTK at its optimal rate 2 / (λ_min + λ_max), for comparison (S.24-S.26).
    """

    fisher: str
    loss: str
    rho: float
    depth: int
    widths: tuple[int, ...]
    activation: str
    shift: float
    sigma_w2: float
    sigma_b2: float
    bias: bool
    samples: int
    test_samples: int
    n_params: int
    task: str
    forster: bool
    alpha_theory: float | None
    alpha_measured: float
    isotropy_condition_number: float
    theta_bar_offdiag_max: float
    theory: str
    learning_rate: float
    steps: int
    train_loss: np.ndarray
    theory_loss: np.ndarray
    deviation: np.ndarray
    test_loss: np.ndarray
    test_loss_theory: np.ndarray | None
    test_max_deviation: float | None
    test_accuracy_initial: float | None
    test_accuracy_final: float | None
    test_accuracy_theory_final: float | None
    gd_ntk_eigenvalues: np.ndarray
    gd_learning_rate: float
    gd_theory_loss: np.ndarray
    gd_theory_test_loss: np.ndarray

    @property
    def max_deviation(self) -> float:
        """The largest relative deviation of the training outputs from the theory."""
        return float(np.max(self.deviation))

    @property
    def gd_ntk_condition_number(self) -> float:
        """λ_max / λ_min of the NTK on the training samples."""
        ev = self.gd_ntk_eigenvalues
        return float(ev.max() / ev.min())

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready summary (arrays as lists) that ``dlnsim wide`` writes to summary.json."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
            if f.name == "deviation":
                out["max_deviation"] = self.max_deviation
            if f.name == "gd_ntk_eigenvalues":
                out["gd_ntk_condition_number"] = self.gd_ntk_condition_number
        return out

    def __getitem__(self, key: str):
        """``result["name"]``: the summary entry ``name`` (the earlier dict interface keeps working)."""
        return self.as_dict()["rho" if key == "damping" else key]

    @property
    def damping(self) -> float:
        """The old name of :attr:`rho`."""
        return self.rho


def compare_with_theory(
    mlp: MLP,
    task: WideTask,
    fisher,
    *,
    learning_rate: float | None = None,
    steps: int = 10,
    forster: bool = False,
) -> TheoryComparison:
    """Trains ``mlp`` on ``task`` with discrete NGD and sets the run against the theory.

    Measures Theta_bar = J G^+ J^T / N on the training samples (alpha = mean of its diagonal, and the
    isotropy condition number), runs ``steps`` NGD steps (by default eta = 1/alpha with the theory's
    alpha, 0.1/alpha for cross-entropy), and predicts:

    - training: f_t - y = (1 - eta alpha)^t (f_0 - y) (eq. 10; S.164-S.167 for cross-entropy); for the
      entry-wise Fishers, which have no isotropy theory, the linearised model with the measured
      Theta_bar (S.26), and the default rate 2 / (lambda_min + lambda_max) of that Theta_bar;
    - test: the linearised model S.26 with this approximation's measured Theta_bar(x', x);
    - GD on the NTK with eta = 2 / (lambda_min + lambda_max), for comparison.

    Returns a :class:`TheoryComparison`: the setting, the measured and predicted numbers and the
    per-step curves (``.as_dict()`` gives the JSON-ready summary that ``dlnsim wide`` writes).
    """
    check_task_fits(mlp, task)
    fisher = as_fisher(fisher)
    fisher.check_depth(mlp.depth)
    if learning_rate is not None:
        learning_rate = check_positive("learning_rate", learning_rate)
    steps = check_integer("steps", steps, 0)
    n = task.n_samples
    sig, sig_t = signals(mlp, task.x_train), signals(mlp, task.x_test)
    pre = fisher.prepare(mlp, sig)
    tbar = np.asarray(fisher.theta_bar(mlp, sig, pre, sig))
    tbar_test = np.asarray(fisher.theta_bar(mlp, sig, pre, sig_t))
    alpha_measured, cond = isotropy(tbar)
    alpha_th = fisher.alpha(mlp, n, forster=forster)
    ev_bar = np.abs(np.linalg.eigvals(tbar))
    ev_bar = ev_bar[ev_bar > THETA_BAR_RCOND * ev_bar.max()]
    if learning_rate is not None:
        lr = float(learning_rate)
    elif alpha_th is not None:
        lr = fisher.default_learning_rate(alpha_th)
    else:  # no isotropy theory: the optimal rate of the linearised model with the measured Theta_bar
        lr = 2.0 / (ev_bar.min() + ev_bar.max())
    run = train(mlp, task, NGD(fisher, lr, forster), steps)
    y, yt = np.asarray(task.y_train), np.asarray(task.y_test)
    f0, f0t = run.f_train[0], run.f_test[0]
    loss = fisher.loss_function
    if not loss.linear_residual:
        alpha_used = alpha_th if alpha_th is not None else alpha_measured
        f_theory = _cross_entropy_theory(f0, y, alpha_used, lr, steps, float(fisher.ce_damping))
        f_lin_test = None
    else:
        f_lin, f_lin_test = linearized_dynamics(tbar, tbar_test, f0, f0t, y, lr, steps)
        if alpha_th is not None:
            f_theory = predicted_train_residual(f0 - y, alpha_th, lr, steps) + y
        else:
            f_theory = f_lin
    theory_loss = loss.value(np.asarray(f_theory), y)
    scale = float(np.linalg.norm(f0 - y))
    dev = np.linalg.norm((run.f_train - f_theory).reshape(steps + 1, -1), axis=1) / scale
    # GD on the NTK
    k = np.asarray(ntk(mlp, sig))
    k_test = np.asarray(ntk(mlp, sig, sig_t))
    ev = np.linalg.eigvalsh(0.5 * (k + k.T))
    lr_gd = gd_optimal_learning_rate(ev)
    gd_train, gd_test = linearized_dynamics(k, k_test, f0, f0t, y, lr_gd, steps)
    return TheoryComparison(
        fisher=fisher.name,
        loss=fisher.loss,
        rho=float(fisher.rho),
        depth=mlp.depth,
        widths=tuple(int(w) for w in mlp.widths),
        activation=mlp.activation,
        shift=mlp.shift,
        sigma_w2=mlp.sigma_w2,
        sigma_b2=mlp.sigma_b2,
        bias=mlp.has_bias,
        samples=n,
        test_samples=int(task.x_test.shape[0]),
        n_params=mlp.n_params,
        task=task.description,
        forster=bool(forster),
        alpha_theory=alpha_th,
        alpha_measured=alpha_measured,
        isotropy_condition_number=cond,
        theta_bar_offdiag_max=float(np.abs(tbar - np.diag(np.diag(tbar))).max()),
        theory="(1 - eta alpha)^t"
        if alpha_th is not None or not loss.linear_residual
        else "S.26, measured Theta_bar",
        learning_rate=lr,
        steps=int(steps),
        train_loss=np.asarray(run.train_loss, float),
        theory_loss=np.asarray(theory_loss, float),
        deviation=np.asarray(dev, float),
        test_loss=np.asarray(run.test_loss, float),
        test_loss_theory=None if f_lin_test is None else SquaredError().value(np.asarray(f_lin_test), yt),
        test_max_deviation=None
        if f_lin_test is None
        else float(np.abs(run.f_test - f_lin_test).max() / max(np.abs(f0t).max(), 1e-300)),
        test_accuracy_initial=_accuracy(f0t, yt, task.kind),
        test_accuracy_final=_accuracy(run.f_test[-1], yt, task.kind),
        test_accuracy_theory_final=None if f_lin_test is None else _accuracy(f_lin_test[-1], yt, task.kind),
        gd_ntk_eigenvalues=np.asarray(ev, float),
        gd_learning_rate=lr_gd,
        gd_theory_loss=SquaredError().value(np.asarray(gd_train), y),
        gd_theory_test_loss=SquaredError().value(np.asarray(gd_test), yt),
    )
