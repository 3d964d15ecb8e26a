"""Numeric hyperparameters (eps, q, rcond, Bernacchia's lambda) are array leaves: a new value
reuses the compiled program, and jax.vmap over them equals a Python loop."""

import time

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from compile_count import CompileCounter
from test_rules import make_problem, rel_err

import dlnsim
from dlnsim._curvature import (
    BalancedGaussNewton,
    DenseGaussNewton,
    GaussNewton,
    KrylovGaussNewton,
)

SAVES = diffrax.SaveAt(ts=jnp.linspace(0.0, 0.5, 6))


@pytest.mark.parametrize(
    "make_field",
    [
        lambda v: dlnsim.vector_field("damped-ngd", eps=v),
        lambda v: dlnsim.vector_field("qngd", q=1.0 + v, method="dense"),
        lambda v: dlnsim.vector_field("qngd-d", q=1.0 + v),
        lambda v: dlnsim.vector_field("sqrt-ngd", rcond=1e-12 * v),
        lambda v: dlnsim.vector_field("bernacchia", lam=v),
    ],
    ids=["eps", "q-dense", "q-block", "rcond", "lambda"],
)
def test_a_new_value_reuses_the_compiled_solve(make_field):
    """Two values of a hyperparameter: the second simulate compiles nothing."""
    weights, task = make_problem((3, 4, 2), seed=1)
    dlnsim.simulate(weights, make_field(0.1), task, 0.5, saveat=SAVES)
    with CompileCounter() as counter:
        start = time.perf_counter()
        traj = dlnsim.simulate(weights, make_field(0.2), task, 0.5, saveat=SAVES)
        elapsed = time.perf_counter() - start
    assert counter.count == 0, f"{counter.count} compilations for a new value ({elapsed:.2f} s)"
    assert traj.loss[-1] < traj.loss[0]


def test_a_new_eps_runs_without_compiling_and_fast():
    """The measured case of the issue: damped NGD on (4, 4, 4, 4) for a new eps (before: 5.5 s,
    2 compilations taking 4.5 s; now no compilation)."""
    weights, task = make_problem((4, 4, 4, 4))
    dlnsim.simulate(weights, dlnsim.vector_field("damped-ngd", eps=0.1), task, 3.0)
    with CompileCounter() as counter:
        start = time.perf_counter()
        dlnsim.simulate(weights, dlnsim.vector_field("damped-ngd", eps=0.2), task, 3.0)
        elapsed = time.perf_counter() - start
    print(f"damped-ngd, new eps: {elapsed:.2f} s, {counter.count} compilations")
    assert counter.count == 0


def vmapped_equals_loop(make_field, values, weights, task):
    batched = jax.vmap(lambda v: make_field(v)(0.0, weights, task))(jnp.asarray(values))
    for k, v in enumerate(values):
        single = make_field(float(v))(0.0, weights, task)
        assert rel_err([x[k] for x in batched], single) <= 1e-12


@pytest.mark.parametrize(
    "make_field, values",
    [
        (lambda e: dlnsim.vector_field("damped-ngd", eps=e, method="dense"), [0.0, 0.1, 3.0]),
        (lambda e: dlnsim.NaturalGradientFlow(dlnsim.BlockDiagonalGaussNewton(), 1.0, e), [0.0, 0.5]),
        (lambda q: dlnsim.vector_field("qngd", q=q, method="dense"), [1.0, 2.0, 3.0, np.inf]),
        (lambda q: dlnsim.vector_field("qngd-d", q=q), [1.0, 1.5, 3.0, np.inf]),
        (lambda r: dlnsim.vector_field("ngd", rcond=r), [1e-14, 1e-3, 0.5]),
        (lambda r: dlnsim.vector_field("ngd-d", rcond=r), [1e-14, 0.5]),
        (lambda lam: dlnsim.vector_field("bernacchia", lam=lam), [0.0, 0.01, 1.0]),
    ],
    ids=["eps-dense", "eps-block", "q-dense", "q-block", "rcond-dense", "rcond-block", "lambda"],
)
def test_vmap_over_a_hyperparameter_equals_a_loop(make_field, values):
    """On a square net, so that the LU paths of the block rules are selected by array code too."""
    weights, task = make_problem((4, 4, 4, 4), seed=2)
    vmapped_equals_loop(make_field, values, weights, task)


