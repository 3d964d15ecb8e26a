"""dlnsim.wide: Fisher approximations against dense P x P references, isotropy (alpha) at any width,
NGD training against the NTK theory (Karakida & Osawa 2020)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import wide_reference as ref

from dlnsim import wide

NETS = {
    "tanh-bias-C1": dict(widths=(6, 9, 8, 1), activation="tanh", bias=True),
    "relu-bias-C2": dict(widths=(6, 9, 8, 2), activation="relu", bias=True),
    "erf-nobias-C1": dict(widths=(6, 9, 8, 1), activation="erf", bias=False),
}


def small_net(name, seed=1):
    cfg = NETS[name]
    mlp = wide.MLP(cfg["widths"], cfg["activation"], key=jr.PRNGKey(seed), bias=cfg["bias"])
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(2), (4, cfg["widths"][0])))
    y = jr.normal(jr.PRNGKey(3), (4, cfg["widths"][-1]))
    return mlp, x, y


def rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize(
    "net,damping",
    [("tanh-bias-C1", 0.0), ("relu-bias-C2", 0.0), ("erf-nobias-C1", 0.0), ("relu-bias-C2", 1e-3)],
)
@pytest.mark.parametrize(
    "fisher,kfac_bias",
    [("exact", "augmented"), ("bd", "augmented"), ("tri-diagonal", "augmented"), ("kfac", "augmented"),
     ("kfac", "block"), ("unit-wise", "augmented"), ("diagonal", "augmented")],
)  # fmt: skip
def test_fisher_matches_dense_reference(net, damping, fisher, kfac_bias):
    """(G + rho I)^+ grad L and Theta_bar = J G^+ J^T / N from sample-space algebra equal the dense
    P x P construction (autodiff Jacobian, block structure built densely, eigh pseudo-inverse)."""
    mlp, x, y = small_net(net)
    n = x.shape[0]
    fis = wide.Fisher(fisher, damping, kfac_bias=kfac_bias)
    sig = wide.signals(mlp, x)
    r = sig.f - y
    ws, bs = wide.natural_gradient(mlp, sig, r, fis)
    ginv, jac = ref.dense_fisher_inverse(mlp, x, fisher, damping, kfac_bias)
    grad = jac.T @ np.asarray(r).reshape(-1) / n
    assert rel(ref.flatten_update(mlp, ws, bs), ginv @ grad) < 1e-9
    assert rel(wide.theta_bar(mlp, sig, fis), jac @ ginv @ jac.T / n) < 1e-9


@pytest.mark.parametrize(
    "net,damping",
    [("tanh-bias-C1", 0.0), ("relu-bias-C2", 0.0), ("erf-nobias-C1", 0.0), ("relu-bias-C2", 1e-3)],
)
def test_quasi_diagonal_matches_dense_reference(net, damping):
    """Ollivier's quasi-diagonal update unit by unit from the dense Fisher's entries."""
    mlp, x, y = small_net(net)
    n = x.shape[0]
    fis = wide.Fisher("quasi-diagonal", damping)
    sig = wide.signals(mlp, x)
    r = sig.f - y
    jac, _, _ = ref.jacobian(mlp, x)
    grad = jac.T @ np.asarray(r).reshape(-1) / n
    ws, bs = wide.natural_gradient(mlp, sig, r, fis)
    assert rel(ref.flatten_update(mlp, ws, bs), ref.dense_quasi_diagonal_update(mlp, x, grad, damping)) < 1e-9
    cols = [ref.dense_quasi_diagonal_update(mlp, x, jac.T @ e / n, damping) for e in np.eye(jac.shape[0])]
    assert rel(wide.theta_bar(mlp, sig, fis), jac @ np.stack(cols, axis=1)) < 1e-9


def test_test_point_theta_bar_matches_dense():
    """Theta_bar(x', x) = J(x') G^+ J(x)^T / N on new inputs (S.4), for every dense reference."""
    mlp, x, _ = small_net("tanh-bias-C1")
    xt = wide.normalize_inputs(jr.normal(jr.PRNGKey(9), (3, 6)))
    sig, sig_t = wide.signals(mlp, x), wide.signals(mlp, xt)
    jt, _, _ = ref.jacobian(mlp, xt)
    for name in ("exact", "bd", "tri-diagonal", "kfac", "unit-wise", "diagonal"):
        ginv, jac = ref.dense_fisher_inverse(mlp, x, name)
        got = wide.theta_bar(mlp, sig, name, test=sig_t)
        assert rel(got, jt @ ginv @ jac.T / x.shape[0]) < 1e-9, name


@pytest.mark.parametrize("depth", [3])
def test_cross_entropy_layerwise_matches_dense(depth):
    """Layer-wise NGD for cross-entropy: G = S^T (Sigma x (Lambda + rho~ I)) S / N (S.163)."""
    mlp = wide.MLP((5,) + (7,) * (depth - 1) + (3,), "tanh", key=jr.PRNGKey(4))
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(5), (3, 5)))
    y = jax.nn.one_hot(jnp.array([0, 2, 1]), 3)
    sig = wide.signals(mlp, x)
    jac, theta, layout = ref.jacobian(mlp, x)
    p = jax.nn.softmax(sig.f, axis=-1)
    lam = np.zeros((9, 9))
    for i in range(3):
        pi = np.asarray(p[i])
        lam[3 * i : 3 * i + 3, 3 * i : 3 * i + 3] = np.diag(pi) - np.outer(pi, pi) + 1e-3 * np.eye(3)
    layers = ref.layer_index(layout)
    for name in ("exact", "bd") + (("tri-diagonal",) if depth == 3 else ()):
        sigma = wide.layer_sigma(name, depth)
        g = np.zeros((theta.size, theta.size))
        for a, ia in enumerate(layers):
            for b, ib in enumerate(layers):
                g[np.ix_(ia, ib)] = sigma[a, b] * jac[:, ia].T @ lam @ jac[:, ib] / 3
        grad = jac.T @ np.asarray(p - y).reshape(-1) / 3
        fis = wide.Fisher(name, loss="cross-entropy", ce_damping=1e-3)
        ws, bs = wide.natural_gradient(mlp, sig, p - y, fis)
        assert rel(ref.flatten_update(mlp, ws, bs), ref.pinv(g) @ grad) < 1e-8, name
        # S.166-S.167: J G^+ J^T / N = alpha (Lambda + rho~ I)^{-1} when every Theta_l is invertible
        tb = wide.theta_bar(mlp, sig, fis)
        alpha = wide.layerwise_alpha(name, depth)
        assert rel(tb, alpha * np.linalg.inv(lam)) < 1e-8, name


@pytest.mark.parametrize(
    "fisher,depth,alpha",
    [("exact", 3, 1.0), ("bd", 4, 4.0), ("tri-diagonal", 6, 2.0), ("tri-diagonal", 7, 3.0)],
)
@pytest.mark.parametrize("width", [16, 64])
def test_layerwise_alpha_is_exact_at_any_width(fisher, depth, alpha, width):
    """Theta_bar = alpha I exactly at any width (Theorem 4.1, S.71, Lemma 4.3), alpha = 1^T Sigma^-1 1."""
    mlp = wide.MLP.uniform(depth=depth, width=width, input_dim=8, key=jr.PRNGKey(depth), activation="relu")
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(0), (6, 8)))
    measured, cond = wide.isotropy(wide.theta_bar(mlp, wide.signals(mlp, x), fisher))
    assert abs(measured - alpha) < 1e-6
    assert abs(cond - 1.0) < 1e-6
    assert wide.alpha_theory(fisher, mlp, 6) == pytest.approx(alpha, abs=1e-12)


@pytest.mark.parametrize("width", [16, 64])
@pytest.mark.parametrize("outputs", [1, 2])
def test_kfac_alpha_is_n_times_depth(width, outputs):
    """K-FAC without bias, M0 >= N: Theta_bar = N L I exactly (S.105-S.107)."""
    n, depth = 5, 3
    mlp = wide.MLP.uniform(
        depth=depth, width=width, input_dim=8, outputs=outputs, key=jr.PRNGKey(1), bias=False
    )
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(0), (n, 8)))
    measured, cond = wide.isotropy(wide.theta_bar(mlp, wide.signals(mlp, x), "kfac"))
    assert abs(measured - n * depth) < 1e-6 and abs(cond - 1.0) < 1e-6
    assert wide.alpha_theory("kfac", mlp, n) == n * depth
    # the augmented bias (S.B.3.3) keeps the same alpha and isotropy
    mlp_b = wide.MLP.uniform(depth=depth, width=width, input_dim=8, outputs=outputs, key=jr.PRNGKey(1))
    measured, cond = wide.isotropy(wide.theta_bar(mlp_b, wide.signals(mlp_b, x), "kfac"))
    assert abs(measured - n * depth) < 1e-6 and abs(cond - 1.0) < 1e-6


def test_kfac_forster_transform():
    """M0 < N: alpha = N(L-1) + M0 always, isotropic only after the Forster transform (S.108-S.111)."""
    n, m0, depth = 12, 5, 3
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(0), (n, m0)))
    xf = wide.forster_transform(x)
    np.testing.assert_allclose(np.linalg.norm(xf, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(xf.T @ xf, n / m0 * np.eye(m0), atol=1e-10)
    mlp = wide.MLP.uniform(depth=depth, width=48, input_dim=m0, key=jr.PRNGKey(2), bias=False)
    alpha = n * (depth - 1) + m0
    measured, cond = wide.isotropy(wide.theta_bar(mlp, wide.signals(mlp, x), "kfac"))
    assert abs(measured - alpha) < 1e-6 and cond > 1.1  # S.109: leverage scores on the diagonal
    measured, cond = wide.isotropy(wide.theta_bar(mlp, wide.signals(mlp, xf), "kfac"))
    assert abs(measured - alpha) < 1e-6 and abs(cond - 1.0) < 1e-6
    assert wide.alpha_theory("kfac", mlp, n, forster=True) == alpha
    # with biases kept in their own blocks (S.123): + N per hidden layer + 1 from the output bias (S.124)
    mlp_b = wide.MLP.uniform(depth=depth, width=48, input_dim=m0, key=jr.PRNGKey(2))
    fis = wide.Fisher("kfac", kfac_bias="block")
    measured, _ = wide.isotropy(wide.theta_bar(mlp_b, wide.signals(mlp_b, xf), fis))
    assert abs(measured - wide.alpha_theory(fis, mlp_b, n, forster=True)) < 1e-6
    assert wide.alpha_theory(fis, mlp_b, n) == alpha + n * (depth - 1) + 1
    with pytest.raises(ValueError, match="N > M0"):
        wide.forster_transform(xf[:4])
    with pytest.raises(ValueError, match="span all M0=5"):
        wide.forster_transform(np.c_[np.asarray(x)[:, :4], np.zeros(n)])  # a coordinate that is always 0


def test_unit_wise_relu_alpha_per_width():
    """Unit-wise NGD, relu: alpha / M -> (L - 1) / 2 (S.128, S.141); within 5% at M = 1024."""
    depth, width, n = 3, 1024, 4
    mlp = wide.MLP.uniform(depth=depth, width=width, input_dim=8, key=jr.PRNGKey(0))
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(1), (n, 8)))
    measured, cond = wide.isotropy(wide.theta_bar(mlp, wide.signals(mlp, x), "unit-wise"))
    assert abs(measured / width - (depth - 1) / 2) < 0.05 * (depth - 1) / 2
    assert cond < 1.1
    assert wide.alpha_theory("unit-wise", mlp, n) == (depth - 1) / 2 * width + 1


@pytest.mark.parametrize("activation,shift", [("tanh", 0.0), ("shifted-relu", 1.0)])
def test_unit_wise_alpha_other_activations(activation, shift):
    """gamma_l = 1 for tanh; 1/2 + erf(s / sqrt(2 q_l)) / 2 for shifted relu (S.156)."""
    width, n = 512, 4
    mlp = wide.MLP.uniform(depth=3, width=width, input_dim=8, activation=activation, shift=shift,
                           key=jr.PRNGKey(3))  # fmt: skip
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(1), (n, 8)))
    measured, _ = wide.isotropy(wide.theta_bar(mlp, wide.signals(mlp, x), "unit-wise"))
    theory = wide.alpha_theory("unit-wise", mlp, n)
    if activation == "tanh":
        assert measured == pytest.approx(2 * width + 1, abs=1e-6) and theory == 2 * width + 1
    else:
        assert 0.5 * 2 * width < theory < 2 * width
        assert abs(measured - theory) < 0.05 * theory


def test_entrywise_fishers_are_not_isotropic():
    """The diagonal and quasi-diagonal Theta_bar keep a condition number well above 1 (Fig. 3)."""
    mlp = wide.MLP.uniform(depth=3, width=128, input_dim=16, key=jr.PRNGKey(0))
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(1), (8, 16)))
    sig = wide.signals(mlp, x)
    _, cond_ntk = wide.isotropy(wide.ntk(mlp, sig))
    for name in ("diagonal", "quasi-diagonal"):
        _, cond = wide.isotropy(wide.theta_bar(mlp, sig, name))
        assert 2.0 < cond < cond_ntk, name
        assert wide.alpha_theory(name, mlp, 8) is None


def test_tridiagonal_singular_depth_is_refused():
    """L = 2 mod 3: Sigma is singular (Lemma 4.3); without damping every entry point refuses."""
    mlp = wide.MLP.uniform(depth=5, width=8, input_dim=4, key=jr.PRNGKey(0))
    opt = wide.ngd("tri-diagonal")
    with pytest.raises(ValueError, match="damping"):
        opt.init(mlp)
    task = wide.synthetic_task(jr.PRNGKey(0), 4, 4, test_samples=4)
    with pytest.raises(ValueError, match="Lemma 4.3"):
        wide.compare_with_theory(mlp, task, "tri-diagonal", steps=1)
    assert wide.layerwise_alpha("tri-diagonal", 5) is None
    wide.ngd("tri-diagonal", damping=1e-3).init(mlp)  # damped: allowed


def test_tridiagonal_alpha_closed_form():
    """S.93-S.94 (rebuilt: s = (1 + b(sigma_1 + sigma_2)) / (a + 2b)) equals 1^T Sigma^{-1} 1 and
    gives s for L = 3s, s + 1 for L = 3s + 1."""
    for depth in range(1, 16):
        if depth % 3 == 2:
            continue
        sigma = wide.layer_sigma("tri-diagonal", depth)
        direct = np.ones(depth) @ np.linalg.solve(sigma, np.ones(depth))
        expect = depth // 3 + (1 if depth % 3 == 1 else 0)
        assert wide.tridiagonal_alpha(depth) == pytest.approx(direct, abs=1e-9)
        assert direct == pytest.approx(expect, abs=1e-9)
    for a, b in ((3.0, 1.0), (2.5, -0.7)):  # general tri-diagonal Toeplitz
        s = a * np.eye(6) + b * (np.eye(6, k=1) + np.eye(6, k=-1))
        assert wide.tridiagonal_alpha(6, a, b) == pytest.approx(np.ones(6) @ np.linalg.solve(s, np.ones(6)))


def test_bd_training_follows_theory_and_tolerance_shrinks_with_width():
    """bd-NGD: f_t - y = (1 - eta alpha)^t (f_0 - y) (Theorem 4.1, S.27: deviation O(1/sqrt(M))).

    Stated tolerance: max_t ||f_t - f_t^theory|| / ||f_0 - y|| <= 1.5 / sqrt(M) for every seed, and
    the median over seeds falls from M = 128 to M = 2048."""
    task = wide.synthetic_task(jr.PRNGKey(0), 4, 8, test_samples=8)
    medians = {}
    for width in (128, 2048):
        devs = []
        for seed in range(3):
            mlp = wide.MLP.uniform(depth=3, width=width, input_dim=8, key=jr.PRNGKey(seed))
            out = wide.compare_with_theory(mlp, task, "bd", steps=3, learning_rate=0.5 / 3)
            assert out["alpha_measured"] == pytest.approx(3.0, abs=1e-9)
            devs.append(out["max_deviation"])
        assert max(devs) <= 1.5 / np.sqrt(width), (width, devs)
        medians[width] = float(np.median(devs))
    assert medians[2048] < medians[128] / 3
    assert medians[2048] < 0.01


def test_optimizer_api_and_default_learning_rate():
    """optax-style init/update; the default step is 1/alpha: one bd step nearly solves a wide net."""
    mlp = wide.MLP.uniform(depth=3, width=512, input_dim=8, key=jr.PRNGKey(0))
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(1), (4, 8)))
    y = 0.5 * jnp.sign(jr.normal(jr.PRNGKey(2), (4, 1)))
    opt = wide.ngd(fisher="bd", damping=0.0)
    assert opt.resolve_learning_rate(mlp, 4) == pytest.approx(1 / 3)
    state = opt.init(mlp)
    updates, state = opt.update(mlp, x, y, state)
    new = eqx.apply_updates(mlp, updates)
    assert int(state.step) == 1
    before = float(wide.task_loss(mlp(x), y))
    after = float(wide.task_loss(new(x), y))
    assert after < 2e-2 * before  # O(1/M) from the nonlinearity at M = 512
    # determinism: the same seed gives the same numbers
    again = eqx.apply_updates(mlp, opt.update(mlp, x, y, opt.init(mlp))[0])
    np.testing.assert_array_equal(np.asarray(new(x)), np.asarray(again(x)))
    with pytest.raises(ValueError, match="unknown fisher"):
        wide.ngd(fisher="full")
    with pytest.raises(ValueError, match="no theoretical alpha"):
        wide.ngd(fisher="diagonal").resolve_learning_rate(mlp, 4)


def test_linearized_dynamics_matches_s26():
    """The stepped linearised model equals the closed form S.26, and (1 - eta alpha)^t when isotropic."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    tbar = a @ a.T / 5 + np.eye(5)
    tbar_test = rng.normal(size=(3, 5))
    f0, f0t, y = rng.normal(size=(5, 1)), rng.normal(size=(3, 1)), rng.normal(size=(5, 1))
    eta, steps = 0.3, 7
    tr, te = wide.linearized_dynamics(tbar, tbar_test, f0, f0t, y, eta, steps)
    for t in (0, 3, 7):
        m = np.linalg.matrix_power(np.eye(5) - eta * tbar, t)
        np.testing.assert_allclose(tr[t], y + m @ (f0 - y), atol=1e-12)
        closed = tbar_test @ np.linalg.solve(tbar, (np.eye(5) - m) @ (y - f0)) + f0t
        np.testing.assert_allclose(te[t], closed, atol=1e-12)
    iso, _ = wide.linearized_dynamics(2.0 * np.eye(5), tbar_test, f0, f0t, y, eta, steps)
    np.testing.assert_allclose(iso - y, wide.predicted_train_residual(f0 - y, 2.0, eta, steps), atol=1e-12)


