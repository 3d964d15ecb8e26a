"""Analytic singular-mode theory (Huh 2020) against integrated trajectories."""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from compile_count import CompileCounter

import dlnsim
from dlnsim import analytic as A

INF = math.inf


def test_stiffness_and_effective_depth():
    assert A.stiffness(2, INF) == 1.0 and A.stiffness(7, 1.0) == 0.0
    assert A.stiffness(4, 2.0) == pytest.approx(0.75) and A.stiffness(9, 2.0) == pytest.approx(8 / 9)
    assert A.stiffness(5, INF) == pytest.approx(1.6)
    assert A.effective_depth(6, INF) == 6.0 and A.effective_depth(3, 1.0) == 1.0
    assert A.effective_depth(10**7, 2.0) == pytest.approx(2.0, rel=1e-6)  # d_eff -> q as d -> inf
    for d in (2, 3, 5, 8):
        for q in (1.0, 1.5, 2.0, 3.0, 7.0):
            de = A.effective_depth(d, q)
            assert 2 * (de - 1) / de == pytest.approx(A.stiffness(d, q), rel=1e-12)  # same stiffness as SGD
    assert A.scaling_exponents(3, INF) == {"update": 2.0, "loss_rate": 4.0}
    assert A.scaling_exponents(4, 2.0) == {"update": 0.0, "loss_rate": 3.0}
    assert A.scaling_exponents(4, 1.0) == {"update": -3.0, "loss_rate": 0.0}
    with pytest.raises(ValueError, match="depth"):
        A.stiffness(0, 2.0)
    with pytest.raises(ValueError, match="q must be"):
        A.effective_depth(3, 0.5)


def aligned_problem(widths, q_lam=False, seed=0):
    """An aligned net with unbalanced per-layer singular values, a teacher with distinct modes."""
    n_out, n_in = widths[-1], widths[0]
    k1, k2 = jr.split(jr.PRNGKey(seed))
    modes = min(widths)
    rank = min(n_out, n_in)
    spectrum = np.linspace(2.5, 0.7, rank)
    teacher = dlnsim.random_teacher(k1, n_out, n_in, spectrum=spectrum)
    cov = None
    lam = np.ones(modes)
    if q_lam:
        _, _, vt = np.linalg.svd(np.asarray(teacher))
        evals = np.linspace(1.7, 0.4, n_in)
        cov = vt.T @ np.diag(evals) @ vt
        lam = evals[:modes]
    depth = len(widths) - 1
    sv = 0.4 + 0.8 * np.random.default_rng(seed).random((depth, modes))
    net = dlnsim.DeepLinearNet(
        widths, key=k2, init="aligned", teacher=teacher, singular_values=sv, input_cov=cov
    )
    task = dlnsim.Task(teacher, cov)
    frames = A.aligned_frames(net.weights, teacher)
    sigma_star = np.linalg.svd(np.asarray(teacher), compute_uv=False)[:modes]
    return net, task, frames, sv, sigma_star, lam


FULL = [
    ("sgd", {}, INF, 0.0),
    ("ngd", {}, 1.0, 0.0),
    ("sqrt-ngd", {}, 2.0, 0.0),
    ("qngd", {"q": 3.0}, 3.0, 0.0),
    ("damped-ngd", {"eps": 0.3}, 1.0, 0.3),
]
BLOCK = [
    ("ngd-d", {}, 1.0, 0.0),
    ("sqrt-ngd-d", {}, 2.0, 0.0),
    ("qngd-d", {"q": 3.0}, 3.0, 0.0),
    ("bernacchia", {}, 1.0, 0.0),
]


