"""The reproduction registry and ``dlnsim reproduce``: files, checks, exit codes (with a toy entry)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import dlnsim._experiments as core
from dlnsim import experiments
from dlnsim.cli import app

runner = CliRunner()


def _toy(passing: bool, claim_holds: bool = True, name: str = "toy"):
    def run(*, fast, seed):
        fig, axes = experiments.new_figure(1, 2)
        x = np.linspace(0, 1, 5 if fast else 50)
        axes[0, 0].plot(x, x**2)
        return experiments.Reproduction(
            name,
            fig,
            [
                experiments.check("fit error", 1e-9, 1e-6, basis="precision: float64"),
                experiments.check("exponent", 2.0 if passing else 1.0, 1.5, ">="),
                experiments.claim("speed-up", 3.0 if claim_holds else 0.5, 1.0, ">", basis="exact: faster"),
                experiments.claim("slope", 1.2, 1.1, basis="paper: Fig. 0 shows slope 1"),
            ],
            findings=["the toy found a parabola"],
            settings={"n": len(x), "seed": seed},
            arrays={"x": x},
        )

    return run


@pytest.fixture
def toy(monkeypatch):
    def install(passing=True, claim_holds=True):
        monkeypatch.setitem(
            experiments.EXPERIMENTS,
            "toy",
            experiments.Experiment(
                "toy", "a parabola", "Nobody 2099, Fig. 0", _toy(passing, claim_holds), "partly"
            ),
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
    with pytest.raises(ValueError, match="basis starts with one of paper, finite-size"):
        experiments.claim("a", 1.0, 2.0, basis="gut feeling: about right")


def test_verdict_counts_claims_only():
    ok = experiments.check("software", 0.0, 1.0)
    bad = experiments.check("software", 2.0, 1.0)
    held = experiments.claim("c1", 0.0, 1.0, basis="exact: below 1")
    differs = experiments.claim("c2", 2.0, 1.0, basis="paper: 1")
    assert experiments.verdict_of([ok, bad]) is None
    assert experiments.verdict_of([bad, held]) == "reproduces"
    assert experiments.verdict_of([ok, held, differs]) == "partly"
    assert experiments.verdict_of([ok, differs]) == "disagrees"
    rep = experiments.Reproduction("x", None, [ok, held, differs])
    assert rep.passed and rep.failed == [] and rep.claims == [held, differs] and rep.verdict == "partly"
    assert rep["c2"] is differs
    with pytest.raises(KeyError, match="no check 'c3'"):
        rep["c3"]
    assert not experiments.Reproduction("x", None, [bad, held]).passed
    with pytest.raises(ValueError, match="verdict must be one of"):
        experiments.Experiment("x", "t", "s", lambda **k: None, "maybe")


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
        "kind": "software", "basis": "precision: float64",
    }  # fmt: skip
    assert m["verdict"] == "partly" and m["claims_held"] == "1/2"
    assert m["checks"][2]["kind"] == "claim" and m["findings"] == ["the toy found a parabola"]
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
    assert "ok      exponent: 2 >= 1.5" in res.output and (tmp_path / "a" / "figure.png").exists()
    assert "differs slope: 1.2 <= 1.1" in res.output and "holds   speed-up: 3 > 1" in res.output
    assert "finding: the toy found a parabola" in res.output
    assert "software checks passed; verdict partly (1/2 claims hold)" in res.output
    # a claim of the paper that does not hold is a finding, not a failure
    toy(passing=True, claim_holds=False)
    res = runner.invoke(app, ["reproduce", "toy", "--fast", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "differs speed-up: 0.5 > 1" in res.output and "verdict disagrees (0/2 claims hold)" in res.output
    toy(passing=False)
    res = runner.invoke(app, ["reproduce", "toy", "--fast", "--out", str(tmp_path / "b")])
    assert res.exit_code == 1
    assert "FAIL    exponent: 1 >= 1.5" in res.output and "software checks failed: toy" in res.output
    # a failed check still writes its evidence, marked as failed
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["passed"] is False
    res = runner.invoke(app, ["reproduce", "no-such-figure"])
    assert res.exit_code == 2 and "unknown figure id 'no-such-figure'; allowed: all," in res.output
    res = runner.invoke(app, ["reproduce"])
    assert res.exit_code == 2 and "give a figure id" in res.output


def test_cli_reproduce_all_runs_every_id_into_its_own_directory(monkeypatch, tmp_path):
    """'all' runs every registered id in turn (it once broke after the first: a loop variable
    shadowed the output claims), each into out/ID, with its summary line."""

    toys = {
        name: experiments.Experiment(name, "a parabola", "Nobody 2099", _toy(True, name=name), "partly")
        for name in ("toy-a", "toy-b", "toy-c")
    }
    monkeypatch.setattr(core, "EXPERIMENTS", toys)
    monkeypatch.setattr(experiments, "EXPERIMENTS", toys)
    res = runner.invoke(app, ["reproduce", "all", "--fast", "--out", str(tmp_path / "all")])
    assert res.exit_code == 0, res.output
    assert res.output.count("software checks passed; verdict partly (1/2 claims hold)") == 3
    for name in toys:
        assert json.loads((tmp_path / "all" / name / "metrics.json").read_text())["id"] == name


def test_cli_list_names_every_figure(toy):
    toy()
    res = runner.invoke(app, ["reproduce", "--list"])
    assert res.exit_code == 0
    lines = res.output.strip().splitlines()
    assert len(lines) == len(experiments.EXPERIMENTS) + 1
    assert any(
        line.startswith("toy") and "partly" in line and "[Nobody 2099, Fig. 0]" in line for line in lines
    )
    assert lines[-1].startswith("verdict: how the full-size run compares")