def test_mlp_forward_and_checks():
    mlp = wide.MLP((3, 5, 2), "erf", key=jr.PRNGKey(0))
    x = jr.normal(jr.PRNGKey(1), (4, 3))
    _, layout = ref.flat_params(mlp)
    theta, _ = ref.flat_params(mlp)
    np.testing.assert_allclose(mlp(x), ref.forward(mlp, jnp.asarray(theta), x, layout), atol=1e-14)
    assert mlp(x[0]).shape == (2,) and mlp.depth == 2 and mlp.n_params == 3 * 5 + 5 * 2 + 7
    for kwargs, match in (
        (dict(widths=(3,), activation="relu"), "widths"),
        (dict(widths=(3, 0, 1), activation="relu"), "integer >= 1"),
        (dict(widths=(3, 4, 1), activation="gelu"), "unknown activation"),
        (dict(widths=(3, 4, 1), activation="relu", shift=1.0), "shifted-relu activation only"),
        (dict(widths=(3, 4, 1), activation="relu", sigma_w2=-1.0), "sigma_w2"),
    ):
        with pytest.raises(ValueError, match=match):
            wide.MLP(key=jr.PRNGKey(0), **kwargs)
    with pytest.raises(ValueError, match="depth"):
        wide.MLP.uniform(depth=0, width=4, input_dim=3, key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match="shape"):
        eqx.tree_at(lambda m: m.weights, mlp, (mlp.weights[0], mlp.weights[0])).__check_init__()


