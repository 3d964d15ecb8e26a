"""Online NGD and SGD training (Bernacchia et al. 2018, eqs. 20-21): determinism, the lambda rule,
SGD by hand, hyperparameters as array leaves, and one-line errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from compile_count import CompileCounter
from test_feedforward import ff, natural_gradient, problem

import dlnsim
from dlnsim import _online as online


def test_train_is_deterministic_and_records_the_lambda_rule():
    net, cov, teacher = problem((3, 4, 3), seed=2)
    x = jr.normal(jr.PRNGKey(3), (500, 3)) @ jnp.linalg.cholesky(jnp.asarray(cov)).T
    y = x @ teacher.T + 1e-2 * jr.normal(jr.PRNGKey(4), (500, 3))
    method = online.OnlineNGD(batch_size=100, lam=0.5)
    a = online.train(net, method, x, y, steps=12, key=jr.PRNGKey(5), record_every=4, test=(x[:50], y[:50]))
    b = online.train(net, method, x, y, steps=12, key=jr.PRNGKey(5), record_every=4, test=(x[:50], y[:50]))
    np.testing.assert_array_equal(a.test_loss, b.test_loss)
    np.testing.assert_array_equal(a.lam, b.lam)
    assert a.examples.tolist() == [0, 400, 800, 1200] and a.lam.shape == (12,)
    # lambda follows eq. 21 from the recorded rho
    np.testing.assert_allclose(a.lam[1:], online.levenberg_marquardt(a.lam[:-1], a.rho[:-1]))
    assert a.lam[0] == 0.5 and a.test_loss[-1] < 0.1 * a.test_loss[0]
    # the deprecated old keyword and attribute give identical numbers
    old = online.OnlineNGD(batch_size=100, damping=0.5)
    assert old == method and old.damping == method.lam == 0.5
    c = online.train(net, old, x, y, steps=12, key=jr.PRNGKey(5), record_every=4, test=(x[:50], y[:50]))
    np.testing.assert_array_equal(c.test_loss, a.test_loss)
    np.testing.assert_array_equal(c.damping, a.lam)
    np.testing.assert_array_equal(c.rho, a.rho)


def test_new_hyperparameters_reuse_the_compiled_run():
    """alpha, lambda_0, rcond and Sigma~ are array leaves: a second train with new values compiles
    nothing (before, every call compiled its own scan), and gives different numbers."""
    net, cov, teacher = problem((3, 4, 2), seed=6)
    x = jr.normal(jr.PRNGKey(3), (300, 3))
    y = x @ teacher.T
    kw = dict(steps=6, key=jr.PRNGKey(5), record_every=3, test=(x[:40], y[:40]))
    first = online.train(
        net, online.OnlineNGD(1.0, 50, lam=0.5, rcond=1e-10, output_cov=np.eye(2)), x, y, **kw
    )
    sgd = online.train(net, online.OnlineSGD(0.05, 50), x, y, **kw)
    with CompileCounter() as counter:
        method = online.OnlineNGD(0.7, 50, lam=0.1, rcond=1e-6, output_cov=np.diag([2.0, 0.5]))
        second = online.train(net, method, x, y, **kw)
        sgd2 = online.train(net, online.OnlineSGD(0.02, 50), x, y, **kw)
    assert counter.count == 0, f"{counter.count} compilations for new hyperparameters"
    assert second.compile_seconds < first.compile_seconds
    assert np.abs(second.train_loss[1:] - first.train_loss[1:]).min() > 1e-6
    assert np.abs(sgd2.train_loss[1:] - sgd.train_loss[1:]).min() > 1e-6
    assert second.lam[0] == 0.1


def test_vmap_over_lambda_and_rcond_equals_a_loop():
    """The minibatch direction under jax.vmap over (lambda, rcond), including lambda = 0 (the
    pseudo-inverse), equals a Python loop to 1e-12; so does the method's lambda leaf."""
    net, cov, teacher = problem((3, 5, 4, 2), seed=7)
    x = jr.normal(jr.PRNGKey(1), (30, 3))
    y = x @ teacher.T
    noise = jr.normal(jr.PRNGKey(2), (2, 30, 2))
    lams, rconds = jnp.array([0.0, 1e-3, 0.3]), jnp.array([1e-12, 1e-8, 1e-4])

    def direction(lam, rcond):
        return ff.minibatch_natural_gradient(net, x, y, noise, lam=lam, rcond=rcond, output_cov=cov[:2, :2])

    mapped = jax.jit(jax.vmap(direction))(lams, rconds)
    for k, (lam, rc) in enumerate(zip(lams, rconds)):
        loop = natural_gradient(net, x, y, noise, lam=float(lam), rcond=float(rc), output_cov=cov[:2, :2])
        for m, d in zip(mapped[0], loop[0]):
            np.testing.assert_allclose(m[k], d, rtol=0, atol=1e-12 * float(jnp.abs(d).max()))
    methods = jax.vmap(lambda lam: eqx.tree_at(lambda m: m.lam, online.OnlineNGD(), lam))(lams)
    np.testing.assert_array_equal(methods.lam, lams)
    assert np.abs(mapped[0][0][0] - mapped[0][0][2]).max() > 1e-6


