"""Regression tasks for deep linear nets: the quadratic loss and data factories."""

from __future__ import annotations

import pickle
import zipfile
import zlib

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import (
    as_real_array,
    check_covariance,
    check_finite,
    check_integer,
    check_key,
    check_positive,
    check_real,
)
from ._linalg import default_rcond, eigh, psd_function_apply, qr, svd
from ._models import network_map


def _psd_sqrt(cov: Array) -> Array:
    evals, evecs = eigh(cov)
    return (evecs * jnp.sqrt(jnp.clip(evals, 0.0))) @ evecs.T


class Task(eqx.Module):
    """The squared-error loss L(W) = 1/2 Tr[(W - W*) Sigma_x (W - W*)^T] (Huh 2020, eq. 1).

    Args:
        teacher: the target map W* of shape ``(n_out, n_in)``.
        input_cov: the input correlation Sigma_x (symmetric PSD); the identity by default.

    The loss omits the data's irreducible constant; :class:`StudentTeacherData` adds it back.
    """

    teacher: Float[Array, "n_out n_in"]
    input_cov: Float[Array, "n_in n_in"]
    input_cov_sqrt: Float[Array, "n_in n_in"]

    def __init__(self, teacher, input_cov=None):
        teacher = as_real_array("teacher", teacher, dtype=jnp.result_type(float), finite=False)
        if teacher.ndim != 2:
            raise ValueError(f"teacher must be a 2-D matrix (n_out, n_in), got shape {teacher.shape}")
        check_finite("teacher", teacher)
        n_in = teacher.shape[1]
        if input_cov is None:
            input_cov = jnp.eye(n_in, dtype=teacher.dtype)
        input_cov = as_real_array("input_cov", input_cov, dtype=teacher.dtype, finite=False)
        if input_cov.shape != (n_in, n_in):
            raise ValueError(
                f"input_cov must be ({n_in}, {n_in}) to match the teacher's inputs, got {input_cov.shape}"
            )
        check_finite("input_cov", input_cov)
        check_covariance("input_cov", input_cov)
        input_cov = 0.5 * (input_cov + input_cov.T)
        self.teacher = teacher
        self.input_cov = input_cov
        self.input_cov_sqrt = _psd_sqrt(input_cov)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.teacher.shape)

    def loss(self, W: Float[Array, "n_out n_in"]) -> Float[Array, ""]:
        """1/2 Tr[(W - W*) Sigma_x (W - W*)^T] (Huh 2020, eq. 1)."""
        delta = W - self.teacher
        return 0.5 * jnp.sum((delta @ self.input_cov) * delta)

    def whitened_residual(self, W: Float[Array, "n_out n_in"]) -> Float[Array, "n_out n_in"]:
        """(W - W*) Sigma_x^(1/2): the residual in whitened map space, so that L = 1/2 ||.||_F^2."""
        return (W - self.teacher) @ self.input_cov_sqrt

    def mode_basis(self) -> tuple[Array, Array, Array]:
        """SVD ``(U, s, V)`` of the input-output correlation Sigma_yx = W* Sigma_x (Huh 2020, Fig. 3D)."""
        u, s, vt = svd(self.teacher @ self.input_cov, full_matrices=False)
        return u, s, vt.T

    def mode_strengths(self, W: Float[Array, "... n_out n_in"]) -> Float[Array, "... modes"]:
        """u_k^T (W Sigma_x) v_k: the net's input-output correlation projected on the data's modes.

        With Sigma_x = I this is u_k^T W v_k; each strength converges to the data's s_k.
        """
        u, _, v = self.mode_basis()
        return jnp.einsum("ik,...ij,jl,lk->...k", u, W, self.input_cov, v)


