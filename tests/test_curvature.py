"""Exact-curvature methods (dense, krylov, balanced) against the dense P x P reference, the
singular-mode formula at n = 64, d = 8, and derivatives at degenerate spectra."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from dense_reference import reference_field
from test_analytic import aligned_problem
from test_rules import make_problem, rel_err

import dlnsim
from dlnsim import analytic as A
from dlnsim._curvature import (
    GaussNewton,
    condition_estimate,
    imbalance,
    layer_inverse_chains,
    structurally_full_rank,
)
from dlnsim._models import prefix_products, suffix_products

FULL_RULES = [
    ("ngd", {}, 1.0, 0.0),
    ("sqrt-ngd", {}, 2.0, 0.0),
    ("qngd", {"q": 3.0}, 3.0, 0.0),
    ("qngd", {"q": 1.5}, 1.5, 0.0),
    ("damped-ngd", {"eps": 0.1}, 1.0, 0.1),
    ("damped-ngd", {"eps": 3.0}, 1.0, 3.0),
]
IDS = [f"{r}{kw}" for r, kw, _, _ in FULL_RULES]


def field(method, q, eps):
    return dlnsim.NaturalGradientFlow(GaussNewton(method=method), q, eps)


def test_layer_inverse_chains_and_condition_estimates():
    """The product inverses of the block rules' fast path, and the estimate that guards it."""
    net = dlnsim.DeepLinearNet((5,) * 5, key=jr.PRNGKey(0), init="xavier", scale=1.3)
    left, right = layer_inverse_chains(net.weights)
    pre, suf = prefix_products(net.weights), suffix_products(net.weights)
    for lb, b, ra, a in zip(left, suf, right, pre):
        np.testing.assert_allclose(np.asarray(lb @ b), np.eye(5), atol=1e-12)
        np.testing.assert_allclose(np.asarray(a @ ra), np.eye(5), atol=1e-12)
    mats = jnp.stack(suf + pre)
    est = np.asarray(condition_estimate(mats, jnp.linalg.inv(mats)))
    true = np.linalg.cond(np.asarray(mats))
    assert np.all(est <= true * (1 + 1e-12)) and np.all(est >= 0.5 * true)
    singular = jnp.zeros((1, 3, 3)).at[0, 0, 0].set(1.0)
    assert np.isnan(np.asarray(condition_estimate(singular, jnp.linalg.inv(singular)))[0])


@pytest.mark.parametrize("rule", ["ngd-d", "bernacchia"])
def test_block_rules_cut_near_singular_products_like_the_dense_reference(rule):
    """Square nets take the LU path only when nothing is near the rank cutoff.

    Here W_2 has a singular value 1e-10, so W_>1 and W_<3 Sigma^(1/2) are rank deficient to
    float64 precision: the pseudo-inverse cuts that direction (the dense reference too), where
    the plain inverses would return components of size 1e10.
    """
    weights, task = make_problem((4, 4, 4, 4))
    u, sv, vt = np.linalg.svd(np.asarray(weights[1]))
    sv[-1] = 1e-10
    weights = (weights[0], jnp.asarray((u * sv) @ vt), weights[2])
    ref = reference_field(rule, weights, task.teacher, task.input_cov)
    f = dlnsim.vector_field(rule)
    ours = f(0.0, weights, task)
    assert rel_err(ours, ref) <= 1e-8
    if rule == "ngd-d":
        assert not f.curvature.takes_inverse_path(weights, task)
        assert f.curvature.takes_inverse_path(*make_problem((4, 4, 4, 4)))
        assert not f.curvature.takes_inverse_path(*make_problem((3, 5, 4, 2)))  # not square
    left, right = layer_inverse_chains(weights)
    plain = [-(lb @ (dlnsim.network_map(weights) - task.teacher) @ ra) / 3 for lb, ra in zip(left, right)]
    assert rel_err(plain, ref) > 1e3  # what the unguarded fast path would have returned


@pytest.mark.parametrize("rule", ["ngd-d", "bernacchia"])
def test_block_rules_under_vmap_equal_single_calls(rule):
    """Under vmap both paths of the square-net block rules run; each element keeps its own."""
    weights, task = make_problem((4, 4, 4, 4))
    u, sv, vt = np.linalg.svd(np.asarray(weights[1]))
    sv[-1] = 1e-10
    near_singular = (weights[0], jnp.asarray((u * sv) @ vt), weights[2])
    batch = tuple(jnp.stack([a, b]) for a, b in zip(weights, near_singular))
    f = dlnsim.vector_field(rule)
    batched = jax.vmap(f, in_axes=(None, 0, None))(0.0, batch, task)
    for k, ws in enumerate((weights, near_singular)):
        assert rel_err([x[k] for x in batched], f(0.0, ws, task)) <= 1e-12


