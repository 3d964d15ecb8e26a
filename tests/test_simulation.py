import diffrax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dlnsim


def problem(widths=(3, 5, 4, 2), seed=0, scale=1.0):
    k1, k2, k3 = jr.split(jr.PRNGKey(seed), 3)
    net = dlnsim.DeepLinearNet(widths, key=k1, init="xavier", scale=scale)
    task = dlnsim.Task(
        dlnsim.random_teacher(k2, widths[-1], widths[0]), dlnsim.correlated_input_cov(k3, widths[0])
    )
    return net, task


@pytest.mark.parametrize(
    "rule",
    [
        "sgd",
        "ngd",
        "sqrt-ngd",
        dlnsim.vector_field("qngd", q=3.0),
        dlnsim.vector_field("damped-ngd", eps=0.5),
    ],
)
def test_conservation_law_along_integrations(rule):
    """C_i = W_i W_i^T - W_{i+1}^T W_{i+1} is constant (Huh 2020, eq. 4; Fig. S2)."""
    net, task = problem()
    traj = dlnsim.simulate(net, rule, task, 3.0)
    assert traj.loss[-1] < 0.5 * traj.loss[0]  # the run actually learned something
    assert np.max(traj.conservation_drift) <= 1e-8


def test_ngd_d_visibly_breaks_conservation():
    net, task = problem()
    traj = dlnsim.simulate(net, "ngd-d", task, 3.0)
    assert np.max(traj.conservation_drift) > 1e-2


@pytest.mark.parametrize("rule", ["ngd", "ngd-d"])
def test_ngd_map_follows_exponential(rule):
    """W(t) = W* + e^(-t) (W(0) - W*) (Bernacchia et al. 2018, eq. 18; Huh 2020, sec. 3.3)."""
    net, task = problem(widths=(4, 4, 4, 4), seed=2)
    traj = dlnsim.simulate(net, rule, task, 4.0)
    w0, ws = np.asarray(net.map()), np.asarray(task.teacher)
    expected = ws + np.exp(-traj.times)[:, None, None] * (w0 - ws)
    err = np.abs(traj.maps() - expected).max() / np.abs(w0 - ws).max()
    assert err < 1e-7


def test_loss_and_speed_observables():
    net, task = problem(seed=3)
    traj = dlnsim.simulate(net, "sqrt-ngd", task, 1.0, saveat=diffrax.SaveAt(ts=jnp.linspace(0, 1, 5)))
    f = dlnsim.vector_field("sqrt-ngd")
    for k in range(5):
        ws = tuple(jnp.asarray(w[k]) for w in traj.weights)
        m = np.asarray(dlnsim.network_map(ws))
        d = m - np.asarray(task.teacher)
        assert traj.loss[k] == pytest.approx(0.5 * np.trace(d @ np.asarray(task.input_cov) @ d.T), rel=1e-12)
        speed = np.sqrt(sum(np.sum(np.asarray(v) ** 2) for v in f(0.0, ws, task)))
        assert traj.parameter_speed[k] == pytest.approx(speed, rel=1e-10)
    np.testing.assert_allclose(traj.times, np.linspace(0, 1, 5))


def test_student_teacher_observables_and_half_times():
    data = dlnsim.student_teacher(jr.PRNGKey(0), width=6, samples=6, test_samples=200)
    net = dlnsim.DeepLinearNet((6,) * 4, key=jr.PRNGKey(1), scale=0.3)
    traj = dlnsim.simulate(net, "ngd", data, 8.0)
    assert traj.train_loss is not None and traj.test_loss is not None
    np.testing.assert_allclose(traj.train_loss, traj.loss + float(data.irreducible_loss), rtol=1e-12)
    # NGD learns every mode on the same e^-t time scale (its map obeys W(t) = W* + e^-t (W(0) - W*)):
    # a strength s_k(t) = s*_k - e^-t (s*_k - s_k(0)) reaches half its target at
    # t = ln(2 (1 - s_k(0) / s*_k)), which is ln 2 up to the small start s_k(0)
    half = traj.half_times()
    start = traj.mode_strengths[0] / traj.mode_targets
    np.testing.assert_allclose(half, np.log(2.0 * (1.0 - start)), atol=1e-3)
    assert np.all(np.abs(half - np.log(2.0)) <= np.abs(np.log(1.0 - start)) + 1e-3)
    assert np.abs(half - np.log(2.0)).max() < 0.2  # the largest |start| here is 19% of its target
    np.testing.assert_allclose(traj.mode_strengths[-1], traj.mode_targets, rtol=1e-2)


