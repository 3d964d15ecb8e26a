"""The layer-wise block-diagonal Gauss-Newton curvature (Huh 2020, eqs. 23-25) and the LU path
that square nets share with Bernacchia et al. 2018, eq. 10."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._checks import as_real_array, check_covariance, check_nonnegative, check_positive
from ._curvature_base import AbstractCurvature, all_square, choose, hyperparameter
from ._linalg import (
    default_rcond,
    divided_differences,
    eigh,
    inv,
    power_and_derivative,
    psd_function_apply,
    spectral_power,
    svd,
)
from ._models import Weights, network_map, prefix_products, suffix_products
from ._tasks import Task


class BlockDiagonalGaussNewton(AbstractCurvature):
    """Layer-wise block-diagonal H+ (Huh 2020, eqs. 23-25; Bernacchia et al. 2018, eq. 22).

    Block i is H_ii = (W_>i^T W_>i) (x) (W_<i Sigma W_<i^T), a Kronecker product, so its
    (pseudo-inverse, damped) powers act exactly through the factors. They are taken from the
    thin SVDs W_>i = U_b S_b V_b^T and W_<i Sigma^(1/2) = U_a S_a V_a^T rather than from the
    Gram matrices, so small singular values keep full relative accuracy: with g_i = J_i^T r,
    (H_ii + eps)^(-s) g_i = V_b [S_b S_a^T (S_b^2 S_a^2T + eps)^(-s) o (U_b^T r V_a)] U_a^T.
    With ``depth_calibrated`` (the default) the curvature is d * blockdiag(H_ii), which gives the
    d^(-1/q) step of Huh 2020 eq. 25: NGD-d then has NGD's map dynamics and sqrt-NGD-d
    sqrt-NGD's parameter speed.

    NGD-d (power 1, no damping; Huh 2020, eq. 24) on square nets skips the SVDs: there the update is
    W_>i^+ r (W_<i Sigma^(1/2))^+ / d = W_>i^-1 (W - W*) W_<i^-1 / d, and the inverses of all the
    products come from one LU inverse per layer (:func:`layer_inverse_chains`). That path is
    taken only when power-iteration estimates put every block's smallest singular-value product
    10x above the rank cutoff, so it cuts nothing the SVDs would keep or cut; otherwise (and
    under ``vmap``, where both branches run) the SVDs decide.
    """

    depth_calibrated: bool = eqx.field(default=True, static=True, kw_only=True)

    def _apply(self, weights, task, power, damping, scale):
        """(scale d blockdiag(H_ii) + damping)^(-power) g (see :meth:`normalized_precondition`)."""
        scale = (float(len(weights)) if self.depth_calibrated else 1.0) * scale
        suf, fas, rconds = self._blocks(weights, task)
        delta = network_map(weights) - task.teacher
        residual = delta @ task.input_cov_sqrt

        def by_svd():
            return tuple(
                _kron_block_apply(b, fa, residual, power, damping, rcond, scale)
                for fa, b, rcond in zip(fas, suf, rconds, strict=True)
            )

        if not all_square(weights):
            return by_svd()

        def by_inverses_if_safe():
            # NGD-d on square nets: (scale H_ii)^+ g_i = W_>i^+ r (W_<i Sigma^(1/2))^+ / scale, and
            # with invertible layers the pseudo-inverses of the products are products of inverses.
            # That path is taken when no singular-value product comes near the rank cutoff, so its
            # result is the pseudo-inverse one; else the SVDs decide what is cut.
            safe, left, right = self._inverse_path(weights, task, suf, fas, rconds)

            def by_inverses():
                return tuple(lb @ delta @ ra / scale for lb, ra in zip(left, right, strict=True))

            return choose(safe, by_inverses, by_svd)

        # the LU path exists for NGD-d only (power 1, no damping): an array predicate, so new
        # powers and dampings reuse the compiled program
        return choose(_is_ngd(power, damping), by_inverses_if_safe, by_svd)

    def takes_inverse_path(self, weights: Weights, task: Task, *, power: float = 1.0, damping: float = 0.0):
        """Whether :meth:`precondition` skips the SVDs for these weights (see the class docstring)."""
        power = hyperparameter("power", power, check_positive)
        damping = hyperparameter("damping", damping, check_nonnegative)
        if not bool(_is_ngd(power, damping)) or not all_square(weights):
            return False
        return bool(self._inverse_path(weights, task, *self._blocks(weights, task))[0])

    def _blocks(self, weights, task):
        """W_>i, W_<i Sigma^(1/2) and the rank cutoff of each block."""
        pre, suf = prefix_products(weights), suffix_products(weights)
        fas = [a @ task.input_cov_sqrt for a in pre]
        dtype = jnp.result_type(weights[0], task.teacher)
        return suf, fas, [self._block_rcond(b, fa, dtype) for fa, b in zip(fas, suf, strict=True)]

    def _inverse_path(self, weights, task, suf, fas, rconds):
        left, right, cond_b, cond_a = square_path_conditions(weights, task, suf, fas)
        safe = jnp.all(
            cond_b * cond_a * jnp.sqrt(jnp.stack([jnp.asarray(r) for r in rconds])) < _CUTOFF_MARGIN
        )
        return jax.lax.stop_gradient(safe), left, right

    def _block_rcond(self, b, fa, dtype) -> float:
        if self.rcond is None and dtype != jnp.float64:
            # In float32, 10 size eps (1e-3 at size 1024) would drop well-resolved directions.
            # The SVDs resolve singular values to about n eps of the largest, so the cutoff
            # is put on the products s_b s_a instead: (10 n eps)^2 on s_b^2 s_a^2.
            eps = float(jnp.finfo(dtype).eps)
            return (10.0 * max(b.shape + fa.shape) * eps) ** 2
        return self._rcond(b.shape[1] * fa.shape[0], dtype)


class CovarianceCurvature(AbstractCurvature):
    """Bernacchia et al. 2018's covariance form of the layer-wise Fisher (eqs. 10, 13-15, 20).

    Block i is d (<e_i e_i^T> + sqrt(lambda) I) (x) (<x_{i-1} x_{i-1}^T> + sqrt(lambda) I), with
    <e_i e_i^T> = W_>i^T Sigma~^-1 W_>i (eq. 14) and <x_{i-1} x_{i-1}^T> = W_<i Sigma_x W_<i^T (eq. 15).
    It preconditions the gradient of the Gaussian negative log-likelihood with output noise
    covariance Sigma~, -<e_i x_{i-1}^T> = W_>i^T Sigma~^-1 (W - W*) Sigma_x W_<i^T (eq. 13), which is
    the task's loss gradient when Sigma~ = I. Powers act factor by factor, (A (x) B)^(-s) =
    A^(-s) (x) B^(-s), each factor's pseudo-inverse cut at its own rank cutoff; a damping eps > 0 of
    the whole block (Huh 2020, eq. 17) acts on the products of the factors' eigenvalues.

    At power 1 without eps this is :class:`dlnsim.BernacchiaFlow`'s eq. 10 (eq. 20 with lambda);
    with Sigma~ = I and lambda = 0 it equals :class:`BlockDiagonalGaussNewton` (NGD-d), so it composes
    with any rule of :class:`dlnsim.NaturalGradientFlow` (q-NGD-d with Bernacchia's damping).

    Attributes:
        output_cov: Sigma~ (None: the identity), symmetric positive definite.
        lam: the Levenberg-Marquardt lambda of eq. 20 (sqrt(lambda) on each factor), an array leaf.
    """

    output_cov: Float[Array, "n n"] | None = None
    lam: Float[Array, ""] = eqx.field(
        default=0.0, converter=lambda v: hyperparameter("lam", v, check_nonnegative)
    )

    def __check_init__(self):
        if self.output_cov is not None:
            check_covariance("output_cov", as_real_array("output_cov", self.output_cov, 2), definite=True)

    def _apply(self, weights, task, power, damping, scale):
        """(scale d blockdiag(A_i (x) B_i) + damping)^(-power) g (see the class docstring)."""
        pre, suf = prefix_products(weights), suffix_products(weights)
        nd, d = weights[-1].shape[0], len(weights)
        dtype = jnp.result_type(weights[0], task.teacher)
        if self.output_cov is not None and tuple(self.output_cov.shape) != (nd, nd):
            raise ValueError(
                f"output_cov must be ({nd}, {nd}) to match the net's output width {nd}, "
                f"got {tuple(self.output_cov.shape)}"
            )
        precision = (
            jnp.eye(nd, dtype=dtype) if self.output_cov is None else inv(jnp.asarray(self.output_cov, dtype))
        )
        delta = network_map(weights) - task.teacher
        shift = jnp.sqrt(self.lam)
        out = []
        for a, b in zip(pre, suf, strict=True):
            err = b.T @ precision @ b
            act = a @ task.input_cov @ a.T
            grad = b.T @ precision @ delta @ task.input_cov @ a.T
            rc_err, rc_act = self._rcond(err.shape[0], dtype), self._rcond(act.shape[0], dtype)

            def by_factors(err=err, act=act, grad=grad):
                return (scale * d) ** (-power) * layer_natural_gradient(
                    err, grad, act, shift, self.rcond, power
                )

            def by_products(err=err, act=act, grad=grad, rc_err=rc_err, rc_act=rc_act):
                ee, ue = eigh(err)
                ea, ua = eigh(act)
                # the factors' cut eigenvalues stay cut (pseudo-inverse), as in by_factors
                keep_e = (ee + shift > rc_err * jnp.max(ee)).astype(dtype)
                keep_a = (ea + shift > rc_act * jnp.max(ea)).astype(dtype)
                mu = scale * d * (ee + shift)[:, None] * (ea + shift)[None, :]
                f = (
                    spectral_power(mu, power=power, damping=damping, rcond=0.0)
                    * keep_e[:, None]
                    * keep_a[None, :]
                )
                return ue @ (f * (ue.T @ grad @ ua)) @ ua.T

            out.append(choose(damping == 0.0, by_factors, by_products))
        return tuple(out)


def factor_rcond(size: int, dtype, rcond):
    """The relative eigenvalue cutoff of a size x size Kronecker factor: ``rcond`` if given,
    else ``default_rcond(size)`` (10 size eps)."""
    return default_rcond(size, dtype) if rcond is None else rcond


def layer_natural_gradient(err_cov, cross, act_cov, shift, rcond=None, power=1.0):
    """(<e e^T> + shift I)^(-power) <e x^T> (<x x^T> + shift I)^(-power): one layer's natural
    gradient without the 1/d (Bernacchia et al. 2018, eq. 10; with shift = sqrt(lambda), eq. 20).
    Each factor's (pseudo-inverse) power is cut at its own rank cutoff, ``default_rcond(size)``
    unless ``rcond`` is given.

    Shared by :class:`CovarianceCurvature` (any power: q-NGD-d with Bernacchia's damping), the
    continuous-time :class:`dlnsim.BernacchiaFlow` (population covariances) and the online
    algorithm of ``dlnsim._online`` (minibatch estimates).
    """
    rc_err = factor_rcond(err_cov.shape[0], err_cov.dtype, rcond)
    rc_act = factor_rcond(act_cov.shape[0], act_cov.dtype, rcond)
    left = psd_function_apply(err_cov, cross, power, shift, rc_err)
    return psd_function_apply(act_cov, left.T, power, shift, rc_act).T


# The inverse paths of the block rules require every estimated condition number to be 10x inside
# the rank cutoff, so estimates that are low by up to 10x (four factors of 0.56) change nothing.
_CUTOFF_MARGIN = 0.1


def layer_inverse_chains(weights: Weights):
    """[W_>1^-1, ..., W_>d^-1] and [W_<1^-1, ..., W_<d^-1] for square layers, from one LU
    inverse per layer: W_>(i-1)^-1 = W_i^-1 W_>i^-1 and W_<(i+1)^-1 = W_<i^-1 W_i^-1.

    Singular layers give non-finite entries, which :func:`condition_estimate` reports as nan.
    """
    inverses = inv(jnp.stack(weights))
    eye = jnp.eye(weights[0].shape[0], dtype=weights[0].dtype)
    left = [eye]
    for k in range(len(weights) - 1, 0, -1):
        left.append(inverses[k] @ left[-1])
    right = [eye]
    for k in range(len(weights) - 1):
        right.append(right[-1] @ inverses[k])
    return left[::-1], right


def square_path_conditions(weights: Weights, task: Task, suf, fas):
    """The inverse chains of :func:`layer_inverse_chains` and the estimated condition numbers
    of each W_>i (``suf``) and W_<i Sigma^(1/2) (``fas``), for the block rules' LU path."""
    left, right = layer_inverse_chains(weights)
    s_inv = inv(task.input_cov_sqrt)
    cond = condition_estimate(jnp.stack(suf + fas), jnp.stack(left + [s_inv @ ra for ra in right]))
    d = len(weights)
    return left, right, cond[:d], cond[d:]


_POWER_ITERATIONS = 8


def spectral_norm_estimate(matrices):
    """||(M^T M)^k v||^(1/2k) for a fixed unit v and k = 8, for a stack of matrices: a lower
    bound on each ||M||_2 that is within the factor |<v, top right singular vector>|^(1/2k) of
    it (0.80 for |<v, .>| = 0.03, 0.65 for 1e-3).
    """
    n = matrices.shape[-1]
    v = jnp.cos(0.7 + 2.4 * jnp.arange(n, dtype=matrices.dtype))  # fixed, spread over all entries
    v = jnp.broadcast_to(v / jnp.linalg.norm(v), matrices.shape[:-2] + (n,))
    log_norm = jnp.zeros(matrices.shape[:-2], matrices.dtype)
    _, _, log_norm = jax.lax.fori_loop(0, _POWER_ITERATIONS, _power_step, (matrices, v, log_norm))
    return jnp.exp(0.5 * log_norm / _POWER_ITERATIONS)


def _power_step(_, carry):
    matrices, v, log_norm = carry
    w = jnp.einsum("...ji,...jk,...k->...i", matrices, matrices, v)
    norm = jnp.linalg.norm(w, axis=-1)
    return matrices, w / norm[..., None], log_norm + jnp.log(norm)


@jax.jit
def condition_estimate(matrices, inverses):
    """||M|| ||M^-1|| (2-norms) for a stack of matrices and their inverses, estimated from below
    by :func:`spectral_norm_estimate`; nan where an inverse is not finite. Not differentiated:
    it only selects a code path."""
    matrices, inverses = jax.lax.stop_gradient(matrices), jax.lax.stop_gradient(inverses)
    finite = jnp.all(jnp.isfinite(inverses), axis=(1, 2))
    inverses = jnp.where(finite[:, None, None], inverses, 0.0)
    norms = spectral_norm_estimate(jnp.concatenate([matrices, inverses]))
    est = norms[: matrices.shape[0]] * norms[matrices.shape[0] :]
    return jnp.where(finite, est, jnp.nan)


@jax.custom_jvp
def _kron_block_apply(b, fa, residual, power, damping, rcond, scale):
    """(scale G_b (x) G_a + damping)^(-power) J_i^T r for one layer block of H+.

    G_b = W_>i^T W_>i and G_a = W_<i Sigma W_<i^T (Huh 2020, eq. 23); J_i^T r = W_>i^T r (W_<i Sigma^(1/2))^T.
    The value comes from the thin SVDs b = W_>i = U_b S_b V_b^T and fa = W_<i Sigma^(1/2) = U_a S_a V_a^T,
    so small singular values keep full relative accuracy:
    V_b [S_b S_a f(scale S_b^2 S_a^2) o (U_b^T r V_a)] U_a^T. The custom JVP is the Daleckii-Krein
    formula for a function of a Kronecker product, finite at repeated singular values; power,
    damping and scale are differentiated too (rcond is a cut, not differentiated).
    """
    ub, sb, vbt = svd(b, full_matrices=False)
    ua, sa, vat = svd(fa, full_matrices=False)
    evals = scale * (sb**2)[:, None] * (sa**2)[None, :]
    f = spectral_power(evals, power=power, damping=damping, rcond=rcond)
    core = sb[:, None] * sa[None, :] * f * (ub.T @ residual @ vat.T)
    return vbt.T @ core @ ua.T


@_kron_block_apply.defjvp
def _kron_block_apply_jvp(primals, tangents):
    b, fa, residual, power, damping, rcond, scale = primals
    db, dfa, dres, dpower, ddamping, _, dscale = tangents
    out = _kron_block_apply(b, fa, residual, power, damping, rcond, scale)
    _, sb, vbt = svd(b, full_matrices=True)
    ua, sa, _ = svd(fa, full_matrices=True)
    vb = vbt.T  # eigenvectors of G_b (n_i x n_i); eigenvalues sb^2 padded with zeros
    beta = jnp.zeros(b.shape[1], sb.dtype).at[: sb.shape[0]].set(sb**2)
    alpha = jnp.zeros(fa.shape[0], sa.dtype).at[: sa.shape[0]].set(sa**2)
    mu = scale * beta[:, None] * alpha[None, :]
    f, fprime = power_and_derivative(mu, power, damping, rcond)
    g = b.T @ residual @ fa.T
    dg = db.T @ residual @ fa.T + b.T @ dres @ fa.T + b.T @ residual @ dfa.T
    e_b = vb.T @ (db.T @ b + b.T @ db) @ vb
    e_a = ua.T @ (dfa @ fa.T + fa @ dfa.T) @ ua
    x = vb.T @ g @ ua
    # d f(mu)_kl along G_b: sum_m f[mu_kl, mu_ml] scale (E_b)_km alpha_l x_ml
    dd_b = divided_differences(mu[:, None, :], mu[None, :, :], f[:, None, :], f[None, :, :],
                                fprime[:, None, :], fprime[None, :, :])  # fmt: skip  # (k, m, l)
    t_b = scale * alpha[None, :] * jnp.einsum("kml,km,ml->kl", dd_b, e_b, x)
    # along G_a: sum_n f[mu_kl, mu_kn] scale beta_k (E_a)_ln x_kn
    dd_a = divided_differences(mu[:, :, None], mu[:, None, :], f[:, :, None], f[:, None, :],
                                fprime[:, :, None], fprime[:, None, :])  # fmt: skip  # (k, l, n)
    t_a = scale * beta[:, None] * jnp.einsum("kln,ln,kn->kl", dd_a, e_a, x)
    # along the hyperparameters: f' (dscale beta alpha + ddamping) - log(mu + damping) f dpower
    dlog = jnp.where(f != 0, jnp.log(jnp.where(f != 0, mu + damping, 1.0)), 0.0)
    df = fprime * (dscale * beta[:, None] * alpha[None, :] + ddamping) - dlog * f * dpower
    tangent = vb @ (f * (vb.T @ dg @ ua) + df * x + t_b + t_a) @ ua.T
    return out, tangent


def _is_ngd(power, damping):
    """Whether (power, damping) is undamped NGD, as an array (so it may be traced)."""
    return (power == 1.0) & (damping == 0.0)


__all__ = [
    "BlockDiagonalGaussNewton",
    "CovarianceCurvature",
    "condition_estimate",
    "layer_inverse_chains",
    "spectral_norm_estimate",
    "square_path_conditions",
]
