"""Data for the wide networks: tasks with unit-norm inputs, loaders and the Forster transform.

Karakida & Osawa 2020: inputs normalised to ||x|| = 1 (Assumption 2), Gaussian synthetic data (C.3.1),
the digits as a stand-in for their MNIST runs (Fig. S.1), and the Forster transform that makes
K-FAC isotropic for M_0 < N (S.108-S.111).
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import as_real_array, check_integer, check_key, check_positive, check_real
from .._tasks import read_xy_npz
from ._mlp import MLP, check_data, check_mlp


class WideTask(eqx.Module):
    """Training and test data with inputs normalised to ||x|| = 1 (Assumption 2).

    x_train (N, M0), y_train (N, C), x_test (N', M0), y_test (N', C); ``kind`` is ``"binary"``
    (one output, targets +-0.5, predicted class = sign), ``"multiclass"`` (one-hot, argmax) or
    ``"regression"``.
    """

    x_train: Float[Array, "N M0"]
    y_train: Float[Array, "N C"]
    x_test: Float[Array, "Nt M0"]
    y_test: Float[Array, "Nt C"]
    kind: str = eqx.field(static=True)
    description: str = eqx.field(static=True)

    def __check_init__(self):
        if self.kind not in ("binary", "multiclass", "regression"):
            raise ValueError(f"kind must be 'binary', 'multiclass' or 'regression', got {self.kind!r}")
        for name in ("x_train", "y_train", "x_test", "y_test"):
            as_real_array(name, getattr(self, name))
            if getattr(self, name).ndim != 2:
                raise ValueError(f"{name} must be 2-D, got shape {getattr(self, name).shape}")
        if self.x_train.shape[0] != self.y_train.shape[0] or self.x_test.shape[0] != self.y_test.shape[0]:
            raise ValueError(
                f"x and y must have the same number of rows, got {self.x_train.shape}, {self.y_train.shape}, "
                f"{self.x_test.shape}, {self.y_test.shape}"
            )
        if self.x_train.shape[1] != self.x_test.shape[1] or self.y_train.shape[1] != self.y_test.shape[1]:
            raise ValueError("train and test data must have the same input and output dimensions")
        if self.x_train.shape[0] < 1:
            raise ValueError("the task needs at least one training sample")

    @property
    def n_samples(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def outputs(self) -> int:
        return int(self.y_train.shape[1])


def normalize_inputs(x) -> Array:
    """Rows scaled to unit norm (Assumption 2); zero rows are refused."""
    x = as_real_array("x", x, dtype=jnp.result_type(float))
    norms = jnp.linalg.norm(x, axis=-1, keepdims=True)
    if bool(jnp.any(norms == 0)):
        raise ValueError("every input must be nonzero to be normalised to ||x|| = 1")
    return x / norms


def _make_task(x, y, x_test, y_test, kind, description) -> WideTask:
    x, x_test = normalize_inputs(x), normalize_inputs(x_test)
    y = as_real_array("y", y, dtype=x.dtype)
    y_test = as_real_array("y_test", y_test, dtype=x.dtype)
    y = y[:, None] if y.ndim == 1 else y
    y_test = y_test[:, None] if y_test.ndim == 1 else y_test
    return WideTask(x, y, x_test, y_test, kind, description)


def _check_count(name, n, low=1):
    return check_integer(name, n, low)


def synthetic_task(
    key: PRNGKeyArray, samples: int, input_dim: int, *, outputs: int = 1, test_samples: int = 64
) -> WideTask:
    """Gaussian inputs x ~ N(0, I) normalised to ||x|| = 1 (Karakida & Osawa 2020, C.3.1), labelled by
    a random linear teacher: +-0.5 by the sign of v^T x for one output, one-hot argmax V x otherwise."""
    samples = _check_count("samples", samples)
    input_dim = _check_count("input_dim", input_dim)
    outputs = _check_count("outputs", outputs)
    test_samples = _check_count("test_samples", test_samples)
    kx, kt, kv = jr.split(key, 3)
    dtype = jnp.result_type(float)
    x = jr.normal(kx, (samples, input_dim), dtype)
    xt = jr.normal(kt, (test_samples, input_dim), dtype)
    v = jr.normal(kv, (input_dim, outputs), dtype)
    if outputs == 1:
        y, yt = 0.5 * jnp.sign(x @ v), 0.5 * jnp.sign(xt @ v)
        kind = "binary"
    else:
        y = jax.nn.one_hot(jnp.argmax(x @ v, axis=1), outputs, dtype=dtype)
        yt = jax.nn.one_hot(jnp.argmax(xt @ v, axis=1), outputs, dtype=dtype)
        kind = "multiclass"
    desc = f"synthetic Gaussian inputs (M0={input_dim}), random linear teacher, {kind}"
    return _make_task(x, y, xt, yt, kind, desc)


def digits_task(
    key: PRNGKeyArray,
    samples: int,
    *,
    classes: Sequence[int] | None = (0, 7),
    test_samples: int = 200,
    one_hot: bool = False,
) -> WideTask:
    """scikit-learn's bundled 8x8 digits (no download), inputs normalised to ||x|| = 1.

    Two classes (default 0 vs 7, as the MNIST runs of Karakida & Osawa 2020, Fig. S.1) give one
    output with targets +0.5 (first class) and -0.5; more classes give one-hot targets.
    ``classes=None`` uses all ten; ``one_hot=True`` gives one-hot targets for two classes too (for
    cross-entropy). Train and test samples are disjoint random draws.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the install
        raise ValueError(
            "the digits dataset needs scikit-learn: pip install 'dlnsim[wide]' (or scikit-learn)"
        ) from None
    samples = _check_count("samples", samples)
    test_samples = _check_count("test_samples", test_samples)
    classes = tuple(range(10)) if classes is None else tuple(int(c) for c in classes)
    if len(classes) < 2 or len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
        raise ValueError(f"classes must be two or more distinct digits 0-9, got {classes!r}")
    data = load_digits()
    mask = np.isin(data.target, classes)
    x_all = data.data[mask].astype(np.float64)
    t_all = data.target[mask]
    if samples + test_samples > x_all.shape[0]:
        raise ValueError(
            f"digits {classes} have {x_all.shape[0]} images; samples + test_samples must not exceed that, "
            f"got {samples} + {test_samples}"
        )
    perm = np.asarray(jr.permutation(key, x_all.shape[0]))
    idx, idx_t = perm[:samples], perm[samples : samples + test_samples]
    if len(classes) == 2 and not one_hot:
        lab = np.where(t_all == classes[0], 0.5, -0.5)[:, None]
        kind = "binary"
    else:
        pos = {c: i for i, c in enumerate(classes)}
        lab = np.eye(len(classes))[[pos[t] for t in t_all]]
        kind = "multiclass"
    names = " vs ".join(map(str, classes)) if len(classes) == 2 else f"{len(classes)} classes"
    desc = f"sklearn digits ({names}), 8x8 images normalised to ||x|| = 1"
    return _make_task(x_all[idx], lab[idx], x_all[idx_t], lab[idx_t], kind, desc)