def test_loss_threshold_event_stops_early():
    net, task = problem(seed=4)
    l0 = float(task.loss(net.map()))
    traj = dlnsim.simulate(net, "ngd", task, 100.0, loss_threshold=1e-3 * l0)
    assert traj.stopped_early
    assert traj.times[-1] < 100.0
    assert traj.loss[-1] <= 1e-3 * l0
    assert np.all(np.isfinite(traj.loss))


def test_blow_up_is_reported_with_time_and_never_as_nan():
    net, task = problem(widths=(3, 3), seed=5)
    w0 = (jnp.abs(net.weights[0]) + 1.0,)

    def explodes(t, w, args):
        return tuple(x**2 for x in w)

    with pytest.raises(dlnsim.DynamicsBlowUpError) as info:
        dlnsim.simulate(w0, explodes, task, 2.0, max_steps=2000)
    # w' = w^2 from w0 >= 1 blows up by t = 1 / max(w0)
    assert 0 < info.value.time <= 1.0 / float(jnp.max(w0[0])) + 1e-6
    assert "t=" in str(info.value) and info.value.hint


def test_discrete_ngd_from_small_weights_blows_up_with_hint():
    net = dlnsim.DeepLinearNet((3, 3, 3, 3), key=jr.PRNGKey(1), scale=1e-4)
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(0), 3, 3))
    with pytest.raises(dlnsim.DynamicsBlowUpError, match="damped-ngd") as info:
        dlnsim.simulate_discrete(net, "ngd", task, lr=0.1, steps=50)
    assert info.value.time == pytest.approx(0.1)
    # continuous-time NGD from the same weights integrates fine: its map dynamics is linear
    traj = dlnsim.simulate(net, "ngd", task, 3.0)
    np.testing.assert_allclose(traj.loss[-1], traj.loss[0] * np.exp(-6.0), rtol=1e-6)


def test_discrete_steps_converge_to_the_flow_at_first_order():
    net, task = problem(seed=6)
    ref = dlnsim.simulate(net, "sqrt-ngd", task, 0.5, saveat=diffrax.SaveAt(t1=True))
    errs = []
    for lr in (0.01, 0.005):
        disc = dlnsim.simulate_discrete(
            net, "sqrt-ngd", task, lr=lr, steps=int(round(0.5 / lr)), save_every=10
        )
        assert disc.times[-1] == pytest.approx(0.5)
        errs.append(np.abs(disc.maps()[-1] - ref.maps()[-1]).max())
    assert errs[0] < 5e-2
    assert 1.8 < errs[0] / errs[1] < 2.2  # forward Euler: error halves with the step


def test_same_seed_same_numbers():
    net, task = problem(seed=7)
    a = dlnsim.simulate(net, "sqrt-ngd-d", task, 1.0)
    net2, task2 = problem(seed=7)
    b = dlnsim.simulate(net2, "sqrt-ngd-d", task2, 1.0)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x, y)


