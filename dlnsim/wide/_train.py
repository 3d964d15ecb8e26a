"""Discrete natural-gradient descent of a wide network (Karakida & Osawa 2020, eq. 9, Cor. 4.2).

theta <- theta - eta (G~ + rho I)^+ grad L with any Fisher approximation G~. The learning rate eta is an
array leaf like the Fisher's damping, so :func:`run_ngd` (one ``lax.scan``, no host round trip per
step) compiles once per network shape, Fisher class and number of steps, and ``jax.vmap`` over eta
or rho works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import check_integer
from ._data import WideTask, check_task_fits
from ._factory import as_fisher, rho_or_damping
from ._fisher import AbstractFisher
from ._hyperparameters import concrete, hyperparameter
from ._losses import loss_named
from ._mlp import MLP, _as_update, check_data, check_mlp, signals


def default_learning_rate(fisher, alpha: float) -> float:
    """eta = 1/alpha for MSE (one-step convergence, Cor. 4.2), 0.1/alpha for cross-entropy (S.167)."""
    return as_fisher(fisher).default_learning_rate(alpha)


def _learning_rate(value) -> Float[Array, ""] | None:
    return None if value is None else hyperparameter("learning_rate", value, positive=True)


class NGDState(NamedTuple):
    step: Array


class NGD(eqx.Module):
    """Discrete NGD in the optax style: ``state = opt.init(mlp)``, then
    ``updates, state = opt.update(mlp, x, y, state)`` and ``mlp = eqx.apply_updates(mlp, updates)``.

    ``updates = -learning_rate * (G + rho I)^+ grad L`` for the chosen Fisher. With
    ``learning_rate=None`` the step is the theory-optimal 1/alpha (Karakida & Osawa 2020, Cor. 4.2),
    alpha from the Fisher's :meth:`~dlnsim.wide.AbstractFisher.alpha` for the network and the batch size.

    Attributes:
        fisher: an :class:`~dlnsim.wide.AbstractFisher` (see :func:`ngd` for names).
        learning_rate: eta > 0 as an array leaf, or None for the default.
        forster: the inputs were Forster-transformed (static; the K-FAC default rate, S.111).
    """

    fisher: AbstractFisher
    learning_rate: Float[Array, ""] | None = eqx.field(default=None, converter=_learning_rate)
    forster: bool = eqx.field(default=False, static=True, converter=bool)

    def __check_init__(self):
        if not isinstance(self.fisher, AbstractFisher):
            raise TypeError(
                f"fisher must be a dlnsim.wide.Fisher (see ngd()), got {type(self.fisher).__name__}"
            )

    def init(self, mlp: MLP) -> NGDState:
        check_mlp(mlp)
        self.fisher.check_depth(mlp.depth)
        return NGDState(jnp.zeros((), dtype=jnp.int32))

    def resolve_learning_rate(self, mlp: MLP, n_samples: int) -> float | Array:
        """The given rate (a float when concrete), else 1/alpha (MSE) or 0.1/alpha (cross-entropy)."""
        if self.learning_rate is not None:
            value = concrete(self.learning_rate)
            return self.learning_rate if value is None else value
        alpha = self.fisher.alpha(mlp, n_samples, forster=self.forster)
        if alpha is None:
            raise ValueError(
                f"no theoretical alpha for fisher {self.fisher.name!r} in this setting; pass a learning_rate"
            )
        return self.fisher.default_learning_rate(alpha)

    def update(self, mlp: MLP, x: Array, y: Array, state: NGDState) -> tuple[MLP, NGDState]:
        """The update -eta (G~ + rho I)^+ grad L as an MLP-shaped pytree, and the next state."""
        check_mlp(mlp)
        x, y = check_data(mlp, x, y)
        self.fisher.check_depth(mlp.depth)
        lr = self.resolve_learning_rate(mlp, x.shape[0])
        sig = signals(mlp, x)
        r = self.fisher.residual(sig.f, y)
        ws, bs = self.fisher.apply(mlp, sig, self.fisher.prepare(mlp, sig), r)
        ws = [-lr * w for w in ws]
        bs = None if bs is None else [-lr * b for b in bs]
        return _as_update(mlp, ws, bs), NGDState(state.step + 1)


def ngd(
    fisher: str | AbstractFisher = "bd",
    rho: float = 0.0,
    learning_rate: float | None = None,
    *,
    loss: str = "mse",
    kfac_bias: str = "augmented",
    ce_damping: float = 1e-4,
    forster: bool = False,
    damping: float | None = None,
) -> NGD:
    """An NGD optimiser with the named Fisher approximation, e.g. ``ngd(fisher="bd", rho=0.0)``.

    ``rho`` is the Fisher's damping (Karakida & Osawa 2020, eq. 9; ``damping`` is its old name).
    ``forster=True`` tells the default learning rate that the inputs were Forster-transformed
    (alpha = N(L-1) + M0 for kfac, S.111).
    """
    rho = rho_or_damping(rho, damping)
    if learning_rate is not None:
        hyperparameter("learning_rate", learning_rate, positive=True)
    if not isinstance(fisher, AbstractFisher):
        fisher = as_fisher(
            str(fisher),
            hyperparameter("rho (damping)", rho),
            kfac_bias=kfac_bias,
            loss=loss,
            ce_damping=ce_damping,
        )
    return NGD(fisher, learning_rate, bool(forster))


@dataclass
class TrainResult:
    """Outputs (N, C) and losses per step of discrete NGD, t = 0..T."""

    f_train: np.ndarray  # (T+1, N, C)
    f_test: np.ndarray  # (T+1, N', C)
    train_loss: np.ndarray  # (T+1,)
    test_loss: np.ndarray  # (T+1,)
    learning_rate: float
    mlp: MLP


def task_loss(f, y, loss: str = "mse"):
    """MSE 1/(2N) sum ||f - y||^2 (eq. 3) or mean cross-entropy of softmax(f) against y (S.157), as
    a JAX array: :meth:`AbstractLoss.value` of :func:`loss_named` ``(loss)``. ``loss`` may also be
    an :class:`AbstractLoss`; a stack of outputs ``(T, N, C)`` gives ``T`` values."""
    return loss_named(loss).value(jnp.asarray(f), jnp.asarray(y))


@eqx.filter_jit
def run_ngd(
    optimizer: NGD, mlp: MLP, x: Float[Array, "N M0"], y: Float[Array, "N C"], x_test: Float[Array, "Nt M0"],
    steps: int,
) -> tuple[MLP, Float[Array, "T N C"], Float[Array, "T Nt C"]]:  # fmt: skip
    """``steps`` full-batch NGD steps as one ``lax.scan``: the final network and the outputs on the
    training and test inputs after each step. The learning rate and the Fisher's damping are traced,
    so new values reuse the compiled program and ``jax.vmap`` over them works; ``optimizer`` needs a
    learning rate (see :meth:`NGD.resolve_learning_rate`)."""
    if optimizer.learning_rate is None:
        raise ValueError("run_ngd needs an optimizer with a learning_rate; see NGD.resolve_learning_rate")

    def step(carry, _):
        net, state = carry
        update, state = optimizer.update(net, x, y, state)
        net = eqx.apply_updates(net, update)
        return (net, state), (net(x), net(x_test))

    (mlp, _), (f_train, f_test) = jax.lax.scan(step, (mlp, optimizer.init(mlp)), None, length=steps)
    return mlp, f_train, f_test


def train(mlp: MLP, task: WideTask, optimizer: NGD, steps: int) -> TrainResult:
    """Runs ``steps`` NGD steps on the whole training set (full batch) and records f on train/test.

    The steps run as one compiled ``lax.scan`` (:func:`run_ngd`); the outputs come back to the host once.
    """
    steps = check_integer("steps", steps, 0)
    check_task_fits(mlp, task)
    if not isinstance(optimizer, NGD):
        raise TypeError(f"optimizer must be a dlnsim.wide.NGD (see ngd()), got {type(optimizer).__name__}")
    optimizer.init(mlp)
    lr = optimizer.resolve_learning_rate(mlp, task.n_samples)
    opt = NGD(optimizer.fisher, lr, optimizer.forster)
    loss = optimizer.fisher.loss_function
    f0, f0_test = np.asarray(mlp(task.x_train)), np.asarray(mlp(task.x_test))
    mlp, ftr, fte = run_ngd(opt, mlp, task.x_train, task.y_train, task.x_test, steps)
    ftr = np.concatenate([f0[None], np.asarray(ftr)])
    fte = np.concatenate([f0_test[None], np.asarray(fte)])
    if not np.all(np.isfinite(ftr)):
        raise FloatingPointError(
            "NGD training diverged (non-finite outputs); lower the learning rate or damp"
        )
    # the losses of all T + 1 saved outputs in one batched evaluation each (no per-step host sync)
    tl = np.asarray(loss.value(jnp.asarray(ftr), jnp.asarray(task.y_train)))
    te = np.asarray(loss.value(jnp.asarray(fte), jnp.asarray(task.y_test)))
    return TrainResult(ftr, fte, tl, te, float(lr), mlp)
