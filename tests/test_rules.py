"""Every rule against the independent dense P x P reference (tests/dense_reference.py)."""

import diffrax
import jax
import jax.random as jr
import numpy as np
import pytest
from dense_reference import dense_parts, reference_field

import dlnsim
from dlnsim._curvature import GaussNewton

NETS = [(4, 4, 4, 4), (3, 5, 4, 2), (5, 3, 2, 3, 4)]
RULES = [
    ("sgd", {}),
    ("ngd", {}),
    ("sqrt-ngd", {}),
    ("qngd", {"q": 3.0}),
    ("qngd", {"q": 1.5}),
    ("ngd-d", {}),
    ("sqrt-ngd-d", {}),
    ("qngd-d", {"q": 3.0}),
    ("damped-ngd", {"eps": 0.1}),
    ("damped-ngd", {"eps": 3.0}),
    ("bernacchia", {}),
]


def make_problem(widths, seed=0):
    k1, k2, k3 = jr.split(jr.PRNGKey(seed), 3)
    net = dlnsim.DeepLinearNet(widths, key=k1, init="xavier", scale=1.2)
    teacher = dlnsim.random_teacher(k2, widths[-1], widths[0])
    cov = dlnsim.correlated_input_cov(k3, widths[0])  # non-identity input covariance
    return net.weights, dlnsim.Task(teacher, cov)


def rel_err(a, b):
    num = max(np.abs(np.asarray(x) - np.asarray(y)).max() for x, y in zip(a, b))
    return num / max(np.abs(np.asarray(y)).max() for y in b)


@pytest.mark.parametrize("widths", NETS)
@pytest.mark.parametrize("rule, kw", RULES, ids=[f"{r}{kw}" for r, kw in RULES])
def test_rule_matches_dense_reference(widths, rule, kw):
    weights, task = make_problem(widths)
    ours = dlnsim.vector_field(rule, **kw)(0.0, weights, task)
    ref = reference_field(rule, weights, task.teacher, task.input_cov, **kw)
    assert rel_err(ours, ref) <= 1e-8


def test_reference_is_sensitive_to_factors():
    """The dense comparison fails for a wrong depth factor, exponent or transpose."""
    weights, task = make_problem((3, 5, 4, 2))
    ref = reference_field("sqrt-ngd-d", weights, task.teacher, task.input_cov)
    ours = dlnsim.vector_field("sqrt-ngd-d")(0.0, weights, task)
    assert rel_err([np.sqrt(3) * x for x in ours], ref) > 1e-2  # missing d^(-1/q)
    wrong_q = dlnsim.vector_field("qngd-d", q=1.9)(0.0, weights, task)
    assert rel_err(wrong_q, ref) > 1e-3
    ref_ngd = reference_field("ngd", weights, task.teacher, task.input_cov)
    ours_ngd = dlnsim.vector_field("ngd")(0.0, weights, task)
    assert rel_err(ours_ngd, ref_ngd) <= 1e-8
    assert rel_err([x.T.reshape(x.shape) for x in ours_ngd], ref_ngd) > 1e-2


@pytest.mark.parametrize("widths", NETS)
def test_gradient_matches_autodiff(widths):
    weights, task = make_problem(widths, seed=3)
    g = dlnsim.loss_gradient(weights, task)
    auto = jax.grad(lambda w: task.loss(dlnsim.network_map(w)))(weights)
    assert rel_err(g, auto) <= 1e-12


@pytest.mark.parametrize("widths", NETS)
def test_gram_matrix_shares_nonzero_spectrum_with_dense_hessian(widths):
    weights, task = make_problem(widths, seed=4)
    hess, _, _ = dense_parts(weights, task.teacher, task.input_cov)
    k = np.asarray(GaussNewton().gram_matrix(weights, task))
    eh = np.sort(np.linalg.eigvalsh(hess))[::-1]
    ek = np.sort(np.linalg.eigvalsh(k))[::-1]
    rank = int(np.sum(ek > 1e-10 * ek[0]))
    np.testing.assert_allclose(ek[:rank], eh[:rank], rtol=1e-9)
    assert np.all(np.abs(eh[rank:]) < 1e-10 * eh[0])


def test_bottleneck_hessian_is_structurally_singular():
    weights, task = make_problem((5, 3, 2, 3, 4))
    hess, _, _ = dense_parts(weights, task.teacher, task.input_cov)
    ev = np.linalg.eigvalsh(hess)
    # rank of H+ <= dim of the rank-2 map manifold = 2 * (5 + 4 - 2) = 14 < n_d n_0 = 20
    assert np.sum(ev > 1e-10 * ev.max()) == 14


@pytest.mark.parametrize("widths", NETS)
def test_bernacchia_equals_ngd_d(widths):
    """Bernacchia et al. 2018 eq. 10 with unit output noise is exactly NGD-d (Huh 2020, eq. 23)."""
    weights, task = make_problem(widths, seed=5)
    a = dlnsim.vector_field("bernacchia")(0.0, weights, task)
    b = dlnsim.vector_field("ngd-d")(0.0, weights, task)
    assert rel_err(a, b) <= 1e-9


def map_velocity(weights, dweights):
    d = len(weights)
    total = 0
    for i in range(d):
        ws = list(weights)
        ws[i] = dweights[i]
        total = total + dlnsim.network_map(tuple(ws))
    return np.asarray(total)


