"""The Huh 2020 reproductions (curvature-fig1, -fig2, -figS1, -figS2) at --fast size: their key
numbers, thresholds and verdicts (curvature-fig3: test_repro_curvature_generalization.py)."""

import math

import numpy as np
import pytest
from example_scripts import load_example
from repro_helpers import assert_check, reproduce_fast
from typer.testing import CliRunner

from dlnsim import experiments
from dlnsim._repro.curvature_common import p2_half_max_time, p2_map_trajectory
from dlnsim.cli import app

IDS = ("curvature-fig1", "curvature-fig2", "curvature-fig3", "curvature-figS1", "curvature-figS2")
# the verdicts of the full-size runs, as registered
NAMES = {"ngd": "NGD", "sqrt-ngd": "sqrt-NGD", "sgd": "SGD"}
FULL_VERDICTS = {
    "curvature-fig1": "reproduces",
    "curvature-fig2": "reproduces",
    "curvature-figS1": "partly",
    "curvature-figS2": "reproduces",
}


def reproduce(fid, tmp_path):
    return reproduce_fast(fid, tmp_path / fid)[0]


def test_list_shows_the_ids_with_sources_and_verdicts():
    res = CliRunner().invoke(app, ["reproduce", "--list"])
    assert res.exit_code == 0
    lines = {line.split()[0]: line for line in res.output.strip().splitlines()}
    for fid in IDS:
        assert "[Huh 2020, " in lines[fid]
    assert "Fig. S2" in lines["curvature-figS2"] and "Fig. 3" in lines["curvature-fig3"]
    for fid, verdict in FULL_VERDICTS.items():
        assert experiments.experiment(fid).verdict == verdict
        assert verdict in lines[fid]


@pytest.mark.slow  # 25-90 s at --fast on a 2-core CPU; run with -m slow
def test_fig1_phase_portraits(tmp_path):
    rep = reproduce("curvature-fig1", tmp_path)
    assert rep.verdict == "reproduces" and len(rep.claims) == 5
    # the full rules keep sigma_1^2 - sigma_2^2 to integration accuracy, the block rules their eq. 25
    # invariants to rounding; a rule with the wrong invariant would drift by O(1)
    for rule in ("SGD", "NGD", "sqrt-NGD"):
        assert_check(
            rep,
            f"{rule}: full-matrix drift of the eq. 7: sigma_1^2 - sigma_2^2 (relative)",
            1e-7,
            below=1e-8,
            kind="software",
        )
    assert_check(rep, "NGD-d: full-matrix drift of the eq. 25: sigma_1/sigma_2 (relative)", 1e-7, below=1e-12)
    assert_check(
        rep, "sqrt-NGD-d: full-matrix drift of the eq. 25: |s1|^a - |s2|^a (relative)", 1e-7, below=1e-12
    )
    # the paper's claims: NGD and NGD-d synchronised, sqrt rules at speed |sigma_Delta|, NGD-d faster
    # than NGD (footnote 7), SGD's normalised speed not constant
    assert_check(
        rep,
        "NGD vs NGD-d: max |sigma_1 sigma_2| difference at the markers (full matrix)",
        1e-8,
        below=1e-8,
        kind="claim",
    )
    for rule in ("sqrt-NGD", "sqrt-NGD-d"):
        assert_check(
            rep, f"{rule}: max | ||dtheta/dt|| / |sigma_Delta| - 1 | (eqs. 16, 26)", 1e-6, below=1e-12
        )
    assert_check(
        rep, "NGD-d / NGD parameter speed, minimum over the run (footnote 7, >= 1)", 1.0, 1.595, rel=1e-3
    )
    assert_check(
        rep,
        "SGD: max/min of ||dtheta/dt|| / |sigma_Delta| along the run (not constant)",
        1.05,
        1.484,
        rel=1e-3,
    )
    markers = rep.settings["markers"]
    np.testing.assert_allclose(
        markers["NGD"]["map_at_markers"], markers["NGD-d"]["map_at_markers"], atol=1e-8
    )
    # NGD's map follows sigma* + (sigma0 - sigma*) e^-t at the marker times
    expected = 1.0 + (0.25 * 1.3 - 1.0) * np.exp(-np.array(markers["NGD"]["marker_times"]))
    np.testing.assert_allclose(markers["NGD"]["map_at_markers"], expected, atol=1e-8)


