"""Issue 12, "never print a silently wrong result", at the Python library boundary.

Every bad input gives a ValueError (TypeError for a wrong kind of object) in one line that names
the argument; complex, bool, object and string arrays are refused, never cast. Fields that
vanish or lose all precision away from a minimum are raised as DynamicsBlowUpError with a time
and a hint, and damped NGD stays exact as eps -> inf (Huh 2020, eq. 17).
"""

import math
import warnings

import diffrax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from dense_reference import reference_field
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlnsim
from dlnsim import analytic, wide

KEY = jr.PRNGKey(0)
NET = dlnsim.DeepLinearNet((3, 2, 3), key=KEY, init="xavier")
TASK = dlnsim.Task(np.diag([1.0, 2.0, 0.5]))
BATCH = dlnsim.init_weights_batch((3, 2, 3), jr.split(KEY, 2), init="xavier")
NAN_BATCH = (BATCH[0].at[1, 0, 0].set(jnp.nan), BATCH[1])
FNET = dlnsim.FeedforwardNet((3, 2), key=KEY)
MLP = wide.MLP((4, 8, 1), key=KEY)
WTASK = wide.synthetic_task(KEY, 6, 4, test_samples=3)
WTASK5 = wide.synthetic_task(KEY, 6, 5, test_samples=3)
OPT = wide.ngd("bd", learning_rate=0.1)
X4 = np.asarray(WTASK.x_train)
Y4 = np.asarray(WTASK.y_train)
C = 1j * np.eye(3)
OBJ = np.array([[1.0, None, 0.0]] * 3, dtype=object)
COMPLEX_WARNING = getattr(np, "exceptions", np).ComplexWarning
TS = diffrax.SaveAt(ts=jnp.linspace(0.0, 1.0, 5))  # one save grid, so that runs share compilations


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad .npz files for load_regression_data and load_wide_data."""
    d = tmp_path_factory.mktemp("data")
    x = np.random.default_rng(0).normal(size=(8, 3))
    paths = {}
    for name, arrays in {
        "complex_x": dict(x=x + 1j, y=x),
        "object_y": dict(x=x, y=np.array([[1.0, None, 2.0]] * 8, dtype=object)),
        "bool_x": dict(x=x > 0, y=x),
        "nan_x": dict(x=np.where(x > 1, np.nan, x), y=x),
        "string_y": dict(x=x, y=np.array(["a"] * 8)),
        "no_y": dict(x=x),
        "complex_x_test": dict(x=x, y=x[:, :1], x_test=x + 1j, y_test=x[:, :1]),
    }.items():
        paths[name] = str(d / f"{name}.npz")
        np.savez(paths[name], **arrays)
    paths["text"] = str(d / "text.npz")
    with open(paths["text"], "w") as f:
        f.write("not an archive\n")
    paths["empty"] = str(d / "empty.npz")
    open(paths["empty"], "wb").close()
    with open(paths["complex_x"], "rb") as f:
        whole = f.read()
    paths["truncated"] = str(d / "truncated.npz")
    with open(paths["truncated"], "wb") as f:
        f.write(whole[: len(whole) // 2])
    return paths


def bernacchia(output_cov):
    return dlnsim.vector_field("bernacchia", output_cov=output_cov)


# (callable taking the bad-file paths, expected exception, fragment: the argument it must name)
BAD_INPUTS = [
    # tasks
    (lambda f: dlnsim.Task(C), ValueError, "teacher"),
    (lambda f: dlnsim.Task(np.eye(3) > 0), ValueError, "teacher"),
    (lambda f: dlnsim.Task(np.array([["a", "b"], ["c", "d"]])), ValueError, "teacher"),
    (lambda f: dlnsim.Task(OBJ), ValueError, "teacher"),
    (lambda f: dlnsim.Task([[1.0, 2.0], [3.0]]), ValueError, "teacher"),
    (lambda f: dlnsim.Task([[np.inf]]), ValueError, "teacher"),
    (lambda f: dlnsim.Task(None), ValueError, "teacher"),
    (lambda f: dlnsim.Task(np.eye(3), C), ValueError, "input_cov"),
    (lambda f: dlnsim.Task(np.eye(3), np.eye(3) > 0), ValueError, "input_cov"),
    (lambda f: dlnsim.Task(np.eye(2), np.full((2, 2), np.nan)), ValueError, "input_cov"),
    (lambda f: dlnsim.Task(np.eye(2), [[1.0, 2.0], [0.0, 1.0]]), ValueError, "input_cov"),
    (lambda f: dlnsim.Task(np.eye(2), -np.eye(2)), ValueError, "input_cov"),
    (lambda f: dlnsim.Task(np.eye(2), np.eye(3)), ValueError, "input_cov"),
    (lambda f: dlnsim.random_teacher(KEY, 3, 3, spectrum=[1.0 + 1j]), ValueError, "spectrum"),
    (lambda f: dlnsim.random_teacher(KEY, 3, 3, spectrum=[True, False]), ValueError, "spectrum"),
    (lambda f: dlnsim.random_teacher(KEY, 3, 3, spectrum=[np.nan]), ValueError, "spectrum"),
    (lambda f: dlnsim.random_teacher(KEY, 3, 3, spectrum="big"), ValueError, "spectrum"),
    (lambda f: dlnsim.random_teacher(KEY, 3, 3, rank=0), ValueError, "rank"),
    (lambda f: dlnsim.random_teacher(KEY, 3, 3, rank=1.5), ValueError, "rank"),
    (lambda f: dlnsim.random_teacher(KEY, "3", 3), ValueError, "n_out"),
    (lambda f: dlnsim.random_teacher(None, 3, 3), TypeError, "key"),
    (lambda f: dlnsim.correlated_input_cov(KEY, 3, decay=np.nan), ValueError, "decay"),
    (lambda f: dlnsim.student_teacher(KEY, width=2.5), ValueError, "width"),
    (lambda f: dlnsim.student_teacher(KEY, snr="high"), ValueError, "snr"),
    # user data files
    (lambda f: dlnsim.load_regression_data(f["complex_x"]), ValueError, "array x"),
    (lambda f: dlnsim.load_regression_data(f["object_y"]), ValueError, "array y"),
    (lambda f: dlnsim.load_regression_data(f["bool_x"]), ValueError, "array x"),
    (lambda f: dlnsim.load_regression_data(f["nan_x"]), ValueError, "array x"),
    (lambda f: dlnsim.load_regression_data(f["string_y"]), ValueError, "array y"),
    (lambda f: dlnsim.load_regression_data(f["no_y"]), ValueError, "arrays named"),
    (lambda f: dlnsim.load_regression_data(f["text"]), ValueError, "text.npz"),
    (lambda f: dlnsim.load_regression_data(f["empty"]), ValueError, "empty.npz"),
    (lambda f: dlnsim.load_regression_data(f["truncated"]), ValueError, "truncated.npz"),
    (lambda f: wide.load_wide_data(f["empty"]), ValueError, "empty.npz"),
    (lambda f: wide.load_wide_data(f["complex_x"]), ValueError, "array x"),
    (lambda f: wide.load_wide_data(f["complex_x_test"]), ValueError, "array x_test"),
    (lambda f: wide.load_wide_data(f["object_y"]), ValueError, "array y"),
    (lambda f: wide.load_wide_data(f["nan_x"]), ValueError, "array x"),
    (lambda f: wide.load_wide_data(f["bool_x"], test_fraction=1.5), ValueError, "test_fraction"),
    # models and weights
    (lambda f: dlnsim.DeepLinearNet.from_weights([C]), ValueError, "W_1"),
    (lambda f: dlnsim.DeepLinearNet.from_weights([np.eye(3), OBJ]), ValueError, "W_2"),
    (lambda f: dlnsim.DeepLinearNet.from_weights([np.eye(3) > 0]), ValueError, "W_1"),
    (lambda f: dlnsim.DeepLinearNet.from_weights([np.full((2, 3), np.inf)]), ValueError, "W_1"),
    (lambda f: dlnsim.DeepLinearNet.from_weights([np.ones((2, 3)), np.ones((2, 3))]), ValueError, "W_2"),
    (lambda f: dlnsim.DeepLinearNet.from_weights([np.ones(3)]), ValueError, "W_1"),
    (lambda f: dlnsim.DeepLinearNet.from_weights(np.eye(3)), TypeError, "weights"),
    (lambda f: dlnsim.DeepLinearNet.from_weights([]), ValueError, "weights"),
    (lambda f: dlnsim.imbalance([np.eye(2), 1j * np.eye(2)]), ValueError, "W_2"),
    (lambda f: dlnsim.DeepLinearNet((3, 2), key=None), TypeError, "key"),
    (lambda f: dlnsim.DeepLinearNet((3, 2), key=KEY, dtype=jnp.int32), ValueError, "dtype"),
    (lambda f: dlnsim.DeepLinearNet((3, 2), key=KEY, scale="big"), ValueError, "scale"),
    (lambda f: dlnsim.DeepLinearNet((3, 2), key=KEY, scale=1j), ValueError, "scale"),
    (lambda f: dlnsim.DeepLinearNet("3,2", key=KEY), ValueError, "widths"),
    (lambda f: dlnsim.DeepLinearNet(5, key=KEY), ValueError, "widths"),
    (lambda f: dlnsim.DeepLinearNet((3, 3), key=KEY, init="aligned", teacher=C), ValueError, "teacher"),
    (
        lambda f: dlnsim.DeepLinearNet(
            (3, 3), key=KEY, init="aligned", teacher=np.eye(3), singular_values=[1j]
        ),
        ValueError,
        "singular_values",
    ),
    # simulate
    (lambda f: dlnsim.simulate(NET, "sgd", "task", 1.0), TypeError, "task"),
    (lambda f: dlnsim.simulate(NET, "sgd", np.eye(3), 1.0), TypeError, "task"),
    (lambda f: dlnsim.simulate(NET, 42, TASK, 1.0), TypeError, "rule"),
    (lambda f: dlnsim.simulate(NET, "newton", TASK, 1.0), ValueError, "rule"),
    (lambda f: dlnsim.simulate(None, "sgd", TASK, 1.0), TypeError, "net_or_weights"),
    (lambda f: dlnsim.simulate("W", "sgd", TASK, 1.0), TypeError, "net_or_weights"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, dt0=-0.1), ValueError, "dt0"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, dt0=0.0), ValueError, "dt0"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, dt0=np.nan), ValueError, "dt0"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, dt0=np.inf), ValueError, "dt0"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, dt0=5e-324), ValueError, "dt0"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1e9, t0=1e8, dt0=1e-12), ValueError, "dt0"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1e308, t0=-1e308), ValueError, "t1 - t0"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, np.inf), ValueError, "t1"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, np.nan), ValueError, "t1"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, t0=np.nan), ValueError, "t0"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, t0=-np.inf), ValueError, "t0"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, t0=1.0), ValueError, "t1"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, t0=2.0), ValueError, "t1"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, "1"), ValueError, "t1"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, max_steps=0), ValueError, "max_steps"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, max_steps=2.5), ValueError, "max_steps"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, max_steps=True), ValueError, "max_steps"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, max_steps=None), ValueError, "max_steps"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, loss_threshold=-1.0), ValueError, "loss_threshold"),
    (lambda f: dlnsim.simulate([C], "sgd", TASK, 1.0), ValueError, "W_1"),
    (lambda f: dlnsim.simulate([np.full((3, 3), np.nan)], "sgd", TASK, 1.0), ValueError, "W_1"),
    (lambda f: dlnsim.simulate([np.eye(2, 3), np.eye(3)], "sgd", TASK, 1.0), ValueError, "W_2"),
    (lambda f: dlnsim.simulate([np.eye(2, 3), np.eye(2, 2)], "sgd", TASK, 1.0), ValueError, "task"),
    (lambda f: dlnsim.simulate(NAN_BATCH, "sgd", TASK, 1.0), ValueError, "W_1"),
    (lambda f: dlnsim.simulate((BATCH[0], BATCH[1][0]), "sgd", TASK, 1.0), ValueError, "W_i"),
    (lambda f: dlnsim.simulate((BATCH[0], BATCH[1][:1]), "sgd", TASK, 1.0), ValueError, "net_or_weights"),
    (lambda f: dlnsim.simulate((BATCH[0], 1j * BATCH[1]), "sgd", TASK, 1.0), ValueError, "W_2"),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, saveat=[0.5]), TypeError, "saveat"),
    (
        lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, saveat=diffrax.SaveAt(ts=jnp.array([0.0, 2.0]))),
        ValueError,
        "saveat.ts",
    ),
    (
        lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, saveat=diffrax.SaveAt(ts=jnp.array([0.5, 0.1]))),
        ValueError,
        "saveat.ts",
    ),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, solver="tsit5"), TypeError, "solver"),
    (
        lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, stepsize_controller=1e-8),
        TypeError,
        "stepsize_controller",
    ),
    (
        lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, stepsize_controller=diffrax.ConstantStepSize()),
        ValueError,
        "dt0",
    ),
    (lambda f: dlnsim.simulate(NET, "sgd", TASK, 1.0, progress_meter=True), TypeError, "progress_meter"),
    (lambda f: dlnsim.simulate(NET, lambda t, w, a: w[:1], TASK, 1.0), ValueError, "vector field"),
    (lambda f: dlnsim.simulate(NET, lambda t, w, a: list(w), TASK, 1.0), ValueError, "vector field"),
    (
        lambda f: dlnsim.simulate_discrete(NET, lambda t, w, a: w[0], TASK, lr=0.1, steps=2),
        ValueError,
        "vector field",
    ),
    (lambda f: dlnsim.simulate(NET, bernacchia(np.eye(2)), TASK, 1.0), ValueError, "output_cov"),
    # simulate_discrete
    (lambda f: dlnsim.simulate_discrete(NET, "sgd", TASK, lr=0.0, steps=3), ValueError, "lr must"),
    (lambda f: dlnsim.simulate_discrete(NET, "sgd", TASK, lr=np.nan, steps=3), ValueError, "lr must"),
    (lambda f: dlnsim.simulate_discrete(NET, "sgd", TASK, lr="0.1", steps=3), ValueError, "lr must"),
    (lambda f: dlnsim.simulate_discrete(NET, "sgd", TASK, lr=0.1, steps=0), ValueError, "steps"),
    (lambda f: dlnsim.simulate_discrete(NET, "sgd", TASK, lr=1e308, steps=3), ValueError, "lr * steps"),
    (lambda f: dlnsim.simulate_discrete(NET, "sgd", TASK, lr=0.1, steps=2.5), ValueError, "steps"),
    (lambda f: dlnsim.simulate_discrete(NET, "sgd", TASK, lr=0.1, steps="3"), ValueError, "steps"),
    (
        lambda f: dlnsim.simulate_discrete(NET, "sgd", TASK, lr=0.1, steps=3, save_every=0),
        ValueError,
        "save_every",
    ),
    (
        lambda f: dlnsim.simulate_discrete(NET, "sgd", TASK, lr=0.1, steps=3, divergence_factor=0.5),
        ValueError,
        "divergence_factor",
    ),
    (lambda f: dlnsim.simulate_discrete([C], "sgd", TASK, lr=0.1, steps=3), ValueError, "W_1"),
    (lambda f: dlnsim.simulate_discrete(NET, "sgd", None, lr=0.1, steps=3), TypeError, "task"),
    (lambda f: dlnsim.init_weights_batch((3, 2, 3), KEY), ValueError, "keys"),
    (lambda f: dlnsim.init_weights_batch((3, 2, 3), "keys"), ValueError, "keys"),
    (lambda f: dlnsim.compare_with_modes(None, "ngd", TASK), TypeError, "traj"),
    # rules and curvature options
    (lambda f: dlnsim.vector_field(3), TypeError, "rule"),
    (lambda f: dlnsim.vector_field("ngd", rcond=-1.0), ValueError, "rcond"),
    (lambda f: dlnsim.vector_field("ngd", rcond=np.nan), ValueError, "rcond"),
    (lambda f: dlnsim.vector_field("ngd-d", rcond=np.inf), ValueError, "rcond"),
    (lambda f: dlnsim.vector_field("bernacchia", rcond=1.0), ValueError, "rcond"),
    (lambda f: dlnsim.vector_field("ngd", rcond="small"), ValueError, "rcond"),
    (lambda f: dlnsim.vector_field("damped-ngd", eps=-1.0), ValueError, "eps must"),
    (lambda f: dlnsim.vector_field("damped-ngd", eps=np.inf), ValueError, "eps must"),
    (lambda f: dlnsim.vector_field("damped-ngd", eps=1j), ValueError, "eps must"),
    (lambda f: dlnsim.vector_field("qngd", q=0.5), ValueError, "q must"),
    (lambda f: dlnsim.vector_field("qngd", q="2"), ValueError, "q must"),
    (lambda f: dlnsim.vector_field("qngd", q=np.nan), ValueError, "q must"),
    (lambda f: dlnsim.vector_field("ngd", method="fast"), ValueError, "method"),
    (lambda f: dlnsim.vector_field("bernacchia", damping=-1.0), ValueError, "damping"),
    (lambda f: bernacchia(C), ValueError, "output_cov"),
    (lambda f: bernacchia(np.eye(3) > 0), ValueError, "output_cov"),
    (lambda f: bernacchia([[1.0, 0.5], [0.0, 1.0]]), ValueError, "output_cov"),
    (lambda f: bernacchia([[1.0, 2.0], [2.0, 1.0]]), ValueError, "output_cov"),
    (lambda f: bernacchia(np.zeros((2, 2))), ValueError, "output_cov"),
    (lambda f: bernacchia(np.ones((2, 3))), ValueError, "output_cov"),
    (lambda f: bernacchia(np.full((2, 2), np.nan)), ValueError, "output_cov"),
    (lambda f: dlnsim.GaussNewton(rcond=-1e-3), ValueError, "rcond"),
    (lambda f: dlnsim.BlockDiagonalGaussNewton(rcond=np.inf), ValueError, "rcond"),
    (lambda f: dlnsim.GaussNewton(max_cg_steps=0), ValueError, "max_cg_steps"),
    (lambda f: dlnsim.GaussNewton(cg_rtol=-1.0), ValueError, "cg_rtol"),
    (lambda f: dlnsim.GaussNewton(quadrature_step=np.nan), ValueError, "quadrature_step"),
    (lambda f: dlnsim.GaussNewton().precondition(NET.weights, TASK, power=np.nan), ValueError, "power"),
    (
        lambda f: dlnsim.GaussNewton().precondition(NET.weights, TASK, power=1.0, damping=-1.0),
        ValueError,
        "damping",
    ),
    (lambda f: dlnsim.NaturalGradientFlow("dense"), TypeError, "curvature"),
    (lambda f: dlnsim.BernacchiaFlow(rcond=np.nan), ValueError, "rcond"),
    # online NGD (Bernacchia et al. 2018)
    (lambda f: dlnsim.OnlineNGD(output_cov=[[1.0, 0.5], [0.0, 1.0]]), ValueError, "output_cov"),
    (lambda f: dlnsim.OnlineNGD(output_cov=1j * np.eye(2)), ValueError, "output_cov"),
    (lambda f: dlnsim.OnlineSGD(output_cov=np.eye(2) > 0), ValueError, "output_cov"),
    (lambda f: dlnsim.OnlineNGD(rcond=-1.0), ValueError, "rcond"),
    (
        lambda f: dlnsim.train_online(
            FNET,
            dlnsim.OnlineNGD(batch_size=2, output_cov=np.eye(3)),
            np.ones((4, 3)),
            np.ones((4, 2)),
            steps=1,
            key=KEY,
        ),
        ValueError,
        "output_cov",
    ),  # fmt: skip
    (
        lambda f: dlnsim.train_online(
            FNET, dlnsim.OnlineSGD(), 1j * np.ones((4, 3)), np.ones((4, 2)), steps=1, key=KEY
        ),
        ValueError,
        "training inputs",
    ),
    (
        lambda f: dlnsim.train_online(FNET, "sgd", np.ones((4, 3)), np.ones((4, 2)), steps=1, key=KEY),
        TypeError,
        "method",
    ),
    (lambda f: dlnsim.FeedforwardNet.from_weights([C]), ValueError, "W_1"),
    # wide networks (Karakida & Osawa 2020)
    (lambda f: wide.WideTask(X4 + 1j, Y4, X4, Y4, "regression", ""), ValueError, "x_train"),
    (lambda f: wide.WideTask(X4, Y4 > 0, X4, Y4, "regression", ""), ValueError, "y_train"),
    (lambda f: wide.WideTask(X4, Y4, X4, Y4, "ranking", ""), ValueError, "kind"),
    (lambda f: wide.normalize_inputs(C), ValueError, "x must"),
    (lambda f: wide.train(MLP, WTASK5, OPT, 1), ValueError, "x_train"),
    (lambda f: wide.train(MLP, WTASK, "bd", 1), TypeError, "optimizer"),
    (lambda f: wide.train(MLP, (X4, Y4), OPT, 1), TypeError, "task"),
    (lambda f: wide.train(MLP, WTASK, OPT, -1), ValueError, "steps"),
    (lambda f: OPT.update(MLP, X4, Y4[:, 0], OPT.init(MLP)), ValueError, "y must"),
    (lambda f: OPT.update(MLP, X4, Y4[:4], OPT.init(MLP)), ValueError, "x and y must have the same number"),
    (lambda f: OPT.update(MLP, X4[:, :3], Y4, OPT.init(MLP)), ValueError, "x and y must be (N, 4)"),
    (lambda f: OPT.update(MLP, X4, 1j * Y4, OPT.init(MLP)), ValueError, "y must"),
    (lambda f: OPT.update(MLP, np.where(X4 > 0.3, np.nan, X4), Y4, OPT.init(MLP)), ValueError, "x contains"),
    (lambda f: OPT.init("mlp"), TypeError, "mlp"),
    (lambda f: wide.NGD("bd"), TypeError, "fisher"),
    (lambda f: wide.ngd("bd", learning_rate=-1.0), ValueError, "learning_rate"),
    (lambda f: wide.ngd("bd", damping=np.nan), ValueError, "damping"),
    (lambda f: wide.compare_with_theory(MLP, WTASK5, "bd", steps=1), ValueError, "x_train"),
    (
        lambda f: wide.compare_with_theory(MLP, WTASK, "bd", steps=1, learning_rate=0.0),
        ValueError,
        "learning_rate",
    ),
    (lambda f: wide.analytic_kernels(X4, depth=2, sigma_w2=-1.0), ValueError, "sigma_w2"),
    (lambda f: wide.analytic_kernels(X4 + 1j, depth=2), ValueError, "x1"),
    (lambda f: wide.task_loss(Y4, Y4, loss="l1"), ValueError, "loss"),
    (lambda f: wide.MLP((4, 8, 1), key=KEY, shift=-1.0, activation="shifted-relu"), ValueError, "shift"),
    # singular-mode theory (Huh 2020, secs. 3.1-3.3)
    (lambda f: analytic.mode_vector_field(0.5), ValueError, "q must"),
    (lambda f: analytic.mode_vector_field(1.0, damping=np.inf), ValueError, "damping"),
    (
        lambda f: analytic.balanced_map_trajectory([1j], depth=3, q=2.0, sigma_star=1.0, sigma0=0.1),
        ValueError,
        "t must",
    ),
    (lambda f: analytic.saxe_sgd_solution([np.nan], sigma_star=1.0, sigma0=0.1), ValueError, "t contains"),
    (lambda f: analytic.mode_invariants(C, 2.0), ValueError, "sigmas"),
    (lambda f: analytic.measure_scaling("sgd", depth=2, scales=[1.0, 1j]), ValueError, "scales"),
    (lambda f: analytic.stiffness(2.5, 2.0), ValueError, "depth"),
]


@pytest.mark.parametrize(
    "call, exc, fragment", BAD_INPUTS, ids=[f"{i}-{c[2]}" for i, c in enumerate(BAD_INPUTS)]
)
def test_bad_input_raises_a_one_line_error_naming_the_argument(files, call, exc, fragment):
    with warnings.catch_warnings():
        warnings.simplefilter("error", COMPLEX_WARNING)  # refused, never cast
        with pytest.raises(exc) as info:
            call(files)
    message = str(info.value)
    assert type(info.value) is exc, message
    assert "\n" not in message and message.strip()
    assert fragment in message, message


# ---------------------------------------------------------------------------------------------
# silent wrong results in the dynamics


def test_ngd_from_underflowing_weights_is_refused_with_time_and_hint():
    """NGD's field underflows to exactly 0 at weights of scale 1e-80: the run used to stand still
    and report loss 7.000 -> 7.000 as a success."""
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(1), 4, 4, rank=3))
    net = dlnsim.DeepLinearNet((4,) * 5, key=KEY, init="small", scale=1e-80)
    assert not any(np.any(np.asarray(v)) for v in dlnsim.vector_field("ngd")(0.0, net.weights, task))
    for run in (
        lambda: dlnsim.simulate(net, "ngd", task, 10.0),
        lambda: dlnsim.simulate_discrete(net, "ngd", task, lr=0.1, steps=5),
    ):
        with pytest.raises(dlnsim.DynamicsBlowUpError) as info:
            run()
        assert info.value.time == 0.0
        assert "exactly zero" in info.value.reason and "eq. 13" in info.value.hint
        assert "\n" not in str(info.value)
    # from the default scale 0.05 the field is finite and non-zero
    ok = dlnsim.DeepLinearNet((4,) * 5, key=KEY, init="small").weights
    velocity = dlnsim.vector_field("ngd")(0.0, ok, task)
    assert all(np.all(np.isfinite(v)) for v in velocity) and any(np.any(v) for v in velocity)


def test_batched_runs_report_a_vanishing_field_per_element_and_keep_the_others():
    zero = tuple(jnp.zeros_like(w) for w in NET.weights)  # the saddle at W = 0: SGD's field is 0
    batch = tuple(jnp.stack([z, w, z]) for z, w in zip(zero, NET.weights))
    res = dlnsim.simulate_batch(batch, "sgd", TASK, 1.0, saveat=TS)
    assert list(res.succeeded) == [False, True, False]
    for b in (0, 2):
        assert "t=0" in res.status[b] and "exactly zero" in res.status[b] and res.failure_times[b] == 0.0
        assert "\n" not in res.status[b]
    single = dlnsim.simulate(NET, "sgd", TASK, 1.0, saveat=TS)
    np.testing.assert_allclose(res[1].loss, single.loss, rtol=1e-9)


def test_sqrt_ngd_from_underflowing_weights_is_refused():
    # depth 2: K ~ |W|^4 underflows at weights of scale 1e-200, and sqrt-NGD's field is exactly 0
    tiny = dlnsim.DeepLinearNet((3, 2, 3), key=KEY, init="small", scale=1e-200)
    with pytest.raises(dlnsim.DynamicsBlowUpError, match="exactly zero") as info:
        dlnsim.simulate(tiny, "sqrt-ngd", TASK, 1.0)
    assert "eq. 13" in info.value.hint


def test_a_saddle_start_is_refused_but_a_minimum_is_fine():
    zero = [jnp.zeros((2, 3)), jnp.zeros((3, 2))]
    with pytest.raises(dlnsim.DynamicsBlowUpError, match="exactly zero"):
        dlnsim.simulate(zero, "sgd", TASK, 1.0)
    # at a global minimum the field is exactly zero too, and standing still is the right answer
    reached = dlnsim.Task(NET.map())
    traj = dlnsim.simulate(NET, "sqrt-ngd", reached, 1.0, saveat=TS)
    assert np.all(traj.loss == 0.0) and np.all(traj.parameter_speed == 0.0)


@pytest.mark.parametrize("where", ["start", "later"])
def test_a_field_that_loses_all_precision_is_reported_never_written(where):
    def field(t, w, task):
        g = dlnsim.vector_field("sgd")(t, w, task)
        lost = (t > 0.25) if where == "later" else True
        return tuple(jnp.where(lost, 0.0 * jnp.inf * x, x) for x in g)  # 0 * inf = NaN

    with pytest.raises(dlnsim.DynamicsBlowUpError) as info:
        dlnsim.simulate(NET, field, TASK, 1.0, max_steps=400)
    assert (info.value.time == 0.0) == (where == "start")
    assert info.value.time <= 0.25 + 1e-9 and info.value.hint
    # discrete steps see t = step * lr: the NaN field is reported at the first step past 0.25
    with pytest.raises(dlnsim.DynamicsBlowUpError) as info:
        dlnsim.simulate_discrete(NET, field, TASK, lr=0.1, steps=5)
    assert info.value.time == (0.0 if where == "start" else pytest.approx(0.4))


def test_overflowing_initial_weights_are_reported():
    huge = [1e200 * jnp.ones((3, 3)), 1e200 * jnp.ones((3, 3))]
    with pytest.raises(dlnsim.DynamicsBlowUpError, match="loss is not finite"):
        dlnsim.simulate(huge, "sgd", TASK, 1.0)


def rel_err(a, b):
    num = max(np.abs(np.asarray(x) - np.asarray(y)).max() for x, y in zip(a, b, strict=True))
    return num / max(np.abs(np.asarray(y)).max() for y in b)


@pytest.mark.parametrize("eps", [1e300, 1e308, float(np.finfo(float).max)])
@pytest.mark.parametrize("method", ["dense", "krylov", "balanced"])
def test_damped_ngd_tends_to_sgd_as_eps_grows(eps, method):
    """(eps + 1)(eps I + H+)^-1 g -> g (Huh 2020, eq. 17); at eps = 1e308 it used to freeze at 0."""
    net = dlnsim.DeepLinearNet((3, 4, 3), key=KEY, init="xavier")
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(2), 3, 3), dlnsim.correlated_input_cov(KEY, 3))
    if method == "balanced":  # the closed form needs balanced weights and white inputs
        net = dlnsim.DeepLinearNet((3, 4, 3), key=KEY, init="balanced", scale=0.7)
        task = dlnsim.Task(task.teacher)
    sgd = dlnsim.vector_field("sgd")(0.0, net.weights, task)
    damped = dlnsim.vector_field("damped-ngd", eps=eps, method=method)(0.0, net.weights, task)
    assert rel_err(damped, sgd) < 1e-12


@pytest.mark.parametrize("method", ["dense", "krylov"])
@pytest.mark.parametrize("eps", [1e-3, 0.5, 1e3])
def test_damped_ngd_at_moderate_eps_matches_the_dense_reference(method, eps):
    net = dlnsim.DeepLinearNet((4, 4, 4, 4), key=jr.PRNGKey(3), init="xavier", scale=1.2)
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(4), 4, 4), dlnsim.correlated_input_cov(KEY, 4))
    ours = dlnsim.vector_field("damped-ngd", eps=eps, method=method)(0.0, net.weights, task)
    ref = reference_field("damped-ngd", net.weights, task.teacher, task.input_cov, eps=eps)
    assert rel_err(ours, ref) <= 1e-8


def test_damped_mode_field_tends_to_sgd_as_eps_grows():
    sigmas = jnp.array([[0.3, 1.2], [0.5, 0.8], [0.9, 0.4]])
    args = (jnp.array([2.0, 1.0]), jnp.array([1.0, 0.5]))
    for block in (False, True):
        sgd = analytic.mode_vector_field(math.inf, block)(0.0, sigmas, args)
        for eps in (1e300, 1e308):
            damped = analytic.mode_vector_field(1.0, block, damping=eps)(0.0, sigmas, args)
            np.testing.assert_allclose(damped, sgd, rtol=1e-12)


@pytest.mark.parametrize("steps, save_every, saved", [(3, 10, [0, 3]), (25, 10, [0, 10, 20, 25])])
def test_discrete_runs_always_save_the_last_step(steps, save_every, saved):
    lr = 0.05
    traj = dlnsim.simulate_discrete(NET, "sqrt-ngd", TASK, lr=lr, steps=steps, save_every=save_every)
    np.testing.assert_allclose(traj.times, lr * np.asarray(saved))
    field, w, every = dlnsim.vector_field("sqrt-ngd"), NET.weights, [NET.weights]
    for _ in range(steps):  # forward Euler by hand
        w = tuple(a + lr * v for a, v in zip(w, field(0.0, w, TASK)))
        every.append(w)
    for i, a in enumerate(traj.weights):
        np.testing.assert_allclose(a, np.stack([e[i] for e in every])[saved], rtol=1e-10, atol=1e-13)


def test_typed_key_batches_are_accepted():
    typed = dlnsim.init_weights_batch((3, 2, 3), jr.split(jr.key(0), 2), init="xavier")
    raw = dlnsim.init_weights_batch((3, 2, 3), jr.split(jr.PRNGKey(0), 2), init="xavier")
    for a, b in zip(typed, raw, strict=True):
        np.testing.assert_array_equal(a, b)


def test_integer_inputs_are_real_numbers():
    task = dlnsim.Task([[1, 0, 0], [0, 2, 0], [0, 0, 1]], [[2, 0, 0], [0, 1, 0], [0, 0, 1]])
    net = dlnsim.DeepLinearNet.from_weights([[[1, 0, 1], [0, 1, 0]], [[1, 0], [0, 1], [1, 1]]])
    assert task.teacher.dtype == jnp.float64 and net.weights[0].dtype == jnp.float64
    traj = dlnsim.simulate(net, "sqrt-ngd", task, 1.0, saveat=TS)
    assert traj.loss[-1] < traj.loss[0]


# ---------------------------------------------------------------------------------------------
# property-based: any float is either refused with a ValueError or gives a finite result

ANY_FLOAT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1.0, 1e300, 1e308, float(np.finfo(float).max)]),
)
PROPERTY = settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
PNET = dlnsim.DeepLinearNet((3, 4, 3), key=KEY, init="xavier")
PTASK = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(5), 3, 3))


def finite_field_or_value_error(make):
    try:
        field = make()
    except ValueError as err:
        assert "\n" not in str(err)
        return None
    out = field(0.0, PNET.weights, PTASK)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in out)
    return out


@PROPERTY
@given(eps=ANY_FLOAT)
def test_any_eps_gives_a_finite_damped_field_or_a_value_error(eps):
    out = finite_field_or_value_error(lambda: dlnsim.vector_field("damped-ngd", eps=eps))
    assert (out is None) == (not math.isfinite(eps) or eps < 0)
    if out is not None and eps >= 1e300:
        assert rel_err(out, dlnsim.vector_field("sgd")(0.0, PNET.weights, PTASK)) < 1e-12


@PROPERTY
@given(q=ANY_FLOAT)
def test_any_q_gives_a_finite_field_or_a_value_error(q):
    for rule in ("qngd", "qngd-d"):
        out = finite_field_or_value_error(lambda rule=rule: dlnsim.vector_field(rule, q=q))
        assert (out is None) == (math.isnan(q) or q < 1)


@PROPERTY
@given(rcond=ANY_FLOAT)
def test_any_rcond_gives_a_finite_field_or_a_value_error(rcond):
    for rule in ("ngd", "ngd-d", "bernacchia"):
        out = finite_field_or_value_error(lambda rule=rule: dlnsim.vector_field(rule, rcond=rcond))
        assert (out is None) == (not 0 <= rcond < 1)


@PROPERTY
@given(damping=ANY_FLOAT)
def test_any_mode_damping_gives_a_finite_mode_field_or_a_value_error(damping):
    try:
        field = analytic.mode_vector_field(1.0, damping=damping)
    except ValueError:
        assert not math.isfinite(damping) or damping < 0
        return
    out = field(0.0, jnp.array([[0.3, 0.0], [0.5, 0.0]]), jnp.array([1.0, 2.0]))
    assert np.all(np.isfinite(np.asarray(out)))


@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(dt0=ANY_FLOAT)
def test_any_dt0_gives_a_finite_run_or_a_value_error(dt0):
    try:
        traj = dlnsim.simulate(NET, "sqrt-ngd", TASK, 1.0, dt0=dt0, saveat=TS, max_steps=2000)
    except ValueError as err:
        assert not math.isfinite(dt0) or dt0 < np.finfo(float).tiny, str(err)
        return
    assert np.all(np.isfinite(traj.loss)) and traj.times[-1] == 1.0


@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(lr=ANY_FLOAT)
def test_any_lr_gives_a_finite_discrete_run_or_a_clear_error(lr):
    try:
        traj = dlnsim.simulate_discrete(NET, "sgd", TASK, lr=lr, steps=3)
    except ValueError:
        assert not math.isfinite(lr) or lr <= 0 or not math.isfinite(3 * lr)
        return
    except dlnsim.DynamicsBlowUpError as err:  # a step so large that the iterates diverge
        assert lr > 0.01 and err.hint
        return
    assert np.all(np.isfinite(traj.loss)) and all(np.all(np.isfinite(w)) for w in traj.weights)
