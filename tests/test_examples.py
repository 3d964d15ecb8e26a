"""Smoke tests: every example and benchmark script runs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from example_scripts import load_example

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart(tmp_path):
    results = load_example("quickstart").main(tmp_path)
    # NGD: every mode reaches half strength at t = ln 2 (map dynamics dW/dt = -(W - W*))
    np.testing.assert_allclose(results["ngd"]["half"], np.log(2), rtol=1e-3)
    # sqrt-NGD and SGD separate the modes in time, strongest first
    for rule in ("sqrt-ngd", "sgd"):
        assert np.all(np.diff(results[rule]["half"]) > 0)
    assert (tmp_path / "quickstart_modes.png").exists()


def test_vector_field_benchmark_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "vector_fields.py"), "--quick"],
        capture_output=True, text=True, check=True, timeout=600,
    ).stdout  # fmt: skip
    assert "sqrt-ngd" in out and "dense/ours" in out


def test_curvature_theory(tmp_path):
    res = load_example("curvature_theory").main(tmp_path)
    assert res["deviation"] < 1e-6
    assert abs(res["fits"]["sqrt-ngd"][0]) < 1e-6 and abs(res["fits"]["ngd"][1]) < 1e-6
    assert (tmp_path / "map_dynamics.png").exists()


def run_script(*args):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=True, timeout=600
    ).stdout


def test_trajectory_benchmark_runs():
    out = run_script(str(ROOT / "benchmarks" / "trajectory.py"), "--n", "6", "--depth", "3")
    assert "stopped early: True" in out and "rel. diff" in out


def test_sweep_benchmark_runs():
    out = run_script(str(ROOT / "benchmarks" / "sweep.py"), "--seeds", "2", "--n", "3", "--depth", "2",
                     "--t1", "1", "--loop-elements", "2")  # fmt: skip
    for path in ("Python loop", "vmapped, 1 device", "vmapped, 2 host devices"):
        assert path in out and "element-steps/s" in out


def test_wide_ngd(tmp_path):
    # at M = 128 two digits can share a relu pattern, which makes a K-FAC B factor singular
    res = load_example("wide_ngd").main(tmp_path, width=256, samples=16, steps=2)
    for name in ("exact", "bd", "tri-diagonal", "kfac"):
        assert abs(res[name]["alpha_measured"] - res[name]["alpha_theory"]) < 1e-6
        assert abs(res[name]["isotropy_condition_number"] - 1) < 1e-6
    assert res["kfac"]["alpha_theory"] == 16 * 3
    assert res["diagonal"]["isotropy_condition_number"] > 2 and res["diagonal"]["alpha_theory"] is None
    assert (tmp_path / "wide_ngd.png").exists()


def test_compile_flags_benchmark_runs():
    out = run_script(str(ROOT / "benchmarks" / "compile_flags.py"), "--quick")
    assert "default" in out and "FAST (the suite's)" in out and "compile s" in out
