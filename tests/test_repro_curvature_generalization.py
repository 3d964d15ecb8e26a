"""The Huh 2020 Fig. 3 reproduction (curvature-fig3) at --fast size: the paper's claims and the
software checks, with their thresholds and measured values."""

import math

import numpy as np
import pytest
from repro_helpers import reproduce_fast

from dlnsim import experiments


def reproduce(fid, tmp_path):
    return reproduce_fast(fid, tmp_path / fid)[0]


def assert_fixed(rep, name, kind, relation, threshold, value, rel):
    c = rep[name]
    assert (c.kind, c.relation, c.threshold) == (kind, relation, threshold), c
    assert c.value == pytest.approx(value, rel=rel), c


@pytest.mark.slow  # 90 s of CPU at --fast (160 s wall on a loaded 2-core machine); run with -m slow
def test_fig3_student_teacher(tmp_path):
    rep = reproduce("curvature-fig3", tmp_path)
    s = rep.settings
    assert s["width"] == s["samples"] == 8 and s["snr"] == 10.0 and s["depth"] == 4
    # the paper's claims (thresholds fixed before the white-input runs); values at seed 0, N = 8
    assert_fixed(rep, "comparable best test loss: |min test sqrt-NGD / min test SGD - 1|",
                 "claim", "<=", 0.1, 0.0398, 5e-2)  # fmt: skip
    assert_fixed(rep, "comparable best test loss: |min test sqrt-NGD-d / min test SGD - 1|",
                 "claim", "<=", 0.1, 0.0311, 5e-2)  # fmt: skip
    for r in ("NGD", "NGD-d"):
        assert_fixed(rep, f"worse best test loss: min test {r} / min(SGD, sqrt-NGD)",
                     "claim", ">", 1.1, 1.199, 1e-2)  # fmt: skip
    c = rep["same overfitted solution: max over rules ||W(T) - W_ls||_F / ||W_ls||_F"]
    assert (c.kind, c.threshold) == ("claim", 1e-2) and 5e-4 < c.value < 1.1e-3
    c = rep["same final test loss: max over rules |test(W(T)) / test(W_ls) - 1|"]
    assert (c.kind, c.threshold) == ("claim", 1e-2) and c.value < 3e-3
    # 2859 / 1281 = 2.2317, measured 2026-12-03. The commit that added this test (3224049) also gives
    # 2.2317 when run today, not the 2.149 it recorded here; the threshold (> 1) is unchanged
    assert_fixed(rep, "SGD: noise after signal: t_half(first noise mode) / t_half(last signal mode)",
                 "claim", ">", 1.0, 2.232, 2e-2)  # fmt: skip
    assert_fixed(rep, "sqrt-NGD: noise after signal: t_half(first noise mode) / t_half(last signal mode)",
                 "claim", ">", 1.0, 2.488, 2e-2)  # fmt: skip
    assert_fixed(rep, "early stopping: t(min test) sqrt-NGD / SGD", "claim", "<", 0.1, 8.9e-4, 5e-2)
    assert rep.verdict == "reproduces"
    assert experiments.experiment("curvature-fig3").verdict == "partly"  # the full-size run
    # the numbers behind them
    tmin = s["test_loss_min"]
    assert tmin["sgd"] == pytest.approx(0.3293, rel=1e-2)
    assert tmin["sqrt-ngd"] == pytest.approx(0.3162, rel=1e-2)
    assert tmin["ngd"] == pytest.approx(0.3790, rel=1e-2)
    assert s["test_loss_least_squares"] == pytest.approx(0.40488, rel=1e-4)
    assert s["test_loss_teacher"] == pytest.approx(0.18559, rel=1e-4)
    # SGD converges to the overfitted solution with white inputs (no t_max substitute)
    assert s["stopped_early"]["sgd"] is True
    assert s["t_final"]["sgd"] == pytest.approx(5.87e4, rel=2e-2)
    assert s["train_excess_final"]["sgd"] <= 1.01e-6
    # NGD learns every mode at t = ln 2 (its map follows W_ls + e^-t (W0 - W_ls))
    half = np.asarray(s["half_times"]["ngd"], dtype=float)
    np.testing.assert_allclose(half[np.isfinite(half)], math.log(2), rtol=1e-3)
    c = rep["NGD: all 7 modes with s_k >= 1% s_1 at t = ln 2: max |t_half / ln 2 - 1|"]
    assert (c.kind, c.threshold) == ("software", 0.05) and c.value < 1e-3


def test_fig3_computation_at_width_4_passes_its_software_checks():
    """A default-run version of the slow test: N = P = 4, SGD cut at t = 5e3 (it converges near 4e4)."""
    from dlnsim._repro.curvature_generalization import RULES, compute_fig3, fig3_checks

    t_max = {r: (5e3 if r == "sgd" else 1e5) for r in RULES}
    res = compute_fig3(width=4, seed=0, t_max=t_max, saves=60)
    software = [c for c in fig3_checks(res) if c.kind == "software"]
    assert len(software) == 8 and all(c.passed for c in software), [str(c) for c in software]
    # (among them: NGD's modes all at t = ln 2, to the 60-save grid's 5 %); converged rules stop at 1e-6
    for r in ("ngd", "sqrt-ngd", "ngd-d", "sqrt-ngd-d"):
        assert res.trajs[r].stopped_early and not res.stalled[r]
        assert res.excess[r] <= 1.01e-6
    # SGD reached the determinant saddle's loss by t = 1e3 and is still there at 5e3 (it crosses by 4e4)
    assert res.trajs["sgd"].times[-1] == 5e3 and not res.trajs["sgd"].stopped_early
    assert res.stalled["sgd"] and res.saddle_excess == pytest.approx(3.658e-3, rel=1e-3)
