"""Resource estimates (dlnsim._resources): the counted bytes against the arrays the code really
forms, refusals as one-line ValueErrors, and ordinary runs let through."""

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import pytest

import dlnsim
from dlnsim import _budget as budget
from dlnsim import _resources as res
from dlnsim import _resources_wide as wres
from dlnsim._curvature import GaussNewton
from dlnsim._models import conserved_quantities, network_map, prefix_products, suffix_products
from dlnsim._rules import RULES, vector_field
from dlnsim.wide import FISHERS, MLP, layer_grams, signals, synthetic_task

GiB = 2**30


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch):
    """Tests set the limits they need; none leak in from the environment."""
    monkeypatch.delenv("DLNSIM_MEMORY_LIMIT", raising=False)
    monkeypatch.delenv("DLNSIM_TIME_LIMIT", raising=False)


def _refusal(estimate, what="this run") -> str:
    with pytest.raises(ValueError) as info:
        res.check_resources(estimate, what=what)
    message = str(info.value)
    assert "\n" not in message and message.startswith(what)
    return message


# ------------------------------------------------------------------------------------------------
# estimates against the arrays the code forms


@pytest.mark.parametrize(("widths", "saves"), [((3, 5, 2), 9), ((4, 4, 4, 4), 23)])
def test_saved_weights_and_conserved_quantities_match_a_real_trajectory(widths, saves):
    net = dlnsim.DeepLinearNet(widths, key=jr.PRNGKey(0), init="orthogonal")
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(1), widths[-1], widths[0], rank=2))
    ts = jnp.linspace(0.0, 0.01, saves)
    traj = dlnsim.simulate(net, "sgd", task, 0.01, saveat=diffrax.SaveAt(ts=ts))
    assert traj.times.size == saves
    held = sum(w.nbytes for w in traj.weights)
    state = sum(w[0].nbytes for w in traj.weights)
    est = res.estimate_linear_run(widths, saves=saves, rule="sgd")
    per_copy = est.breakdown[f"weights x {saves} saves"] / res.TRAJECTORY_COPIES_SINGLE
    # the solver's buffer holds one row more than the trajectory: the final-state save, dropped
    # from the trajectory because it repeats the last requested time
    assert per_copy == held + state
    c_state = sum(c.nbytes for c in conserved_quantities(net.weights))
    assert est.breakdown[f"conserved quantities x {saves} saves"] == (saves + 1) * c_state
    assert est.total_bytes == sum(est.breakdown.values())


def test_vector_field_products_match_the_arrays_formed():
    widths = (3, 6, 5, 2)
    net = dlnsim.DeepLinearNet(widths, key=jr.PRNGKey(0))
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(1), 2, 3, rank=2))
    w = net.weights
    grad = vector_field("sgd")(0.0, w, task)
    formed = (
        sum(a.nbytes for a in prefix_products(w))
        + sum(b.nbytes for b in suffix_products(w))
        + sum(g.nbytes for g in grad)
        + 2 * network_map(w).nbytes  # the map and the residual
    )
    assert res.vector_field_bytes(widths, "gradient") == {"products and gradient": formed}


def test_dense_gram_term_is_the_gram_matrix():
    widths = (5, 2, 6)  # a bottleneck: K is structurally singular, so every method resolves to dense
    net = dlnsim.DeepLinearNet(widths, key=jr.PRNGKey(0))
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(1), 6, 5, rank=2))
    gram = GaussNewton().gram_matrix(net.weights, task)
    m = widths[0] * widths[-1]
    assert gram.shape == (m, m) and gram.nbytes == m * m * 8
    assert res.rule_family("ngd", widths) == "dense"
    assert res.vector_field_bytes(widths, "dense")["dense Gram K"] == gram.nbytes
    for saves, states in ((600, 64), (10, 11)):  # observables map 64 saved states at once
        est = res.estimate_linear_run(widths, saves=saves, rule="ngd")
        assert est.breakdown[f"dense Gram K x {states} states"] == states * gram.nbytes
    est = res.estimate_linear_run(widths, saves=10, rule="ngd", batch=100)  # the batched solve
    assert est.breakdown["dense Gram K x 100 states"] == 100 * gram.nbytes


@pytest.mark.parametrize(
    ("rule", "q", "widths"),
    [("ngd", None, (16,) * 5), ("sqrt-ngd", None, (16,) * 5), ("qngd", 3.0, (16,) * 5),
     ("damped-ngd", None, (8,) * 4), ("sqrt-ngd", None, (17, 20, 17)), ("ngd", None, (16, 2, 16))],
)  # fmt: skip
def test_curvature_family_is_the_one_the_rule_resolves(rule, q, widths):
    field_ = vector_field(rule, q=q)
    assert res.rule_family(rule, widths, q=q) == field_.curvature.resolved_method(widths, 1.0 / field_.q)