def test_lambda_is_given_once_and_keeps_its_position():
    assert online.OnlineNGD(1.0, 1000, 1, 0.25).lam == 0.25  # positional, as before the rename
    assert online.OnlineNGD().lam == 1.0
    with pytest.raises(ValueError, match="give lambda once"):
        online.OnlineNGD(lam=0.1, damping=0.1)


def test_sgd_step_and_grid_search_agree():
    net, cov, teacher = problem((3, 3, 3), seed=4)
    x = jr.normal(jr.PRNGKey(3), (200, 3))
    y = x @ teacher.T
    rates = [0.01, 0.05]
    grid = online.sgd_learning_rate_search(net, rates, x, y, steps=40, key=jr.PRNGKey(1), batch_size=10)
    for rate, g in zip(rates, grid):
        run = online.train(
            net, online.OnlineSGD(rate, 10), x, y, steps=40, key=jr.PRNGKey(1), record_every=40
        )
        assert run.train_loss[-1] == pytest.approx(g, rel=1e-10)
    # one step by hand: W_i += alpha <e_i x_{i-1}^T> on the drawn minibatch
    run = online.train(net, online.OnlineSGD(0.05, 10), x, y, steps=1, key=jr.PRNGKey(1))
    idx, _ = online._draws(jr.PRNGKey(1), 1, 10, 200)
    task = dlnsim.Task(teacher, np.asarray(x[idx[0]].T @ x[idx[0]] / 10))
    grads = dlnsim.loss_gradient(net.weights, task)
    for w0, w1, g in zip(net.weights, run.net.weights, grads):
        np.testing.assert_allclose(w1, w0 - 0.05 * g, atol=1e-12)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: online.FeedforwardNet((3, 0, 2), key=jr.PRNGKey(0)), "every width must be an integer >= 1"),
        (lambda: online.FeedforwardNet((3,), key=jr.PRNGKey(0)), "widths must list at least"),
        (
            lambda: online.FeedforwardNet((3, 2), key=jr.PRNGKey(0), activation="relu"),
            "activation must be one of",
        ),
        (lambda: online.OnlineNGD(batch_size=0), r"batch_size \(M\) must be an integer >= 1"),
        (lambda: online.OnlineSGD(batch_size=2.5), r"batch_size \(M\) must be an integer >= 1"),
        (lambda: online.OnlineNGD(lam=-1.0), "lam must be a finite number >= 0"),
        (lambda: online.OnlineNGD(lam=float("inf")), "lam must be a finite number >= 0"),
        (lambda: online.OnlineNGD(damping=-1.0), "damping must be a finite number >= 0"),
        (lambda: online.OnlineNGD(model_samples=0), r"model_samples \(K\) must be an integer >= 1"),
        (lambda: online.OnlineNGD(learning_rate=0.0), "learning_rate must be a finite number > 0"),
        (lambda: online.OnlineNGD(output_cov=-np.eye(2)), "output_cov must be positive definite"),
    ],
)
def test_bad_settings_raise_one_line_errors(call, message):
    with pytest.raises(ValueError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


def test_bad_data_raise_one_line_errors():
    net = online.FeedforwardNet((3, 2), key=jr.PRNGKey(0))
    x, y = np.ones((5, 3)), np.ones((5, 2))
    sgd = online.OnlineSGD()
    cases = [
        (dict(x_train=np.ones((5, 4)), y_train=y), r"must be \(P, 3\) and \(P, 2\)"),
        (dict(x_train=x, y_train=np.ones((4, 2))), "with the same P"),
        (dict(x_train=np.where(np.eye(5, 3) > 0, np.nan, 1.0), y_train=y), "non-finite"),
        (dict(x_train=x, y_train=y, test=(x, np.full((5, 2), np.inf))), "test targets contains non-finite"),
        (dict(x_train=x, y_train=y, steps=0), "steps must be an integer >= 1"),
        (dict(x_train=x, y_train=y, steps=5, record_every=2), "must be a multiple of record_every"),
    ]
    for kwargs, message in cases:
        kwargs.setdefault("steps", 2)
        with pytest.raises(ValueError, match=message) as err:
            online.train(net, sgd, key=jr.PRNGKey(0), **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="learning_rates must be"):
        online.sgd_learning_rate_search(net, [0.1, -1.0], x, y, steps=2, key=jr.PRNGKey(0))
