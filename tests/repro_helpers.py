"""Shared by the tests/test_repro_*.py files: one reproduction at --fast size (seed 0) with the
checks every id must meet, and the assertion on one check's threshold and value."""

import json

import pytest

from dlnsim import experiments

FILES = [".dlnsim-output.json", "data.npz", "figure.pdf", "figure.png", "metrics.json"]


def reproduce_fast(fid, out):
    """Runs ``fid`` at --fast size into ``out`` and asserts what every id writes: the five files,
    a metrics.json that matches the result (passed, fast, checks, verdict, findings), and a
    stated basis for every check's threshold. Returns (the Reproduction, its metrics dict)."""
    rep = experiments.reproduce(fid, fast=True, seed=0, out=out)
    assert rep.passed, [str(c) for c in rep.failed]
    assert sorted(p.name for p in out.iterdir()) == FILES
    m = json.loads((out / "metrics.json").read_text())
    assert m["passed"] is True and m["fast"] is True and len(m["checks"]) == len(rep.checks)
    assert m["verdict"] == rep.verdict and m["findings"] == rep.findings
    assert all(c.basis.split(":")[0] in experiments.BASES for c in rep.checks), [
        c.name for c in rep.checks if c.basis.split(":")[0] not in experiments.BASES
    ]
    return rep, m


def assert_check(rep, name, threshold, value=None, *, kind=None, rel=None, below=None, passed=True):
    """The check ``name`` has this threshold (a loosened one fails), kind and outcome, and its value is
    ``value`` (to ``rel``) or below ``below``."""
    c = rep[name]
    assert c.threshold == threshold, name
    if kind is not None:
        assert c.kind == kind, name
    assert c.passed is passed, str(c)
    if value is not None:
        assert c.value == pytest.approx(value, rel=rel), str(c)
    if below is not None:
        assert c.value < below, str(c)
    return c
