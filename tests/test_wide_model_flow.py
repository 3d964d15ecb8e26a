"""Flows of any equinox model (dlnsim.wide.ModelFlow) against a dense P x P reference, the wide MLP's
own fields, and the exact-NGD theory; cross-entropy FisherFlow fields against a dense reference."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import wide_reference as ref
from jax.flatten_util import ravel_pytree

from dlnsim import DynamicsBlowUpError, wide

MODELS = {
    # name: (in, out, width, depth, use_bias), N; P is the number of parameters
    "bias-N<P": ((3, 2, 5, 2, True), 4),  # P = 62, N C = 8
    "nobias-N>P": ((4, 2, 3, 1, False), 30),  # P = 20, N C = 60 (cond G 1.5e6)
}
QS = (1.0, 2.0, 4.0, math.inf)
RHOS = (0.0, 0.1)


def model_problem(name):
    (m_in, m_out, width, depth, bias), n = MODELS[name]
    mlp = eqx.nn.MLP(m_in, m_out, width, depth, activation=jnp.tanh, use_bias=bias, key=jr.PRNGKey(0))
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(1), (n, m_in)))
    y = jr.normal(jr.PRNGKey(2), (n, m_out))
    return wide.Batched(mlp), wide.FlowTask(x, y)


def dense_power(m, power, damping, rcond):
    evals, evecs = np.linalg.eigh(0.5 * (m + m.T))
    shifted = evals + damping
    keep = shifted > rcond * evals.max()
    f = np.zeros_like(evals)
    f[keep] = shifted[keep] ** (-power)
    return (evecs * f) @ evecs.T


def dense_model_field(model, task, fisher, q, rho):
    """-(G~ + rho I)^(-1/q) grad L with G = J^T J / N from the flat parameter vector, by numpy eigh."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    n = task.x.shape[0]

    def outputs(theta):
        return eqx.combine(unravel(theta), static)(task.x).reshape(-1)

    jac = np.asarray(jax.jacrev(outputs)(flat))
    r = np.asarray(outputs(flat) - task.y.reshape(-1))
    grad = jac.T @ r / n
    if math.isinf(q):
        return -grad
    s, g = 1.0 / q, jac.T @ jac / n
    if fisher == "exact":
        return -dense_power(g, s, rho, 1e-10) @ grad
    if fisher == "diagonal":
        return -dense_power(np.diag(np.diag(g)), s, rho, 1e-12) @ grad
    # bd: one block per submodule (the arrays of one Linear), located in the flat vector
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(params)]
    starts = np.cumsum([0] + sizes)
    blocks = {}
    for path, a, b in zip(paths, starts[:-1], starts[1:], strict=True):
        blocks.setdefault(wide.module_blocks(path), []).extend(range(a, b))
    out = np.zeros_like(g)
    for idx in blocks.values():
        out[np.ix_(idx, idx)] = dense_power(g[np.ix_(idx, idx)], s, rho, 1e-10)
    assert len(blocks) == len(model.module.layers)  # one block per Linear
    return -out @ grad


def flat_update(update):
    return np.asarray(ravel_pytree(eqx.filter(update, eqx.is_inexact_array))[0])


def rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("fisher", wide.MODEL_FISHERS)
def test_model_field_matches_dense_reference(name, fisher):
    model, task = model_problem(name)
    field_at = eqx.filter_jit(lambda field: field(0.0, model, task))  # q and rho traced: one compile
    for q in QS:
        for rho in RHOS:
            got = flat_update(field_at(wide.ModelFlow(fisher, q, rho=rho)))
            want = dense_model_field(model, task, fisher, q, rho)
            assert rel(got, want) < 1e-8, (name, fisher, q, rho, rel(got, want))


