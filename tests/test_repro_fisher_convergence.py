"""Karakida & Osawa 2020, Figs. 1(a), 1(b), S.1 at --fast size: the files, the checks' thresholds and
values, the claims and the verdicts."""

import math

import pytest
from repro_helpers import reproduce_fast

from dlnsim import experiments
from dlnsim._repro.fisher_convergence_tri import _pinv_alpha

REL = 1e-3  # float64, deterministic for a seed: a few steps of training on one machine's BLAS


def _run(id, tmp_path_factory):
    rep, _ = reproduce_fast(id, tmp_path_factory.mktemp(id) / "out")
    assert experiments.EXPERIMENTS[id].source.startswith("Karakida & Osawa 2020")
    return rep


@pytest.fixture(scope="module")
def fig1a(tmp_path_factory):
    return _run("fisher-fig1a", tmp_path_factory)


@pytest.fixture(scope="module")
def fig1b(tmp_path_factory):
    return _run("fisher-fig1b", tmp_path_factory)


@pytest.fixture(scope="module")
def figS1(tmp_path_factory):
    return _run("fisher-figS1", tmp_path_factory)


def _is(c, value, threshold, relation, kind, rel=REL):
    assert (c.threshold, c.relation, c.kind) == (pytest.approx(threshold), relation, kind), str(c)
    assert c.value == pytest.approx(value, rel=rel), str(c)


@pytest.mark.slow
def test_fig1a(fig1a):
    rep, tol = fig1a, 3 / math.sqrt(1024)
    _is(rep["BD alpha measured - L (widest net)"], 6e-13, 1e-8, "<=", "software", rel=10)
    # the paper's eta = 1/L: one-step convergence holds only up to ~3.4/sqrt(M), above the 3/sqrt(M) fixed
    # beforehand
    one = rep["eta = 1/L: median |f_1 - y| / |f_0 - y| after one step at M=1024 (theory: 0)"]
    _is(one, 0.1073, tol, "<=", "claim")
    assert not one.passed
    _is(rep["eta = 1/L: one-step residual drop M=64 -> M=1024"], 3.603, 2.0, ">=", "claim")
    _is(rep["eta = 0.5/L: max deviation from (1 - eta L)^t at M=1024"], 0.04281, tol, "<=", "claim")
    _is(rep["eta = 0.25/L: max deviation from (1 - eta L)^t at M=1024"], 0.01578, tol, "<=", "claim")
    _is(
        rep["trained GD at 2/(lmin+lmax) against the linearised NTK model, M=1024"],
        0.008405,
        tol,
        "<=",
        "claim",
    )
    beat = rep["BD-NGD (eta = 0.25/L) / GD at its best rate (trained): loss after 4 steps"]
    _is(beat, 0.431, 1.0, "<", "claim")
    assert beat.passed
    # the GD baseline is trained on a grid; its best rate beats the paper's 2/(lmin+lmax)
    assert rep.arrays["gd_losses"][:, -1].min() < rep.arrays["gd_losses"][-1, -1]
    assert rep.verdict == "partly"


@pytest.mark.slow
def test_fig1b(fig1b):
    rep = fig1b
    for depth, ratio in ((3, 0.7011), (4, 0.04517)):
        c = rep[
            f"L={depth}: dynamics approach the rho -> 0 (NTK) dynamics as rho decreases: deviation at "
            "rho=1e-08 / at rho=0.01"
        ]
        _is(c, ratio, 1.0, "<", "claim")
    for depth, dev in ((3, 0.09382), (4, 0.1014), (5, 0.07302)):
        c = rep[f"L={depth}: dlnsim's NGD: deviation from (1 - eta alpha)^t at rho=1e-08"]
        _is(c, dev, 5 / math.sqrt(256), "<=", "software")
    ref = rep["paper's non-symmetric LU form in float64 vs dlnsim's NGD: max deviation over L and rho"]
    assert ref.threshold == 1e-6 and ref.kind == "software" and ref.value < 1e-7
    ours = rep["L=5: training explodes as rho -> 0 (dlnsim, float64): max_t L_t / L_0 at rho=1e-08"]
    _is(ours, 0.219, 1.0, ">", "claim")
    assert not ours.passed  # dlnsim's float64 NGD converges: the paper's explosion does not reproduce
    paper = rep[
        "L=5: training explodes as rho -> 0 (the paper's computation: float32 LU of S.73): "
        "max_t L_t / L_0 at rho=1e-08"
    ]
    assert (paper.threshold, paper.relation, paper.kind) == (1.0, ">", "claim")
    assert paper.value > 10  # float32 round-off: the size of the blow-up is not reproducible, its presence is
    assert rep.verdict == "partly"


def test_figS1(figS1):
    rep, tol = figS1, 3 / math.sqrt(1024)
    one_step = {"tanh": 0.1043, "relu": 0.1287, "shifted-relu, s = 1": 0.1162}
    ratios = {"tanh": 0.00785, "relu": 0.02559, "shifted-relu, s = 1": 0.01354}
    variant = {"tanh": 0.02971, "relu": 0.04882, "shifted-relu, s = 1": 0.04025}
    for name in one_step:
        c = rep[f"{name}: eta = 1/alpha: median |f_1 - y| / |f_0 - y| after one step (theory: 0)"]
        _is(c, one_step[name], tol, "<=", "claim")
        _is(
            rep[f"{name}: max |alpha measured / (sum_l gamma_l M_l + 1) - 1|"],
            ratios[name],
            0.05,
            "<=",
            "claim",
        )
        c = rep[f"{name}: variant eta = 0.5/alpha: median deviation from (1 - eta alpha)^t"]
        _is(c, variant[name], tol, "<=", "claim")
    assert rep.verdict == "partly"


def test_tridiagonal_limit_alpha():
    # 1^T Sigma^+ 1: s for L = 3s, s + 1 for L = 3s + 1 (Lemma 4.3); L = 3s + 2 is singular with 1 orthogonal
    # to its null vector (1, -1, 0, 1, -1, ...), so the pseudo-inverse value is finite (2 for L = 5)
    assert _pinv_alpha(3)[0] == pytest.approx(1.0) and _pinv_alpha(4)[0] == pytest.approx(2.0)
    alpha, eig, overlap = _pinv_alpha(5)
    assert alpha == pytest.approx(2.0) and eig < 1e-12 and overlap < 1e-12
    assert _pinv_alpha(6)[1] > 0.1
