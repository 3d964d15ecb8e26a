"""dlnsim.wide flows in continuous time: every field against a dense P x P reference, the NTK theory of
the integrated residual at three widths, the Euler link to discrete NGD, and the ``dlnsim flow`` CLI."""

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import wide_reference as ref
from typer.testing import CliRunner

from dlnsim import DynamicsBlowUpError, wide
from dlnsim.cli import app

NETS = {
    # name: widths, bias, N (P is the number of parameters)
    "bias-N<P": ((4, 6, 5, 1), True, 5),  # P = 71, N C = 5
    "nobias-N>P": ((3, 4, 1), False, 24),  # P = 16, N C = 24
    "bias-C2-N>P": ((3, 3, 2), True, 12),  # P = 20, N C = 24
}
FISHERS = ("exact", "bd", "tri-diagonal", "kfac", "unit-wise", "diagonal", "quasi-diagonal")
QS = (1.0, 2.0, 4.0, math.inf)
RHOS = (0.0, 0.1)


def small_problem(name, seed=1):
    widths, bias, n = NETS[name]
    mlp = wide.MLP(widths, "tanh", key=jr.PRNGKey(seed), bias=bias)
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(2), (n, widths[0])))
    y = jr.normal(jr.PRNGKey(3), (n, widths[-1]))
    return mlp, wide.FlowTask(x, y)


def dense_power(m, power, damping, rcond=1e-10):
    """(m + damping)^(-power) by numpy eigh, zero where lambda + damping <= rcond * max(lambda)."""
    evals, evecs = np.linalg.eigh(0.5 * (m + m.T))
    shifted = evals + damping
    keep = shifted > rcond * evals.max()
    f = np.zeros_like(evals)
    f[keep] = shifted[keep] ** (-power)
    return (evecs * f) @ evecs.T


def dense_field(mlp, task, fisher, q, rho, monkeypatch):
    """-(G~ + rho I)^(-1/q) grad L from the autodiff Jacobian of the flat parameters, G = J^T J / N."""
    jac, theta, layout = ref.jacobian(mlp, task.x)
    n = task.x.shape[0]
    r = np.asarray(mlp(task.x) - task.y).reshape(-1)
    grad = jac.T @ r / n
    if math.isinf(q):
        return -grad
    s = 1.0 / q
    full = jac.T @ jac / n
    p = theta.size
    if fisher == "quasi-diagonal":
        if mlp.has_bias:
            return -ref.dense_quasi_diagonal_update(mlp, task.x, grad, rho)
        fisher = "diagonal"
    if fisher == "diagonal":
        d = np.diag(full)
        return -dense_power(np.diag(d), s, rho, 1e-12) @ grad
    if fisher == "kfac":
        monkeypatch.setattr(ref, "pinv", lambda m, rcond=1e-10: dense_power(m, s, 0.0, rcond))
        return -ref._dense_kfac_inverse(mlp, task.x, jac, layout, rho, "augmented") @ grad
    if fisher == "exact":
        return -dense_power(full, s, rho) @ grad
    if fisher == "unit-wise":
        out = np.zeros((p, p))
        for idx in ref.unit_index(layout):
            out[np.ix_(idx, idx)] = dense_power(full[np.ix_(idx, idx)], s, rho)
        return -out @ grad
    layers = ref.layer_index(layout)
    g = np.zeros((p, p))
    for a, ia in enumerate(layers):
        for b, ib in enumerate(layers):
            if a == b or (fisher == "tri-diagonal" and abs(a - b) == 1):
                g[np.ix_(ia, ib)] = full[np.ix_(ia, ib)]
    if fisher == "tri-diagonal" and mlp.depth >= 3:  # indefinite: q = 1 only
        return -(np.linalg.inv(g + rho * np.eye(p)) if rho > 0 else ref.pinv(g)) @ grad
    return -dense_power(g, s, rho) @ grad


