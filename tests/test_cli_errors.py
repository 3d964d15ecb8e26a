"""Bad input at the command line: exit code 2 (1 for a failed run), one line on stderr, no
traceback, nothing written. Each case runs ``dlnsim.cli.main`` in this process."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlnsim._outputs
from dlnsim.cli import main


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Runs the CLI in an empty working directory; returns (exit code, stdout, stderr, files)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dlnsim._outputs, "terminate_on_signals", lambda: None)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "mine.txt").write_text("the user's")
    (tmp_path / "notes.txt").write_text("a user's file")
    np.savez(tmp_path / "x4y3.npz", x=np.random.default_rng(0).normal(size=(20, 4)), y=np.ones((20, 3)))
    np.savez(tmp_path / "complex.npz", x=np.ones((20, 4)) * 1j, y=np.ones((20, 3)))
    np.savez(tmp_path / "nan.npz", x=np.full((20, 4), np.nan), y=np.ones((20, 3)))
    np.savez(tmp_path / "labels.npz", x=np.array([["a"] * 4] * 20), y=np.ones((20, 3)))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))

    def run(*args):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
        return exc.value.code, out, err, sorted(set(after) - set(before))

    return run


SMALL = ("--depth", "2", "--width", "3", "--saves", "5", "--t1", "0.5", "--no-progress")

BAD_INPUTS = [
    # (arguments, exit code, a fragment of the one-line message)
    (("run", "--out", "user", *SMALL), 2, "did not write"),
    (("run", "--out", "notes.txt", *SMALL), 2, "not a directory"),
    (("run", "--out", ".", *SMALL), 2, "working directory"),
    (("run", "--out", "", *SMALL), 2, "working directory"),
    (("run", "--out", "..", *SMALL), 2, "working directory"),
    (("run", "--rule", "adam", *SMALL), 2, "unknown rule"),
    (("run", "--depth", "0"), 2, "depth must be an integer >= 1"),
    (("run", "--depth", "nan"), 2, "'--depth'"),
    (("run", "--width", "abc"), 2, "'--width'"),
    (("run", "--bogus", "1"), 2, "No such option"),
    (("run", "--rule", "qngd", "--q", "0.5", *SMALL), 2, "q must be >= 1"),
    (("run", "--rule", "qngd", "--q", "nan", *SMALL), 2, "q must be >= 1"),
    (("run", "--rule", "damped-ngd", "--eps", "-1", *SMALL), 2, "eps"),
    (("run", "--rule", "sgd", "--q", "2", *SMALL), 2, "q"),
    (("run", "--widths", "", "--t1", "1"), 2, "--widths must be comma-separated"),
    (("run", "--widths", "4", "--t1", "1"), 2, "at least an input and an output"),
    (("run", "--widths", "4,a,4", "--t1", "1"), 2, "--widths must be comma-separated"),
    (("run", "--widths", "4,0,4", "--t1", "1"), 2, "every width must be an integer >= 1"),
    (("run", "--widths", "5,3,4", "--t1", "1"), 2, "square"),
    (("run", "--seed", "99999999999999999999", *SMALL), 2, "--seed must be an integer from 0"),
    (("run", "--seed", "-1", *SMALL), 2, "--seed must be an integer from 0"),
    (("run", "--t1", "1e-320", "--depth", "2", "--width", "3"), 2, "--t1 must be >= 1e-250"),
    (("run", "--t1", "inf", "--depth", "2", "--width", "3"), 2, "t1 must be a finite number > 0"),
    (("run", "--t1", "nan", "--depth", "2", "--width", "3"), 2, "t1 must be a finite number > 0"),
    (("run", "--t1", "-1", "--depth", "2", "--width", "3"), 2, "t1 must be a finite number > 0"),
    (("run", "--t-max", "0", *SMALL[:4]), 2, "t-max must be a finite number > 0"),
    (("run", "--loss-tol", "0", *SMALL[:4]), 2, "loss-tol must be a finite number > 0"),
    (("run", "--saves", "1", "--t1", "1"), 2, "saves must be >= 2"),
    (("run", "--max-steps", "0", *SMALL), 2, "--max-steps must be an integer >= 1"),
    (("run", "--curvature", "magic", *SMALL), 2, "--curvature must be one of"),
    (("run", "--solver", "euler", *SMALL), 2, "--solver must be one of"),
    (("run", "--init", "zeros", *SMALL), 2, "init"),
    (("run", "--task", "mnist", *SMALL), 2, "unknown task"),
    (("run", "--rank", "0", *SMALL), 2, "rank"),
    (("run", "--snr", "-1", *SMALL), 2, "snr"),
    (("run", "--samples", "0", *SMALL), 2, "samples"),
    (("run", "--scale", "nan", *SMALL), 2, "scale"),
    (("run", "--data", "missing.npz", *SMALL), 2, "missing.npz"),
    (("run", "--data", "empty.npz", *SMALL), 2, "empty.npz"),
    (("run", "--data", "text.npz", *SMALL), 2, "text.npz"),
    (("run", "--data", "complex.npz", *SMALL), 2, "complex"),
    (("run", "--data", "nan.npz", *SMALL), 2, "non-finite"),
    (("run", "--data", "labels.npz", *SMALL), 2, "x"),
    (("run", "--data", "x4y3.npz", "--widths", "5,5,3", "--t1", "1"), 2, "--data has 4 inputs and 3 outputs"),
    (("run", "--curvature", "krylov", "--widths", "4,1,4", "--task", "teacher", "--t1", "1"), 2, "krylov"),
    (("run", "--rule", "ngd", "--scale", "1e-80", "--depth", "4", "--no-progress"), 1, "hint"),
    (("run", "--rule", "sgd", "--max-steps", "3", *SMALL), 1, "max-steps"),
    (("compare", "--rules", "sgd,ngd", "--q", "0.5", *SMALL), 2, "--q applies to qngd"),
    (("compare", "--rules", "sgd,ngd", "--eps", "0.5", *SMALL), 2, "--eps applies to damped-ngd"),
    (("compare", "--rules", "sgd,sgd", *SMALL), 2, "twice"),
    (("compare", "--rules", ",", *SMALL), 2, "at least one rule"),
    (("compare", "--analytic", "--init", "xavier", *SMALL), 2, "--analytic"),
    (("sweep", "--seeds", "0", *SMALL), 2, "seeds must be an integer >= 1"),
    (("phase", "--t1", "1e308"), 2, "--t1 must be from"),
    (("phase", "--start", "0.2"), 2, "--start must be two positive numbers"),
    (("phase", "--rules", "sgd", "--q", "2"), 2, "--q applies to qngd"),
    (("phase", "--sigma-star", "-1"), 2, "sigma-star"),
    (("wide", "--fisher", "shampoo"), 2, "unknown fisher"),
    (("wide", "--activation", "gelu"), 2, "activation"),
    (("wide", "--fisher", "tri-diagonal", "--depth", "5", "--width", "16"), 2, "tri"),
    (("wide", "--sigma-w2", "1e308", "--width", "16"), 2, "overflow"),
    (("wide", "--sigma-w2", "-1", "--width", "16"), 2, "sigma"),
    (("wide", "--damping", "-1"), 2, "damping"),
    (("wide", "--lr", "0"), 2, "lr must be a finite number > 0"),
    (("wide", "--steps", "-1"), 2, "steps must be an integer >= 0"),
    (("wide", "--samples", "0"), 2, "samples must be an integer >= 1"),
    (("wide", "--forster"), 2, "--forster applies to --fisher kfac"),
    (("wide", "--loss", "hinge"), 2, "unknown loss"),
    (("wide", "--loss", "cross-entropy"), 2, "cross-entropy needs one-hot targets"),
    (("wide", "--dataset", "cifar"), 2, "unknown dataset"),
    (("wide", "--dataset", "digits", "--classes", "0,x"), 2, "--classes"),
    (("wide", "--data", "complex.npz", "--width", "16"), 2, "complex"),
    (("wide", "--data", "empty.npz", "--width", "16"), 2, "empty.npz"),
    (("wide", "--seed", "99999999999999999999"), 2, "--seed must be an integer from 0"),
    (("reproduce",), 2, "give a figure id"),
    (("reproduce", "curvature-fig99"), 2, "unknown figure id"),
    (("reproduce", "curvature-fig1", "--out", "user"), 2, "did not write"),
    (("reproduce", "curvature-fig1", "--seed", "-3"), 2, "--seed must be an integer from 0"),
    (("nonsense",), 2, "No such command"),
    (("run", "--width", "100000"), 2, "GiB is available"),
    (("run", "--saves", "50000000"), 2, "is available"),
    (("run", "--depth", "10000"), 2, "reduce --depth"),
    (("compare", "--width", "100000"), 2, "is available"),
    (("sweep", "--seeds", "100000000"), 2, "is available"),
    (("wide", "--width", "1000000"), 2, "is available"),
    (("wide", "--depth", "400", "--width", "16"), 2, "depth"),
]


@pytest.mark.parametrize("args, code, fragment", BAD_INPUTS, ids=[" ".join(c[0])[:60] for c in BAD_INPUTS])
def test_bad_input_gives_one_line_and_writes_nothing(cli, args, code, fragment):
    got, out, err, written = cli(*args)
    assert got == code, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in out + err
    assert written == []


def test_data_sets_the_input_and_output_widths(cli):
    """--data with 4 inputs and 3 outputs: --width sets the hidden layers only."""
    code, out, err, written = cli("run", "--data", "x4y3.npz", "--width", "5", "--depth", "3", "--t1", "0.5",
                                  "--saves", "5", "--no-progress", "--out", "r")  # fmt: skip
    assert code == 0, err
    assert json.loads(Path("r/summary.json").read_text())["widths"] == [4, 5, 5, 3]
    assert dlnsim._outputs.read_manifest(Path("r")) is not None


def test_damped_ngd_with_a_huge_eps_tends_to_sgd(cli):
    """(eps + 1)(eps I + H)^-1 g -> g as eps -> inf (Huh 2020, eq. 17): eps = 1e308 must move
    like sgd, not freeze."""
    common = (
        "--task",
        "teacher",
        "--init",
        "xavier",
        "--depth",
        "2",
        "--width",
        "3",
        "--t1",
        "1",
        "--saves",
        "5",
    )
    assert cli("run", "--rule", "sgd", *common, "--out", "sgd", "--no-progress")[0] == 0
    code, _, err, _ = cli(
        "run", "--rule", "damped-ngd", "--eps", "1e308", *common, "--out", "big", "--no-progress"
    )
    assert code == 0, err
    sgd = json.loads(Path("sgd/summary.json").read_text())
    big = json.loads(Path("big/summary.json").read_text())
    assert big["loss_final"] < 0.9 * big["loss_initial"]
    assert math.isclose(big["loss_final"], sgd["loss_final"], rel_tol=1e-6)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    t1=st.floats(allow_nan=True, allow_infinity=True),
    scale=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    eps=st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_numbers_give_a_result_or_one_line(cli, t1, scale, eps):
    args = ["run", "--rule", "damped-ngd", "--eps", repr(eps), "--t1", repr(t1), "--task", "teacher",
            "--depth", "2", "--width", "2", "--saves", "3", "--max-steps", "2000", "--no-progress",
            "--out", "r", "--overwrite"]  # fmt: skip
    if scale is not None:
        args += ["--scale", repr(scale)]
    code, out, err, _ = cli(*args)
    assert code in (0, 1, 2) and "Traceback" not in out + err
    if code:
        assert len(err.strip().splitlines()) == 1 and err.startswith("Error: "), err
    else:
        assert math.isfinite(json.loads(Path("r/summary.json").read_text())["loss_final"])