@pytest.mark.parametrize("widths", [(4, 4, 4, 4), (3, 5, 4, 2), (5, 3, 4)])
@pytest.mark.parametrize("q_lam", [False, True], ids=["white", "shared-cov"])
@pytest.mark.parametrize(
    "rule, kw, q, eps, block",
    [(*r, False) for r in FULL] + [(*r, True) for r in BLOCK],
    ids=[r[0] + str(r[1]) for r in FULL + BLOCK],
)
def test_full_field_projects_onto_mode_ode(widths, q_lam, rule, kw, q, eps, block):
    net, task, frames, sv, sigma_star, lam = aligned_problem(widths, q_lam)
    field = dlnsim.vector_field(rule, **kw)
    velocity = field(0.0, net.weights, task)
    projected = A.project_onto_modes(velocity, frames)
    np.testing.assert_allclose(A.project_onto_modes(net.weights, frames), sv, rtol=1e-12)
    mode_field = A.mode_vector_field(q, block, damping=eps)
    assert A.mode_field_of(field) == mode_field
    expected = np.asarray(mode_field(0.0, jnp.asarray(sv), (sigma_star, lam)))
    scale = np.abs(expected).max()
    assert np.abs(projected - expected).max() <= 1e-10 * scale
    # nothing leaves the aligned modes: the velocity is rebuilt from its mode components
    for i, v in enumerate(velocity):
        rebuilt = (frames[i + 1] * projected[i]) @ frames[i].T
        assert np.abs(np.asarray(v) - rebuilt).max() <= 1e-10 * scale


def test_mode_field_of_refuses_fields_without_a_reduction():
    with pytest.raises(ValueError, match="no singular-mode reduction"):
        A.mode_field_of(dlnsim.vector_field("bernacchia", damping=0.1))
    with pytest.raises(ValueError, match="no singular-mode reduction"):
        A.mode_field_of(lambda t, w, task: w)


def integrate_scalar(p, rate, sigma_star, sigma0, ts):
    def f(t, y, args):
        return -rate * (y - sigma_star) * jnp.abs(y) ** p

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f), diffrax.Tsit5(), float(ts[0]), float(ts[-1]), None, jnp.asarray(sigma0),
        saveat=diffrax.SaveAt(ts=jnp.asarray(ts)), max_steps=100_000,
        stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-14),
    )  # fmt: skip
    return np.asarray(sol.ys)


CASES = [
    (2, 1.0),  # p = 0, closed form
    (2, 2.0),  # p = 1/2, closed form
    (2, INF),  # p = 1, closed form
    (9, 2.0),  # p = 8/9, general inversion
    (5, INF),  # p = 1.6, general inversion
    (4, 2.0),  # p = 3/4, general inversion
]