def test_p2_closed_form():
    # eq. 21 at p = 2 from x0 = 1/100: the Lambert-W solution starts at sigma0, reaches sigma*/2 at
    # (1/x0 - 2 + ln 99) / sigma*^2 and tends to sigma*; the half-max time scales as sigma*^-2
    assert p2_half_max_time(sigma_star=1.0, sigma0=0.01) == pytest.approx(98.0 + math.log(99.0), rel=1e-14)
    assert p2_half_max_time(sigma_star=2.0, sigma0=0.02) == pytest.approx(
        (98.0 + math.log(99.0)) / 4, rel=1e-14
    )
    t_half = p2_half_max_time(sigma_star=3.0, sigma0=0.03)
    s = p2_map_trajectory(np.array([0.0, t_half, 1e4]), sigma_star=3.0, sigma0=0.03)
    np.testing.assert_allclose(s, [0.03, 1.5, 3.0], rtol=1e-12)
    # sigma' = (sigma* - sigma) sigma^2 by a centred difference
    t, h = t_half * np.linspace(0.5, 1.02, 7), 1e-5
    ds = p2_map_trajectory(t + h, sigma_star=3.0, sigma0=0.03) - p2_map_trajectory(
        t - h, sigma_star=3.0, sigma0=0.03
    )
    s = p2_map_trajectory(t, sigma_star=3.0, sigma0=0.03)
    np.testing.assert_allclose(ds / (2 * h), (3.0 - s) * s**2, rtol=1e-6, atol=1e-9)


def test_fig2_map_dynamics(tmp_path):
    rep = reproduce("curvature-fig2", tmp_path)
    assert rep.verdict == "reproduces" and len(rep.claims) == 4
    cases = rep.settings["cases"]
    assert [c["p"] for c in cases] == [0.0, 0.75, 1.5, 1.75]  # fast: d = 4 cases and SGD d = 8 beside p = 2
    for case in cases:
        label = f"p = {case['p']:g} ({NAMES[case['rule']]}, d = {case['depth']})"
        assert_check(
            rep,
            f"{label}: max |sigma(t) full matrix - eq. 21| / max sigma*",
            1e-6,
            below=1e-6,
            kind="software",
        )
        assert_check(rep, f"{label}: max relative error of half-max times vs half_max_time", 1e-3, below=5e-4)
        assert_check(
            rep, f"{label}: |fitted exponent of t_half vs sigma* - (-p)|", 1e-3, below=2e-4, kind="claim"
        )
        assert case["fitted_exponent"] == pytest.approx(-case["p"], abs=2e-4)
        np.testing.assert_allclose(case["half_max_measured"], case["half_max_theory"], rtol=5e-4)
        # eta~ = eta d^(1-1/q) = 1 in every case, as in the paper
        q = case["q"]
        assert case["eta_per_layer"] * case["depth"] ** (
            1 - (0 if math.isinf(q) else 1 / q)
        ) == pytest.approx(1.0)
    # NGD from sigma0 = 1e-4 sigma*: sigma* - (sigma* - sigma0) e^-t reaches sigma*/2 at ln(2 (1 - 1e-4))
    ngd = next(c for c in cases if c["rule"] == "ngd")
    assert ngd["sigma0_over_sigma_star"] == 1e-4
    # (linear interpolation between saves limits the measured half time to ~2e-5 here)
    np.testing.assert_allclose(ngd["half_max_measured"], math.log(2 * (1 - 1e-4)), rtol=1e-4)
    # p = 2, SGD's d -> inf limit: the Lambert-W closed form against eq. 21 integrated
    name = "p = 2 (d -> inf SGD limit): max |Lambert-W closed form - eq. 21 integrated| / max sigma*"
    c = assert_check(rep, name, 1e-7, below=1e-8, kind="software")
    assert c.kind == "software"
    assert_check(
        rep, "p = 2: max |sigma(t_half)/sigma* - 1/2| of the closed-form half-max times", 1e-10, below=1e-13
    )
    p2 = rep.settings["p2_limit"]
    assert p2["fitted_exponent_closed_form"] == pytest.approx(-2.0, abs=1e-12)
    np.testing.assert_allclose(
        p2["half_max_closed_form"], (98 + math.log(99)) / np.array([9.0, 4.0, 1.0]), rtol=1e-12
    )
    np.testing.assert_allclose(p2["t_half ratio SGD d = 8 / p = 2"], [0.545, 0.4926, 0.4142], atol=1e-3)
    assert rep.findings and "Lambert" in rep.findings[0]