@pytest.mark.parametrize("rule", ["ngd", "ngd-d", "bernacchia", "damped-ngd"])
def test_ngd_map_dynamics_is_linear_for_square_nets(rule):
    """dW/dt = -(W - W*) (Bernacchia et al. 2018, eq. 18; Huh 2020, sec. 3.3) on full-rank nets."""
    weights, task = make_problem((4, 4, 4, 4), seed=6)
    f = dlnsim.vector_field(rule)
    wdot = map_velocity(weights, f(0.0, weights, task))
    expected = -(np.asarray(dlnsim.network_map(weights)) - np.asarray(task.teacher))
    np.testing.assert_allclose(wdot, expected, rtol=1e-9, atol=1e-11 * np.abs(expected).max())


def test_bernacchia_output_cov_keeps_linear_map_dynamics_but_differs_when_non_square():
    weights, task = make_problem((4, 4, 4, 4), seed=7)
    m = np.asarray(jr.normal(jr.PRNGKey(9), (4, 4)))
    out_cov = m @ m.T + 0.5 * np.eye(4)
    f = dlnsim.vector_field("bernacchia", output_cov=out_cov)
    wdot = map_velocity(weights, f(0.0, weights, task))
    expected = -(np.asarray(dlnsim.network_map(weights)) - np.asarray(task.teacher))
    np.testing.assert_allclose(wdot, expected, rtol=1e-8, atol=1e-10)
    # Sigma~ only matters where W_>i loses row rank, i.e. layers wider than the bottleneck
    weights, task = make_problem((5, 3, 2, 3, 4), seed=7)
    m = np.asarray(jr.normal(jr.PRNGKey(9), (4, 4)))
    f = dlnsim.vector_field("bernacchia", output_cov=m @ m.T + 0.3 * np.eye(4))
    assert rel_err(f(0.0, weights, task), dlnsim.vector_field("ngd-d")(0.0, weights, task)) > 1e-3


def test_limits_of_q_and_eps():
    weights, task = make_problem((3, 5, 4, 2), seed=8)
    sgd = dlnsim.vector_field("sgd")(0.0, weights, task)
    assert rel_err(dlnsim.vector_field("qngd", q=float("inf"))(0.0, weights, task), sgd) == 0.0
    assert rel_err(dlnsim.vector_field("qngd-d", q=float("inf"))(0.0, weights, task), sgd) == 0.0
    assert (
        rel_err(
            dlnsim.vector_field("qngd", q=1.0)(0.0, weights, task),
            dlnsim.vector_field("ngd")(0.0, weights, task),
        )
        < 1e-12
    )
    ngd = dlnsim.vector_field("ngd")(0.0, weights, task)
    assert rel_err(dlnsim.vector_field("damped-ngd", eps=0.0)(0.0, weights, task), ngd) < 1e-12
    # eps -> inf recovers SGD (Huh 2020, eq. 17 footnote 6)
    assert rel_err(dlnsim.vector_field("damped-ngd", eps=1e9)(0.0, weights, task), sgd) < 1e-6


def test_vector_field_runs_in_user_diffrax_code():
    weights, task = make_problem((3, 4, 2), seed=1)
    f = dlnsim.vector_field("sqrt-ngd")
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f), diffrax.Tsit5(), 0.0, 1.0, 0.01, weights, args=task,
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
    )  # fmt: skip
    final = tuple(w[-1] for w in sol.ys)
    assert float(task.loss(dlnsim.network_map(final))) < float(task.loss(dlnsim.network_map(weights)))


def test_jit_and_vmap_over_states():
    weights, task = make_problem((3, 4, 2), seed=2)
    f = dlnsim.vector_field("ngd")
    batch = tuple(np.stack([w, 1.1 * w, 0.9 * w]) for w in weights)
    out = jax.jit(jax.vmap(lambda *w: f(0.0, w, task)))(*batch)
    single = f(0.0, tuple(1.1 * w for w in weights), task)
    assert rel_err([o[1] for o in out], single) < 1e-12


@pytest.mark.parametrize(
    "name, kw, match",
    [
        ("adam", {}, "unknown rule 'adam'; choose one of sgd, ngd"),
        ("qngd", {}, "needs q >= 1"),
        ("qngd", {"q": 0.5}, "q must be >= 1"),
        ("qngd", {"q": float("nan")}, "q must be >= 1"),
        ("ngd", {"q": 2.0}, "q applies only"),
        ("damped-ngd", {"eps": -1.0}, "eps must be a finite number >= 0"),
        ("damped-ngd", {"eps": float("inf")}, "eps must be a finite number >= 0"),
        ("sgd", {"eps": 1.0}, "eps applies only"),
        ("bernacchia", {"damping": -1.0}, "damping must be"),
    ],
)
def test_bad_rule_options(name, kw, match):
    with pytest.raises(ValueError, match=match):
        dlnsim.vector_field(name, **kw)


def test_rule_registry_cites_equations():
    assert set(dlnsim.RULES) == {
        "sgd", "ngd", "qngd", "sqrt-ngd", "ngd-d", "sqrt-ngd-d", "qngd-d", "damped-ngd", "bernacchia",
    }  # fmt: skip
    for info in dlnsim.RULES.values():
        assert "eq" in info.reference