def test_simulate_validation():
    net, task = problem()
    with pytest.raises(ValueError, match="t1 must be"):
        dlnsim.simulate(net, "sgd", task, 0.0)
    with pytest.raises(ValueError, match="unknown rule"):
        dlnsim.simulate(net, "newton", task, 1.0)
    other = dlnsim.Task(np.ones((2, 4)))
    with pytest.raises(ValueError, match="widths must match"):
        dlnsim.simulate(net, "sgd", other, 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        dlnsim.simulate([np.full((2, 3), np.nan)], "sgd", dlnsim.Task(np.ones((2, 3))), 1.0)
    with pytest.raises(ValueError, match="lr"):
        dlnsim.simulate_discrete(net, "sgd", task, lr=-1.0, steps=3)


def test_simulate_takes_one_net_and_simulate_batch_a_batch():
    """Type-stable: simulate always returns a Trajectory, simulate_batch a TrajectoryBatch; each
    refuses the other's input in one line naming the other."""
    net, task = problem(widths=(3, 3, 3), seed=2)
    batch = dlnsim.init_weights_batch((3, 3, 3), jr.split(jr.PRNGKey(1), 2), init="xavier")
    with pytest.raises(TypeError, match="use simulate_batch"):
        dlnsim.simulate(batch, "sgd", task, 1.0)
    with pytest.raises(TypeError, match="for one net use simulate"):
        dlnsim.simulate_batch(net, "sgd", task, 1.0)


def test_batched_simulate_matches_single_runs_and_isolates_failures():
    _, task = problem(widths=(4, 4, 4, 4), seed=9)
    batch = dlnsim.init_weights_batch((4, 4, 4, 4), jr.split(jr.PRNGKey(1), 4), init="xavier")
    res = dlnsim.simulate_batch(
        batch, "sqrt-ngd", task, 2.0, saveat=diffrax.SaveAt(ts=jnp.linspace(0, 2, 11))
    )
    assert isinstance(res, dlnsim.TrajectoryBatch) and res.status == ("ok",) * 4
    single = dlnsim.simulate(
        tuple(w[2] for w in batch), "sqrt-ngd", task, 2.0, saveat=diffrax.SaveAt(ts=jnp.linspace(0, 2, 11))
    )
    np.testing.assert_allclose(res[2].weights[0], single.weights[0], rtol=1e-9, atol=1e-12)

    def explodes(t, w, args):
        return tuple(x**2 for x in w)

    mixed = tuple(jnp.stack([0.01 * jnp.abs(w[0]), jnp.abs(w[1]) + 1.0]) for w in batch)
    res = dlnsim.simulate_batch(mixed, explodes, task, 2.0, max_steps=2000)
    assert list(res.succeeded) == [True, False]
    assert "blew up at t=" in res.status[1] and 0 < res.failure_times[1] < 1.0
    assert np.all(np.isfinite(res[0].loss))


def test_new_end_times_and_thresholds_reuse_the_compiled_solve():
    """t0, t1, dt0 and the loss threshold are traced, not static: no recompilation between runs."""
    import jax

    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    net = dlnsim.DeepLinearNet((3, 3, 3), key=jr.PRNGKey(0), init="xavier")
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(1), 3, 3))
    dlnsim.simulate(net, "sgd", task, 1.0)
    dlnsim.simulate(net, "sgd", task, 1.0, loss_threshold=1e-3)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        long = dlnsim.simulate(net, "sgd", task, 2.5)
        early = dlnsim.simulate(net, "sgd", task, 50.0, loss_threshold=0.5 * float(long.loss[-1]))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    assert long.times[-1] == 2.5 and early.stopped_early and early.times[-1] > 2.5


def _wrong_sign_square_net():
    """An aligned, balanced depth-2, width-3 net whose map diag(0.01, -0.01, 0.01) has det < 0 while
    the target's det > 0; the modes decouple (Huh 2020, eq. 6)."""
    task = dlnsim.Task(jnp.diag(jnp.array([3.0, 2.0, 1.0])), jnp.diag(jnp.array([1.0, 0.5, 4.0])))
    return (0.1 * jnp.diag(jnp.array([1.0, -1.0, 1.0])), 0.1 * jnp.eye(3)), task


def test_gradient_flow_of_a_wrong_sign_square_net_settles_on_the_saddle_loss():
    weights, task = _wrong_sign_square_net()
    assert float(jnp.linalg.det(weights[1] @ weights[0])) < 0
    # Eckart-Young in the metric Sigma_x: 1/2 sigma_min(W* Sigma_x^(1/2))^2 = 1/2 min(9, 2, 4) = 1
    saddle = dlnsim.determinant_saddle_loss(weights, task)
    assert saddle == pytest.approx(1.0, rel=1e-12)
    traj = dlnsim.simulate(weights, "sgd", task, 60.0)
    # the wrong-sign mode (a = -b) decays to 0, exponentially at depth 2, without crossing: the loss
    # settles on the saddle's
    assert traj.loss[-1] == pytest.approx(saddle, rel=1e-6)
    assert np.all(traj.loss >= saddle * (1 - 1e-9))
    # stop_at_saddle ends the run there instead of integrating on to t1
    stopped = dlnsim.simulate(weights, "sgd", task, 1e4, loss_threshold=1e-3, stop_at_saddle=True)
    assert stopped.stopped_early and stopped.stop_reason == "determinant saddle" and stopped.times[-1] < 60.0
    assert traj.stop_reason is None and not traj.stopped_early
    assert saddle < stopped.loss[-1] <= saddle + 1e-3 * (1 + 1e-6)


def test_stop_at_saddle_does_not_stop_a_net_that_can_converge():
    weights, task = _wrong_sign_square_net()
    flipped = (jnp.abs(weights[0]), weights[1])  # every mode of the right sign: no saddle
    assert dlnsim.determinant_saddle_loss(flipped, task) is None
    traj = dlnsim.simulate(flipped, "sgd", task, 1e4, loss_threshold=1e-3, stop_at_saddle=True)
    assert traj.stopped_early and traj.stop_reason == "loss threshold" and traj.loss[-1] <= 1e-3 * (1 + 1e-6)