@pytest.mark.parametrize("widths", [(4, 4, 4, 4), (3, 5, 4, 2), (6, 8, 7, 6, 5)])
@pytest.mark.parametrize("rule, kw, q, eps", FULL_RULES, ids=IDS)
def test_krylov_matches_dense_reference(widths, rule, kw, q, eps):
    weights, task = make_problem(widths)  # xavier x 1.2, correlated input covariance
    ref = reference_field(rule, weights, task.teacher, task.input_cov, **kw)
    assert rel_err(field("krylov", q, eps)(0.0, weights, task), ref) <= 1e-8
    assert rel_err(field("dense", q, eps)(0.0, weights, task), ref) <= 1e-8


@pytest.mark.parametrize("rule, kw, q, eps", FULL_RULES[:3], ids=IDS[:3])
def test_krylov_on_a_near_singular_state(rule, kw, q, eps):
    """Two layers with singular values down to 1e-3: K spans over 7 decades, all kept."""
    weights, task = make_problem((5, 6, 5, 5), seed=7)

    def squash(w):
        u, s, vt = np.linalg.svd(np.asarray(w), full_matrices=False)
        return jnp.asarray((u * np.geomspace(1.0, 1e-3, s.size)) @ vt)

    weights = (squash(weights[0]), weights[1], squash(weights[2]))
    k = np.linalg.eigvalsh(np.asarray(GaussNewton().gram_matrix(weights, task)))
    assert k[-1] / k[0] > 1e7
    ref = reference_field(rule, weights, task.teacher, task.input_cov, **kw)
    assert rel_err(field("krylov", q, eps)(0.0, weights, task), ref) <= 1e-8


def test_krylov_refuses_structurally_singular_widths_and_auto_falls_back():
    weights, task = make_problem((5, 3, 2, 3, 4))
    assert not structurally_full_rank((5, 3, 2, 3, 4))
    assert structurally_full_rank((3, 5, 4, 2)) and structurally_full_rank((6, 8, 7, 6, 5))
    assert not structurally_full_rank((4, 2, 4))
    with pytest.raises(ValueError, match="method='dense'"):
        field("krylov", 1.0, 0.0)(0.0, weights, task)
    auto = GaussNewton(dense_max_size=1)
    assert auto.resolved_method((5, 3, 2, 3, 4)) == "dense"
    assert auto.resolved_method((6, 8, 7, 6, 5)) == "krylov"
    ref = reference_field("ngd", weights, task.teacher, task.input_cov)
    assert rel_err(dlnsim.NaturalGradientFlow(auto, 1.0)(0.0, weights, task), ref) <= 1e-8


@pytest.mark.parametrize("widths", [(4, 4, 4, 4), (5, 3, 2, 3, 4), (3, 6, 2)])
@pytest.mark.parametrize("rule, kw, q, eps", FULL_RULES, ids=IDS)
def test_balanced_closed_form_matches_dense_reference_on_balanced_nets(widths, rule, kw, q, eps):
    net = dlnsim.DeepLinearNet(widths, key=jr.PRNGKey(1), init="balanced", scale=1.3)
    weights = net.weights
    assert imbalance(weights) < 1e-12
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(2), widths[-1], widths[0]))
    ref = reference_field(rule, weights, task.teacher, task.input_cov, **kw)
    assert rel_err(field("balanced", q, eps)(0.0, weights, task), ref) <= 1e-8


def test_balanced_closed_form_is_wrong_off_balance():
    """The closed form assumes balance: on xavier weights it must differ from the reference."""
    weights, _ = make_problem((4, 4, 4, 4))
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(2), 4, 4))
    assert imbalance(weights) > 0.1
    ref = reference_field("ngd", weights, task.teacher, task.input_cov)
    assert rel_err(field("balanced", 1.0, 0.0)(0.0, weights, task), ref) > 1e-2


def test_unknown_method_and_misplaced_method_are_refused():
    with pytest.raises(ValueError, match="choose one of auto, dense, krylov, balanced"):
        GaussNewton(method="lanczos")
    with pytest.raises(ValueError, match="full rules"):
        dlnsim.vector_field("ngd-d", method="krylov")