def test_model_flow_on_the_wide_mlp_equals_its_fisher_flow():
    mlp = wide.MLP((4, 6, 5, 1), "tanh", key=jr.PRNGKey(1))
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(2), (5, 4)))
    task = wide.FlowTask(x, jr.normal(jr.PRNGKey(3), (5, 1)))

    def by_layer(path):  # weights[l] and biases[l] form layer l's block
        return path[-1].idx

    for q in (1.0, 2.0):
        for fisher, blocks in (("exact", None), ("bd", by_layer), ("diagonal", None)):
            got = wide.ModelFlow(fisher, q, rho=0.05, blocks=blocks)(0.0, mlp, task)
            want = wide.FisherFlow(fisher, q, rho=0.05)(0.0, mlp, task)
            assert rel(flat_update(got), flat_update(want)) < 1e-9, (fisher, q)


def test_exact_ngd_flow_of_a_model_follows_its_theory():
    """Exact NGD: d f/dt = -J (G)^+ J^T r / N = -r on the training outputs when J J^T is invertible
    (N C <= P), so r_t = e^(-t) r_0 and L_t = e^(-2t) L_0 (the small-eta limit of Karakida & Osawa
    2020, Cor. 4.2); stated tolerance 1e-6 relative (solver rtol 1e-8)."""
    model, task = model_problem("bias-N<P")
    ts = np.linspace(0.0, 4.0, 9)
    traj = wide.simulate_flow(model, wide.ModelFlow("exact", 1.0), task, 4.0, saveat=ts)
    np.testing.assert_allclose(traj.train_loss, traj.train_loss[0] * np.exp(-2 * ts), rtol=1e-6)
    np.testing.assert_allclose(traj.residuals, np.exp(-ts)[:, None, None] * traj.residuals[0], atol=1e-7)
    assert isinstance(traj.model, wide.Batched) and traj.num_steps > 0


def test_vmap_over_q_equals_a_loop():
    model, task = model_problem("bias-N<P")
    qs = jnp.array([1.0, 2.0, 3.0])

    def field_at(q):
        return wide.ModelFlow("bd", q, rho=0.01)(0.0, model, task)

    batched = jax.vmap(lambda q: ravel_pytree(eqx.filter(field_at(q), eqx.is_inexact_array))[0])(qs)
    for i, q in enumerate(qs):
        assert rel(batched[i], flat_update(field_at(float(q)))) < 1e-12


def test_model_flow_bad_input():
    model, task = model_problem("bias-N<P")
    with pytest.raises(ValueError, match="unknown Fisher 'kfac' for a general model; choose one of exact"):
        wide.ModelFlow("kfac")
    with pytest.raises(ValueError, match="q must be"):
        wide.ModelFlow("exact", 0.5)
    with pytest.raises(TypeError, match="FisherFlow acts on a dlnsim.wide.MLP"):
        wide.simulate_flow(model, wide.FisherFlow("exact"), task, 1.0)
    with pytest.raises(ValueError, match="needs dlnsim.wide.Batched"):
        wide.simulate_flow(model.module, wide.ModelFlow("exact"), task, 1.0)
    with pytest.raises(DynamicsBlowUpError, match="not finite"):
        bad = wide.FlowTask(task.x, task.y.at[0, 0].set(jnp.nan))
        wide.simulate_flow(model, wide.ModelFlow("exact"), bad, 1.0)


def test_model_fishers_are_classes_that_compose_with_the_flow():
    """ModelFlow takes an AbstractModelFisher: each name gives exactly its class's field, and a
    user's own Fisher composes with the flow. Here the identity Fisher F = I, whose flow is the
    gradient flow times (1 + rho)^(-1/q) (a missing power or rho would show as 1.2^(1/2) = 1.095)."""
    model, task = model_problem("bias-N<P")
    classes = {
        "exact": wide.ExactModelFisher,
        "bd": wide.BlockDiagonalModelFisher,
        "diagonal": wide.DiagonalModelFisher,
    }
    assert tuple(classes) == wide.MODEL_FISHERS
    for name, cls in classes.items():
        by_name = flat_update(wide.ModelFlow(name, 2.0, rho=0.1)(0.0, model, task))
        by_class = flat_update(wide.ModelFlow(cls(), 2.0, rho=0.1)(0.0, model, task))
        assert np.array_equal(by_name, by_class), name
        assert isinstance(wide.ModelFlow(name).fisher, cls)

    class Identity(wide.AbstractModelFisher):
        name = "identity"

        def precondition(self, mats, paths, grads, residual, n, power, rho, rcond):
            return [g.reshape(-1) * (1.0 + rho) ** (-power) for g in grads]

    got = flat_update(wide.ModelFlow(Identity(), 2.0, rho=0.44)(0.0, model, task))
    gradient_flow = flat_update(wide.ModelFlow("exact", math.inf)(0.0, model, task))
    assert rel(got, gradient_flow / 1.2) < 1e-14
    with pytest.raises(ValueError, match="unknown Fisher"):
        wide.ModelFlow(object())


