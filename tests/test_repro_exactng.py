"""The Bernacchia et al. 2018 Fig. 1 reproductions at fast size: every check passes, files exist."""

import json

import numpy as np
import pytest
from example_scripts import load_example

from dlnsim import experiments

IDS = ("exactng-fig1a", "exactng-fig1b", "exactng-fig1c", "exactng-fig1d")
# 17-19 s each at --fast on a 2-core CPU: in the slow run (pytest -m slow)
SLOW = ("exactng-fig1b", "exactng-fig1c")
_RUNS = {}


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """Each id run once at fast size, seed 0, into a temporary directory."""

    def get(id):
        if id not in _RUNS:
            out = tmp_path_factory.mktemp("exactng") / id
            _RUNS[id] = (experiments.reproduce(id, fast=True, seed=0, out=out), out)
        return _RUNS[id]

    return get


def test_ids_are_registered():
    for id in IDS:
        assert experiments.EXPERIMENTS[id].source.startswith("Bernacchia et al. 2018, Fig. 1")


@pytest.mark.parametrize("id", [pytest.param(i, marks=pytest.mark.slow) if i in SLOW else i for i in IDS])
def test_fast_reproduction_passes_and_writes_files(id, fast_run):
    rep, out = fast_run(id)
    assert rep.passed, [str(c) for c in rep.failed]
    assert sorted(p.name for p in out.iterdir()) == [
        ".dlnsim-output.json", "data.npz", "figure.pdf", "figure.png", "metrics.json",
    ]  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    assert m["passed"] and m["fast"] and len(m["checks"]) == len(rep.checks) >= 4
    sgd = m["settings"]["sgd"]
    assert sgd["learning_rate"] in sgd["learning_rate_grid"]
    assert len(sgd["grid_final_train_loss"]) == len(sgd["learning_rate_grid"])
    data = np.load(out / "data.npz")
    assert data["examples"][0] == 0 and data["ngd_damping"].shape == (m["settings"]["ngd"]["steps"],)


def test_example_script_runs_one_panel_with_the_same_numbers(tmp_path, fast_run):
    module = load_example("reproduce_exactng")
    reps = module.main(tmp_path, fast=True, ids=["exactng-fig1a"])
    assert reps["exactng-fig1a"].passed and (tmp_path / "exactng-fig1a" / "figure.png").exists()
    # the same seed gives the same numbers
    ref, _ = fast_run("exactng-fig1a")
    for key in ("ngd_test_loss", "sgd_test_loss", "ngd_damping", "sgd_grid_train_loss"):
        np.testing.assert_array_equal(reps["exactng-fig1a"].arrays[key], ref.arrays[key])
