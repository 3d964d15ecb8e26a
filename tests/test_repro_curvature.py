"""The Huh 2020 reproductions (curvature-fig1, -fig2, -fig3, -figS1, -figS2) at --fast size."""

import json
import math

import numpy as np
import pytest
from example_scripts import load_example
from typer.testing import CliRunner

from dlnsim import experiments
from dlnsim.cli import app

IDS = ("curvature-fig1", "curvature-fig2", "curvature-fig3", "curvature-figS1", "curvature-figS2")


def reproduce(fid, tmp_path):
    rep = experiments.reproduce(fid, fast=True, seed=0, out=tmp_path / fid)
    failed = [str(c) for c in rep.failed]
    assert rep.passed, failed
    assert sorted(p.name for p in (tmp_path / fid).iterdir()) == [
        ".dlnsim-output.json", "data.npz", "figure.pdf", "figure.png", "metrics.json",
    ]  # fmt: skip
    m = json.loads((tmp_path / fid / "metrics.json").read_text())
    assert m["passed"] is True and m["fast"] is True and len(m["checks"]) == len(rep.checks)
    return rep


def values(rep, fragment):
    found = [c for c in rep.checks if fragment in c.name]
    assert found, fragment
    return [c.value for c in found]


def test_list_shows_the_five_ids_with_sources():
    res = CliRunner().invoke(app, ["reproduce", "--list"])
    assert res.exit_code == 0
    lines = {line.split()[0]: line for line in res.output.strip().splitlines()}
    for fid in IDS:
        assert "[Huh 2020, " in lines[fid]
    assert "Fig. S2" in lines["curvature-figS2"] and "Fig. 3" in lines["curvature-fig3"]


@pytest.mark.slow  # 25-75 s at --fast on a 2-core CPU; run with -m slow
def test_fig1_phase_portraits(tmp_path):
    rep = reproduce("curvature-fig1", tmp_path)
    # the full rules keep sigma_1^2 - sigma_2^2 to integration accuracy, the block rules their eq. 25
    # invariants to rounding; a rule with the wrong invariant would drift by O(1)
    assert max(values(rep, "full-matrix drift")) < 1e-7
    assert max(values(rep, "NGD-d: full-matrix drift") + values(rep, "sqrt-NGD-d: full-matrix drift")) < 1e-12
    markers = rep.settings["markers"]
    np.testing.assert_allclose(
        markers["NGD"]["map_at_markers"], markers["NGD-d"]["map_at_markers"], atol=1e-8
    )
    # NGD's map follows sigma* + (sigma0 - sigma*) e^-t at the marker times
    expected = 1.0 + (0.25 * 1.3 - 1.0) * np.exp(-np.array(markers["NGD"]["marker_times"]))
    np.testing.assert_allclose(markers["NGD"]["map_at_markers"], expected, atol=1e-8)


def test_fig2_map_dynamics(tmp_path):
    rep = reproduce("curvature-fig2", tmp_path)
    for case in rep.settings["cases"]:
        assert case["fitted_exponent"] == pytest.approx(-case["p"], abs=1e-3)
        np.testing.assert_allclose(case["half_max_measured"], case["half_max_theory"], rtol=1e-3)
    # NGD from sigma0 = 1e-4 sigma*: sigma* - (sigma* - sigma0) e^-t reaches sigma*/2 at ln(2 (1 - 1e-4))
    ngd = next(c for c in rep.settings["cases"] if c["rule"] == "ngd")
    assert ngd["sigma0_over_sigma_star"] == 1e-4
    # (linear interpolation between saves limits the measured half time to ~2e-5 here)
    np.testing.assert_allclose(ngd["half_max_measured"], math.log(2 * (1 - 1e-4)), rtol=1e-4)


def test_figS1_scaling_laws(tmp_path):
    rep = reproduce("curvature-figS1", tmp_path)
    fits = rep.settings["fits"]
    # sqrt-NGD's update and NGD's loss rate have exponent 0 (S.I.16-17); SGD at d = 4: 3 and 6
    assert abs(fits["sqrt-ngd_d3"]["balanced"][0]) < 1e-6 and abs(fits["ngd_d3"]["balanced"][1]) < 1e-6
    np.testing.assert_allclose(fits["sgd_d4"]["balanced"], [3.0, 6.0], atol=1e-6)
    np.testing.assert_allclose(fits["ngd_d4"]["balanced"], [-3.0, 0.0], atol=1e-6)


@pytest.mark.slow  # 25-75 s at --fast on a 2-core CPU; run with -m slow
def test_figS2_conservation(tmp_path):
    rep = reproduce("curvature-figS2", tmp_path)
    summary = rep.settings["summary"]
    for rule in ("sgd", "ngd", "sqrt-ngd"):
        assert summary[rule]["max_drift"] < 1e-7
    assert summary["ngd-d"]["max_drift"] > 1e6 * summary["ngd"]["max_drift"]


def test_example_script_runs_one_figure(tmp_path):
    module = load_example("reproduce_curvature")
    reps = module.main(tmp_path, fast=True, ids=["curvature-figS1"])
    assert reps["curvature-figS1"].passed
    assert (tmp_path / "curvature-figS1" / "figure.png").exists()