def flat(mlp, update):
    return ref.flatten_update(mlp, update.weights, update.biases)


def rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("fisher", FISHERS)
def test_field_matches_dense_reference(net, fisher, monkeypatch):
    mlp, task = small_problem(net)
    indefinite = fisher == "tri-diagonal" and mlp.depth >= 3
    coupled = fisher == "quasi-diagonal" and mlp.has_bias
    singular = fisher == "tri-diagonal" and mlp.depth % 3 == 2  # refused at rho = 0 (Lemma 4.3)
    field_at = eqx.filter_jit(lambda field: field(0.0, mlp, task))  # q and rho traced: one compile
    for q in QS:
        for rho in RHOS:
            if ((indefinite or coupled) and q not in (1.0, math.inf)) or (singular and rho == 0):
                continue
            got = flat(mlp, field_at(wide.FisherFlow(fisher, q, rho=rho)))
            want = dense_field(mlp, task, fisher, q, rho, monkeypatch)
            assert rel(got, want) < 1e-8, (net, fisher, q, rho, rel(got, want))


def test_layerwise_power_one_is_the_discrete_operator():
    """At s = 1 the powered layer-wise operator reduces to today's (C + N rho I)^(-1) operator."""
    mlp, task = small_problem("bias-N<P")
    sig = wide.signals(mlp, task.x)
    for rho in RHOS:
        fisher = wide.BlockDiagonalFisher(damping=rho)
        old = fisher.prepare(mlp, sig)
        new = fisher.prepare(mlp, sig, power=jnp.asarray(1.0))
        assert rel(new, old) < 1e-10


def test_fractional_powers_refused_where_undefined():
    mlp, task = small_problem("bias-N<P")
    with pytest.raises(ValueError, match="tri-diagonal Sigma is indefinite at depth L=3"):
        wide.FisherFlow("tri-diagonal", 2.0)(0.0, mlp, task)
    with pytest.raises(ValueError, match="quasi-diagonal Fisher with biases"):
        wide.FisherFlow("quasi-diagonal", 2.0)(0.0, mlp, task)
    with pytest.raises(ValueError, match="q must be >= 1"):
        wide.FisherFlow("exact", 0.5)
    with pytest.raises(ValueError, match="needs rho > 0"):
        wide.flow_field("damped-ngd")
    with pytest.raises(ValueError, match="unknown rule"):
        wide.flow_field("adam")


def test_power_and_rho_are_traced_leaves():
    """vmap over q and rho equals a loop, and new values reuse one compiled field."""
    mlp, task = small_problem("bias-N<P")
    qs, rhos = jnp.asarray([1.0, 2.0, jnp.inf]), jnp.asarray([0.0, 0.1, 0.1])

    def one(q, rho):
        return flat(mlp, wide.FisherFlow("bd", q, rho=rho)(0.0, mlp, task))

    batched = jax.vmap(lambda q, rho: wide.FisherFlow("bd", q, rho=rho)(0.0, mlp, task))(qs, rhos)
    for i in range(3):
        got = flat(mlp, jax.tree.map(lambda a, i=i: a[i], batched))
        assert rel(got, one(float(qs[i]), float(rhos[i]))) < 1e-10
    compiled = eqx.filter_jit(lambda field: field(0.0, mlp, task))
    compiled(wide.FisherFlow("bd", 2.0, rho=0.1))
    compiled(wide.FisherFlow("bd", 3.0, rho=0.2))
    assert compiled._cached._cache_size() == 1


def test_isotropic_flows_decay_exponentially():
    """Theta_bar = alpha I along the whole path (exact alpha = 1, bd alpha = L, Karakida & Osawa 2020,
    Thm 4.1), so the integrated residual is e^(-alpha t) r_0 at any width."""
    mlp, task = small_problem("bias-N<P")
    ts = np.linspace(0.0, 2.0, 9)
    for fisher, alpha in (("exact", 1.0), ("bd", 3.0)):
        traj = wide.simulate_flow(mlp, wide.flow_field("ngd", fisher=fisher), task, 2.0, saveat=ts)
        theory = wide.isotropic_flow_residual(traj.residuals[0], alpha, ts)
        assert np.abs(traj.residuals - theory).max() < 1e-7 * np.abs(traj.residuals[0]).max()
        assert np.allclose(traj.train_loss, 0.5 * np.mean(np.sum(traj.residuals**2, -1), -1))