def random_teacher(
    key: PRNGKeyArray, n_out: int, n_in: int, *, rank: int | None = None, spectrum=None
) -> Float[Array, "n_out n_in"]:
    """A teacher map U diag(spectrum) V^T with Haar-random singular vectors.

    ``spectrum`` defaults to ``rank, rank-1, ..., 1``; ``rank`` defaults to ``min(n_out, n_in)``.
    """
    check_key(key)
    n_out, n_in = check_integer("n_out", n_out), check_integer("n_in", n_in)
    kmax = min(n_out, n_in)
    if rank is not None:
        rank = check_integer("rank", rank)
    if spectrum is None:
        rank = kmax if rank is None else rank
        if not 1 <= rank <= kmax:
            raise ValueError(f"rank must be between 1 and min(n_out, n_in) = {kmax}, got {rank}")
        spectrum = np.arange(rank, 0, -1, dtype=float)
    spectrum = as_real_array("spectrum", spectrum, dtype=jnp.result_type(float))
    if spectrum.ndim != 1 or not 1 <= spectrum.shape[0] <= kmax:
        raise ValueError(f"spectrum must be a 1-D array of 1 to {kmax} values, got shape {spectrum.shape}")
    if rank is not None and spectrum.shape[0] != rank:
        raise ValueError(f"rank={rank} disagrees with the {spectrum.shape[0]} values in spectrum")
    ku, kv = jr.split(key)
    r = spectrum.shape[0]
    u, _ = qr(jr.normal(ku, (n_out, r), dtype=spectrum.dtype))
    v, _ = qr(jr.normal(kv, (n_in, r), dtype=spectrum.dtype))
    return (u * spectrum) @ v.T


def determinant_saddle_loss(weights, task: Task) -> float | None:
    """The loss below which a square deep linear net cannot go while its map's determinant has the
    wrong sign: where such a run stalls.

    With every width equal, det(W_d ... W_1) = prod_i det(W_i). If its sign is opposite to det(W*)
    (W* and Sigma_x invertible), the map must pass through a singular one to reach W*, and every map
    of the wrong sign has loss at least 1/2 sigma_min(W* Sigma_x^(1/2))^2 (Eckart-Young in the metric
    of Huh 2020, eq. 1). A small random init usually crosses the singular set early, at high loss;
    a run that instead learns the other modes first arrives at this loss with its weakest mode near
    0, a saddle, where it stalls (an aligned, balanced run stays there: its wrong-sign modes decay
    to 0 without crossing, Huh 2020, eq. 6).

    Returns that loss, or ``None`` when the bound does not apply (unequal widths, a singular
    target or input correlation, or a determinant of the right sign).
    """
    widths = {w.shape[0] for w in weights} | {weights[0].shape[1]}
    if len(widths) != 1:
        return None
    w_map = network_map(weights)
    whitened = task.teacher @ _psd_sqrt(task.input_cov)
    s = np.asarray(svd(whitened, compute_uv=False))
    if not s[-1] > default_rcond(s.size, whitened.dtype) * s[0]:
        return None
    sign_map = float(jnp.linalg.slogdet(w_map)[0])
    if sign_map * float(jnp.linalg.slogdet(task.teacher)[0]) >= 0.0:
        return None
    return 0.5 * float(s[-1]) ** 2


def correlated_input_cov(key: PRNGKeyArray, n_in: int, *, decay: float = 5.0) -> Float[Array, "n n"]:
    """Random-eigenvector covariance with eigenvalues exp(-decay i / n_in), i = 0..n_in-1.

    Bernacchia et al. 2018, sec. 5 (decay = 5).
    """
    check_key(key)
    n_in = check_integer("n_in", n_in)
    decay = check_real("decay", decay)
    dtype = jnp.result_type(float)
    q, _ = qr(jr.normal(key, (n_in, n_in), dtype=dtype))
    evals = jnp.exp(-decay * jnp.arange(n_in, dtype=dtype) / n_in)
    return (q * evals) @ q.T