def test_rule_families():
    w = (16,) * 5
    assert res.rule_family("sgd", w) == "gradient"
    assert res.rule_family("qngd", w, q=float("inf")) == "gradient"
    assert res.rule_family("sqrt-ngd-d", w) == "block"
    assert res.rule_family("bernacchia", w) == "bernacchia"
    assert res.rule_family("sqrt-ngd", w, method="balanced") == "balanced"
    assert res.rule_family("ngd", w) == "dense"  # n_d n_0 = 256 <= DENSE_MAX_SIZE, every power
    assert res.rule_family("sqrt-ngd", w) == "dense"
    assert res.rule_family("ngd", (17, 20, 17)) == "krylov"  # 289 > 256


def test_wide_parameters_and_signals_match_the_mlp():
    widths, n, nt = (7, 12, 9, 3), 5, 5  # train and test rows alike: one compilation of the signals
    mlp = MLP(widths, "tanh", key=jr.PRNGKey(0))
    signals_ = eqx.filter_jit(signals)
    task = synthetic_task(jr.PRNGKey(1), n, widths[0], outputs=widths[-1], test_samples=nt)
    est = wres.estimate_wide_run(widths, samples=n, outputs=3, fisher="bd", steps=2, test_samples=nt)
    copies = wres.WIDE_PARAMETER_COPIES["bd"]
    assert est.breakdown[f"parameters ({mlp.n_params}) x {copies:g} copies"] == pytest.approx(
        8 * mlp.n_params * copies, abs=1
    )
    formed = 0
    for x in (task.x_train, task.x_test):
        sig = signals_(mlp, x)
        formed += sum(h.nbytes for h in sig.hs) + sum(d.nbytes for d in sig.deltas)
    assert est.breakdown["signals on train and test inputs"] == 3 * formed  # formed three times
    grams = eqx.filter_jit(layer_grams)(mlp, signals_(mlp, task.x_train))
    a = n * widths[-1]
    assert [g.shape for g in grams] == [(a, a)] * 3
    assert est.breakdown[f"layer Gram matrices (3 x {a} x {a})"] == 8 * wres.WIDE_LAYERWISE_PER_LAYER * sum(
        g.size for g in grams
    )


# ------------------------------------------------------------------------------------------------
# refusals


def test_width_100000_needs_more_than_any_machine(monkeypatch):
    monkeypatch.setenv("DLNSIM_MEMORY_LIMIT", "16T")
    est = res.estimate_linear_run((100_000,) * 5, saves=600, rule="sqrt-ngd")
    assert est.total_bytes > 100 * 2**40  # one saved state alone is 320 GB
    message = _refusal(est)
    assert "needs about" in message and "16 TiB is available (DLNSIM_MEMORY_LIMIT" in message
    assert "weights x 600 saves" in message and "--width" in message


def test_fifty_million_saves_are_refused(monkeypatch):
    monkeypatch.setenv("DLNSIM_MEMORY_LIMIT", "1T")  # a 1 TiB machine
    est = res.estimate_linear_run((16,) * 5, saves=50_000_000, rule="sqrt-ngd")
    # three copies of 50 million states of 4 x 16 x 16 float64 entries
    assert est.breakdown["weights x 50000000 saves"] == 3 * 50_000_001 * 4 * 256 * 8
    message = _refusal(est)
    assert "--saves" in message and "1 TiB is available" in message


def test_wide_nets_that_cannot_fit_are_refused(monkeypatch):
    monkeypatch.setenv("DLNSIM_MEMORY_LIMIT", "256G")  # a large workstation
    est = wres.estimate_wide_run(
        (32, 100_000, 100_000, 1), samples=16, outputs=1, fisher="bd", steps=10, test_samples=100
    )
    message = _refusal(est, "dlnsim wide")
    assert "parameters (10003500001)" in message and "--width" in message
    # N C x N C sample-space matrices: 20000 samples of the bd Fisher need (3 x 20000)^2 entries
    est = wres.estimate_wide_run(
        (32, 64, 64, 1), samples=20_000, outputs=1, fisher="bd", steps=10, test_samples=100
    )
    assert est.breakdown["coupled layer-wise matrix (60000 x 60000)"] == 8 * 5 * 60_000**2
    assert "--samples" in _refusal(est, "dlnsim wide")


