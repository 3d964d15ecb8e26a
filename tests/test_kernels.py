"""Analytic kernels of wide networks (Karakida & Osawa 2020, S.168-S.178) against finite widths."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy.special import erf

from dlnsim import wide
from dlnsim.wide import _activations as activations


def inputs(n=5, m0=6, seed=0):
    return np.asarray(wide.normalize_inputs(jr.normal(jr.PRNGKey(seed), (n, m0))))


def test_relu_closed_form_s176_s178():
    """A_l, Xi_l and q_l of relu in the matrix forms S.176-S.178."""
    x = inputs()
    k = wide.analytic_kernels(x, depth=3, activation="relu", sigma_w2=2.0, sigma_b2=0.5)
    q1 = 2.0 / 6 + 0.5  # S.178
    assert k.q[0] == pytest.approx(np.full(5, q1))
    qbar = np.clip((2.0 * x @ x.T / 6 + 0.5) / q1, -1.0, 1.0)
    a1 = q1 / (2 * np.pi) * (np.sqrt(1 - qbar**2) + np.pi / 2 * qbar + qbar * np.arcsin(qbar))
    np.testing.assert_allclose(k.A[1], a1, atol=1e-14)
    np.testing.assert_allclose(k.Xi[0], (np.arcsin(qbar) + np.pi / 2) / (2 * np.pi), atol=1e-14)
    assert k.q[1] == pytest.approx(np.full(5, 2.0 / 2 * q1 + 0.5))  # q_l = sigma_w^2 q_{l-1} / 2 + sigma_b^2
    # B_L = 1, B_l = sigma_w^2 Xi_l o B_{l+1} (S.171); Theta_l = sigma_w^2 B_l o A_{l-1} + sigma_b^2 B_l
    np.testing.assert_allclose(k.B[2], 1.0)
    np.testing.assert_allclose(k.B[0], 4.0 * k.Xi[0] * k.Xi[1], atol=1e-14)
    np.testing.assert_allclose(k.ntk, sum(2.0 * k.B[i] * k.A[i] + 0.5 * k.B[i] for i in range(3)), atol=1e-13)


@pytest.mark.parametrize(
    "name, shift", [("relu", 0.0), ("erf", 0.0), ("identity", 0.0), ("shifted-relu", 0.4)]
)
def test_each_activation_closed_forms_equal_the_generic_quadrature(name, shift):
    """Each closed-form second moment (S.175, S.156) equals the Gauss-Legendre quadrature of the
    activation's own host phi that tanh uses (shifted relu: its kink is not at the rule's split;
    checked against its cross moment below), and so does each closed-form cross moment of a smooth
    activation (erf, identity; relu's is checked against S.176-S.177 above); phi' is the autodiff
    derivative of phi (away from the kink) in JAX and equals the host one."""
    phi = activations.activation_named(name, shift)
    generic = activations.AbstractActivation
    q1, q2 = np.array([0.3, 1.7, 0.9]), np.array([0.5, 1.1])
    cov = 0.6 * np.sqrt(np.outer(q1, q2)) * np.array([[1.0, -0.4], [0.2, 0.9], [-0.7, 0.5]])
    root = np.sqrt(np.outer(q1, q2))
    c = np.clip(cov / root, -1.0, 1.0)
    for d in (False, True):
        if name != "shifted-relu":  # the generic rule splits at 0, not at the kink -s (checked above)
            np.testing.assert_allclose(phi.second_moment(q1, d), generic.second_moment(phi, q1, d), rtol=1e-9)
        if name in ("erf", "identity"):  # smooth: the 2-D rule is exact to round-off (not at a kink)
            quad = generic._cross(phi, q1, q2, cov, root, c, d)
            np.testing.assert_allclose(phi.cross_moment(q1, q2, cov, d), quad, rtol=1e-10, atol=1e-14)
    u = jnp.array([-1.3, -0.2, 0.35, 2.1])
    np.testing.assert_allclose(phi.derivative(u), jax.vmap(jax.grad(phi))(u), rtol=1e-14)
    np.testing.assert_allclose(phi.host(True)(np.asarray(u)), phi.derivative(u), rtol=1e-14)
    np.testing.assert_allclose(phi.host()(np.asarray(u)), phi(u), rtol=1e-14)
    assert phi.active_fraction(0.7) == pytest.approx(
        float(np.mean(phi.host(True)(np.sqrt(0.7) * np.random.default_rng(0).normal(size=400_000)) != 0)),
        abs=5e-3,
    )


def test_quadrature_matches_closed_forms(monkeypatch):
    """Shifted relu with s = 0 runs the quadrature path and must reproduce relu's closed form; the 2-D
    Gauss-Legendre rule of tanh must agree with its 1-D second moment on the diagonal and with a
    rule of twice the order; erf's closed
    form must agree with an independent 2-D Gauss-Hermite sum."""
    named = activations.activation_named
    x = inputs()
    a = wide.analytic_kernels(x, depth=4, activation="relu")
    b = wide.analytic_kernels(x, depth=4, activation="shifted-relu", shift=0.0)
    for u, v in zip(a.A + a.Xi + a.B + a.layer_ntk, b.A + b.Xi + b.B + b.layer_ntk):
        np.testing.assert_allclose(v, u, rtol=1e-12, atol=1e-14)
    q = np.array([0.3, 1.7])
    for act in ("tanh", "shifted-relu"):
        for deriv in (False, True):
            shift = 0.5 if act == "shifted-relu" else 0.0
            diag = np.diag(named(act, shift).cross_moment(q, q, np.diag(q), deriv))
            np.testing.assert_allclose(diag, named(act, shift).second_moment(q, deriv), rtol=1e-11)
    cov2 = np.array([[0.3, 0.5], [0.5, 1.7]])
    base = [named("tanh", 0.0).cross_moment(q, q, cov2, d) for d in (False, True)]
    monkeypatch.setattr(activations, "_QUAD_NODES", 160)
    for d, b in zip((False, True), base):
        np.testing.assert_allclose(named("tanh", 0.0).cross_moment(q, q, cov2, d), b, rtol=1e-11)
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / math.sqrt(2 * math.pi)
    q1, q2, cov = 0.8, 1.3, 0.6
    c, s = cov / math.sqrt(q1 * q2), math.sqrt(1 - cov**2 / (q1 * q2))
    u = math.sqrt(q1) * z[:, None]
    v = math.sqrt(q2) * (c * z[:, None] + s * z[None, :])
    direct = np.sum(w[:, None] * w[None, :] * erf(u) * erf(v))
    closed = named("erf", 0.0).cross_moment(np.array([q1]), np.array([q2]), np.array([[cov]]), False)[0, 0]
    assert closed == pytest.approx(direct, rel=1e-10)
    dphi = 4 / math.pi * np.exp(-(u**2) - v**2)
    closed_d = named("erf", 0.0).cross_moment(np.array([q1]), np.array([q2]), np.array([[cov]]), True)[0, 0]
    assert closed_d == pytest.approx(np.sum(w[:, None] * w[None, :] * dphi), rel=1e-10)


@pytest.mark.parametrize(
    "activation,shift", [("relu", 0.0), ("erf", 0.0), ("tanh", 0.0), ("shifted-relu", 1.0)]
)
def test_empirical_kernels_converge_with_width(activation, shift):
    """The finite-width A_l, B_l, Theta_l and NTK approach the analytic ones as O(1/sqrt(M)): the largest
    relative error, averaged over two seeds, drops by > 2.5x from M = 64 to M = 1024 (16x wider)."""
    x = inputs()
    k = wide.analytic_kernels(x, depth=3, activation=activation, shift=shift)
    errors = {}
    for width in (64, 1024):
        errs = []
        for seed in range(2):
            mlp = wide.MLP.uniform(depth=3, width=width, input_dim=6, activation=activation, shift=shift,
                                   key=jr.PRNGKey(seed))  # fmt: skip
            e = wide.empirical_kernels(mlp, x)
            parts = [(e["A"][i], k.A[i]) for i in (1, 2)] + [(e["B"][i], k.B[i]) for i in (0, 1)]
            parts += [(e["layer_ntk"][i], k.layer_ntk[i]) for i in range(3)] + [(e["ntk"], k.ntk)]
            errs.append(max(np.abs(a - b).max() / np.abs(b).max() for a, b in parts))
        errors[width] = float(np.mean(errs))
    assert errors[1024] < errors[64] / 2.5, errors
    assert errors[1024] < 0.25, errors


def test_active_fraction_and_signal_variances():
    """gamma_l (S.140-S.141, S.156) against a direct Gaussian probability, q_l against S.178."""
    q = wide.signal_variances(depth=4, input_dim=10, activation="relu")
    np.testing.assert_allclose(q[0], 2.0 / 10 + 0.5)
    for i in range(1, 4):
        assert q[i] == pytest.approx(q[i - 1] + 0.5)  # sigma_w^2 = 2: q_l = q_{l-1} + sigma_b^2
    for s, qq in ((0.0, 1.0), (1.0, 0.7), (0.3, 2.0)):
        samples = np.random.default_rng(0).normal(scale=math.sqrt(qq), size=400_000)
        assert wide.active_fraction("shifted-relu", qq, s) == pytest.approx(np.mean(samples > -s), abs=3e-3)
    assert wide.active_fraction("relu", 1.0) == 0.5 and wide.active_fraction("tanh", 1.0) == 1.0


def test_analytic_theta_bar_s71_is_approached_by_wide_nets():
    """Theta_bar(x', x) on test inputs: the finite-width bd and kfac values approach S.71 / S.105."""
    x, xt = inputs(4, 8, 0), inputs(3, 8, 7)
    kx = wide.analytic_kernels(x, depth=3, activation="erf")
    kt = wide.analytic_kernels(xt, x, depth=3, activation="erf")
    errors = {}
    for name in ("exact", "bd", "kfac"):
        theory = wide.analytic_theta_bar(name, kt, kx)
        for width in (64, 1024):
            mlp = wide.MLP.uniform(depth=3, width=width, input_dim=8, activation="erf", key=jr.PRNGKey(1))
            got = wide.theta_bar(mlp, wide.signals(mlp, x), name, test=wide.signals(mlp, xt))
            errors[name, width] = float(np.abs(np.asarray(got) - theory).max() / np.abs(theory).max())
        assert errors[name, 1024] < errors[name, 64] / 2, errors
        assert errors[name, 1024] < 0.1, errors
    # on the training inputs S.71 is alpha I exactly
    np.testing.assert_allclose(wide.analytic_theta_bar("tri-diagonal", kx, kx), np.eye(4), atol=1e-10)
    np.testing.assert_allclose(wide.analytic_theta_bar("kfac", kx, kx), 12 * np.eye(4), atol=1e-8)


def test_kernel_input_checks():
    with pytest.raises(ValueError, match="unknown activation"):
        wide.analytic_kernels(inputs(), depth=2, activation="softplus")
    with pytest.raises(ValueError, match="depth"):
        wide.analytic_kernels(inputs(), depth=0)
    with pytest.raises(ValueError, match="non-finite"):
        wide.analytic_kernels(np.array([[np.nan, 1.0]]), depth=2)
    with pytest.raises(ValueError, match="same input dimension"):
        wide.analytic_kernels(inputs(3, 4), inputs(3, 5), depth=2)