@pytest.mark.parametrize("depth, q", CASES)
@pytest.mark.parametrize("sigma_star, sigma0", [(1.0, 0.01), (2.5, 0.3), (0.6, 2.0)])
def test_balanced_map_trajectory_matches_integration_of_eq_21(depth, q, sigma_star, sigma0):
    ts = np.linspace(0.0, 15.0, 151)
    p, rate = A.stiffness(depth, q), A.calibrated_learning_rate(depth, q)
    exact = A.balanced_map_trajectory(ts, depth=depth, q=q, sigma_star=sigma_star, sigma0=sigma0)
    numeric = integrate_scalar(p, rate, sigma_star, sigma0, ts)
    assert np.abs(exact - numeric).max() <= 1e-8 * sigma_star
    # and it inverts the exact time integral (away from sigma*, where t(sigma) is ill-conditioned)
    inside = (ts > 0) & (np.abs(exact - sigma_star) > 1e-5 * sigma_star)
    t_back = A.balanced_map_time(exact[inside], depth=depth, q=q, sigma_star=sigma_star, sigma0=sigma0)
    np.testing.assert_allclose(t_back, ts[inside], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("depth, q", [(2, 1.0), (2, 2.0), (9, 2.0), (3, 3.0)])
def test_escape_from_zero_in_finite_time(depth, q):
    """p < 1: sigma0 = 0 escapes; near 0, sigma ~ ((1-p) eta~ sigma* t)^(1/(1-p))."""
    p, rate = A.stiffness(depth, q), A.calibrated_learning_rate(depth, q)
    ts = np.linspace(0.0, 10.0, 101)
    traj = A.balanced_map_trajectory(ts, depth=depth, q=q, sigma_star=1.3, sigma0=0.0)
    assert traj[0] == 0.0 and traj[1] > 0
    small = ((1 - p) * rate * 1.3 * 1e-4) ** (1 / (1 - p))
    early = A.balanced_map_trajectory([1e-4], depth=depth, q=q, sigma_star=1.3, sigma0=0.0)[0]
    assert early == pytest.approx(small, rel=1e-3)
    # from t = 1 on it solves eq. 21
    numeric = integrate_scalar(p, rate, 1.3, traj[10], ts[10:])
    assert np.abs(traj[10:] - numeric).max() <= 1e-8
    assert A.balanced_map_trajectory(ts, depth=3, q=INF, sigma_star=1.0, sigma0=0.0).max() == 0.0


def test_saxe_solution_is_the_d2_sgd_closed_form():
    ts = np.linspace(0, 6, 61)
    np.testing.assert_allclose(
        A.saxe_sgd_solution(ts, sigma_star=2.0, sigma0=0.01),
        A.balanced_map_trajectory(ts, depth=2, q=INF, sigma_star=2.0, sigma0=0.01),
        rtol=1e-13,
    )


@pytest.mark.parametrize("depth, q", [(2, 2.0), (4, 2.0), (3, INF), (5, 3.0)])
def test_half_max_time_and_its_scaling(depth, q):
    p = A.stiffness(depth, q)
    s0 = 0.0 if p < 1 else 1e-3
    t_half = A.half_max_time(depth=depth, q=q, sigma_star=1.0, sigma0=s0)
    traj = A.balanced_map_trajectory([t_half], depth=depth, q=q, sigma_star=1.0, sigma0=s0)
    assert traj[0] == pytest.approx(0.5, rel=1e-10)
    # learning time ~ sigma*^(-p) at fixed sigma0 / sigma*
    t2 = A.half_max_time(depth=depth, q=q, sigma_star=4.0, sigma0=4.0 * s0)
    assert t2 / t_half == pytest.approx(4.0 ** A.learning_time_exponent(depth, q), rel=1e-10)


@pytest.mark.parametrize(
    "rule, kw, depth",
    [("ngd", {}, 4), ("sqrt-ngd", {}, 3), ("sgd", {}, 2), ("sqrt-ngd-d", {}, 3), ("qngd", {"q": 3.0}, 3)],
)
def test_full_matrix_balanced_run_follows_eq_21(rule, kw, depth):
    """An aligned, balanced full-matrix run reproduces the closed / inverted map dynamics per mode."""
    q = {"ngd": 1.0, "sqrt-ngd": 2.0, "sgd": INF, "sqrt-ngd-d": 2.0}.get(rule, kw.get("q"))
    teacher = dlnsim.random_teacher(jr.PRNGKey(3), 3, 3, spectrum=[2.0, 1.2, 0.5])
    sigma0 = 0.15
    net = dlnsim.DeepLinearNet(
        (3,) * (depth + 1), key=jr.PRNGKey(4), init="aligned", teacher=teacher,
        singular_values=sigma0 ** (1.0 / depth),
    )  # fmt: skip
    task = dlnsim.Task(teacher)
    ts = jnp.linspace(0.0, 8.0, 41)
    traj = dlnsim.simulate(net, dlnsim.vector_field(rule, **kw), task, 8.0, saveat=diffrax.SaveAt(ts=ts))
    for k, s in enumerate([2.0, 1.2, 0.5]):
        exact = A.balanced_map_trajectory(traj.times, depth=depth, q=q, sigma_star=s, sigma0=sigma0)
        assert np.abs(traj.mode_strengths[:, k] - exact).max() <= 1e-7 * s


@pytest.mark.parametrize(
    "rule, kw, q, block", [("sgd", {}, INF, False), ("ngd", {}, 1.0, False), ("sqrt-ngd", {}, 2.0, False),
                           ("ngd-d", {}, 1.0, True), ("sqrt-ngd-d", {}, 2.0, True)]
)  # fmt: skip
def test_mode_invariants_conserved_along_full_matrix_runs(rule, kw, q, block):
    net, task, frames, sv, _, _ = aligned_problem((3, 3, 3, 3), seed=2)
    traj = dlnsim.simulate(
        net, rule, task, 3.0, saveat=diffrax.SaveAt(ts=jnp.linspace(0, 3, 16)),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
    )  # fmt: skip
    sig = A.project_onto_modes(traj.weights, frames)  # (T, d, modes)
    inv = np.asarray(A.mode_invariants(np.moveaxis(sig, 1, 0), q, block))
    drift = np.abs(inv - inv[:, :1]).max() / np.abs(inv[:, 0]).max()
    assert drift <= 1e-8
    assert np.abs(sig[-1] - sig[0]).max() > 0.05  # the weights did move
    if rule == "ngd-d":  # NGD-d does not conserve the hyperbolic invariant
        hyper = np.asarray(A.mode_invariants(np.moveaxis(sig, 1, 0), q, False))
        assert np.abs(hyper - hyper[:, :1]).max() > 1e-2


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("q", [1.0, 2.0, INF])
def test_fitted_scaling_exponents_match_SI_16_17(depth, q):
    rule = {1.0: "ngd", 2.0: "sqrt-ngd", INF: "sgd"}[q]
    res = A.measure_scaling(rule, depth=depth, scales=np.geomspace(0.05, 2.0, 7))
    expected = A.scaling_exponents(depth, q)
    assert res["update_exponent"] == pytest.approx(expected["update"], abs=1e-6)
    assert res["loss_rate_exponent"] == pytest.approx(expected["loss_rate"], abs=1e-6)


def test_ngd_and_ngd_d_traverse_contours_in_sync():
    """Huh 2020, Fig. 1 B,D: same map dynamics, different parameter paths."""
    ts = jnp.linspace(0, 3, 31)
    y0 = jnp.array([0.3, 1.4])

    def run(block):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(A.mode_vector_field(1.0, block)), diffrax.Tsit5(), 0.0, 3.0, None, y0, args=1.0,
            saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
        )  # fmt: skip
        return np.asarray(sol.ys)

    full, block = run(False), run(True)
    np.testing.assert_allclose(full.prod(1), block.prod(1), rtol=1e-8)
    np.testing.assert_allclose(full.prod(1), 1 + (0.42 - 1) * np.exp(-np.asarray(ts)), rtol=1e-8)
    assert np.abs(full - block).max() > 0.05
    np.testing.assert_allclose(block[:, 0] / block[:, 1], 0.3 / 1.4, rtol=1e-8)
    np.testing.assert_allclose(full[:, 0] ** 2 - full[:, 1] ** 2, 0.09 - 1.96, rtol=1e-8)