# --- cross-entropy FisherFlow fields ---------------------------------------------------------------


@pytest.mark.parametrize("fisher", ["exact", "bd"])
def test_cross_entropy_field_matches_dense_reference(fisher):
    """-(G~ + rho I)^(-1/q) grad L with G = S^T (Sigma x Lambda) S / N, Lambda the damped softmax
    Hessian (S.157-S.163), grad L = J^T (softmax(f) - y) / N (S.159)."""
    mlp = wide.MLP((5, 7, 7, 3), "tanh", key=jr.PRNGKey(4))
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(5), (3, 5)))
    y = jax.nn.one_hot(jnp.array([0, 2, 1]), 3)
    jac, theta, layout = ref.jacobian(mlp, x)
    p = np.asarray(jax.nn.softmax(mlp(x), axis=-1))
    lam = np.zeros((9, 9))
    for i in range(3):
        lam[3 * i : 3 * i + 3, 3 * i : 3 * i + 3] = np.diag(p[i]) - np.outer(p[i], p[i]) + 1e-3 * np.eye(3)
    layers = ref.layer_index(layout)
    sigma = wide.layer_sigma(fisher, 3)
    g = np.zeros((theta.size, theta.size))
    for a, ia in enumerate(layers):
        for b, ib in enumerate(layers):
            g[np.ix_(ia, ib)] = sigma[a, b] * jac[:, ia].T @ lam @ jac[:, ib] / 3
    grad = jac.T @ (p - np.asarray(y)).reshape(-1) / 3
    task = wide.FlowTask(x, y)
    for q in (1.0, 2.0):
        for rho in (0.0, 0.1):
            fis = wide.Fisher(fisher, damping=rho, loss="cross-entropy", ce_damping=1e-3)
            got = ref.flatten_update(mlp, *_wb(wide.FisherFlow(fis, q)(0.0, mlp, task)))
            want = -dense_power(g, 1.0 / q, rho, 1e-10) @ grad
            assert rel(got, want) < 1e-8, (fisher, q, rho, rel(got, want))


def _wb(update):
    return update.weights, update.biases


def test_cross_entropy_flow_records_the_cross_entropy_loss():
    mlp = wide.MLP((5, 32, 32, 3), "tanh", key=jr.PRNGKey(4))
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(5), (6, 5)))
    y = jax.nn.one_hot(jnp.arange(6) % 3, 3)
    fis = wide.Fisher("bd", loss="cross-entropy", ce_damping=1e-3)
    traj = wide.simulate_flow(
        mlp, wide.FisherFlow(fis, 1.0), wide.FlowTask(x, y), 2.0, saveat=[0.0, 1.0, 2.0]
    )
    f0 = np.asarray(mlp(x))
    log_p = f0 - np.log(np.exp(f0).sum(axis=-1, keepdims=True))
    assert traj.train_loss[0] == pytest.approx(-np.mean(np.sum(np.asarray(y) * log_p, axis=-1)), rel=1e-12)
    np.testing.assert_allclose(traj.residuals[0], np.exp(log_p) - np.asarray(y), atol=1e-12)
    assert np.all(np.diff(traj.train_loss) < 0)  # a descent flow lowers the loss
