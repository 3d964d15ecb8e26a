"""`dlnsim wide`: outputs, theory figures and bad input."""

import json

import jax.random as jr
import numpy as np
import pytest
from typer.testing import CliRunner

from dlnsim import wide
from dlnsim.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["wide", *[str(a) for a in args]])


def test_wide_bd_writes_summary_and_plot(tmp_path):
    out = tmp_path / "bd"
    res = invoke("--fisher", "bd", "--width", 128, "--samples", 6, "--input-dim", 8, "--steps", 3,
                 "--test-samples", 10, "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    for key in (
        "fisher", "alpha_theory", "alpha_measured", "isotropy_condition_number", "train_loss", "theory_loss",
        "max_deviation", "test_loss", "test_loss_theory", "test_accuracy_final", "gd_ntk_eigenvalues",
        "gd_theory_loss", "learning_rate",
    ):  # fmt: skip
        assert key in s
    assert s["fisher"] == "bd" and s["alpha_theory"] == 3.0
    assert abs(s["alpha_measured"] - 3.0) < 1e-6 and abs(s["isotropy_condition_number"] - 1) < 1e-6
    assert s["learning_rate"] == pytest.approx(1 / 3)  # theory-optimal default
    assert len(s["train_loss"]) == len(s["theory_loss"]) == 4
    assert s["theory_loss"][1] == 0.0 and s["train_loss"][1] < 1e-2 * s["train_loss"][0]
    assert s["max_deviation"] < 0.2
    curves = np.load(out / "curves.npz")
    np.testing.assert_allclose(curves["train_loss"], s["train_loss"])
    assert (out / "loss.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bd"]  # atomic: no temporary leftovers
    assert "alpha theory 3.0" in res.output


def test_wide_kfac_forster(tmp_path):
    """M0 = 8 < N = 24: K-FAC is isotropic after the Forster transform, alpha = N(L-1) + M0 (S.111)."""
    out = tmp_path / "kfac"
    res = invoke("--fisher", "kfac", "--samples", 24, "--input-dim", 8, "--width", 64, "--no-bias",
                 "--forster", "--steps", 2, "--test-samples", 20, "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["alpha_theory"] == 24 * 2 + 8
    assert abs(s["alpha_measured"] - s["alpha_theory"]) < 1e-6
    assert abs(s["isotropy_condition_number"] - 1) < 1e-6
    assert s["test_accuracy_final"] is not None and "Forster" in s["task"]


def test_wide_tri_diagonal_singular_depth_exits_2(tmp_path):
    res = invoke("--fisher", "tri-diagonal", "--depth", 5, "--width", 16, "--out", tmp_path / "t")
    assert res.exit_code == 2
    lines = [ln for ln in res.output.strip().splitlines() if ln]
    assert len(lines) == 1 and "Lemma 4.3" in lines[0] and "--damping" in lines[0]
    assert not (tmp_path / "t").exists()
    res = invoke("--fisher", "tri-diagonal", "--depth", 5, "--width", 32, "--samples", 4, "--input-dim", 6,
                 "--rho", 1e-6, "--steps", 1, "--lr", 0.1, "--test-samples", 4,
                 "--out", tmp_path / "t")  # fmt: skip
    assert res.exit_code == 0, res.output


def test_wide_cross_entropy_and_own_data(tmp_path):
    out = tmp_path / "ce"
    res = invoke("--fisher", "bd", "--loss", "cross-entropy", "--dataset", "digits", "--classes", "0,1,2",
                 "--samples", 6, "--width", 64, "--steps", 2, "--test-samples", 10,
                 "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["loss"] == "cross-entropy" and s["train_loss"][-1] < s["train_loss"][0]
    assert s["learning_rate"] == pytest.approx(0.1 / 3)
    assert s["theory_loss"][-1] < s["theory_loss"][0]  # S.164-S.167 function-space steps
    data = tmp_path / "mine.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(12, 5)), y=rng.normal(size=12))
    res = invoke("--fisher", "exact", "--data", data, "--width", 32, "--steps", 1, "--out", tmp_path / "own")
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "own" / "summary.json").read_text())
    assert s["samples"] == 9 and abs(s["alpha_measured"] - 1) < 1e-6


@pytest.mark.parametrize(
    "args,needle",
    [
        (("--fisher", "full"), "unknown fisher"),
        (("--depth", 0), "depth"),
        (("--activation", "gelu"), "unknown activation"),
        (("--dataset", "mnist"), "unknown dataset"),
        (("--fisher", "bd", "--forster"), "kfac only"),
        (("--loss", "hinge"), "unknown loss"),
        (("--damping", -1), "damping"),
        (("--lr", 0), "lr"),
        (("--dataset", "digits", "--input-dim", 10), "input-dim"),
        (("--dataset", "digits", "--classes", "0,x"), "--classes"),
        (("--loss", "cross-entropy"), "one-hot"),
        (("--fisher", "kfac", "--loss", "cross-entropy", "--outputs", 2), "layer-wise only"),
        (("--activation", "relu", "--shift", 1), "shifted-relu"),
        (("--fisher", "kfac", "--forster", "--dataset", "digits"), "N > M0"),
    ],
)
def test_wide_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    res = invoke(*args, "--width", 8, "--samples", 4, "--out", tmp_path / "x")
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], res.output
    assert not (tmp_path / "x").exists()


def test_wide_bad_data_file_exits_2(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.array([[np.nan, 1.0]] * 8), y=np.zeros(8))
    res = invoke("--data", bad, "--width", 8, "--out", tmp_path / "x")
    assert res.exit_code == 2 and "finite" in res.output
    np.savez(bad, x=np.ones((8, 2)), y=np.zeros(5))
    res = invoke("--data", bad, "--width", 8, "--out", tmp_path / "x")
    assert res.exit_code == 2 and "same N" in res.output


def test_compare_with_theory_returns_a_typed_result():

    task = wide.synthetic_task(jr.PRNGKey(0), 4, 8, test_samples=6)
    mlp = wide.MLP.uniform(depth=3, width=64, input_dim=8, key=jr.PRNGKey(1))
    res = wide.compare_with_theory(mlp, task, "bd", steps=2)
    assert isinstance(res, wide.TheoryComparison)
    assert res.alpha_theory == 3.0 and res.learning_rate == pytest.approx(1 / 3) and res.widths == mlp.widths
    assert res.train_loss.shape == res.theory_loss.shape == res.deviation.shape == (3,)
    assert res.max_deviation == res.deviation.max() and res.gd_ntk_condition_number > 1
    summary = res.as_dict()
    json.dumps(summary)  # JSON-ready
    assert summary["max_deviation"] == res.max_deviation and summary["train_loss"] == res.train_loss.tolist()
    assert res["alpha_measured"] == res.alpha_measured  # the earlier dict interface keeps working
    with pytest.raises(KeyError):
        res["no such entry"]
