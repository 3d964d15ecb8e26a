"""The string boundary: Fisher names to classes, and the functional API that accepts either.

``as_fisher("kfac", rho=1e-3)`` and the old ``Fisher("kfac", 1e-3)`` build a
:class:`~dlnsim.wide.KFACFisher`; strings are used only here and in the CLI. :func:`precondition`,
:func:`natural_gradient` and :func:`theta_bar` call the Fisher's ``prepare`` / ``apply`` /
``theta_bar`` (Karakida & Osawa 2020, eq. 9 and S.4).
"""

from __future__ import annotations

from typing import Any

from jaxtyping import Array, Float

from ._fisher import LAYERWISE, AbstractFisher, BlockDiagonalFisher, ExactFisher, TriDiagonalFisher
from ._fisher_diag import DiagonalFisher, QuasiDiagonalFisher, UnitWiseFisher
from ._fisher_kfac import KFAC_BIAS, KFACFisher
from ._hyperparameters import hyperparameter
from ._losses import loss_named
from ._mlp import MLP, Signals

FISHER_CLASSES: dict[str, type[AbstractFisher]] = {
    cls.name: cls
    for cls in (
        ExactFisher,
        BlockDiagonalFisher,
        TriDiagonalFisher,
        KFACFisher,
        UnitWiseFisher,
        DiagonalFisher,
        QuasiDiagonalFisher,
    )
}
FISHERS = tuple(FISHER_CLASSES)


def fisher_class(name: str) -> type[AbstractFisher]:
    """The Fisher class named ``name`` (one of ``FISHERS``); a one-line ValueError naming the
    allowed names otherwise. Names resolve here, at the factory and CLI boundary, only."""
    if not isinstance(name, str) or name not in FISHER_CLASSES:
        raise ValueError(f"unknown fisher {name!r}; choose one of {', '.join(FISHERS)}")
    return FISHER_CLASSES[name]


def fisher_from_name(
    name: str,
    rho: float = 0.0,
    kfac_bias: str = "augmented",
    loss: str = "mse",
    ce_damping: float = 1e-4,
    *,
    rcond: float | None = None,
    damping: float | None = None,
) -> AbstractFisher:
    """The Fisher named ``name`` (one of ``FISHERS``) with its options, checked as the old ``Fisher`` did:
    ``kfac_bias`` and ``loss`` are validated for every name, cross-entropy is layer-wise only. ``rho``
    is the damping rho of Karakida & Osawa 2020, eq. 9 (``damping`` is its old name)."""
    rho = rho_or_damping(rho, damping)
    cls = fisher_class(name)
    if kfac_bias not in KFAC_BIAS:
        raise ValueError(f"kfac_bias must be 'augmented' or 'block', got {kfac_bias!r}")
    if not loss_named(loss).linear_residual and name not in LAYERWISE:
        raise ValueError(
            f"cross-entropy NGD is layer-wise only (S.157-S.167): choose one of {', '.join(LAYERWISE)}, "
            f"not {name!r}"
        )
    if name in LAYERWISE:
        return cls(rho=rho, rcond=rcond, loss=loss, ce_damping=ce_damping)
    hyperparameter("ce_damping", ce_damping)  # checked as before, unused outside the layer-wise family
    if name == "kfac":
        return cls(rho=rho, rcond=rcond, kfac_bias=kfac_bias)
    return cls(rho=rho, rcond=rcond)


def rho_or_damping(rho, damping):
    """rho, or ``damping`` (its old name) when that is given instead of it; both is refused."""
    if damping is None:
        return rho
    if not (isinstance(rho, int | float) and rho == 0.0):
        raise ValueError("give the damping once: rho (or its old name damping), not both")
    return damping


class _FisherFactory(type):
    """``Fisher(...)`` builds the named subclass; ``isinstance(x, Fisher)`` tests for any Fisher."""

    def __call__(
        cls, name, rho=0.0, kfac_bias="augmented", loss="mse", ce_damping=1e-4, *, rcond=None, damping=None
    ):
        return fisher_from_name(name, rho, kfac_bias, loss, ce_damping, rcond=rcond, damping=damping)

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, AbstractFisher)


class Fisher(metaclass=_FisherFactory):
    """The old string-keyed constructor, kept as an alias: ``Fisher(name, rho=0.0,
    kfac_bias="augmented", loss="mse", ce_damping=1e-4)`` returns the :class:`AbstractFisher` subclass
    for ``name`` (see :func:`fisher_from_name`), and every Fisher is an instance of ``Fisher``."""


def as_fisher(fisher, rho: float | None = None, **kwargs) -> AbstractFisher:
    """A Fisher as given, or the one named ``fisher`` (see :func:`fisher_from_name`)."""
    if isinstance(fisher, AbstractFisher):
        return fisher
    return fisher_from_name(str(fisher), 0.0 if rho is None else rho, **kwargs)


def precondition(mlp: MLP, sig: Signals, fisher) -> Any:
    """Everything a Fisher needs from the training signals; pass to ``natural_gradient`` / ``theta_bar``."""
    return as_fisher(fisher).prepare(mlp, sig)


def natural_gradient(mlp: MLP, sig: Signals, residual: Float[Array, "N C"], fisher, pre=None):
    """(G + rho I)^+ grad L for the residual r (N, C) as per-layer lists ``(ws, bs)``, grad L = J^T r / N.

    Layer-wise Fishers return J_l^T P_l r; K-FAC applies its two factors in sample space; unit-wise
    applies J_{l,i}^T (K_{l,i} + N rho)^+ r per unit; the entry-wise ones scale the gradient.
    """
    fisher = as_fisher(fisher)
    pre = fisher.prepare(mlp, sig) if pre is None else pre
    return fisher.apply(mlp, sig, pre, residual)


def theta_bar(
    mlp: MLP, sig: Signals, fisher, pre=None, test: Signals | None = None
) -> Float[Array, "NtC NC"]:
    """Theta_bar(x', x) = J(x') G^+ J(x)^T / N (S.4), (N'C, NC); x' = the training inputs by default.

    Formed in sample space: layer-wise sum_l K_l(x', x) P_l (S.71-S.74); K-FAC
    (1/N) sum_l [delta' Pb delta^T] o [E h~' Pa h~^T E^T] (S.96-S.105); unit-wise
    sum_{l,i} K_{l,i}(x', x) (K_{l,i} + N rho)^+ (S.130, S.155); the entry-wise ones by applying the
    preconditioner to the N*C unit residuals (O(N C P) each).
    """
    fisher = as_fisher(fisher)
    pre = fisher.prepare(mlp, sig) if pre is None else pre
    return fisher.theta_bar(mlp, sig, pre, sig if test is None else test)
