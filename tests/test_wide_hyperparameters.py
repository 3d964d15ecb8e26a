"""dlnsim.wide: numeric hyperparameters (rho, rho~, rcond, eta) are array leaves. A new value reuses the
compiled program, jax.vmap over them equals a Python loop, and train's lax.scan equals the step loop."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from dlnsim import wide

DAMPED = [
    wide.ExactFisher,
    wide.BlockDiagonalFisher,
    wide.TriDiagonalFisher,
    wide.KFACFisher,
    wide.UnitWiseFisher,
    wide.DiagonalFisher,
    wide.QuasiDiagonalFisher,
]


def small_problem(outputs=1, seed=0):
    mlp = wide.MLP((5, 12, 12, outputs), "tanh", key=jr.PRNGKey(seed))
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(1), (4, 5)))
    y = jr.normal(jr.PRNGKey(2), (4, outputs))
    return mlp, x, y


def close(actual, expected, rtol=1e-12):
    """Equal to ``rtol`` relative to the largest entry of ``expected``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert np.abs(actual - expected).max() <= rtol * np.abs(expected).max()


def flat(ws, bs):
    return jnp.concatenate([w.ravel() for w in ws] + [b.ravel() for b in (bs or [])])


@pytest.mark.parametrize("cls", DAMPED, ids=lambda c: c.name)
def test_new_damping_and_learning_rate_reuse_the_compiled_step(cls):
    """Two dampings and two learning rates: one trace of the jitted NGD step."""
    mlp, x, y = small_problem()
    traces = []

    @eqx.filter_jit
    def step(opt, net):
        traces.append(1)  # runs once per trace
        updates, _ = opt.update(net, x, y, opt.init(net))
        return eqx.apply_updates(net, updates)(x)

    outs = [step(wide.NGD(cls(rho=rho), eta), mlp) for rho, eta in ((1e-3, 0.1), (2e-3, 0.1), (2e-3, 0.3))]
    assert len(traces) == 1
    assert not np.allclose(outs[0], outs[1]) and not np.allclose(outs[1], outs[2])


def test_run_ngd_compiles_once_for_two_learning_rates_and_dampings():
    """train's compiled scan (run_ngd) is reused across learning rates, dampings and cutoffs."""
    mlp, _, _ = small_problem()
    task = wide.synthetic_task(jr.PRNGKey(3), 4, 5, test_samples=3)
    before = wide.run_ngd._cached._cache_size()
    runs = [
        wide.train(mlp, task, wide.ngd("kfac", rho=rho, learning_rate=eta), 2)
        for rho, eta in ((1e-3, 0.05), (1e-2, 0.05), (1e-2, 0.07))
    ]
    runs.append(wide.train(mlp, task, wide.NGD(wide.KFACFisher(rho=1e-2, rcond=1e-8), 0.07), 2))
    assert wide.run_ngd._cached._cache_size() == before + 1
    assert runs[0].learning_rate == 0.05 and runs[2].learning_rate == 0.07
    assert np.abs(runs[0].f_train - runs[2].f_train).max() > 1e-6


@pytest.mark.parametrize("cls", DAMPED, ids=lambda c: c.name)
def test_vmap_over_damping_equals_a_loop(cls):
    """jax.vmap over rho (including rho = 0, where the layer-wise operator switches to the pseudo-inverse
    and the entry-wise ones to their cut inverse) equals a Python loop to 1e-12."""
    mlp, x, y = small_problem(outputs=2)
    sig = wide.signals(mlp, x)
    r = sig.f - y
    rhos = jnp.array([0.0, 1e-3, 0.1])

    def update(rho):
        return flat(*wide.natural_gradient(mlp, sig, r, cls(rho=rho)))

    batched = jax.vmap(update)(rhos)
    looped = jnp.stack([update(float(rho)) for rho in rhos])
    scale = float(jnp.abs(looped).max())
    assert float(jnp.abs(batched - looped).max()) <= 1e-12 * scale