def test_bad_analytic_inputs():
    with pytest.raises(ValueError, match="sigma_star"):
        A.balanced_map_trajectory([1.0], depth=2, q=2.0, sigma_star=0.0, sigma0=0.1)
    with pytest.raises(ValueError, match="t must be >= 0"):
        A.balanced_map_trajectory([-1.0], depth=2, q=2.0, sigma_star=1.0, sigma0=0.1)
    with pytest.raises(ValueError, match="sigma0"):
        A.balanced_map_trajectory([1.0], depth=2, q=2.0, sigma_star=1.0, sigma0=float("nan"))
    with pytest.raises(ValueError, match="half_max_time needs"):
        A.half_max_time(depth=2, q=2.0, sigma_star=1.0, sigma0=0.7)


def test_mode_field_hyperparameters_are_array_leaves():
    """q, the learning rate and eps of the mode ODE are array leaves: new values reuse the
    compiled solve, and jax.vmap over them equals a Python loop."""
    y0 = jnp.array([[0.3, 0.2], [0.4, 0.1], [0.5, 0.2]])  # d = 3, two modes
    args = (jnp.array([2.0, 1.0]), jnp.array([1.0, 0.5]))  # sigma*, lambda

    @eqx.filter_jit
    def solve(field):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, 1.0, 0.01, y0, args=args,
            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
        )  # fmt: skip
        return sol.ys[-1]

    solve(A.mode_vector_field(2.0))
    with CompileCounter() as counter:
        solve(A.mode_vector_field(3.0, learning_rate=0.5, eps=0.1))
        solve(A.mode_vector_field(INF))
    assert counter.count == 0
    qs, epss = jnp.array([1.0, 2.0, 3.0, INF]), jnp.array([0.0, 0.1, 1.0, 0.0])
    mapped = jax.vmap(lambda q, eps: solve(A.ModeVectorField(q, eps=eps)))(qs, epss)
    loop = np.stack([solve(A.mode_vector_field(float(q), eps=float(e))) for q, e in zip(qs, epss)])
    np.testing.assert_allclose(np.asarray(mapped), loop, rtol=1e-12, atol=0)
    assert len({float(np.abs(m - loop[0]).max()) for m in loop}) == 4  # four different results
    assert A.mode_vector_field(2.0).q == 2.0 and A.mode_vector_field(INF).q == INF
    assert A.mode_vector_field(1.0, damping=0.25).eps == 0.25  # the old keyword