class StudentTeacherData(eqx.Module):
    """The noisy student-teacher dataset of Huh 2020, sec. 4 (after Lampinen & Ganguli 2018).

    y = W* x + z with z ~ N(0, noise_std^2 I). The training inputs are white (empirical
    Sigma_x = I, as Huh 2020, sec. 2 assumes) unless the data were built with ``whiten=False``
    (then x ~ N(0, I) as drawn); the test inputs are fresh draws x ~ N(0, I). ``task`` holds the
    empirical least-squares map Sigma_yx Sigma_x^+ and the empirical Sigma_x of the training set, so
    that ``train_loss(W) = task.loss(W) + irreducible_loss`` is exactly 1/2 mean ||y - W x||^2.
    """

    task: Task
    true_teacher: Float[Array, "n_out n_in"]
    train_inputs: Float[Array, "P n_in"]
    train_targets: Float[Array, "P n_out"]
    test_inputs: Float[Array, "Q n_in"]
    test_targets: Float[Array, "Q n_out"]
    irreducible_loss: Float[Array, ""]
    noise_std: float = eqx.field(static=True)

    def train_loss(self, W: Float[Array, "n_out n_in"]) -> Float[Array, ""]:
        return self.task.loss(W) + self.irreducible_loss

    def test_loss(self, W: Float[Array, "n_out n_in"]) -> Float[Array, ""]:
        """1/2 mean ||y - W x||^2 on the held-out samples."""
        err = self.test_targets - self.test_inputs @ W.T
        return 0.5 * jnp.mean(jnp.sum(err**2, axis=-1))


def _empirical_task(x: Array, y: Array) -> tuple[Task, Array]:
    """The task of samples (x, y): empirical Sigma_x and least-squares map Sigma_yx Sigma_x^+, and
    the irreducible constant, so that 1/2 mean ||y - W x||^2 = task.loss(W) + constant."""
    p = x.shape[0]
    sxx = x.T @ x / p
    w_ls = (y.T @ x / p) @ psd_function_apply(
        sxx, jnp.eye(sxx.shape[0], dtype=sxx.dtype), 1.0, 0.0, default_rcond(sxx.shape[0], sxx.dtype)
    )
    irreducible = 0.5 * jnp.mean(jnp.sum((y - x @ w_ls.T) ** 2, axis=-1))
    return Task(w_ls, 0.5 * (sxx + sxx.T)), irreducible


def _whiten(x: Array) -> Array:
    """The symmetric (ZCA) whitening x (x^T x / P)^(-1/2) of the P rows of x, computed as
    sqrt(P) U V^T from the thin SVD x = U S V^T, so that x^T x / P = I to round-off whatever the
    conditioning of x. Needs P >= n_in and a full-rank x (the package rank cutoff, default_rcond)."""
    p, n = x.shape
    u, s, vt = svd(x, full_matrices=False)
    if not float(s[-1]) > default_rcond(n, x.dtype) * float(s[0]):
        raise ValueError("the drawn training inputs are rank-deficient and cannot be whitened")
    return jnp.sqrt(p) * (u @ vt)