def test_vmap_over_ce_damping_and_rcond_equals_a_loop():
    """Cross-entropy layer-wise NGD: vmap over rho~ (S.158) and over rcond equals a loop."""
    mlp, x, _ = small_problem(outputs=3)
    y = jax.nn.one_hot(jnp.array([0, 2, 1, 1]), 3)
    sig = wide.signals(mlp, x)
    r = jax.nn.softmax(sig.f, axis=-1) - y

    def update(ce_damping, rcond):
        fisher = wide.BlockDiagonalFisher(loss="cross-entropy", ce_damping=ce_damping, rcond=rcond)
        return flat(*wide.natural_gradient(mlp, sig, r, fisher))

    for values, fn in ((jnp.array([1e-4, 1e-3, 1e-2]), lambda v: update(v, 1e-10)),
                       (jnp.array([1e-12, 1e-10, 1e-8]), lambda v: update(1e-3, v))):  # fmt: skip
        batched = jax.vmap(fn)(values)
        looped = jnp.stack([fn(float(v)) for v in values])
        assert float(jnp.abs(batched - looped).max()) <= 1e-12 * float(jnp.abs(looped).max())


def test_vmap_over_learning_rate_of_run_ngd_equals_a_loop():
    """A learning-rate sweep as one compiled program: vmap of run_ngd over eta equals a loop."""
    mlp, x, y = small_problem()
    xt = wide.normalize_inputs(jr.normal(jr.PRNGKey(4), (3, 5)))
    etas = jnp.array([0.05, 0.1, 0.2])

    def outputs(eta):
        _, f_train, f_test = wide.run_ngd(wide.NGD(wide.UnitWiseFisher(damping=1e-3), eta), mlp, x, y, xt, 3)
        return f_train, f_test

    batched = jax.vmap(outputs)(etas)
    for i, eta in enumerate(etas):
        looped = outputs(float(eta))
        for b, lo in zip(batched, looped, strict=True):
            assert float(jnp.abs(b[i] - lo).max()) <= 1e-12 * float(jnp.abs(lo).max())


@pytest.mark.parametrize(
    "name,loss", [("bd", "mse"), ("kfac", "mse"), ("diagonal", "mse"), ("bd", "cross-entropy")]
)
def test_train_scan_equals_the_step_loop(name, loss):
    """train (one lax.scan) gives the outputs, losses and final network of stepping opt.update in a Python
    loop, as train did before, to float precision."""
    outputs = 3 if loss == "cross-entropy" else 1
    task = wide.synthetic_task(jr.PRNGKey(0), 5, 6, outputs=outputs, test_samples=4)
    mlp = wide.MLP.uniform(depth=3, width=16, input_dim=6, outputs=outputs, key=jr.PRNGKey(5))
    # ce_damping 0.1: with the default 1e-4 the damped softmax Hessian amplifies round-off to ~1e-11,
    # in the old per-step jit loop too (it differed from the eager loop by 3e-11)
    opt = wide.ngd(name, learning_rate=0.05 if name == "diagonal" else None, loss=loss, ce_damping=0.1)
    run = wide.train(mlp, task, opt, 3)
    lr = opt.resolve_learning_rate(mlp, task.n_samples)
    assert run.learning_rate == lr
    net, state, f_train, f_test = mlp, opt.init(mlp), [mlp(task.x_train)], [mlp(task.x_test)]
    step_opt = wide.NGD(opt.fisher, lr)
    for _ in range(3):
        updates, state = step_opt.update(net, task.x_train, task.y_train, state)
        net = eqx.apply_updates(net, updates)
        f_train.append(net(task.x_train))
        f_test.append(net(task.x_test))
    close(run.f_train, np.stack(f_train))
    close(run.f_test, np.stack(f_test))
    close(run.train_loss, [float(wide.task_loss(f, task.y_train, loss)) for f in f_train])
    for a, b in zip(run.mlp.weights, net.weights, strict=True):
        close(a, b)
    assert int(state.step) == 3


