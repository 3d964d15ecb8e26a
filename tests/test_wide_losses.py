"""The wide nets' losses (Karakida & Osawa 2020, eq. 3 and S.157-S.159) against autodiff: the
residual is N times the gradient of the loss in the outputs, the output metric of cross-entropy is
the Hessian of the per-sample loss plus rho~ I, and numpy and JAX inputs give the same values."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from dlnsim import wide

N, C = 5, 3
F = jr.normal(jr.PRNGKey(0), (N, C)) * 2.0
Y_ONEHOT = jax.nn.one_hot(jnp.array([0, 2, 1, 1, 0]), C)
Y_REAL = jr.normal(jr.PRNGKey(1), (N, C))
CASES = [(wide.SquaredError(), Y_REAL), (wide.CrossEntropy(), Y_ONEHOT)]


@pytest.mark.parametrize("loss, y", CASES, ids=lambda c: getattr(c, "name", ""))
def test_residual_is_n_times_the_output_gradient(loss, y):
    grad = jax.grad(lambda f: loss.value(f, y))(F)
    np.testing.assert_allclose(loss.residual(F, y), N * grad, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("loss, y", CASES, ids=lambda c: getattr(c, "name", ""))
def test_numpy_and_jax_inputs_agree_and_stacks_reduce_per_row(loss, y):
    f_np, y_np = np.asarray(F), np.asarray(y)
    value = loss.value(F, y)
    assert isinstance(loss.value(f_np, y_np), np.floating | np.ndarray)
    assert float(loss.value(f_np, y_np)) == pytest.approx(float(value), rel=1e-14)
    np.testing.assert_allclose(loss.residual(f_np, y_np), loss.residual(F, y), rtol=1e-14, atol=1e-16)
    stack = jnp.stack([F, 0.5 * F, -F])
    np.testing.assert_allclose(loss.value(stack, y), [loss.value(f, y) for f in stack], rtol=1e-14)


def test_formulas_of_eq_3_and_s157():
    assert float(wide.SquaredError().value(F, Y_REAL)) == pytest.approx(
        0.5 * float(jnp.sum((F - Y_REAL) ** 2)) / N, rel=1e-14
    )
    p = np.exp(np.asarray(F)) / np.exp(np.asarray(F)).sum(axis=1, keepdims=True)
    ce = -np.sum(np.asarray(Y_ONEHOT) * np.log(p)) / N
    assert float(wide.CrossEntropy().value(F, Y_ONEHOT)) == pytest.approx(ce, rel=1e-13)


def test_cross_entropy_metric_is_the_per_sample_hessian_plus_rho():
    rho = 1e-3
    metric = np.asarray(wide.CrossEntropy().output_metric(F, rho))
    per_sample = jax.vmap(jax.hessian(lambda f, y: -jnp.sum(y * jax.nn.log_softmax(f))))(F, Y_ONEHOT)
    ref = np.zeros((N * C, N * C))
    for n in range(N):
        ref[n * C : (n + 1) * C, n * C : (n + 1) * C] = per_sample[n] + rho * np.eye(C)
    np.testing.assert_allclose(metric, ref, rtol=0, atol=1e-15)
    assert wide.SquaredError().output_metric(F, rho) is None


def test_names_resolve_once_and_fishers_report_their_loss():
    assert [wide.loss_named(n).name for n in wide.LOSSES] == ["mse", "cross-entropy"]
    assert wide.loss_named(wide.CrossEntropy()) == wide.CrossEntropy()
    for bad in ("l2", None, 3):
        with pytest.raises(ValueError, match="unknown loss .*; choose one of mse, cross-entropy"):
            wide.loss_named(bad)
    for name in wide.FISHERS:
        assert isinstance(wide.as_fisher(name).loss_function, wide.SquaredError)
    ce = wide.as_fisher("bd", loss="cross-entropy")
    assert ce.loss == "cross-entropy" and isinstance(ce.loss_function, wide.CrossEntropy)
    assert ce.default_learning_rate(4.0) == pytest.approx(0.1 / 4.0)
    assert wide.as_fisher("bd").default_learning_rate(4.0) == pytest.approx(1 / 4.0)
    np.testing.assert_array_equal(
        wide.task_loss(F, Y_ONEHOT, "cross-entropy"), wide.CrossEntropy().value(F, Y_ONEHOT)
    )
