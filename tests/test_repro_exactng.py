"""The Bernacchia et al. 2018 Fig. 1 reproductions at fast size: the paper's claims with their
thresholds and measured numbers, the verdicts, the software checks and the files written."""

import json

import numpy as np
import pytest
from example_scripts import load_example
from repro_helpers import reproduce_fast

from dlnsim import experiments

IDS = ("exactng-fig1a", "exactng-fig1b", "exactng-fig1c", "exactng-fig1d")
# the verdicts of the full-size runs (seed 0), as registered
FULL_VERDICTS = {
    "exactng-fig1a": "reproduces",
    "exactng-fig1b": "reproduces",
    "exactng-fig1c": "reproduces",
    "exactng-fig1d": "disagrees",
}
# 20-50 s each at --fast on a shared 2-core CPU: in the slow run (pytest -m slow)
SLOW = ("exactng-fig1b", "exactng-fig1c")
_RUNS = {}

FINAL = "NGD final test loss / minimum achievable (median of last quarter)"
PASSES = "passes through the training set NGD needs to reach 1.5x the minimum loss"
EXAMPLES = "examples to reach 1.5x the minimum loss, SGD / NGD (SGD censored at its budget)"
GAP = "SGD / NGD test loss when NGD first reaches 1.5x the minimum"
D_FINAL = "NGD / SGD final test error at the same examples seen (M = 1000)"
D_REACH = "examples NGD (M = 1000) needs to reach SGD's final test error / SGD's examples"

# fast size, seed 0: {id: {claim: (threshold, relation, value)}} and the verdict
LINEAR_FAST = {
    "exactng-fig1a": (
        {
            FINAL: (1.5, "<=", 1.026437),
            PASSES: (10.0, "<=", 5.4),
            EXAMPLES: (1.0, ">", 20 / 9),
            GAP: (2.0, ">=", 53.9972),
        },
        "reproduces",
    ),
    "exactng-fig1b": (
        {
            FINAL: (1.5, "<=", 1.011258),
            PASSES: (10.0, "<=", 3.0),
            EXAMPLES: (1.0, ">", 3.6),
            GAP: (2.0, ">=", 35.0101),
        },
        "reproduces",
    ),
    "exactng-fig1c": (
        {
            FINAL: (1.5, "<=", 1.001000),
            PASSES: (10.0, "<=", 7.2),
            EXAMPLES: (1.0, ">", 5 / 3),
            GAP: (2.0, ">=", 8.09082),
        },
        "reproduces",
    ),
}


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """Each id run once at fast size, seed 0, into a temporary directory."""

    def get(id):
        if id not in _RUNS:
            out = tmp_path_factory.mktemp("exactng") / id
            _RUNS[id] = (reproduce_fast(id, out)[0], out)
        return _RUNS[id]

    return get


def _param(ids):
    return [pytest.param(i, marks=pytest.mark.slow) if i in SLOW else i for i in ids]


def test_ids_are_registered_with_their_full_size_verdicts():
    for id in IDS:
        exp = experiments.EXPERIMENTS[id]
        assert exp.source.startswith("Bernacchia et al. 2018, Fig. 1")
        assert exp.verdict == FULL_VERDICTS[id]


@pytest.mark.parametrize("id", _param(IDS))
def test_fast_reproduction_passes_and_writes_files(id, fast_run):
    rep, out = fast_run(id)
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["checks"]) == len(rep.checks) >= 8
    sgd = m["settings"]["sgd"]
    assert sgd["learning_rate"] in sgd["learning_rate_grid"] and sgd["batch_size"] == 20
    assert len(sgd["grid_final_train_loss"]) == len(sgd["learning_rate_grid"])
    # the paper's NGD settings: alpha = 1, M = 1000, K = 1
    ngd = m["settings"]["ngd"]
    assert (ngd["learning_rate"], ngd["batch_size"], ngd["model_samples_K"]) == (1.0, 1000, 1)
    data = np.load(out / "data.npz")
    assert data["examples"][0] == 0 and data["ngd_lambda"].shape == (ngd["steps"],)


@pytest.mark.parametrize("id", _param(LINEAR_FAST))
def test_linear_panels_claims_and_numbers(id, fast_run):
    rep, _ = fast_run(id)
    claims, verdict = LINEAR_FAST[id]
    assert [c.name for c in rep.claims] == [FINAL, PASSES, EXAMPLES, GAP]
    for name, (threshold, relation, value) in claims.items():
        c = rep[name]
        assert c.kind == "claim" and (c.threshold, c.relation) == (threshold, relation)
        assert c.value == pytest.approx(value, rel=1e-5)
    assert rep.verdict == verdict
    # software checks: the data's minimum loss (chi^2, 5 sd), one initial net, eq. 21, the grid
    chi2 = rep["|sampled minimum loss / its expectation n_L Sigma~ / 2 - 1|"]
    n_out = rep.settings["widths"][-1]
    assert chi2.kind == "software" and chi2.threshold == pytest.approx(5 * np.sqrt(2 / (1000 * n_out)))
    assert rep["|NGD / SGD initial test loss - 1| (same initial network)"].threshold == 1e-12
    rule = rep["NGD: max relative deviation of lambda_(k+1) from eq. 21 applied to (lambda_k, rho_k)"]
    assert rule.threshold == 1e-12 and rule.value < 1e-14
    assert rep["|SGD run's final training loss / the grid's score of its rate - 1|"].threshold == 1e-6


def test_fig1d_runs_the_papers_minibatch_and_reports_the_variant(fast_run):
    rep, _ = fast_run("exactng-fig1d")
    s = rep.settings
    assert s["ngd"]["batch_size"] == 1000 and s["variant_ngd"]["batch_size"] == 250
    assert s["examples_seen"] == 30_000 and s["variant_ngd"]["steps"] == 120
    final, reach = rep[D_FINAL], rep[D_REACH]
    assert [c.name for c in rep.claims] == [D_FINAL, D_REACH]
    assert (final.threshold, final.relation) == (1.0, "<") and (reach.threshold, reach.relation) == (1.0, "<")
    # fast size, seed 0: the paper's M = 1000 does not beat SGD after 3e4 examples
    assert final.value == pytest.approx(1.37889, rel=1e-4)
    assert reach.value == np.inf
    assert rep.verdict == "disagrees"
    # the M = 250 variant carries no claim; its numbers are recorded
    assert s["variant_ngd"]["final_test_error_over_sgd"] == pytest.approx(0.89646, rel=1e-4)
    assert s["variant_ngd"]["examples_to_sgd_final_error_over_sgd_examples"] == pytest.approx(2 / 3)
    assert len(rep.findings) == 4 and "M = 250" in rep.findings[1]
    assert rep.arrays["variant_ngd_test_error"].shape == rep.arrays["ngd_test_error"].shape == (16,)


def test_example_script_runs_one_panel_with_the_same_numbers(tmp_path, fast_run):
    module = load_example("reproduce_exactng")
    reps = module.main(tmp_path, fast=True, ids=["exactng-fig1a"])
    assert reps["exactng-fig1a"].passed and (tmp_path / "exactng-fig1a" / "figure.png").exists()
    # the same seed gives the same numbers
    ref, _ = fast_run("exactng-fig1a")
    for key in ("ngd_test_loss", "sgd_test_loss", "ngd_lambda", "sgd_grid_train_loss"):
        np.testing.assert_array_equal(reps["exactng-fig1a"].arrays[key], ref.arrays[key])