def test_deep_nets_are_refused_for_their_compile_time(monkeypatch):
    monkeypatch.setenv("DLNSIM_MEMORY_LIMIT", "1P")  # memory is not what stops these
    est = res.estimate_linear_run((4,) * 10_001, saves=600, rule="sqrt-ngd-d")
    message = _refusal(est)
    limit = res.max_depth("block", res.TIME_LIMIT_S)
    assert 100 < limit < 10_000
    assert f"5 min fits depth {limit}" in message and "DLNSIM_TIME_LIMIT" in message
    assert "trace and compile 10000 layers" in message and "--depth" in message
    # at the measured limit it passes, one layer beyond it does not
    res.check_resources(res.estimate_linear_run((4,) * (limit + 1), saves=600, rule="sqrt-ngd-d"), what="x")
    with pytest.raises(ValueError):
        res.check_resources(
            res.estimate_linear_run((4,) * (limit + 2), saves=600, rule="sqrt-ngd-d"), what="x"
        )
    monkeypatch.setenv("DLNSIM_TIME_LIMIT", "inf")
    res.check_resources(est, what="this run")


def test_distinct_widths_cost_compile_time(monkeypatch):
    monkeypatch.setenv("DLNSIM_MEMORY_LIMIT", "1P")
    same = res.estimate_linear_run((4,) * 201, saves=2, rule="sgd")
    res.check_resources(same, what="this run")
    distinct = res.estimate_linear_run(tuple(range(2, 203)), saves=2, rule="sgd")
    assert distinct.seconds > 2 * same.seconds
    message = _refusal(distinct)
    assert "200 layer shapes" in message and "if every width differs" in message


def test_refusal_names_both_memory_and_time(monkeypatch):
    monkeypatch.setenv("DLNSIM_MEMORY_LIMIT", "1G")
    message = _refusal(res.estimate_linear_run((4,) * 10_001, saves=600, rule="sgd"))
    assert "is available" in message and "over the 5 min limit" in message


# ------------------------------------------------------------------------------------------------
# ordinary runs pass


@pytest.mark.parametrize("rule", list(RULES))
def test_ordinary_linear_runs_pass(monkeypatch, rule):
    monkeypatch.setenv("DLNSIM_MEMORY_LIMIT", "4G")
    q = 2.0 if rule in ("qngd", "qngd-d") else None
    est = res.estimate_linear_run((16,) * 5, saves=600, rule=rule, q=q, samples=16, test_samples=1000)
    assert 0 < est.total_bytes < GiB
    res.check_resources(est, what="this run")
    sweep = res.estimate_linear_run((16,) * 5, saves=600, rule=rule, q=q, batch=16)
    res.check_resources(sweep, what="this sweep")


def test_ordinary_compare_passes(monkeypatch):
    monkeypatch.setenv("DLNSIM_MEMORY_LIMIT", "4G")
    rules = ["sgd", "ngd", "sqrt-ngd", "ngd-d", "sqrt-ngd-d"]
    est = res.estimate_linear_run((16,) * 5, saves=600, rule=rules, samples=16, test_samples=1000)
    assert "weights x 600 saves x 5 rules" in est.breakdown
    res.check_resources(est, what="this comparison")


@pytest.mark.parametrize("fisher", FISHERS)
def test_ordinary_wide_runs_pass(monkeypatch, fisher):
    monkeypatch.setenv("DLNSIM_MEMORY_LIMIT", "4G")
    est = wres.estimate_wide_run(
        (32, 512, 512, 1), samples=16, outputs=1, fisher=fisher, steps=10, test_samples=100
    )
    assert 0 < est.total_bytes < GiB and est.seconds < 60
    res.check_resources(est, what="dlnsim wide")


# ------------------------------------------------------------------------------------------------
# available memory and limits


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8G", 8 * GiB), ("512M", 512 * 2**20), ("1.5GiB", 3 * GiB // 2), ("4096", 4096), ("2 TB", 2 * 2**40),
     ("1e9", 10**9)],
)  # fmt: skip
def test_memory_limit_override(monkeypatch, text, expected):
    monkeypatch.setenv("DLNSIM_MEMORY_LIMIT", text)
    assert res.available_memory() == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "8X"])
def test_bad_memory_limit_is_one_line(monkeypatch, text):
    monkeypatch.setenv("DLNSIM_MEMORY_LIMIT", text)
    with pytest.raises(ValueError, match="DLNSIM_MEMORY_LIMIT must be") as info:
        res.available_memory()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["soon", "-5", "0", "nan"])
def test_bad_time_limit_is_one_line(monkeypatch, text):
    monkeypatch.setenv("DLNSIM_TIME_LIMIT", text)
    with pytest.raises(ValueError, match="DLNSIM_TIME_LIMIT must be"):
        res.time_limit()


