"""Curvature-corrected flows for any equinox model, from autodiff Jacobians.

The wide MLP's flows (:class:`~dlnsim.wide.FisherFlow`) use its layer structure (signals, Kronecker
factors, units). A researcher's own network has none of that, but three Fishers need only the
Jacobian J = d f(x_1..N) / d theta of the flattened outputs:

- ``exact``: G = J^T J / N. By push-through, (G + rho I)^(-s) J^T r / N = J^T (K / N + rho I)^(-s) r / N
  with K = J J^T, an N C x N C matrix, so no P x P matrix is formed (Karakida & Osawa 2020, eq. 8-9;
  the fractional power s = 1/q of Huh 2020, eq. 14).
- ``bd``: the block-diagonal Fisher, one block per group of parameter arrays (by default each
  submodule's arrays, e.g. a ``Linear``'s weight and bias), each block by the same push-through with
  its own K_b = J_b J_b^T (Karakida & Osawa 2020, eq. 15 with Sigma = I).
- ``diagonal``: the diagonal of G, sum_n J_{n p}^2 / N per parameter, raised entry-wise.

The loss is the MSE L = sum_n ||f(x_n) - y_n||^2 / (2N) (eq. 3). The model maps a batch x of shape
(N, M0) to outputs of shape (N, C); wrap a per-example module such as ``eqx.nn.MLP`` in
:class:`Batched`. J is formed as N C rows of P numbers, so this suits small and medium models; the
wide MLP's own :class:`~dlnsim.wide.FisherFlow` never forms it.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Hashable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._curvature_base import q_leaf
from .._linalg import psd_function_apply, spectral_power
from ._hyperparameters import ENTRYWISE_RCOND, PINV_RCOND, concrete, hyperparameter, rank_cutoff


class Batched(eqx.Module):
    """A per-example module (``eqx.nn.MLP``, ``eqx.nn.Linear``, ...) applied to a batch by ``jax.vmap``:
    ``Batched(module)(x)`` maps x of shape (N, M0) to (N, C) (1-D outputs become (N, 1))."""

    module: Any

    def __call__(self, x):
        out = jax.vmap(self.module)(x)
        return out[:, None] if out.ndim == 1 else out


def module_blocks(path: tuple) -> Hashable:
    """The default ``bd`` block of a parameter array: its path without the last entry, so each
    submodule's arrays (a ``Linear``'s weight and bias) form one block."""
    return tuple(str(k) for k in path[:-1])


def _push_through(mats, groups, residual, n, power, rho, rcond) -> list:
    """Per group b of parameter arrays, J_b^T (K_b / N + rho I)^(-s) r / N with K_b = J_b J_b^T
    (push-through: no P x P matrix is formed)."""
    updates = [None] * len(mats)
    for members in groups:
        k = sum(mats[i] @ mats[i].T for i in members)
        v = psd_function_apply(k / n, residual, power, rho, rcond) / n
        for i in members:
            updates[i] = mats[i].T @ v
    return updates


class AbstractModelFisher(eqx.Module):
    """A Fisher approximation of any model, from the Jacobian blocks J_p = d f / d theta_p (one
    (N C, size_p) matrix per parameter array). ``precondition`` returns the flat
    (F + rho I)^(-s) grad L of each parameter array."""

    name: ClassVar[str]
    default_rcond: ClassVar[float] = PINV_RCOND

    @abc.abstractmethod
    def precondition(self, mats, paths, grads, residual, n, power, rho, rcond) -> list[Array]:
        """``mats``: the J_p; ``paths``: each array's tree path; ``grads``: grad L per array;
        ``residual``: r = f - y flattened (N C,); ``n``: N; the power s, rho and rcond."""


class ExactModelFisher(AbstractModelFisher):
    """G = J^T J / N over all parameters, by push-through on K = J J^T (Karakida & Osawa 2020,
    eqs. 8-9)."""

    name: ClassVar[str] = "exact"

    def precondition(self, mats, paths, grads, residual, n, power, rho, rcond):
        return _push_through(mats, [range(len(mats))], residual, n, power, rho, rcond)


class BlockDiagonalModelFisher(AbstractModelFisher):
    """One block per group of parameter arrays, grouped by ``blocks`` (a function from an array's
    tree path to its block key; default :func:`module_blocks`: each submodule's arrays), each by
    push-through on its own K_b = J_b J_b^T (Karakida & Osawa 2020, eq. 15 with Sigma = I)."""

    name: ClassVar[str] = "bd"
    blocks: Callable[[tuple], Hashable] = eqx.field(default=module_blocks, static=True)

    def __check_init__(self):
        if not callable(self.blocks):
            raise TypeError("blocks must be a function from a parameter's tree path to its block key")

    def precondition(self, mats, paths, grads, residual, n, power, rho, rcond):
        groups: dict[Hashable, list[int]] = {}
        for i, path in enumerate(paths):
            groups.setdefault(self.blocks(path), []).append(i)
        return _push_through(mats, list(groups.values()), residual, n, power, rho, rcond)


class DiagonalModelFisher(AbstractModelFisher):
    """The diagonal of G, sum_n J_{n p}^2 / N per parameter, raised entry-wise."""

    name: ClassVar[str] = "diagonal"
    default_rcond: ClassVar[float] = ENTRYWISE_RCOND

    def precondition(self, mats, paths, grads, residual, n, power, rho, rcond):
        diag = jnp.concatenate([jnp.sum(m**2, axis=0) / n for m in mats])  # diag(G), flat
        scale = spectral_power(diag, power=power, damping=rho, rcond=rcond)
        splits = np.cumsum([m.shape[1] for m in mats])[:-1]
        return [sc * g.reshape(-1) for sc, g in zip(jnp.split(scale, splits), grads, strict=True)]


# The Fishers a ModelFlow computes from autodiff Jacobians alone, by name (the factory boundary).
MODEL_FISHER_CLASSES: dict[str, type[AbstractModelFisher]] = {
    cls.name: cls for cls in (ExactModelFisher, BlockDiagonalModelFisher, DiagonalModelFisher)
}
MODEL_FISHERS = tuple(MODEL_FISHER_CLASSES)


class ModelFlow(eqx.Module):
    """The field f(t, model, task) = -(G~ + rho I)^(-1/q) grad L on any equinox model (module docstring).

    The state is the model; every inexact array in it is a parameter and the field returns a pytree of
    the model's structure holding their time derivatives (None elsewhere), for ``diffrax.ODETerm``.
    ``task`` is a :class:`~dlnsim.wide.FlowTask`. Integrate it with :func:`~dlnsim.wide.simulate_flow`.

    Attributes:
        fisher: an :class:`AbstractModelFisher` (:class:`ExactModelFisher`,
            :class:`BlockDiagonalModelFisher`, :class:`DiagonalModelFisher`); the constructor also
            takes its name, ``exact``, ``bd`` or ``diagonal``.
        power: s = 1/q in [0, 1] (0: the gradient flow), an array leaf.
        rho: the damping, an array leaf.
        rcond: the relative rank cutoff of the pseudo-inverse powers (1e-10; 1e-12 for ``diagonal``,
            as the wide Fishers), an array leaf.

    ``blocks`` (constructor only) groups the arrays of ``bd``: a function from a parameter's tree
    path (as from ``jax.tree_util.tree_flatten_with_path``) to its block key (default
    :func:`module_blocks`); the other Fishers ignore it.
    """

    fisher: AbstractModelFisher
    power: Float[Array, ""]
    rho: Float[Array, ""]
    rcond: Float[Array, ""]
    names: ClassVar[tuple[str, ...]] = MODEL_FISHERS

    def __init__(self, fisher="exact", q=1.0, *, rho=0.0, rcond=None, blocks=None):
        if blocks is not None and not callable(blocks):
            raise TypeError("blocks must be a function from a parameter's tree path to its block key")
        if isinstance(fisher, str) and fisher in MODEL_FISHER_CLASSES:
            cls = MODEL_FISHER_CLASSES[fisher]
            fisher = cls(blocks) if cls is BlockDiagonalModelFisher and blocks is not None else cls()
        elif not isinstance(fisher, AbstractModelFisher):
            raise ValueError(
                f"unknown Fisher {fisher!r} for a general model; choose one of {', '.join(MODEL_FISHERS)} "
                "(kfac, unit-wise, tri-diagonal and quasi-diagonal need the wide MLP's layers: FisherFlow)"
            )
        self.fisher = fisher
        self.power = 1.0 / q_leaf(q)
        self.rho = hyperparameter("rho", rho)
        self.rcond = rank_cutoff("rcond", rcond, fisher.default_rcond)

    @property
    def blocks(self) -> Callable[[tuple], Hashable]:
        """The block function of a ``bd`` flow (:func:`module_blocks` for the others)."""
        return getattr(self.fisher, "blocks", module_blocks)

    @property
    def q(self):
        """q = 1/s (inf for the gradient flow); a traced array under a trace."""
        value = concrete(self.power)
        if value is None:
            return 1.0 / self.power
        return math.inf if value == 0 else 1.0 / value

    def __call__(self, t, model, task):
        params, static = eqx.partition(model, eqx.is_inexact_array)
        y = task.y

        def outputs(p):
            return eqx.combine(p, static)(task.x)

        f, vjp = jax.vjp(outputs, params)
        if f.shape != y.shape:
            raise ValueError(f"the model maps x to outputs of shape {f.shape}, but y has shape {y.shape}")
        n, c = f.shape
        r = f - y
        (grad,) = vjp(r / n)
        if concrete(self.power) == 0.0:
            return jax.tree.map(jnp.negative, grad)
        # J as one (N C, size) matrix per parameter array
        jac = jax.jacrev(lambda p: outputs(p).reshape(-1))(params)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(jac)
        mats = [leaf.reshape(n * c, -1) for _, leaf in leaves]
        grads = jax.tree_util.tree_leaves(grad)
        paths = [path for path, _ in leaves]
        flat = self.fisher.precondition(
            mats, paths, grads, r.reshape(-1), n, self.power, self.rho, self.rcond
        )
        updates = [u.reshape(leaf.shape[1:]) for u, (_, leaf) in zip(flat, leaves, strict=True)]
        if concrete(self.power) is None:  # a traced s: q = inf selected by array code
            updates = [jnp.where(self.power == 0.0, g, u) for g, u in zip(grads, updates, strict=True)]
        update = jax.tree_util.tree_unflatten(treedef, updates)
        return jax.tree.map(jnp.negative, update)


__all__ = [
    "MODEL_FISHERS",
    "AbstractModelFisher",
    "Batched",
    "BlockDiagonalModelFisher",
    "DiagonalModelFisher",
    "ExactModelFisher",
    "ModelFlow",
    "module_blocks",
]
