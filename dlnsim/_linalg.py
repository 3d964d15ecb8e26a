"""The linear-algebra core: decompositions that never batch, and PSD matrix functions.

**Decompositions one matrix at a time.** jaxlib's CPU LAPACK kernels split a *batch* of
matrices into sub-tasks on the XLA thread pool that runs the kernel and then block on them;
when XLA runs as many independent batched decompositions at once as the pool has threads,
every thread waits and the process deadlocks (docs/known-problems.md). An *unbatched*
decomposition runs inline. :func:`eigh`, :func:`svd`, :func:`inv` and :func:`qr` therefore
decompose a stack of matrices, or a ``vmap`` batch (through
:func:`jax.custom_batching.sequential_vmap`), in a loop of single-matrix calls. Their
derivatives are explicit JVP rules that are linear in the tangent (so reverse mode works) and
never decompose a tangent: eigh and svd follow the classical perturbation formulas, the same
as ``jnp.linalg``'s own rules, and inv uses d(A^-1) = -A^-1 dA A^-1.

**PSD matrix functions with one rank-cutoff rule.** :func:`spectral_power` is
f(lambda) = (lambda + damping)^(-power), zero where lambda + damping <= rcond * max(lambda);
:func:`default_rcond` is the one default cutoff, 10 * size * eps. :func:`psd_function_apply`
computes f(M) v with a Daleckii-Krein derivative, finite at repeated eigenvalues.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_batching import sequential_vmap


def _one_at_a_time(fn, a, *rest):
    """fn on a (..., m, n) stack: a loop of single-matrix calls (rest is shared)."""
    if a.ndim == 2:
        return fn(a, *rest)
    lead = a.shape[:-2]
    flat = a.reshape((-1,) + a.shape[-2:])
    out = jax.lax.map(lambda x: fn(x, *rest), flat)
    return jax.tree.map(lambda o: o.reshape(lead + o.shape[1:]), out)


@sequential_vmap
def _eigh_single(a):
    return jnp.linalg.eigh(a)


@sequential_vmap
def _inv_single(a):
    return jnp.linalg.inv(a)


@sequential_vmap
def _qr_single(a):
    return jnp.linalg.qr(a)


@sequential_vmap
def _svd_thin_single(a):
    return jnp.linalg.svd(a, full_matrices=False)


@sequential_vmap
def _svd_full_single(a):
    return jnp.linalg.svd(a, full_matrices=True)


@sequential_vmap
def _svdvals_single(a):
    return jnp.linalg.svd(a, compute_uv=False)


def _t(x):
    return jnp.swapaxes(x, -1, -2)


@jax.custom_jvp
def eigh(a):
    """Eigenvalues (ascending) and eigenvectors of the symmetric part of ``a`` (..., n, n), one
    matrix at a time (see the module docstring). Same values and derivative as
    ``jnp.linalg.eigh``: dw = diag(V^T dA V), dV = V (F o V^T dA V) with F_ij = 1/(w_j - w_i)."""
    return _one_at_a_time(_eigh_single, 0.5 * (a + _t(a)))


@eigh.defjvp
def _eigh_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    w, v = eigh(a)
    vdv = _t(v) @ (0.5 * (da + _t(da))) @ v
    eye = jnp.eye(a.shape[-1], dtype=w.dtype)
    gaps = 1.0 / (eye + w[..., None, :] - w[..., :, None]) - eye
    return (w, v), (jnp.diagonal(vdv, axis1=-2, axis2=-1), v @ (gaps * vdv))


def svd(a, *, full_matrices: bool = False, compute_uv: bool = True):
    """``jnp.linalg.svd`` one matrix at a time (see the module docstring).

    Differentiable where ``jnp.linalg.svd`` is: singular values always, the thin factors, and
    the full factors of a square matrix (which equal the thin ones).
    """
    if not compute_uv:
        return _svdvals(a)
    if full_matrices and a.shape[-1] != a.shape[-2]:
        return _svd_full(a)
    return _svd_thin(a)


@jax.custom_jvp
def _svdvals(a):
    return _one_at_a_time(_svdvals_single, a)


@_svdvals.defjvp
def _svdvals_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    u, s, vt = _svd_thin(a)
    return s, jnp.einsum("...ik,...ij,...jk->...k", u, da, _t(vt))


@jax.custom_jvp
def _svd_full(a):
    return _one_at_a_time(_svd_full_single, a)


@_svd_full.defjvp
def _svd_full_jvp(primals, tangents):
    raise NotImplementedError(
        "the derivative of the full SVD of a non-square matrix is not implemented (as in jnp.linalg.svd); "
        "use full_matrices=False"
    )


@jax.custom_jvp
def _svd_thin(a):
    return _one_at_a_time(_svd_thin_single, a)


@_svd_thin.defjvp
def _svd_thin_jvp(primals, tangents):
    """The thin-SVD perturbation formulas (real case), as in ``jnp.linalg.svd``'s JVP."""
    (a,), (da,) = primals, tangents
    u, s, vt = _svd_thin(a)
    ut, v = _t(u), _t(vt)
    s_row = s[..., None, :]
    ds_mat = ut @ da @ v
    ds = jnp.diagonal(ds_mat, axis1=-2, axis2=-1)
    eye = jnp.eye(s.shape[-1], dtype=s.dtype)
    s_diffs = (s_row + _t(s_row)) * (s_row - _t(s_row))
    gaps = 1.0 / (s_diffs + eye) - eye
    s_zero = (s == 0).astype(s.dtype)
    s_inv = 1.0 / (s + s_zero) - s_zero
    uv_diag = 0.5 * (ds_mat - _t(ds_mat)) * (s_inv[..., None, :] * eye)
    dss, sds = s_row * ds_mat, _t(s_row) * ds_mat
    du = u @ (gaps * (dss + _t(dss)) + uv_diag)
    dv = v @ (gaps * (sds + _t(sds)))
    m, n = a.shape[-2:]
    if m > n:
        dav = da @ v
        du = du + (dav - u @ (ut @ dav)) * s_inv[..., None, :]
    if n > m:
        dau = _t(da) @ u
        dv = dv + (dau - v @ (vt @ dau)) * s_inv[..., None, :]
    return (u, s, vt), (du, ds, _t(dv))


