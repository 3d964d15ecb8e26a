"""The feedforward net and its minibatch natural gradient (Bernacchia et al. 2018, eqs. 1-21)
against independent references: the continuous-time field, the dense P x P pseudo-inverse and
autodiff."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from dense_reference import dense_parts, flatten

import dlnsim
from dlnsim import _feedforward as ff

natural_gradient = eqx.filter_jit(ff.minibatch_natural_gradient)


def _orthonormal_columns(seed, rows, cols):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(rows, cols)))
    return q


def _sqrt_psd(m):
    evals, evecs = np.linalg.eigh(m)
    return (evecs * np.sqrt(evals)) @ evecs.T


def _exact_moment_batch(teacher, input_cov, n_out, m, seed=0):
    """A minibatch whose moments are exactly the population's: x^T x / M = Sigma_x, y = W* x, and
    one model sample per input with xi^T xi / M = I."""
    n_in = input_cov.shape[0]
    x = np.sqrt(m) * _orthonormal_columns(seed, m, n_in) @ _sqrt_psd(input_cov)
    noise = (np.sqrt(m) * _orthonormal_columns(seed + 1, m, n_out))[None]
    return x, x @ teacher.T, noise


def problem(widths, seed=0):
    k = jr.split(jr.PRNGKey(seed), 3)
    net = ff.FeedforwardNet(widths, key=k[0])
    cov = np.asarray(dlnsim.correlated_input_cov(k[1], widths[0]))
    teacher = np.asarray(jr.normal(k[2], (widths[-1], widths[0])))
    return net, cov, teacher


def _map_change(weights, directions):
    """The first-order change of W = W_L ... W_1 along the per-layer directions (eq. 17)."""
    return sum(
        b @ d @ a
        for a, b, d in zip(
            dlnsim._models.prefix_products(weights), dlnsim._models.suffix_products(weights), directions
        )
    )


@pytest.mark.parametrize("widths", [(4, 4, 4, 4), (3, 5, 4, 2), (5, 3, 2, 3, 4)])
@pytest.mark.parametrize("output_cov", [None, "correlated"])
def test_exact_moment_minibatch_equals_bernacchia_field(widths, output_cov):
    net, cov, teacher = problem(widths)
    n_out = widths[-1]
    out_cov = None
    if output_cov == "correlated":
        g = np.random.default_rng(5).normal(size=(n_out, n_out))
        out_cov = g @ g.T / n_out + 0.5 * np.eye(n_out)
    x, y, noise = _exact_moment_batch(teacher, cov, n_out, 12)
    dirs, grads = natural_gradient(net, x, y, noise, output_cov=out_cov)
    task = dlnsim.Task(teacher, cov)
    field = dlnsim.vector_field("bernacchia", output_cov=out_cov)(0.0, net.weights, task)
    for d, f in zip(dirs, field, strict=True):
        np.testing.assert_allclose(d, f, rtol=0, atol=1e-9 * np.abs(f).max())
    # the gradient term is -dL/dW_i of eq. 6 with Sigma~ = I (eq. 13)
    if out_cov is None:
        for g, ref in zip(grads, dlnsim.loss_gradient(net.weights, task), strict=True):
            np.testing.assert_allclose(g, -ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_lambda_adds_sqrt_lambda_to_both_covariances():
    net, cov, teacher = problem((3, 4, 2))
    x, y, noise = _exact_moment_batch(teacher, cov, 2, 8)
    lam = 0.3
    dirs, grads = natural_gradient(net, x, y, noise, lam=lam)
    # the deprecated old keyword gives the same numbers
    old_dirs, _ = natural_gradient(net, x, y, noise, damping=lam)
    for d, o in zip(dirs, old_dirs, strict=True):
        np.testing.assert_array_equal(d, o)
    pre = dlnsim._models.prefix_products(net.weights)
    suf = dlnsim._models.suffix_products(net.weights)
    for d, g, a, b in zip(dirs, grads, pre, suf, strict=True):
        err_cov = np.asarray(b.T @ b) + np.sqrt(lam) * np.eye(b.shape[1])
        act_cov = np.asarray(a @ cov @ a.T) + np.sqrt(lam) * np.eye(a.shape[0])
        ref = np.linalg.solve(err_cov, np.asarray(g)) @ np.linalg.inv(act_cov) / 2
        np.testing.assert_allclose(d, ref, rtol=1e-11)


@pytest.mark.parametrize("widths, lam", [((3, 5, 4, 3), 0.0), ((4, 4, 4, 4), 1e-28)])
def test_map_change_equals_dense_pinv_natural_gradient(widths, lam):
    """On a non-bottleneck net, eq. 10 is a generalised inverse of the P x P Fisher: it moves the
    map exactly as the Moore-Penrose natural gradient F^+ g does (Bernacchia et al. 2018, sec. 3).
    A tiny lambda is tested on a square net, whose covariances are invertible (on the wider net
    sqrt(lambda) would amplify rounding in their null spaces)."""
    net, cov, teacher = problem(widths, seed=3)
    x, y, noise = _exact_moment_batch(teacher, cov, widths[-1], 10)
    dirs, _ = natural_gradient(net, x, y, noise, lam=lam)
    fisher, grad, slices = dense_parts(net.weights, teacher, cov)  # Sigma~ = I: F = J^T (Sigma_x (x) I) J
    evals, evecs = np.linalg.eigh(fisher)
    keep = evals > 1e-10 * evals.max()
    ng = -(evecs[:, keep] / evals[keep]) @ (evecs[:, keep].T @ grad)
    dense_dirs = [ng[s].reshape(w.shape) for s, w in zip(slices, net.weights, strict=True)]
    ref = _map_change(net.weights, dense_dirs)
    ours = _map_change(net.weights, dirs)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-8 * np.abs(ref).max())
    # both are natural gradients but not the same one: eq. 10 is not the minimum-norm inverse
    assert np.abs(flatten(dirs) - ng).max() > 1e-3 * np.abs(ng).max()


def test_random_minibatch_converges_to_population_field():
    widths = (3, 4, 3)
    net, cov, teacher = problem(widths, seed=1)
    task = dlnsim.Task(teacher, cov)
    field = dlnsim.vector_field("bernacchia")(0.0, net.weights, task)
    k1, k2 = jr.split(jr.PRNGKey(7))
    errors = []
    for m in (1_000, 64_000):
        x = jr.normal(k1, (m, 3)) @ jnp.linalg.cholesky(jnp.asarray(cov)).T
        noise = jr.normal(k2, (1, m, 3))
        dirs, _ = natural_gradient(net, x, x @ teacher.T, noise)
        errors.append(max(float(jnp.abs(d - f).max() / jnp.abs(f).max()) for d, f in zip(dirs, field)))
    # Monte-Carlo error ~ M^-1/2: 8x smaller for 64x the samples (a factor 4-16 allowed)
    assert 4 < errors[0] / errors[1] < 16 and errors[1] < 0.05


def test_tanh_bias_gradient_and_error_covariance_match_autodiff():
    widths = (5, 4, 3, 5)
    net = ff.FeedforwardNet(widths, key=jr.PRNGKey(0), activation="tanh", bias=True, scale=1.5)
    net = ff.FeedforwardNet.from_weights(
        [w.at[:, -1].set(0.3) for w in net.weights], activation="tanh", bias=True
    )
    x = jr.normal(jr.PRNGKey(1), (6, 5))
    y = jr.normal(jr.PRNGKey(2), (6, 5))
    k = widths[-1]
    noise = np.broadcast_to(np.sqrt(k) * np.eye(k)[:, None, :], (k, 6, k))  # sum_k xi xi^T / K = I per input
    _, grads = natural_gradient(net, x, y, noise)

    def loss(ws):
        return 0.5 * jnp.mean(
            jnp.sum((y - ff.FeedforwardNet.from_weights(ws, activation="tanh", bias=True)(x)) ** 2, -1)
        )

    auto = jax.grad(loss)(net.weights)
    for g, a in zip(grads, auto, strict=True):
        np.testing.assert_allclose(g, -a, rtol=0, atol=1e-12)

    # <e_i e_i^T> over p_theta = mean over inputs of J_i^T J_i, J_i = d x_L / d u_i (pre-activation)
    def output_from_layer(u, i, xi):
        ws = net.weights
        h = jnp.tanh(u) if i < len(ws) - 1 else u
        for w in ws[i + 1 :]:
            u2 = w @ jnp.append(h, 1.0)
            h = jnp.tanh(u2) if w is not ws[-1] else u2
        return h

    inputs, _, _ = ff.forward(net.weights, "tanh", True, x)
    model_errs = ff.backward(net.weights, net.widths, ff.forward(net.weights, "tanh", True, x)[1], noise)
    for i, (a, w) in enumerate(zip(inputs, net.weights)):
        ref = 0
        for s in range(6):
            u = w @ a[s]
            jac = jax.jacfwd(output_from_layer)(u, i, None)
            ref = ref + jac.T @ jac / 6
        est = ff.mean_outer(model_errs[i], model_errs[i])
        np.testing.assert_allclose(est, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_levenberg_marquardt_rule():
    lam = 2.0
    assert float(ff.levenberg_marquardt(lam, 0.1)) == pytest.approx(3.0)
    assert float(ff.levenberg_marquardt(lam, -5.0)) == pytest.approx(3.0)
    assert float(ff.levenberg_marquardt(lam, 0.9)) == pytest.approx(4.0 / 3.0)
    for rho in (0.25, 0.5, 0.75, float("nan")):
        assert float(ff.levenberg_marquardt(lam, rho)) == lam


def test_predicted_decrease_is_exact_for_one_linear_layer():
    """One linear layer with exact moments: the loss is quadratic and the undamped NG step is its
    Newton step, so footnote 1's predicted decrease is the actual one (rho = 1) at any alpha."""
    net, cov, teacher = problem((4, 3))
    x, y, noise = _exact_moment_batch(teacher, cov, 3, 9)
    dirs, grads = natural_gradient(net, x, y, noise)
    loss = ff.batch_loss
    eye = jnp.eye(3)
    before = loss(net.weights, "linear", False, eye, x, y)
    for alpha in (1.0, 0.4):
        after = loss(tuple(w + alpha * d for w, d in zip(net.weights, dirs)), "linear", False, eye, x, y)
        pred = ff.predicted_decrease(alpha, dirs, grads)
        assert float((before - after) / pred) == pytest.approx(1.0, abs=1e-10)
    # and alpha = 1 lands on the least-squares map
    np.testing.assert_allclose(net.weights[0] + dirs[0], teacher, atol=1e-10)