def test_data_tasks(tmp_path):
    task = wide.digits_task(jr.PRNGKey(0), 20, test_samples=30)
    assert task.x_train.shape == (20, 64) and task.y_train.shape == (20, 1) and task.kind == "binary"
    np.testing.assert_allclose(np.linalg.norm(task.x_train, axis=1), 1.0, atol=1e-12)
    assert set(np.unique(np.asarray(task.y_train))) <= {-0.5, 0.5}
    multi = wide.digits_task(jr.PRNGKey(0), 30, classes=None, test_samples=10)
    assert multi.y_train.shape == (30, 10) and np.all(np.asarray(multi.y_train).sum(1) == 1)
    syn = wide.synthetic_task(jr.PRNGKey(0), 6, 5, outputs=3, test_samples=4)
    assert syn.y_train.shape == (6, 3) and syn.kind == "multiclass"
    np.testing.assert_array_equal(syn.x_train, wide.synthetic_task(jr.PRNGKey(0), 6, 5, outputs=3,
                                                                   test_samples=4).x_train)  # fmt: skip
    path = tmp_path / "d.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(12, 4)), y=np.arange(12.0))
    own = wide.load_wide_data(str(path))
    assert own.x_train.shape == (9, 4) and own.x_test.shape == (3, 4) and own.y_train.shape == (9, 1)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.array([[np.nan, 1.0]] * 4), y=np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        wide.load_wide_data(str(bad))
    np.savez(bad, x=np.ones((4, 2)), y=np.zeros(3))
    with pytest.raises(ValueError, match="same N"):
        wide.load_wide_data(str(bad))
    with pytest.raises(ValueError, match="classes"):
        wide.digits_task(jr.PRNGKey(0), 5, classes=(3, 3))
    with pytest.raises(ValueError, match="non-finite"):
        wide.normalize_inputs(np.array([[np.inf, 0.0]]))
    with pytest.raises(ValueError, match="same number of rows"):
        wide.WideTask(
            jnp.ones((3, 2)), jnp.ones((2, 1)), jnp.ones((1, 2)), jnp.ones((1, 1)), "regression", ""
        )