@jax.custom_jvp
def inv(a):
    """``jnp.linalg.inv`` one matrix at a time; d(A^-1) = -A^-1 dA A^-1."""
    return _one_at_a_time(_inv_single, a)


@inv.defjvp
def _inv_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    a_inv = inv(a)
    return a_inv, -a_inv @ da @ a_inv


def qr(a):
    """``jnp.linalg.qr`` (reduced) one matrix at a time. Used to draw random orthogonal
    matrices; not differentiable."""
    return _one_at_a_time(_qr_single, a)


def default_rcond(size: int, dtype) -> float:
    """The package's one rank-cutoff rule: eigenvalues at or below 10 * size * eps times the
    largest count as zero (eps of ``dtype``; size is the matrix's order)."""
    return 10.0 * size * float(jnp.finfo(dtype).eps)


def spectral_power(evals, *, power, damping, rcond):
    """f(lambda) = (lambda + damping)^(-power), set to 0 where lambda + damping <= rcond * max(lambda).

    At ``damping = 0`` this is the pseudo-inverse power with a relative rank cutoff.
    """
    shifted = evals + damping
    cutoff = rcond * jnp.max(evals)
    keep = shifted > cutoff
    safe = jnp.where(keep, shifted, 1.0)
    return jnp.where(keep, safe ** (-power), 0.0)


def power_and_derivative(mu, power, damping, rcond):
    """:func:`spectral_power` and its derivative -power (mu + damping)^(-power - 1) (0 where cut)."""
    f = spectral_power(mu, power=power, damping=damping, rcond=rcond)
    keep = f != 0
    safe = jnp.where(keep, mu + damping, 1.0)
    return f, jnp.where(keep, -power * safe ** (-power - 1.0), 0.0)


def divided_differences(mu1, mu2, f1, f2, fprime1, fprime2):
    """f[mu1, mu2] = (f1 - f2) / (mu1 - mu2), or the mean derivative where mu1 and mu2 (nearly) meet."""
    diff = mu1 - mu2
    scale = jnp.maximum(jnp.maximum(jnp.abs(mu1), jnp.abs(mu2)), jnp.finfo(diff.dtype).tiny)
    close = jnp.abs(diff) <= 1e-9 * scale
    return jnp.where(close, 0.5 * (fprime1 + fprime2), (f1 - f2) / jnp.where(close, 1.0, diff))


def _columnwise(f, vector):
    """f shaped to scale the rows of ``vector`` (a vector, or a matrix of column vectors)."""
    return f if vector.ndim == 1 else f[:, None]


@jax.custom_jvp
def psd_function_apply(matrix, vector, power, damping, rcond):
    """f(M) v for symmetric PSD M with f = :func:`spectral_power`, by eigh.

    The custom JVP uses the Daleckii-Krein divided differences, so derivatives stay finite at
    repeated eigenvalues (where differentiating eigh itself divides by zero gaps).
    """
    evals, evecs = eigh(matrix)
    f = spectral_power(evals, power=power, damping=damping, rcond=rcond)
    return evecs @ (_columnwise(f, vector) * (evecs.T @ vector))


@psd_function_apply.defjvp
def _psd_function_apply_jvp(primals, tangents):
    matrix, vector, power, damping, rcond = primals
    dmatrix, dvector, dpower, ddamping = tangents[:4]
    evals, evecs = eigh(matrix)
    f, fprime = power_and_derivative(evals, power, damping, rcond)
    # d f / d damping = f'; d f / d power = -log(lambda + damping) f (rcond is a cut, not differentiated)
    dlog = jnp.where(f != 0, jnp.log(jnp.where(f != 0, evals + damping, 1.0)), 0.0)
    df = fprime * ddamping - dlog * f * dpower
    coeffs = evecs.T @ vector
    out = evecs @ (_columnwise(f, vector) * coeffs)
    dd = divided_differences(
        evals[:, None], evals[None, :], f[:, None], f[None, :], fprime[:, None], fprime[None, :]
    )
    dm = evecs.T @ (0.5 * (dmatrix + dmatrix.T)) @ evecs
    tangent = evecs @ (
        (dd * dm) @ coeffs + _columnwise(f, vector) * (evecs.T @ dvector) + _columnwise(df, vector) * coeffs
    )
    return out, tangent