@pytest.mark.parametrize(
    "rule, kw, q, block",
    [
        ("ngd", {}, 1.0, False),
        ("sqrt-ngd", {}, 2.0, False),
        ("ngd-d", {}, 1.0, True),
        ("sqrt-ngd-d", {}, 2.0, True),
    ],
)
def test_wide_aligned_net_follows_the_mode_formula(rule, kw, q, block):
    """n = 64, d = 8, aligned: every rule's field equals the singular-mode ODE (Huh 2020, eqs. 14, 25).

    The full rules run matrix-free (auto picks krylov at n_d n_0 = 4096).
    """
    widths = (64,) * 9
    net, task, frames, sv, sigma_star, lam = aligned_problem(widths, seed=5)
    f = dlnsim.vector_field(rule, **kw)
    if not block:
        assert f.curvature.resolved_method(widths) == "krylov"
    velocity = eqx.filter_jit(f)(0.0, net.weights, task)  # f holds array leaves (q, rcond)
    projected = A.project_onto_modes(velocity, frames)
    expected = np.asarray(A.mode_vector_field(q, block)(0.0, jnp.asarray(sv), (sigma_star, lam)))
    assert np.abs(projected - expected).max() <= 1e-7 * np.abs(expected).max()


def loss_at(weights, task, rule_field, t1=0.4):
    # fixed steps: finite differences and reverse mode then differentiate the same smooth map
    # (adaptive step-size choices add kinks of the order of the tolerance)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(rule_field), diffrax.Tsit5(), 0.0, t1, t1 / 100, weights, args=task,
        stepsize_controller=diffrax.ConstantStepSize(),
    )  # fmt: skip
    final = jax.tree_util.tree_map(lambda x: x[-1], sol.ys)
    return task.loss(dlnsim.network_map(final))


GRADIENT_CASES = [
    (init, name, f)
    for init in ("orthogonal", "xavier")
    for name, f in [
        ("ngd-dense", field("dense", 1.0, 0.0)),
        ("sqrt-ngd-dense", field("dense", 2.0, 0.0)),
        ("ngd-krylov", field("krylov", 1.0, 0.0)),
        ("ngd-d", dlnsim.vector_field("ngd-d")),
        ("sqrt-ngd-d", dlnsim.vector_field("sqrt-ngd-d")),
    ]
    # from this xavier state (a layer singular value of 0.06) NGD-d's flow is so sensitive that
    # d loss / d W(0) reaches 1e10 at t1 = 0.4; its derivatives are checked by the JVP test below
    if (init, name) != ("xavier", "ngd-d")
]


@pytest.mark.parametrize(
    "init, name, rule_field", GRADIENT_CASES, ids=[f"{n}-{i}" for i, n, _ in GRADIENT_CASES]
)
def test_gradient_through_the_solve_matches_finite_differences(init, name, rule_field):
    """d loss(t1) / d W(0), by reverse mode through diffrax, against central differences.

    At orthogonal init K has repeated eigenvalues, where differentiating eigh divides by zero.
    """
    widths = (3, 3, 3, 3)
    net = dlnsim.DeepLinearNet(widths, key=jr.PRNGKey(3), init=init, scale=0.9)
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(4), 3, 3))
    grad = jax.grad(loss_at)(net.weights, task, rule_field)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grad)
    direction = tuple(jr.normal(k, w.shape) for k, w in zip(jr.split(jr.PRNGKey(5), 3), net.weights))
    h = 1e-5
    plus = loss_at(tuple(w + h * v for w, v in zip(net.weights, direction)), task, rule_field)
    minus = loss_at(tuple(w - h * v for w, v in zip(net.weights, direction)), task, rule_field)
    fd = (plus - minus) / (2 * h)
    ad = sum(jnp.sum(g * v) for g, v in zip(grad, direction))
    assert abs(float(ad - fd)) <= 1e-6 * max(1.0, abs(float(fd)))


