"""The reproduction registry and ``dlnsim reproduce``: files, checks, exit codes (with a toy entry)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dlnsim import experiments
from dlnsim.cli import app

runner = CliRunner()


def _toy(passing: bool):
    def run(*, fast, seed):
        fig, axes = experiments.new_figure(1, 2)
        x = np.linspace(0, 1, 5 if fast else 50)
        axes[0, 0].plot(x, x**2)
        return experiments.Reproduction(
            "toy",
            fig,
            [
                experiments.check("fit error", 1e-9, 1e-6),
                experiments.check("exponent", 2.0 if passing else 1.0, 1.5, ">="),
            ],
            settings={"n": len(x), "seed": seed},
            arrays={"x": x},
        )

    return run


@pytest.fixture
def toy(monkeypatch):
    def install(passing=True):
        monkeypatch.setitem(
            experiments.EXPERIMENTS,
            "toy",
            experiments.Experiment("toy", "a parabola", "Nobody 2099, Fig. 0", _toy(passing)),
        )

    return install


def test_check_relations_and_non_finite():
    assert experiments.check("a", 1.0, 2.0).passed
    assert not experiments.check("a", 3.0, 2.0).passed
    assert experiments.check("a", 3.0, 2.0, ">=").passed
    assert not experiments.check("a", 2.0, 2.0, "<").passed
    assert not experiments.check("a", float("nan"), 2.0).passed
    assert not experiments.check("a", float("inf"), 2.0, ">=").passed
    with pytest.raises(ValueError, match="relation must be one of"):
        experiments.check("a", 1.0, 2.0, "==")


def test_reproduce_writes_complete_outputs(toy, tmp_path):
    toy()
    rep = experiments.reproduce("toy", fast=True, seed=3, out=tmp_path / "toy")
    assert rep.passed and rep.wall_seconds >= 0
    files = sorted(p.name for p in (tmp_path / "toy").iterdir())
    assert files == [".dlnsim-output.json", "data.npz", "figure.pdf", "figure.png", "metrics.json"]
    m = json.loads((tmp_path / "toy" / "metrics.json").read_text())
    assert m["id"] == "toy" and m["fast"] is True and m["seed"] == 3 and m["passed"] is True
    assert m["checks"][0] == {
        "name": "fit error", "value": 1e-9, "threshold": 1e-6, "relation": "<=", "passed": True,
    }  # fmt: skip
    assert m["settings"] == {"n": 5, "seed": 3}
    np.testing.assert_array_equal(np.load(tmp_path / "toy" / "data.npz")["x"], np.linspace(0, 1, 5))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_unknown_id_and_bad_seed(toy):
    toy()
    with pytest.raises(ValueError, match="unknown reproduction 'nope'; choose one of"):
        experiments.reproduce("nope")
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        experiments.reproduce("toy", seed=-1)


def test_cli_exit_codes(toy, tmp_path):
    toy(passing=True)
    res = runner.invoke(app, ["reproduce", "toy", "--fast", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "ok   exponent: 2 >= 1.5" in res.output and (tmp_path / "a" / "figure.png").exists()
    toy(passing=False)
    res = runner.invoke(app, ["reproduce", "toy", "--fast", "--out", str(tmp_path / "b")])
    assert res.exit_code == 1
    assert "FAIL exponent: 1 >= 1.5" in res.output
    # a failed check still writes its evidence, marked as failed
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["passed"] is False
    res = runner.invoke(app, ["reproduce", "no-such-figure"])
    assert res.exit_code == 2 and "unknown figure id 'no-such-figure'; allowed: all," in res.output
    res = runner.invoke(app, ["reproduce"])
    assert res.exit_code == 2 and "give a figure id" in res.output


def test_cli_list_names_every_figure(toy):
    toy()
    res = runner.invoke(app, ["reproduce", "--list"])
    assert res.exit_code == 0
    lines = res.output.strip().splitlines()
    assert len(lines) == len(experiments.EXPERIMENTS)
    assert any(line.startswith("toy") and "[Nobody 2099, Fig. 0]" in line for line in lines)