def test_fisher_classes_and_the_string_factory():
    """Fisher(name, ...) and as_fisher build the classes; old attribute access and checks still work."""
    for name, cls in zip(wide.FISHERS, DAMPED, strict=True):
        fisher = wide.Fisher(name, 1e-3)
        assert type(fisher) is cls and fisher.name == name and isinstance(fisher, wide.Fisher)
        assert float(fisher.damping) == 1e-3 and fisher.loss == "mse"
        assert type(wide.as_fisher(name)) is cls
    assert wide.Fisher("kfac", kfac_bias="block").kfac_bias == "block"
    assert float(wide.Fisher("bd").rcond) == wide.PINV_RCOND
    assert float(wide.Fisher("diagonal").rcond) == wide.ENTRYWISE_RCOND
    ce = wide.Fisher("tri-diagonal", loss="cross-entropy", ce_damping=1e-3)
    assert ce.loss == "cross-entropy" and float(ce.ce_damping) == 1e-3
    assert ce.default_learning_rate(2.0) == pytest.approx(0.05)
    mlp = wide.MLP.uniform(depth=4, width=8, input_dim=3, key=jr.PRNGKey(0))
    assert wide.BlockDiagonalFisher().alpha(mlp, 2) == 4.0 == wide.alpha_theory("bd", mlp, 2)
    assert wide.TriDiagonalFisher().alpha(mlp, 2) == 2.0 == wide.layerwise_alpha("tri-diagonal", 4)
    assert wide.KFACFisher().alpha(mlp, 2) == 8.0
    assert wide.BlockDiagonalFisher(damping=1e-3).alpha(mlp, 2) is None
    assert wide.DiagonalFisher().alpha(mlp, 2) is None
    for build, match in (
        (lambda: wide.BlockDiagonalFisher(rho=-1.0), r"rho \(damping\) must be a finite number >= 0"),
        (lambda: wide.KFACFisher(damping=np.nan), "damping"),
        (lambda: wide.KFACFisher(kfac_bias="rows"), "kfac_bias must be 'augmented' or 'block'"),
        (lambda: wide.ExactFisher(loss="hinge"), "unknown loss"),
        (lambda: wide.ExactFisher(loss="cross-entropy", ce_damping=0.0), "ce_damping > 0"),
        (lambda: wide.DiagonalFisher(rcond=1.5), "rcond"),
        (lambda: wide.Fisher("kfac", loss="cross-entropy"), "layer-wise only"),
        (lambda: wide.Fisher("shampoo"), "unknown fisher"),
        (lambda: wide.NGD(wide.ExactFisher(), learning_rate=0.0), "learning_rate"),
        (lambda: wide.TriDiagonalFisher().check_depth(5), "Lemma 4.3"),
    ):
        with pytest.raises(ValueError, match=match):
            build()
    with pytest.raises(TypeError, match="fisher"):
        wide.NGD("bd")
    wide.TriDiagonalFisher(damping=1e-3).check_depth(5)  # damped: allowed


def test_rho_is_the_fisher_damping_and_damping_its_old_name():
    """Karakida & Osawa's rho is ``rho`` everywhere (classes, factories, ngd, FisherFlow, CLI); the
    old name ``damping`` still builds the same Fisher, and giving both is refused."""
    new, old = wide.BlockDiagonalFisher(rho=1e-3), wide.BlockDiagonalFisher(damping=1e-3)
    assert float(new.rho) == float(old.rho) == float(old.damping) == 1e-3
    assert float(wide.Fisher("kfac", damping=2e-3).rho) == float(wide.as_fisher("kfac", rho=2e-3).rho) == 2e-3
    assert float(wide.ngd("bd", damping=4e-3).fisher.rho) == float(wide.ngd("bd", rho=4e-3).fisher.rho)
    assert float(wide.FisherFlow("bd", rho=5e-3).rho) == 5e-3
    with pytest.raises(ValueError, match="rho \\(or its old name damping\\), not both"):
        wide.BlockDiagonalFisher(rho=1e-3, damping=1e-3)
    with pytest.raises(ValueError, match="not both"):
        wide.ngd("bd", 1e-3, damping=1e-3)
    with pytest.raises(ValueError, match="rho \\(damping\\) must be"):
        wide.UnitWiseFisher(rho=-1.0)