def load_wide_data(path: str, *, test_fraction: float = 0.25, key: PRNGKeyArray | None = None) -> WideTask:
    """A user's ``.npz`` with ``x`` (N, M0) and ``y`` (N,) or (N, C); optional ``x_test``, ``y_test``.

    Without test arrays, a random ``test_fraction`` of the rows is held out. Inputs are normalised
    to ||x|| = 1; the task is treated as regression.
    """
    test_fraction = check_real("test_fraction", test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be a number between 0 and 1, got {test_fraction!r}")
    if key is not None:
        check_key(key)
    data = read_xy_npz(path, "'x' (N, M0) and 'y' (N,) or (N, C)", optional=("x_test", "y_test"))
    x, y = data["x"], data["y"]
    y = y[:, None] if y.ndim == 1 else y
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x must be (N, M0) and y (N,) or (N, C) with the same N, got {x.shape} and {y.shape}"
        )
    if ("x_test" in data) != ("y_test" in data):
        raise ValueError(f"{path!r} must hold both x_test and y_test, or neither")
    if "x_test" in data:
        xt, yt = data["x_test"], data["y_test"]
        yt = yt[:, None] if yt.ndim == 1 else yt
        if xt.ndim != 2 or xt.shape[1] != x.shape[1] or yt.shape != (xt.shape[0], y.shape[1]):
            raise ValueError(f"x_test and y_test must be (N_test, {x.shape[1]}) and (N_test, {y.shape[1]})")
    else:
        n_test = int(round(test_fraction * x.shape[0]))
        if n_test < 1 or n_test >= x.shape[0]:
            raise ValueError(
                f"{path!r} has {x.shape[0]} rows: too few to hold out a test set; add x_test, y_test"
            )
        perm = np.asarray(jr.permutation(jr.PRNGKey(0) if key is None else key, x.shape[0]))
        x, y, xt, yt = x[perm[n_test:]], y[perm[n_test:]], x[perm[:n_test]], y[perm[:n_test]]
    return _make_task(x, y, xt, yt, "regression", f"data from {path}")


def forster_transform(x, *, tol: float = 1e-12, max_iter: int = 10_000) -> Array:
    """Forster transform of N > M0 unit inputs: X~ with X~^T X~ = (N/M0) I and ||x~_n|| = 1 (S.110).

    Iterates x <- (M0/N X^T X)^{-1/2} x, renormalised, until the frame is tight to ``tol``; raises a
    ValueError when the points are not in general position (no fixed point).
    """
    tol = check_positive("tol", tol)
    max_iter = check_integer("max_iter", max_iter, 1)
    x = np.asarray(normalize_inputs(x))
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (N, M0), got shape {x.shape}")
    n, m0 = x.shape
    if n <= m0:
        raise ValueError(f"the Forster transform is for N > M0 (here N={n}, M0={m0}); it is not needed")
    rank = int(np.linalg.matrix_rank(x))
    if rank < m0:
        raise ValueError(
            f"the Forster transform needs inputs that span all M0={m0} dimensions; these span {rank} "
            "(e.g. pixels that are zero in every image)"
        )
    target = n / m0
    for _ in range(int(max_iter)):
        s = x.T @ x
        err = np.abs(s / target - np.eye(m0)).max()
        if err < tol:
            return jnp.asarray(x)
        evals, evecs = np.linalg.eigh(s / target)
        if evals.min() <= 1e-14:
            break
        x = x @ (evecs / np.sqrt(evals)) @ evecs.T
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    raise ValueError("the Forster transform did not converge: the inputs are not in general position")


def check_task_fits(mlp: MLP, task) -> None:
    """A WideTask whose input and output widths are the MLP's."""
    check_mlp(mlp)
    if not isinstance(task, WideTask):
        raise TypeError(f"task must be a dlnsim.wide.WideTask, got {type(task).__name__}")
    check_data(mlp, task.x_train, task.y_train, "x_train")
    check_data(mlp, task.x_test, task.y_test, "x_test")