@pytest.mark.slow  # 45 s on a 2-core CPU; the default run has the same check on seeds 0-3 below
def test_width_scaling_of_the_deviation_from_ntk_theory():
    """sqrt-NGD (q = 2, exact Fisher) on tanh nets of depth 3 at M = 64, 256, 1024, N = 8: the max over
    t in [0, 3] of |r_t - exp(-Theta^(1/2) t) r_0| (Theta the empirical NTK at initialisation), averaged
    over seeds 0-7, falls with M at least as fast as the M^(-1/2) the issue expects (fitted exponent
    <= -0.4, the 1/2 less a fit noise of 0.1 fixed beforehand). Measured (2026-12-02): with seeds 0-3
    1.2e-2, 7.6e-3, 2.3e-3 (exponent -0.61); with seeds 0-7 the exponent is -0.98, so the finding is
    that the deviation from the *initial-kernel* prediction is O(1/M) (the NTK moves by O(1/M)
    during training, Dyer & Gur-Ari 2019); the M^(-1/2) of
    the issue is the fluctuation of Theta_0 itself around the infinite-width kernel. The test outputs
    follow the kernel predictor f_0(x') - Theta(x', x) Theta^+ (r_0 - r_t) as closely."""
    check_width_scaling(seeds=range(8))


def test_width_scaling_of_the_deviation_from_ntk_theory_on_four_seeds():
    """The check above on seeds 0-3 (measured 2026-12-02: 1.2e-2, 7.6e-3, 2.3e-3, exponent -0.61)."""
    check_width_scaling(seeds=range(4))


def check_width_scaling(seeds):
    x = wide.normalize_inputs(jr.normal(jr.PRNGKey(2), (8, 4)))
    xt = wide.normalize_inputs(jr.normal(jr.PRNGKey(5), (5, 4)))
    task = wide.FlowTask(x, jnp.sin(3 * x[:, :1]), xt, jnp.sin(3 * xt[:, :1]))
    ts = np.linspace(0.0, 3.0, 31)
    widths = np.asarray([64, 256, 1024])
    deviations, test_deviations = [], []
    for m in widths:
        per_seed, per_seed_test = [], []
        for seed in seeds:
            mlp = wide.MLP((4, m, m, 1), "tanh", key=jr.PRNGKey(seed))
            field = wide.flow_field("sqrt-ngd")
            traj = wide.simulate_flow(mlp, field, task, 3.0, saveat=ts)
            theory, test_theory = wide.ntk_flow_prediction(mlp, task, ts, q=field.q)
            per_seed.append(np.abs(traj.residuals - theory).max())
            per_seed_test.append(np.abs(traj.test_outputs - test_theory).max())
            assert np.allclose(
                traj.test_loss, 0.5 * np.mean((traj.test_outputs - task.y_test) ** 2, axis=(1, 2))
            )
        deviations.append(np.mean(per_seed))
        test_deviations.append(np.mean(per_seed_test))
    exponent = np.polyfit(np.log(widths), np.log(deviations), 1)[0]
    assert deviations[0] > deviations[1] > deviations[2], deviations
    assert exponent <= -0.4, (exponent, deviations)
    assert test_deviations[0] > test_deviations[2] and test_deviations[2] < 0.01, test_deviations


