"""Karakida & Osawa 2020, Figs. 1(a), 1(b), S.1: each id at --fast size passes its checks and writes files."""

import json

import pytest

from dlnsim import experiments
from dlnsim._repro.fisher_convergence import _pinv_alpha

IDS = ("fisher-fig1a", "fisher-fig1b", "fisher-figS1")
# 20-25 s each at --fast on a 2-core CPU: in the slow run (pytest -m slow)
SLOW = ("fisher-fig1a", "fisher-fig1b")


@pytest.mark.parametrize("id", [pytest.param(i, marks=pytest.mark.slow) if i in SLOW else i for i in IDS])
def test_fast_reproduction_passes(id, tmp_path):
    rep = experiments.reproduce(id, fast=True, seed=0, out=tmp_path / id)
    assert rep.passed, [str(c) for c in rep.failed]
    assert sorted(p.name for p in (tmp_path / id).iterdir()) == [
        ".dlnsim-output.json", "data.npz", "figure.pdf", "figure.png", "metrics.json",
    ]  # fmt: skip
    m = json.loads((tmp_path / id / "metrics.json").read_text())
    assert m["passed"] and m["fast"] and len(m["checks"]) == len(rep.checks) >= 4
    assert experiments.EXPERIMENTS[id].source.startswith("Karakida & Osawa 2020")


def test_tridiagonal_limit_alpha():
    # 1^T Sigma^+ 1: s for L = 3s, s + 1 for L = 3s + 1 (Lemma 4.3); L = 3s + 2 is singular with 1 orthogonal
    # to its null vector (1, -1, 0, 1, -1, ...), so the pseudo-inverse value is finite (2 for L = 5)
    assert _pinv_alpha(3)[0] == pytest.approx(1.0) and _pinv_alpha(4)[0] == pytest.approx(2.0)
    alpha, eig, overlap = _pinv_alpha(5)
    assert alpha == pytest.approx(2.0) and eig < 1e-12 and overlap < 1e-12
    assert _pinv_alpha(6)[1] > 0.1