def test_figS1_scaling_laws(tmp_path):
    rep = reproduce("curvature-figS1", tmp_path)
    assert rep.verdict == "partly" and sum(c.passed for c in rep.claims) == 21 and len(rep.claims) == 24
    fits = rep.settings["fits"]
    # sqrt-NGD's update and NGD's loss rate have exponent 0 (S.I.16-17); SGD at d = 4: 3 and 6
    assert abs(fits["sqrt-ngd_d3"]["balanced"][0]) < 1e-6 and abs(fits["ngd_d3"]["balanced"][1]) < 1e-6
    np.testing.assert_allclose(fits["sgd_d4"]["balanced"], [3.0, 6.0], atol=1e-6)
    np.testing.assert_allclose(fits["ngd_d4"]["balanced"], [-3.0, 0.0], atol=1e-6)
    assert_check(
        rep,
        "SGD, d = 4: Xavier (3 seeds), max |fitted - S.I.16/17 exponent|",
        0.05,
        0.00795,
        rel=0.05,
        kind="claim",
    )
    assert_check(rep, "d = 4: NGD-d / NGD parameter update size (Xavier mean, > 1)", 1.0, 21.16, rel=1e-3)
    # sqrt-NGD-d vs sqrt-NGD on Xavier weights: the update sizes match exactly, the loss rates do not
    # (the paper says both match): 0.76-0.94 of sqrt-NGD's rate, given by the layer Gram matrices
    for depth, gap in ((2, 0.1033), (3, 0.1809), (4, 0.171)):
        name = f"d = {depth}: Xavier sqrt-NGD-d / sqrt-NGD"
        assert_check(
            rep, f"{name} update size, max over scales |geo. mean - 1|", 0.05, below=1e-10, kind="claim"
        )
        assert_check(
            rep, f"{name} loss rate, max over scales |geo. mean - 1|", 0.05, gap, rel=1e-3, passed=False
        )
        assert_check(
            rep,
            f"{name} loss rate vs Gram-matrix formula, max rel. error",
            1e-6,
            below=1e-10,
            kind="software",
        )
        assert_check(rep, f"{name} loss rate, max (<= 1, operator concavity)", 1.0 + 1e-9, below=0.95)
        assert_check(
            rep,
            f"d = {depth}: balanced sqrt-NGD-d vs sqrt-NGD loss_rate, max relative difference",
            1e-8,
            below=1e-12,
        )
    ratios = rep.settings["sqrt_block_ratios"]
    assert min(r["loss_rate_min_max"][0] for r in ratios.values()) == pytest.approx(0.762, abs=2e-3)
    assert max(r["loss_rate_min_max"][1] for r in ratios.values()) == pytest.approx(0.944, abs=2e-3)


@pytest.mark.slow  # 25-85 s at --fast on a 2-core CPU; run with -m slow
def test_figS2_conservation(tmp_path):
    check_figS2(reproduce("curvature-figS2", tmp_path))


def check_figS2(rep):
    """Fig. S2's numbers at --fast size (seed 0): the conserved quantities and imbalances."""
    assert rep.verdict == "reproduces" and len(rep.claims) == 4
    summary = rep.settings["summary"]
    for rule in ("SGD", "NGD", "sqrt-NGD"):
        assert_check(
            rep, f"{rule}: max_t max_i ||C_i(t) - C_i(0)||_F (conserved)", 1e-7, below=1e-8, kind="software"
        )
    assert summary["ngd-d"]["max_drift"] > 1e6 * summary["ngd"]["max_drift"]
    assert_check(
        rep,
        "NGD-d: max_t max_i ||C_i(t) - C_i(0)||_F / max_i ||C_i(0)||_F (broken, > 1)",
        1.0,
        20.88,
        rel=1e-3,
        kind="claim",
    )
    assert_check(
        rep, "final imbalance: NGD-d / NGD (NGD-d unbalances the layers, > 10)", 10.0, 16.16, rel=1e-3
    )
    assert_check(
        rep, "sqrt-NGD-d: max_t max_i ||C_i(t) - C_i(0)||_F (also broken, > 1e-5)", 1e-5, 0.3421, rel=1e-3
    )
    assert_check(
        rep, "sqrt-NGD-d: final / initial imbalance (weights stay balanced, <= 1)", 1.0, 0.2101, rel=1e-3
    )


def test_example_script_runs_one_figure(tmp_path):
    module = load_example("reproduce_curvature")
    reps = module.main(tmp_path, fast=True, ids=["curvature-figS2"])
    assert reps["curvature-figS2"].passed
    check_figS2(reps["curvature-figS2"])  # the same numbers as `dlnsim reproduce` gives
    assert (tmp_path / "curvature-figS2" / "figure.png").exists()
