"""Karakida & Osawa 2020, Figs. 2, 3, S.2 at --fast size: the files, the key numbers (thresholds and
values of each check and claim), the verdicts, and that the same seed gives the same numbers."""

import numpy as np
import pytest
from example_scripts import load_example
from repro_helpers import reproduce_fast

from dlnsim import experiments
from dlnsim._repro.fisher_kernels import _alpha_s156

IDS = ("fisher-fig2", "fisher-fig3", "fisher-figS2")
# fisher-fig3 takes 30-70 s at --fast on a 2-core CPU: in the slow run (pytest -m slow)
SLOW = ("fisher-fig3",)


def _reproduce(id, tmp_path_factory):
    out = tmp_path_factory.mktemp(id) / id
    return reproduce_fast(id, out)[0], out


@pytest.fixture(scope="module")
def fig2(tmp_path_factory):
    return _reproduce("fisher-fig2", tmp_path_factory)


@pytest.fixture(scope="module")
def fig3(tmp_path_factory):
    return _reproduce("fisher-fig3", tmp_path_factory)


@pytest.fixture(scope="module")
def figS2(tmp_path_factory):
    return _reproduce("fisher-figS2", tmp_path_factory)


_FIXTURE = {"fisher-fig2": "fig2", "fisher-fig3": "fig3", "fisher-figS2": "figS2"}


@pytest.mark.parametrize("id", [pytest.param(i, marks=pytest.mark.slow) if i in SLOW else i for i in IDS])
def test_fast_reproduction_writes_its_files(id, request):
    rep, _ = request.getfixturevalue(_FIXTURE[id])
    assert len(rep.checks) >= 4
    assert experiments.EXPERIMENTS[id].source.startswith("Karakida & Osawa 2020")
    assert experiments.EXPERIMENTS[id].verdict == "reproduces"  # the full-size verdict


def _key_check(rep, start):
    """The one check whose name starts with ``start``."""
    (c,) = [c for c in rep.checks if c.name.startswith(start)]
    return c


def test_fig2_key_numbers(fig2):
    rep, _ = fig2
    assert rep.verdict == "reproduces"
    iso = _key_check(rep, "analytic Theta_bar(x, x) = alpha I")
    assert iso.kind == "software" and iso.threshold == 1e-8 and iso.value < 1e-10
    alpha = _key_check(rep, "analytic alpha = 1^T Sigma^-1 1")
    assert alpha.threshold == 1e-8 and alpha.value < 1e-10
    slopes = [c for c in rep.checks if c.name.startswith("finite-width K-FAC Theta_bar")]
    assert [c.threshold for c in slopes] == [-0.35, -0.35] and all(c.relation == "<=" for c in slopes)
    assert [c.value for c in slopes] == pytest.approx([-0.530, -0.551], abs=2e-3)
    # the paper's claims at its setting (sigma_b = 0): the four Fishers comparable within 0.05
    expected = {
        "digits 0 vs 7: exact/BD/tri-diagonal comparable": 0.0,
        "digits 0 vs 7: K-FAC comparable": 0.00667,
        "digits 3 vs 8: exact/BD/tri-diagonal comparable": 0.00133,
        "digits 3 vs 8: K-FAC comparable": 0.02467,
    }
    for start, value in expected.items():
        c = _key_check(rep, start)
        assert c.kind == "claim" and c.threshold == 0.05 and c.relation == "<="
        assert c.basis.startswith("paper:")
        assert c.value == pytest.approx(value, abs=2e-3)
    # the sigma_b^2 = 0.5 variant: K-FAC's per-draw gap and its cause (not claims)
    summary = rep.settings["summary"]["variant: sigma_b^2 = 0.5 (bias)"]
    assert summary["0 vs 7"]["kfac_gap"] == pytest.approx(0.256, abs=0.01)
    assert summary["3 vs 8"]["kfac_gap"] == pytest.approx(0.306, abs=0.01)
    const = rep.arrays["constant_kept"]  # (setting, pair, fisher, size)
    assert np.nanmean(const[1, :, 3]) == pytest.approx(0.641, abs=0.005)
    assert np.nanmean(const[1, :, :3]) == pytest.approx(0.998, abs=0.002)
    assert np.nanmean(const[0, :, 3]) == pytest.approx(0.609, abs=0.005)
    assert rep.arrays["f0_rms"] == pytest.approx([0.168, 1.165], abs=0.005)
    # the finite-width K-FAC networks (2 inits at M = 1024): trained accuracy against the predictor
    assert rep.arrays["kfac_theta_bar_deviation"].ravel() == pytest.approx(
        [0.433, 0.208, 0.617, 0.287], abs=2e-3
    )
    assert rep.arrays["trained_accuracy"].mean(axis=1) == pytest.approx([0.927, 0.870], abs=0.02)
    assert rep.arrays["predicted_accuracy"].mean(axis=1) == pytest.approx([0.933, 0.757], abs=0.02)
    assert len(rep.findings) == 4