@pytest.mark.parametrize("fisher", ["exact", "tri-diagonal", "kfac", "quasi-diagonal"])
def test_discrete_ngd_is_the_euler_step_of_the_flow(fisher):
    """One step theta + eta f(0, theta) of the q = 1 flow is today's discrete NGD step (eq. 9): the
    step of ``run_ngd`` (``NGD.update``) taken eagerly, as the field is, to 1e-12; and the compiled
    ``run_ngd`` step to 1e-10 (jit rounds differently, and the pseudo-inverse amplifies rounding by
    the condition number of the Fisher's factors: 5e-12 relative on the parameters for kfac here)."""
    mlp, task = small_problem("bias-N<P")
    eta = 0.01
    opt = wide.ngd(fisher, learning_rate=eta)
    update, _ = opt.update(mlp, task.x, task.y, opt.init(mlp))
    stepped = eqx.apply_updates(mlp, update)
    velocity = wide.FisherFlow(fisher, 1.0)(0.0, mlp, task)
    euler = eqx.apply_updates(mlp, jax.tree.map(lambda v: eta * v, velocity))
    assert rel(flat(mlp, euler), flat(mlp, stepped)) < 1e-12
    compiled, _, _ = wide.run_ngd(opt, mlp, task.x, task.y, task.x[:1], 1)
    assert rel(flat(mlp, euler), flat(mlp, compiled)) < 1e-10


def test_discrete_ngd_converges_to_the_flow_at_order_eta():
    """k steps of bd-NGD with eta = T / k approach the q = 1 flow at t = T with an O(eta) error."""
    mlp, task = small_problem("bias-N<P")
    t1 = 0.5
    flow = wide.simulate_flow(mlp, wide.flow_field("ngd", fisher="bd"), task, t1, saveat=[0.0, t1])
    errors = []
    for steps in (10, 20):
        opt = wide.ngd("bd", learning_rate=t1 / steps)
        _, f_train, _ = wide.run_ngd(opt, mlp, task.x, task.y, task.x[:1], steps)
        errors.append(np.abs(np.asarray(f_train[-1] - task.y) - flow.residuals[-1]).max())
    for coarse, fine in zip(errors[:-1], errors[1:], strict=True):
        assert 0.8 * 2 <= coarse / fine <= 1.2 * 2, errors


def test_simulate_flow_reports_blow_ups():
    mlp, task = small_problem("bias-N<P")
    with pytest.raises(DynamicsBlowUpError, match=r"dynamics blew up at t=.*Hint"):
        wide.simulate_flow(mlp, wide.flow_field("ngd"), task, 50.0, max_steps=2)
    nan_net = eqx.tree_at(lambda m: m.weights[0], mlp, mlp.weights[0].at[0, 0].set(jnp.nan))
    with pytest.raises(DynamicsBlowUpError, match="at t=0: the field is not finite"):
        wide.simulate_flow(nan_net, wide.flow_field("ngd"), task, 1.0)
    with pytest.raises(ValueError, match="t1 must be greater"):
        wide.simulate_flow(mlp, wide.flow_field("ngd"), task, 0.0)
    with pytest.raises(TypeError, match="task must be"):
        wide.simulate_flow(mlp, wide.flow_field("ngd"), (task.x, task.y), 1.0)


def test_cli_flow_writes_summary_trajectory_and_plot(tmp_path):
    out = tmp_path / "flow"
    args = ["flow", "--rule", "ngd", "--fisher", "bd", "--depth", "2", "--width", "16", "--samples", "4",
            "--t1", "1", "--saves", "11", "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["theory"].startswith("isotropic") and summary["max_deviation_from_theory"] < 1e-6
    data = np.load(out / "trajectory.npz")
    assert data["residuals"].shape == (11, 4, 1) and data["theory_residuals"].shape == (11, 4, 1)
    assert (out / "residual.png").stat().st_size > 1000
    bad = CliRunner().invoke(app, ["flow", "--rule", "qngd", "--q", "2", "--fisher", "tri-diagonal",
                                   "--out", str(tmp_path / "bad")])  # fmt: skip
    assert bad.exit_code == 2 and "indefinite" in bad.output
