"""Deep linear networks (Huh 2020, sec. 2; Bernacchia et al. 2018, eq. 9)."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import as_real_array, check_key, check_positive, check_widths, is_traced
from ._linalg import qr, svd

Weights = tuple[Float[Array, "n_out n_in"], ...]

INIT_SCHEMES = ("small", "orthogonal", "balanced", "xavier", "aligned")


def network_map(weights: Weights) -> Float[Array, "n_d n_0"]:
    """The input-output map W = W_d ... W_1 (Huh 2020, sec. 2)."""
    out = weights[0]
    for w in weights[1:]:
        out = w @ out
    return out


def prefix_products(weights: Weights) -> list[Array]:
    """``[W_<1, ..., W_<d]`` with W_<i = W_{i-1} ... W_1 (W_<1 is the identity on the input)."""
    n0 = weights[0].shape[1]
    out = [jnp.eye(n0, dtype=weights[0].dtype)]
    for w in weights[:-1]:
        out.append(w @ out[-1])
    return out


def suffix_products(weights: Weights) -> list[Array]:
    """``[W_>1, ..., W_>d]`` with W_>i = W_d ... W_{i+1} (W_>d is the identity on the output)."""
    nd = weights[-1].shape[0]
    out = [jnp.eye(nd, dtype=weights[-1].dtype)]
    for w in reversed(weights[1:]):
        out.append(out[-1] @ w)
    return out[::-1]


def conserved_quantities(weights: Weights) -> list[Array]:
    """C_i = W_i W_i^T - W_{i+1}^T W_{i+1}, i = 1..d-1 (Huh 2020, eq. 4).

    Constant in time under every rule orthogonal to the null space of the Gauss-Newton matrix
    (SGD, NGD, q-NGD, damped NGD); broken by block-diagonal rules (Huh 2020, sec. 3.3).
    """
    return [weights[i] @ weights[i].T - weights[i + 1].T @ weights[i + 1] for i in range(len(weights) - 1)]


def _semi_orthogonal(key: PRNGKeyArray, rows: int, cols: int, dtype) -> Array:
    """A ``rows x cols`` matrix with orthonormal columns (rows >= cols), Haar distributed."""
    g = jr.normal(key, (rows, cols), dtype=dtype)
    q, r = qr(g)
    return q * jnp.sign(jnp.diagonal(r))


def _orthogonal(key: PRNGKeyArray, rows: int, cols: int, dtype) -> Array:
    """A ``rows x cols`` matrix with orthonormal rows or columns, whichever is fewer."""
    if rows >= cols:
        return _semi_orthogonal(key, rows, cols, dtype)
    return _semi_orthogonal(key, cols, rows, dtype).T


def _mode_singular_values(values, depth: int, modes: int, dtype) -> Array:
    """Broadcast per-layer mode singular values to shape (depth, modes)."""
    s = as_real_array("singular_values", values, dtype=dtype)
    if s.ndim == 0:
        s = jnp.full((depth, modes), s)
    elif s.ndim == 1:
        if s.shape[0] != modes:
            raise ValueError(
                f"singular_values must have one value per mode ({modes}) or shape (depth, modes) = "
                f"({depth}, {modes}), got shape {s.shape}"
            )
        s = jnp.broadcast_to(s, (depth, modes))
    elif s.shape != (depth, modes):
        raise ValueError(
            f"singular_values must be a scalar, shape ({modes},) or ({depth}, {modes}), got {s.shape}"
        )
    return s


class DeepLinearNet(eqx.Module):
    """A deep linear network f(x) = W_d ... W_1 x (Huh 2020, sec. 2).

    Args:
        widths: ``(n_0, n_1, ..., n_d)``; any widths, including non-square and bottleneck nets.
        key: a JAX PRNG key (keyword only).
        init: ``"small"`` (Gaussian, each layer rescaled to largest singular value ``scale``;
            Huh 2020 uses 0.05), ``"orthogonal"`` (``scale`` times a semi-orthogonal matrix),
            ``"balanced"`` (W_i = Q_i diag(s) Q_{i-1}^T so that every C_i = 0, with ``s = scale``),
            ``"xavier"`` (Glorot normal times ``scale``) or ``"aligned"`` (singular vectors aligned
            with ``teacher`` as in Huh 2020, footnote 2).
        scale: see ``init``; defaults to 0.05 for ``"small"`` and 1 otherwise. It may be traced:
            ``jax.vmap`` over init scales works (a concrete scale is checked to be > 0).
        teacher: the target map, required for ``"aligned"``.
        singular_values: per-layer mode singular values for ``"aligned"``: a scalar, one value per
            mode (balanced layers) or an array of shape ``(depth, modes)``; modes = min(widths).
        input_cov: for ``"aligned"``, the task's input covariance; the modes only decouple when it
            is white or shares the teacher's right singular vectors, otherwise a ValueError.
        dtype: float64 by default when x64 is enabled, else float32.
    """

    weights: Weights
    widths: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        widths: Sequence[int],
        *,
        key: PRNGKeyArray,
        init: str = "small",
        scale: float | None = None,
        teacher: Float[Array, "n_d n_0"] | None = None,
        singular_values=None,
        input_cov=None,
        dtype=None,
    ):
        widths = check_widths(widths)
        check_key(key)
        if not isinstance(init, str) or init not in INIT_SCHEMES:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INIT_SCHEMES)}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        try:
            floating = jnp.issubdtype(dtype, jnp.floating)
        except TypeError:
            floating = False
        if not floating:
            raise ValueError(f"dtype must be a floating-point type such as jnp.float64, got {dtype!r}")
        if scale is None:
            scale = 0.05 if init == "small" else 1.0
        # a concrete scale is checked; a traced one (jax.vmap over init scales) passes as an array
        scale = scale if is_traced(scale) else check_positive("scale", scale)
        depth = len(widths) - 1
        keys = jr.split(key, depth + 1)
        if init == "small":
            ws = []
            for k, (n_in, n_out) in zip(keys, zip(widths[:-1], widths[1:], strict=True), strict=False):
                g = jr.normal(k, (n_out, n_in), dtype=dtype)
                ws.append(scale * g / jnp.max(svd(g, compute_uv=False)))
        elif init == "orthogonal":
            ws = [
                scale * _orthogonal(k, n_out, n_in, dtype)
                for k, n_in, n_out in zip(keys, widths[:-1], widths[1:], strict=False)
            ]
        elif init == "xavier":
            ws = [
                scale * jnp.sqrt(2.0 / (n_in + n_out)) * jr.normal(k, (n_out, n_in), dtype=dtype)
                for k, n_in, n_out in zip(keys, widths[:-1], widths[1:], strict=False)
            ]
        elif init == "balanced":
            modes = min(widths)
            s = _mode_singular_values(scale if singular_values is None else singular_values, 1, modes, dtype)[
                0
            ]
            frames = [_semi_orthogonal(k, n, modes, dtype) for k, n in zip(keys, widths, strict=False)]
            ws = [frames[i + 1] @ jnp.diag(s) @ frames[i].T for i in range(depth)]
        else:  # aligned
            ws = _aligned_weights(keys, widths, teacher, singular_values, input_cov, dtype)
        self.weights = tuple(ws)
        self.widths = widths

    def __check_init__(self):
        if len(self.weights) != len(self.widths) - 1:
            raise ValueError(
                f"got {len(self.weights)} weight matrices for widths {self.widths}; "
                f"need {len(self.widths) - 1}"
            )
        for i, w in enumerate(self.weights):
            expected = (self.widths[i + 1], self.widths[i])
            if tuple(w.shape) != expected:
                raise ValueError(
                    f"W_{i + 1} has shape {tuple(w.shape)}; widths {self.widths} need {expected}"
                )

    @classmethod
    def from_weights(cls, weights: Sequence[Array]) -> DeepLinearNet:
        """Wraps given weight matrices ``(W_1, ..., W_d)``, checking that they hold finite real
        numbers and that adjacent widths match."""
        weights = check_weights(weights)
        net = object.__new__(cls)
        object.__setattr__(net, "weights", weights)
        object.__setattr__(net, "widths", widths_of(weights))
        net.__check_init__()
        return net

    @property
    def depth(self) -> int:
        return len(self.weights)

    def map(self) -> Float[Array, "n_d n_0"]:
        """W = W_d ... W_1."""
        return network_map(self.weights)

    def __call__(self, x: Float[Array, "... n_0"]) -> Float[Array, "... n_d"]:
        return x @ self.map().T


def widths_of(weights: Weights) -> tuple[int, ...]:
    return (int(weights[0].shape[1]),) + tuple(int(w.shape[0]) for w in weights)


def check_weights(weights, name: str = "weights") -> Weights:
    """Validates weight matrices: a sequence of 2-D arrays of finite real numbers whose adjacent
    widths match. Returns them as a tuple of JAX arrays (integers become the default float)."""
    if isinstance(weights, DeepLinearNet):
        return weights.weights
    single = len(getattr(weights, "shape", ())) == 2
    if weights is None or isinstance(weights, str | bytes | dict) or single:
        raise TypeError(
            f"{name} must be a DeepLinearNet or a sequence of 2-D matrices (W_1, ..., W_d), "
            f"got {type(weights).__name__}" + (" (wrap a single matrix in a list: [W])" if single else "")
        )
    try:
        weights = tuple(weights)
    except TypeError:
        raise TypeError(
            f"{name} must be a DeepLinearNet or a sequence of 2-D matrices (W_1, ..., W_d), "
            f"got {type(weights).__name__}"
        ) from None
    if len(weights) < 1:
        raise ValueError(f"{name}: a network needs at least one weight matrix (depth >= 1)")
    out = []
    for i, w in enumerate(weights):
        w = as_real_array(f"W_{i + 1}", w, finite=False)
        if w.ndim != 2:
            raise ValueError(f"W_{i + 1} must be a 2-D matrix, got shape {tuple(w.shape)}")
        out.append(w)
    for i in range(len(out) - 1):
        if out[i + 1].shape[1] != out[i].shape[0]:
            raise ValueError(
                f"mismatched widths: W_{i + 1} has {out[i].shape[0]} output rows but W_{i + 2} "
                f"expects {out[i + 1].shape[1]} inputs"
            )
    for i, w in enumerate(out):
        as_real_array(f"W_{i + 1}", w)  # finite entries (on concrete values)
    return tuple(out)


def _aligned_weights(keys, widths, teacher, singular_values, input_cov, dtype) -> list[Array]:
    """Weights with the aligned-singular-vector structure of Huh 2020, footnote 2.

    R_1 = R*, L_d = L*, R_{i+1} = L_i, each hidden frame completed with random orthonormal columns.
    """
    if teacher is None:
        raise ValueError("init='aligned' needs the teacher map (teacher=...)")
    teacher = as_real_array("teacher", teacher, dtype=dtype, finite=False)
    depth = len(widths) - 1
    if teacher.shape != (widths[-1], widths[0]):
        raise ValueError(
            f"teacher has shape {teacher.shape}; widths {widths} need ({widths[-1]}, {widths[0]})"
        )
    as_real_array("teacher", teacher)
    modes = min(widths)
    u, _, vt = svd(teacher, full_matrices=True)
    left = u[:, :modes]
    right = vt.T[:, :modes]
    if input_cov is not None:
        _check_shares_right_vectors(as_real_array("input_cov", input_cov, dtype=dtype), right)
    s = _mode_singular_values(0.05 if singular_values is None else singular_values, depth, modes, dtype)
    frames = [right] + [_semi_orthogonal(keys[i], widths[i], modes, dtype) for i in range(1, depth)] + [left]
    return [frames[i + 1] @ jnp.diag(s[i]) @ frames[i].T for i in range(depth)]


def _check_shares_right_vectors(cov: Array, right: Array) -> None:
    """Sigma_x must map each aligned right singular vector onto a multiple of itself."""
    cov = np.asarray(cov)
    right = np.asarray(right)
    if cov.shape != (right.shape[0], right.shape[0]):
        raise ValueError(f"input_cov must be ({right.shape[0]}, {right.shape[0]}), got {cov.shape}")
    image = cov @ right
    residual = image - right * np.sum(right * image, axis=0)
    if np.abs(residual).max() > 1e-8 * max(1.0, np.abs(cov).max()):
        raise ValueError(
            "init='aligned' needs an input covariance that is white or shares the teacher's right "
            "singular vectors (modes do not decouple otherwise); use a whitened task (--task teacher)"
        )


def as_weights(net_or_weights) -> Weights:
    """Accepts a :class:`DeepLinearNet` or a sequence of matrices; returns a validated tuple."""
    return check_weights(net_or_weights, "net_or_weights")


__all__ = [
    "DeepLinearNet",
    "network_map",
    "conserved_quantities",
    "prefix_products",
    "suffix_products",
]
