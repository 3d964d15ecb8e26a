"""The Huh 2020 Fig. 3 reproduction (curvature-fig3) at --fast size."""

import json
import math

import numpy as np
import pytest

from dlnsim import experiments

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


@pytest.mark.slow  # 25-75 s at --fast on a 2-core CPU; run with -m slow
def test_fig3_student_teacher(tmp_path):
    rep = reproduce("curvature-fig3", tmp_path)
    s = rep.settings
    assert s["test_loss_min"]["sqrt-ngd"] < s["test_loss_min"]["ngd"]
    # NGD learns every mode at t = ln 2 (its map follows W* + e^-t (W0 - W*))
    half = np.asarray(s["half_times"]["ngd"])
    np.testing.assert_allclose(half[np.isfinite(half)], math.log(2), rtol=2e-2)
