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

import math
from collections.abc import Callable, Hashable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import check_q
from .._curvature_base import hyperparameter as checked_leaf
from .._linalg import psd_function_apply, spectral_power
from ._hyperparameters import ENTRYWISE_RCOND, PINV_RCOND, concrete, hyperparameter, rank_cutoff

# The Fishers a ModelFlow computes from autodiff Jacobians alone.
MODEL_FISHERS = ("exact", "bd", "diagonal")


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


class ModelFlow(eqx.Module):
    """The field f(t, model, task) = -(G~ + rho I)^(-1/q) grad L on any equinox model (module docstring).

    The state is the model; every inexact array in it is a parameter and the field returns a pytree of
    the model's structure holding their time derivatives (None elsewhere), for ``diffrax.ODETerm``.
    ``task`` is a :class:`~dlnsim.wide.FlowTask`. Integrate it with :func:`~dlnsim.wide.simulate_flow`.

    Attributes:
        fisher: ``exact``, ``bd`` or ``diagonal`` (static).
        power: s = 1/q in [0, 1] (0: the gradient flow), an array leaf.
        rho: the damping, an array leaf.
        rcond: the relative rank cutoff of the pseudo-inverse powers (1e-10; 1e-12 for ``diagonal``,
            as the wide Fishers), an array leaf.
        blocks: for ``bd``, a function from a parameter's tree path (as from
            ``jax.tree_util.tree_flatten_with_path``) to its block key (static; default
            :func:`module_blocks`).
    """

    fisher: str = eqx.field(static=True)
    power: Float[Array, ""]
    rho: Float[Array, ""]
    rcond: Float[Array, ""]
    blocks: Callable[[tuple], Hashable] = eqx.field(static=True)
    names: ClassVar[tuple[str, ...]] = MODEL_FISHERS

    def __init__(self, fisher: str = "exact", q=1.0, *, rho=0.0, rcond=None, blocks=None):
        if not isinstance(fisher, str) or fisher not in MODEL_FISHERS:
            raise ValueError(
                f"unknown Fisher {fisher!r} for a general model; choose one of {', '.join(MODEL_FISHERS)} "
                "(kfac, unit-wise, tri-diagonal and quasi-diagonal need the wide MLP's layers: FisherFlow)"
            )
        if blocks is not None and not callable(blocks):
            raise TypeError("blocks must be a function from a parameter's tree path to its block key")
        self.fisher = fisher
        self.power = 1.0 / checked_leaf("q", q, lambda name, value: check_q(value))
        self.rho = hyperparameter("rho", rho)
        self.rcond = rank_cutoff("rcond", rcond, ENTRYWISE_RCOND if fisher == "diagonal" else PINV_RCOND)
        self.blocks = module_blocks if blocks is None else blocks

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
        rv = r.reshape(-1)
        if self.fisher == "diagonal":
            grads = jax.tree_util.tree_leaves(grad)
            diag = jnp.concatenate([jnp.sum(m**2, axis=0) / n for m in mats])  # diag(G), flat
            scale = spectral_power(diag, power=self.power, damping=self.rho, rcond=self.rcond)
            splits = np.cumsum([g.size for g in grads])[:-1]
            updates = [s.reshape(g.shape) * g for s, g in zip(jnp.split(scale, splits), grads, strict=True)]
        else:
            if self.fisher == "exact":
                groups = {0: list(range(len(mats)))}
            else:
                groups: dict[Hashable, list[int]] = {}
                for i, (path, _) in enumerate(leaves):
                    groups.setdefault(self.blocks(path), []).append(i)
            updates = [None] * len(mats)
            for members in groups.values():
                k = sum(mats[i] @ mats[i].T for i in members)
                v = psd_function_apply(k / n, rv, self.power, self.rho, self.rcond) / n
                for i in members:
                    updates[i] = (mats[i].T @ v).reshape(leaves[i][1].shape[1:])
            if concrete(self.power) is None:  # a traced s: q = inf selected by array code
                grads = jax.tree_util.tree_leaves(grad)
                updates = [jnp.where(self.power == 0.0, g, u) for g, u in zip(grads, updates, strict=True)]
        update = jax.tree_util.tree_unflatten(treedef, updates)
        return jax.tree.map(jnp.negative, update)


__all__ = ["MODEL_FISHERS", "Batched", "ModelFlow", "module_blocks"]