def student_teacher(
    key: PRNGKeyArray,
    *,
    width: int = 16,
    rank: int = 3,
    spectrum=None,
    snr: float = 10.0,
    samples: int = 16,
    test_samples: int = 1000,
    whiten: bool = True,
) -> StudentTeacherData:
    """The student-teacher task of Huh 2020, sec. 4 / Fig. 3.

    A rank-``rank`` teacher of size ``width x width`` with singular values ``spectrum``
    (default ``rank, ..., 1``) and Gaussian output noise whose standard deviation is the
    teacher's root-mean-square mode strength divided by ``snr``. ``samples`` training pairs
    (Huh 2020 uses P = N = 16) and ``test_samples`` fresh pairs for the test loss.

    With ``whiten`` (the default) the drawn training inputs are whitened symmetrically,
    x <- x (x^T x / P)^(-1/2), so that their empirical correlation is exactly the identity (Huh 2020,
    sec. 2: "pre-whitened input distribution Sigma_x = I"); this needs ``samples >= width`` (a
    ValueError otherwise). ``whiten=False`` keeps the raw Gaussian draws, whose empirical Sigma_x
    deviates from I by O(sqrt(N / P)) (at P = N its smallest eigenvalue is near 0, so the
    least-squares map amplifies the noise). The targets are computed from the inputs actually used;
    the test inputs are fresh Gaussian draws either way (population Sigma_x = I).
    """
    check_key(key)
    snr = check_positive("snr", snr)
    width = check_integer("width", width)
    samples = check_integer("samples", samples)
    test_samples = check_integer("test_samples", test_samples)
    if not isinstance(whiten, bool):
        raise ValueError(f"whiten must be True or False, got {whiten!r}")
    if whiten and samples < width:
        raise ValueError(
            f"white inputs need samples >= width (P >= N), got {samples} samples for width {width}; "
            "use more samples, or whiten=False for raw Gaussian inputs"
        )
    kt, kx, kz, kxt, kzt = jr.split(key, 5)
    teacher = random_teacher(kt, width, width, rank=rank, spectrum=spectrum)
    s = svd(teacher, compute_uv=False)
    s = s[s > 1e-12 * s[0]]
    noise_std = float(jnp.sqrt(jnp.mean(s**2))) / snr
    dtype = teacher.dtype

    def draw(kx, kz, n, white):
        x = jr.normal(kx, (n, width), dtype=dtype)
        if white:
            x = _whiten(x)
        return x, x @ teacher.T + noise_std * jr.normal(kz, (n, width), dtype=dtype)

    x, y = draw(kx, kz, samples, whiten)
    xt, yt = draw(kxt, kzt, test_samples, False)
    task, irreducible = _empirical_task(x, y)
    return StudentTeacherData(task, teacher, x, y, xt, yt, irreducible, noise_std)


def read_xy_npz(path: str, shapes: str, optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Reads a user's ``.npz`` with arrays ``x`` and ``y`` (``shapes`` describes them) and the
    ``optional`` arrays it holds. Every array read must hold finite real numbers."""
    try:
        data = np.load(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, EOFError):
            message = f"the file is empty or truncated ({message})"
        raise ValueError(f"cannot read {path!r} as an .npz file with arrays x and y: {message}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} must be an .npz archive (np.savez) with arrays named {shapes}")
    with data:
        if "x" not in data.files or "y" not in data.files:
            raise ValueError(f"{path!r} must contain arrays named {shapes}")
        out = {}
        for name in ("x", "y") + tuple(optional):
            if name not in data.files:
                continue
            try:
                raw = data[name]
            except ValueError:  # an object array: reading it would need pickle
                raise ValueError(
                    f"array {name} in {path!r} must hold real numbers, got an object array"
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                message = " ".join(str(err).split()) or type(err).__name__
                raise ValueError(
                    f"cannot read array {name} in {path!r} (a corrupt file?): {message}"
                ) from None
            out[name] = as_real_array(f"array {name} in {path!r}", raw, numpy=True)
    return out


def load_regression_data(path: str) -> tuple[Task, Array]:
    """Loads a user's ``.npz`` with arrays ``x`` (P, n_in) and ``y`` (P, n_out) as a :class:`Task`.

    Returns the task built from the empirical Sigma_x and least-squares map, and the irreducible
    constant, so that 1/2 mean ||y - W x||^2 = task.loss(W) + constant.
    """
    data = read_xy_npz(path, "'x' (P, n_in) and 'y' (P, n_out)")
    x = jnp.asarray(data["x"], dtype=jnp.result_type(float))
    y = jnp.asarray(data["y"], dtype=jnp.result_type(float))
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must be 2-D with the same number of rows, got {x.shape} and {y.shape}")
    if x.shape[0] < 1:
        raise ValueError(f"{path!r} holds no samples: x and y need at least one row")
    return _empirical_task(x, y)