@pytest.mark.parametrize("widths", [(4, 4, 4, 4), (3, 5, 4, 2)])
@pytest.mark.parametrize("init", ["orthogonal", "xavier"])
@pytest.mark.parametrize(
    "rule, kw",
    [
        ("ngd", {}),
        ("sqrt-ngd", {"method": "krylov"}),
        ("damped-ngd", {"eps": 0.2}),
        ("ngd-d", {}),
        ("sqrt-ngd-d", {}),
        ("qngd-d", {"q": 3.0}),
        ("bernacchia", {}),
    ],
)
def test_field_jvp_matches_finite_differences(widths, init, rule, kw):
    """JVPs of every field, at orthogonal init too (repeated eigen- and singular values)."""
    net = dlnsim.DeepLinearNet(widths, key=jr.PRNGKey(6), init=init, scale=0.8)
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(7), widths[-1], widths[0]))
    f = dlnsim.vector_field(rule, **kw)
    direction = tuple(jr.normal(k, w.shape) for k, w in zip(jr.split(jr.PRNGKey(8), 9), net.weights))
    _, tangent = jax.jvp(lambda w: f(0.0, w, task), (net.weights,), (direction,))
    h = 1e-6
    plus = f(0.0, tuple(w + h * v for w, v in zip(net.weights, direction)), task)
    minus = f(0.0, tuple(w - h * v for w, v in zip(net.weights, direction)), task)
    fd = [(p - m) / (2 * h) for p, m in zip(plus, minus)]
    assert all(bool(jnp.all(jnp.isfinite(t))) for t in tangent)
    assert rel_err(tangent, fd) <= 1e-6


def _dense_covariance_update(weights, task, output_cov, lam, q, eps):
    """(d blockdiag((A_i + sqrt(lam)) (x) (B_i + sqrt(lam))) + eps)^(-1/q) g_i per layer, from the
    column-major Kronecker matrix of each block by numpy eigh (Bernacchia et al. 2018, eqs. 10-15, 20)."""
    ws = [np.asarray(w) for w in weights]
    d, nd = len(ws), ws[-1].shape[0]
    prec = np.linalg.inv(np.asarray(output_cov)) if output_cov is not None else np.eye(nd)
    cov, delta = np.asarray(task.input_cov), np.asarray(dlnsim.network_map(weights) - task.teacher)
    pre, suf = prefix_products(weights), suffix_products(weights)
    out = []
    for a, b in zip(pre, suf, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        err = b.T @ prec @ b + np.sqrt(lam) * np.eye(b.shape[1])
        act = a @ cov @ a.T + np.sqrt(lam) * np.eye(a.shape[0])
        grad = b.T @ prec @ delta @ cov @ a.T
        block = d * np.kron(act, err)  # vec(err X act) = (act (x) err) vec(X), column-major
        evals, evecs = np.linalg.eigh(block)
        keep = evals + eps > 1e-12 * evals.max()
        f = np.where(keep, np.where(keep, evals + eps, 1.0) ** (-1.0 / q), 0.0)
        out.append(-((evecs * f) @ evecs.T @ grad.reshape(-1, order="F")).reshape(grad.shape, order="F"))
    return out


@pytest.mark.parametrize("widths", [(3, 5, 4, 2), (4, 4, 4)])
def test_covariance_curvature_is_bernacchia_and_composes_with_any_rule(widths):
    """CovarianceCurvature at q = 1 is BernacchiaFlow (eq. 10, eq. 20 with lambda); with Sigma~ = I
    and lambda = 0 it is NGD-d's block-diagonal H+; any q and eps match the dense Kronecker blocks."""
    weights, task = make_problem(widths)
    nd = widths[-1]
    out_cov = np.asarray(dlnsim.correlated_input_cov(jr.PRNGKey(7), nd))
    for lam in (0.0, 0.01):
        ours = dlnsim.NaturalGradientFlow(dlnsim.CovarianceCurvature(out_cov, lam), q=1.0)(0.0, weights, task)
        theirs = dlnsim.BernacchiaFlow(out_cov, lam=lam)(0.0, weights, task)
        assert rel_err(ours, theirs) < 1e-10, lam
    for q in (1.0, 2.0):
        ours = dlnsim.NaturalGradientFlow(dlnsim.CovarianceCurvature(), q=q)(0.0, weights, task)
        block = dlnsim.NaturalGradientFlow(dlnsim.BlockDiagonalGaussNewton(), q=q)(0.0, weights, task)
        assert rel_err(ours, block) < 1e-10, q
    curvature = dlnsim.CovarianceCurvature(out_cov, 0.01)
    for q, eps in ((2.0, 0.0), (2.0, 0.1), (3.0, 0.05)):
        ours = curvature.precondition(weights, task, power=1.0 / q, damping=eps)
        want = _dense_covariance_update(weights, task, out_cov, 0.01, q, eps)
        assert rel_err([-o for o in ours], want) < 1e-9, (q, eps)
    with pytest.raises(ValueError, match="output_cov must be"):
        dlnsim.CovarianceCurvature(np.eye(nd + 1)).precondition(weights, task, power=1.0)