@pytest.mark.slow
def test_fig3_key_numbers(fig3):
    rep, _ = fig3
    assert rep.verdict == "reproduces"
    bd = _key_check(rep, "BD: condition number - 1 at M=256")
    assert bd.kind == "software" and bd.threshold == 1e-6 and bd.value < 1e-7
    expected = [  # (name start, threshold, relation, value)
        ("unit-wise: condition number - 1 at", 0.15, "<=", 0.0760),
        ("unit-wise: condition number - 1 shrinks", 4**0.25, ">=", 2.333),
        ("NTK: condition number", 20.0, ">=", 2634.0),
        ("diagonal: smallest condition number", 3.0, ">=", 53.75),
        ("quasi-diagonal: smallest condition number", 3.0, ">=", 9.656),
        ("entry-wise better conditioned than NTK: max ratio diagonal", 1.0, "<", 0.02736),
        ("entry-wise better conditioned than NTK: max ratio quasi-diagonal", 1.0, "<", 0.003666),
    ]
    for start, threshold, relation, value in expected:
        c = _key_check(rep, start)
        assert c.kind == "claim" and c.threshold == pytest.approx(threshold) and c.relation == relation
        assert c.value == pytest.approx(value, rel=5e-3)


def test_figS2_key_numbers(figS2):
    rep, _ = figS2
    assert rep.verdict == "reproduces"
    bound = 3.0 / np.sqrt(1024)
    err = _key_check(rep, "max |alpha/M numeric - S.156|")
    assert (
        err.kind == "claim" and err.threshold == pytest.approx(bound) and err.basis.startswith("finite-size")
    )
    assert err.value == pytest.approx(0.01073, abs=2e-4)
    relu = _key_check(rep, "s = 0 (relu)")
    assert relu.threshold == pytest.approx(bound) and relu.value == pytest.approx(0.003956, abs=2e-4)
    rise = _key_check(rep, "alpha/M rises with s")
    assert rise.threshold == 0.9 and rise.relation == ">=" and rise.value == pytest.approx(0.989, abs=2e-3)
    same = _key_check(rep, "S.156 here = dlnsim.wide.alpha_theory")
    assert same.kind == "software" and same.threshold == 1e-12 and same.value <= 1e-12


def test_s156_relu_and_large_shift():
    q = [0.53, 1.0, 1.0]
    # relu (s = 0): half of each hidden layer is active; s -> inf: all of them (per M, plus 1/M output)
    assert _alpha_s156(0.0, 100, q) == pytest.approx(1.0 + 0.01)
    assert _alpha_s156(50.0, 100, q) == pytest.approx(2.0 + 0.01)


def test_example_script_gives_the_same_numbers(fig2, tmp_path):
    """The example script runs fisher-fig2 again: the same seed gives the same numbers."""
    module = load_example("reproduce_fisher")
    res = module.main(tmp_path, fast=True, ids=["fisher-fig2"])
    rep, first = res["fisher-fig2"], fig2[0]
    assert rep.passed and (tmp_path / "fisher-fig2" / "figure.png").exists()
    assert [c.value for c in rep.checks] == [c.value for c in first.checks]
    assert sorted(rep.arrays) == sorted(first.arrays)
    for k in first.arrays:
        np.testing.assert_array_equal(rep.arrays[k], first.arrays[k])