def test_available_memory_without_override():
    avail = res.available_memory()
    try:
        with open("/proc/meminfo") as f:
            total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    except OSError:
        total = None
    assert avail > 0
    if total is not None:
        assert avail <= total


def _write(path, text):
    path.write_text(text)


def test_cgroup_v2_limit_caps_available_memory(monkeypatch, tmp_path):
    _write(tmp_path / "memory.max", "1000000\n")
    _write(tmp_path / "memory.current", "500000\n")
    _write(tmp_path / "memory.stat", "anon 300000\ninactive_file 100000\n")
    monkeypatch.setattr(budget, "_cgroup_dirs", lambda: [("v2", str(tmp_path))])
    assert budget.cgroup_headroom() == 1_000_000 - (500_000 - 100_000)
    assert budget.available_memory() == 600_000


def test_cgroup_without_limit_is_ignored(monkeypatch, tmp_path):
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    v2.mkdir()
    v1.mkdir()
    _write(v2 / "memory.max", "max\n")
    _write(v1 / "memory.limit_in_bytes", "9223372036854771712\n")
    _write(v1 / "memory.usage_in_bytes", "123\n")
    monkeypatch.setattr(budget, "_cgroup_dirs", lambda: [("v2", str(v2)), ("v1", str(v1))])
    assert budget.cgroup_headroom() is None


# ------------------------------------------------------------------------------------------------
# input checks and formatting


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [(dict(widths=(16, 0), saves=600, rule="sgd"), "width"),
     (dict(widths=(16,), saves=600, rule="sgd"), "widths"),
     (dict(widths=(16, 16), saves=1, rule="sgd"), "saves"),
     (dict(widths=(16, 16), saves=600, rule="nope"), "unknown rule"),
     (dict(widths=(16, 16), saves=600, rule="qngd"), "needs q"),
     (dict(widths=(16, 16), saves=600, rule="ngd", method="magic"), "--curvature"),
     (dict(widths=(16, 16), saves=600, rule="sgd", batch=0), "seeds"),
     (dict(widths=(16, 16), saves=600, rule="sgd", solver="euler"), "--solver"),
     (dict(widths=(16, 16), saves=600, rule=[]), "at least one rule")],
)  # fmt: skip
def test_bad_linear_input_is_a_one_line_error(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        res.estimate_linear_run(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [(dict(fisher="nope"), "unknown fisher"), (dict(outputs=2), "outputs C = 2"),
     (dict(samples=0), "samples"), (dict(steps=-1), "steps"), (dict(loss="hinge"), "unknown loss")],
)  # fmt: skip
def test_bad_wide_input_is_a_one_line_error(kwargs, match):
    base = dict(widths=(32, 64, 1), samples=16, outputs=1, fisher="bd", steps=3, test_samples=10)
    with pytest.raises(ValueError, match=match) as info:
        wres.estimate_wide_run(**{**base, **kwargs})
    assert "\n" not in str(info.value)


def test_resolve_widths():
    assert res.resolve_widths(3, 5, None) == (5, 5, 5, 5)
    assert res.resolve_widths(3, 5, "5,3,2") == (5, 3, 2)
    assert res.wide_widths(3, 512, 32, 1) == (32, 512, 512, 1)
    with pytest.raises(ValueError, match="comma-separated"):
        res.resolve_widths(3, 5, "5,x")
    with pytest.raises(ValueError, match="depth"):
        res.resolve_widths(0, 5, None)
    with pytest.raises(ValueError, match="width must be an integer"):
        res.resolve_widths(3, float("nan"), None)
    # absurd depths are refused before a widths tuple is built (10^12 entries would fill memory)
    for call in (lambda: res.resolve_widths(10**12, 4, None), lambda: res.wide_widths(10**12, 4, 4, 1)):
        with pytest.raises(ValueError, match=f"depth must be at most {res.MAX_DEPTH}"):
            call()
    with pytest.raises(ValueError, match="depth must be at most"):
        res.resolve_widths(3, 4, ",".join(["2"] * (res.MAX_DEPTH + 2)))


def test_describe_is_one_line_with_the_largest_parts():
    est = res.estimate_linear_run((16,) * 5, saves=50_000_000, rule="sgd")
    text = est.describe()
    assert "\n" not in text and text.startswith("about ")
    assert "weights x 50000000 saves: 1.12 TiB" in text  # 3 x 50000001 x 4 x 256 x 8 bytes
    assert res.format_bytes(21.3 * GiB) == "21.3 GiB" and res.format_bytes(640 * 2**20) == "640 MiB"
    assert res.format_seconds(90) == "1.5 min" and res.format_seconds(7200) == "2 h"