def test_vmap_over_q_and_eps_with_the_krylov_and_balanced_strategies():
    weights, task = make_problem((3, 5, 4, 2), seed=3)

    def krylov_q(q):
        return dlnsim.NaturalGradientFlow(KrylovGaussNewton(), q)

    vmapped_equals_loop(krylov_q, [1.0, 2.0], weights, task)
    net = dlnsim.DeepLinearNet((4, 4, 4), key=jr.PRNGKey(1), init="balanced", scale=1.3)
    white = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(2), 4, 4))
    vmapped_equals_loop(
        lambda q: dlnsim.NaturalGradientFlow(BalancedGaussNewton(), q, 0.1),
        [1.0, 2.0, 3.0],
        net.weights,
        white,
    )


def test_strategy_classes_equal_the_method_factory():
    weights, task = make_problem((3, 5, 4, 2), seed=4)
    for cls, method in ((DenseGaussNewton, "dense"), (KrylovGaussNewton, "krylov")):
        a = dlnsim.NaturalGradientFlow(cls(), 2.0, 0.1)(0.0, weights, task)
        b = dlnsim.NaturalGradientFlow(GaussNewton(method=method), 2.0, 0.1)(0.0, weights, task)
        assert rel_err(a, b) == 0.0
        assert cls().resolved_method((3, 5, 4, 2)) == method


def test_old_names_of_the_dampings_keep_working():
    weights, task = make_problem((3, 5, 4, 2), seed=5)
    old = dlnsim.vector_field("bernacchia", damping=0.3)
    new = dlnsim.vector_field("bernacchia", lam=0.3)
    assert old.damping == new.lam == 0.3
    assert rel_err(old(0.0, weights, task), new(0.0, weights, task)) == 0.0
    f = dlnsim.NaturalGradientFlow(DenseGaussNewton(), damping=0.2)
    assert f.eps == f.damping == 0.2 and f.q == 1.0
    with pytest.raises(ValueError, match="damping must be"):
        dlnsim.BernacchiaFlow(damping=-1.0)
    with pytest.raises(ValueError, match="lam must be"):
        dlnsim.BernacchiaFlow(lam=np.nan)


def loss_after_step(weights, task, field):
    step = field(0.0, weights, task)
    return task.loss(dlnsim.network_map(tuple(w + 0.1 * v for w, v in zip(weights, step))))


def test_reverse_mode_through_fractional_krylov_under_jit():
    """jit(grad) through sqrt-NGD's quadrature (a scan over a static node count) equals the
    dense strategy's gradient; before, the traced node count made it a while_loop, which
    reverse mode refuses."""
    weights, task = make_problem((3, 5, 4, 2), seed=6)
    krylov = dlnsim.NaturalGradientFlow(KrylovGaussNewton(), 2.0)
    dense = dlnsim.NaturalGradientFlow(DenseGaussNewton(), 2.0)
    g_krylov = jax.jit(lambda w: jax.grad(loss_after_step)(w, task, krylov))(weights)
    g_dense = jax.grad(loss_after_step)(weights, task, dense)
    assert rel_err(g_krylov, g_dense) <= 1e-7


def test_a_krylov_solve_that_does_not_converge_is_reported():
    weights, task = make_problem((3, 5, 4, 2), seed=7)
    for q in (1.0, 2.0):
        field = dlnsim.NaturalGradientFlow(KrylovGaussNewton(max_cg_steps=1), q)
        with pytest.raises(Exception, match="max_cg_steps"):
            jax.block_until_ready(field(0.0, weights, task))


@pytest.mark.parametrize("init", ["small", "orthogonal", "xavier", "balanced"])
def test_vmap_over_the_init_scale_equals_a_loop(init):
    """DeepLinearNet's init scale may be traced: vmap over scales gives the loop's weights; a
    concrete scale is still checked."""
    scales = jnp.array([0.5, 1.3, 2.0])

    def weights(scale):
        return dlnsim.DeepLinearNet((3, 4, 2), key=jr.PRNGKey(0), init=init, scale=scale).weights

    mapped = jax.vmap(weights)(scales)
    for b, scale in enumerate(scales):
        for w_mapped, w_loop in zip(mapped, weights(float(scale)), strict=True):
            np.testing.assert_allclose(w_mapped[b], w_loop, rtol=1e-14, atol=0)
    # the scale enters linearly (a missing or squared factor would fail)
    np.testing.assert_allclose(mapped[0][2], mapped[0][0] * 4.0, rtol=1e-12)
    with pytest.raises(ValueError, match="scale"):
        weights(-1.0)
