import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import diffrax
import jax.random as jr
import numpy as np
import pytest
from typer.testing import CliRunner

import dlnsim
import dlnsim._simulation as sim
from dlnsim._table import read_table
from dlnsim.cli import app
from dlnsim.cli._linear import LogTimeProgressMeter, _HostBar, stop_note
from dlnsim.cli._options import SolveOptions

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_default_run_writes_complete_outputs(tmp_path):
    """`dlnsim run` with its defaults: sqrt-NGD, d = 4, the Huh 2020 Fig. 3 student-teacher task."""
    out = tmp_path / "run"
    res = invoke("run", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "rule", "depth", "widths", "q", "seed", "t_final", "loss_initial", "loss_final",
        "max_conservation_drift", "test_loss_final", "test_loss_min", "irreducible_loss",
    ):  # fmt: skip
        assert key in summary
    assert summary["rule"] == "sqrt-ngd" and summary["depth"] == 4 and summary["widths"] == [16] * 5
    # seed 0's initial map has the opposite determinant sign to the target's: the run learns every
    # mode but the weakest (s = 0.0199), stalls at the saddle's loss s^2 / 2 and says so
    assert summary["q"] == 2.0 and summary["converged"] is False and summary["stalled_at_saddle"] is True
    assert summary["saddle_loss"] == pytest.approx(0.5 * summary["mode_targets"][-1] ** 2, rel=1e-9)
    assert 0 < summary["loss_final"] - summary["saddle_loss"] <= 1e-6 * summary["loss_initial"] * (1 + 1e-6)
    assert "note: stalled at a saddle" in res.output and summary["t_final"] < 100
    assert summary["max_conservation_drift"] < 1e-7
    # sqrt-NGD generalises better early than at the overfitted end (Huh 2020, Fig. 3)
    assert summary["test_loss_min"] < summary["test_loss_final"]
    data = np.load(out / "trajectory.npz")
    assert [data[f"weights_{i}"].shape[1:] for i in range(1, 5)] == [(16, 16)] * 4
    t = data["t"]
    assert data["weights_1"].shape[0] == t.size and np.all(np.diff(t) > 0)
    w = data["weights_1"]
    for i in range(2, 5):
        w = np.einsum("tij,tjk->tik", data[f"weights_{i}"], w)
    d = w - data["teacher"]
    loss = 0.5 * np.einsum("tij,jk,tik->t", d, data["input_cov"], d)
    np.testing.assert_allclose(data["loss"], loss, rtol=1e-10)
    assert np.all(np.isfinite(data["loss"]))
    for name in ("loss.png", "modes.png"):
        assert (out / name).stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary leftovers
    assert "sqrt-ngd" in res.output


@pytest.mark.parametrize(
    "task, samples, white",
    [
        ("student-teacher", 6, True),
        ("student-teacher-unwhitened", 6, False),
        ("student-teacher-unwhitened", 3, False),
    ],
)
def test_run_student_teacher_whitened_or_not(task, samples, white, tmp_path):
    """--task student-teacher whitens the training inputs (empirical Sigma_x = I, Huh 2020 sec. 2);
    student-teacher-unwhitened keeps the raw Gaussian draws (and allows P < N)."""
    out = tmp_path / "st"
    res = invoke(
        "run", "--rule", "ngd", "--task", task, "--width", "4", "--depth", "2", "--samples", samples,
        "--t1", "1", "--saves", "5", "--out", out, "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == task
    assert ("whitened inputs" if white else "unwhitened Gaussian inputs") in summary["task_description"]
    cov = np.load(out / "trajectory.npz")["input_cov"]
    assert bool(np.max(np.abs(cov - np.eye(4))) < 1e-12) == white


def test_run_teacher_task_with_explicit_t1_and_bottleneck(tmp_path):
    out = tmp_path / "b"
    res = invoke(
        "run", "--rule", "ngd", "--task", "teacher", "--widths", "5,3,2,3,5", "--init", "xavier",
        "--t1", "2", "--saves", "21", "--out", out, "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["widths"] == [5, 3, 2, 3, 5] and s["t_final"] == pytest.approx(2.0)
    assert s["converged"] is None and "test_loss_final" not in s
    assert np.load(out / "trajectory.npz")["t"].size == 21


def test_run_replaces_only_its_own_output(tmp_path):
    """A user's directory is refused before computing; dlnsim's own result needs --overwrite."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    args = ("run", "--rule", "sgd", "--task", "teacher", "--width", "3", "--depth", "2", "--t1", "1")
    res = invoke(*args, "--out", out, "--no-progress")
    assert res.exit_code == 2 and "did not write" in res.output
    assert (out / "mine.txt").read_text() == "the user's"
    out = tmp_path / "own"
    assert invoke(*args, "--out", out, "--no-progress").exit_code == 0
    res = invoke(*args, "--out", out, "--no-progress")
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = invoke(*args, "--out", out, "--no-progress", "--overwrite")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["own", "r"]


def test_run_reports_blow_up(tmp_path, monkeypatch):
    """A blow-up is reported with its time and hint, exit 1, and nothing is written."""

    def blows_up(*args, **kwargs):
        raise dlnsim.DynamicsBlowUpError(0.25, "the state became non-finite", "try sqrt-ngd")

    monkeypatch.setattr(sim, "simulate", blows_up)
    res = invoke("run", "--rule", "ngd", "--out", tmp_path / "x", "--no-progress")
    assert res.exit_code == 1
    assert "blew up at t=0.25" in res.output and "try sqrt-ngd" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "x").exists()


def test_compare_two_rules(tmp_path):
    out = tmp_path / "cmp"
    res = invoke(
        "compare", "--rules", "ngd,ngd-d", "--task", "teacher", "--width", "4", "--depth", "3",
        "--init", "xavier", "--t1", "3", "--saves", "31", "--out", out, "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    rows = {r["rule"]: r for r in s["rules"]}
    assert set(rows) == {"ngd", "ngd-d"} and s["failed"] == {}
    # same initial weights and task; NGD and NGD-d share the map dynamics (Huh 2020, Fig. 1 B,D)
    assert rows["ngd"]["loss_initial"] == rows["ngd-d"]["loss_initial"]
    assert rows["ngd"]["loss_final"] == pytest.approx(rows["ngd-d"]["loss_final"], rel=1e-6)
    assert rows["ngd"]["max_conservation_drift"] < 1e-6
    assert rows["ngd-d"]["max_conservation_drift"] > 1e-2
    for name in ("loss.png", "modes.png", "trajectories/ngd.npz", "trajectories/ngd-d.npz"):
        assert (out / name).exists()
    assert "time to half" in res.output


def test_rules_lists_every_rule():
    res = invoke("rules")
    assert res.exit_code == 0
    for name in (
        "sgd",
        "ngd",
        "qngd",
        "sqrt-ngd",
        "ngd-d",
        "sqrt-ngd-d",
        "qngd-d",
        "damped-ngd",
        "bernacchia",
    ):
        assert name in res.output
    assert "eq." in res.output


BAD = [
    (["run", "--rule", "adam"], "unknown rule 'adam'; choose one of"),
    (["run", "--depth", "0"], "depth must be an integer >= 1"),
    (["run", "--width", "0"], "width must be an integer >= 1"),
    (["run", "--rule", "qngd", "--q", "0.5"], "q must be >= 1"),
    (["run", "--rule", "qngd"], "needs q >= 1"),
    (["run", "--t1", "-1"], "t1 must be a finite number > 0"),
    (["run", "--t1", "inf"], "t1 must be a finite number > 0"),
    (["run", "--rule", "damped-ngd", "--eps", "-1"], "eps must be a finite number >= 0"),
    (["run", "--snr", "nan"], "snr must be a finite number > 0"),
    (["run", "--scale", "nan"], "scale must be a finite number > 0"),
    (["run", "--widths", "4,3"], "input and output widths must be equal"),
    (["run", "--widths", "4,x,4"], "comma-separated integers"),
    (
        ["run", "--task", "mnist"],
        "unknown task 'mnist'; choose one of student-teacher, student-teacher-unwhitened",
    ),
    (["run", "--width", "20"], "needs --samples >= the width 20, got 16"),
    (["run", "--init", "zeros"], "unknown init 'zeros'"),
    (["compare", "--rules", "sgd,foo"], "unknown rule 'foo'"),
    (["compare", "--rules", "sgd,sgd"], "lists a rule twice"),
    (["run", "--solver", "rk4"], "--solver must be one of tsit5, kvaerno5"),
    (["run", "--curvature", "lanczos"], "--curvature must be one of auto, dense, krylov, balanced"),
    (["run", "--rule", "ngd-d", "--curvature", "krylov"], "method applies only to the full rules"),
    (["run", "--widths", "4,2,4", "--curvature", "krylov"], "use --curvature dense or auto"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path):
    res = invoke(*args, "--out", tmp_path / "o")
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_bad_data_file(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.full((4, 3), np.nan), y=np.ones((4, 3)))
    res = invoke("run", "--data", tmp_path / "d.npz", "--widths", "3,3", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "non-finite" in res.output


def test_app_py_is_the_same_cli():
    out = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "rules"], capture_output=True, text=True, check=True
    ).stdout
    assert out == invoke("rules").output


def test_run_aligned_checks_theory_on_every_run(tmp_path):
    out = tmp_path / "al"
    res = invoke(
        "run", "--rule", "sqrt-ngd", "--task", "teacher", "--width", "6", "--depth", "3",
        "--init", "aligned", "--scale", "0.4", "--out", out, "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["max_mode_deviation"] <= 1e-6
    assert "max_mode_deviation" in res.output


def test_aligned_init_refuses_correlated_inputs(tmp_path):
    res = invoke("run", "--init", "aligned", "--task", "student-teacher-unwhitened", "--out", tmp_path / "o")
    assert res.exit_code == 2
    assert "white or shares the teacher's right singular vectors" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_compare_analytic(tmp_path):
    out = tmp_path / "ca"
    res = invoke(
        "compare", "--analytic", "--rules", "ngd,sqrt-ngd-d", "--task", "teacher", "--width", "5",
        "--depth", "3", "--scale", "0.5", "--t1", "4", "--out", out, "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "summary.json").read_text())["rules"]
    assert all(r["init"] == "aligned" and r["max_mode_deviation"] <= 1e-6 for r in rows)
    res = invoke("compare", "--analytic", "--init", "xavier", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "--analytic uses the aligned init" in res.output


def test_phase_portraits(tmp_path):
    out = tmp_path / "ph"
    res = invoke("phase", "--out", out)
    assert res.exit_code == 0, res.output
    assert (out / "phase.png").stat().st_size > 10_000
    s = json.loads((out / "summary.json").read_text())["rules"]
    # NGD and NGD-d traverse the contours sigma_1 sigma_2 = const in sync (Huh 2020, Fig. 1 B,D)
    np.testing.assert_allclose(s["ngd"]["map_at_markers"], s["ngd-d"]["map_at_markers"], rtol=1e-7)
    np.testing.assert_allclose(
        s["ngd"]["map_at_markers"], 1 + (0.325 - 1) * np.exp(-np.array([0.25, 0.5, 1, 2])), rtol=1e-7
    )
    assert abs(s["ngd"]["end"][0] - s["ngd-d"]["end"][0]) > 0.05
    for bad, msg in ((["--start", "1"], "--start must be"), (["--rules", "adam"], "unknown rule")):
        res = invoke("phase", *bad, "--out", tmp_path / "b")
        assert res.exit_code == 2 and msg in res.output


def test_sweep_grid_writes_a_tidy_table(tmp_path):
    out = tmp_path / "sw"
    args = (
        "sweep", "--rule", "sgd,qngd", "--q", "1.5,3", "--seeds", "3", "--width", "4", "--depth", "2,3",
        "--init", "xavier", "--scale", "0.5", "--t1", "3", "--saves", "31", "--out", out, "--no-progress",
    )  # fmt: skip
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert "18 elements (18 run now, 0 resumed); 0 failed" in res.output
    rows = read_table(out / "table.parquet")
    assert len(rows) == (1 + 2) * 2 * 3 and [r["element"] for r in rows] == list(range(18))
    assert {(r["rule"], r["q"]) for r in rows} == {("sgd", None), ("qngd", 1.5), ("qngd", 3.0)}
    assert len({r["loss_final"] for r in rows}) == 18  # different weights, rules, depths
    assert all(r["status"] in ("ok", "stopped early") and r["loss_final"] < r["loss_initial"] for r in rows)
    assert (out / "table.csv").read_text().count("\n") == 19 and (out / "loss_final.png").exists()
    again = invoke(*args)  # the same command on the same --out: already complete
    assert again.exit_code == 0 and "already holds this sweep's table" in again.output
    res = invoke("sweep", "--seeds", "0", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "seeds must be an integer >= 1" in res.output
    res = invoke("sweep", "--rule", "qngd", "--q", "1,x", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "--q takes comma-separated numbers" in res.output


def test_sweep_with_a_block_rule(tmp_path):
    """The case that hung XLA in CI (batched SVDs); every decomposition is now unbatched, in the
    vmapped solve too (dlnsim._linalg)."""
    out = tmp_path / "swb"
    res = invoke(
        "sweep", "--rule", "sqrt-ngd-d", "--seeds", "4", "--task", "teacher", "--width", "8",
        "--init", "xavier", "--scale", "1", "--t1", "5", "--out", out, "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = read_table(out / "table.parquet")
    assert len(rows) == 4
    for row in rows:
        assert row["loss_final"] < 0.1 * row["loss_initial"]
    assert min(r["max_conservation_drift"] for r in rows) > 1e-6  # block rules break the conservation law


SIGTERM_SWEEP = (
    "sweep", "--rule", "qngd", "--q", "1,1.5,2,3", "--seeds", "8", "--width", "4", "--depth", "2",
    "--init", "xavier", "--scale", "0.5", "--t1", "20", "--saves", "40", "--chunk-size", "2", "--no-progress",
)  # fmt: skip


def test_sweep_killed_midway_resumes_to_the_same_table(tmp_path):
    """SIGTERM a sweep once some chunks are stored; the rerun of the same command skips them and
    the table equals an uninterrupted run's: no row lost or doubled."""

    whole = tmp_path / "whole"
    assert invoke(*SIGTERM_SWEEP, "--out", whole).exit_code == 0
    cut = tmp_path / "cut"
    cmd = [sys.executable, "-m", "dlnsim", *map(str, SIGTERM_SWEEP), "--out", str(cut)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / ".cut.partial"
    deadline = time.monotonic() + 600
    while len(list(partial.glob("chunk-*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert not cut.exists()
    stored = len(list(partial.glob("chunk-*.json")))
    assert 2 <= stored < 16
    res = invoke(*SIGTERM_SWEEP, "--out", cut)
    assert res.exit_code == 0, res.output
    assert "resumed" in res.output and not partial.exists()
    assert read_table(cut / "table.parquet") == read_table(whole / "table.parquet")


def _final_losses(tmp_path, rule, configs):
    out = {}
    for solver, curvature in configs:
        path = tmp_path / f"{rule}-{solver}-{curvature}"
        res = invoke(
            "run", "--rule", rule, "--task", "teacher", "--width", "3", "--depth", "3",
            "--init", "balanced", "--scale", "0.6", "--t1", "2", "--saves", "5", "--solver", solver,
            "--curvature", curvature, "--out", path, "--no-progress",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        out[(solver, curvature)] = np.load(path / "trajectory.npz")["loss"]
    return out


def test_curvature_methods_give_the_same_run(tmp_path):
    losses = _final_losses(tmp_path, "sqrt-ngd", [("tsit5", c) for c in ("dense", "krylov", "balanced")])
    ref = losses[("tsit5", "dense")]
    assert ref[-1] < 0.5 * ref[0]
    for key, loss in losses.items():
        np.testing.assert_allclose(loss, ref, rtol=1e-6, err_msg=str(key))


def test_implicit_solver_option(tmp_path):
    losses = _final_losses(tmp_path, "sgd", [("tsit5", "auto"), ("kvaerno5", "auto")])
    np.testing.assert_allclose(losses[("kvaerno5", "auto")], losses[("tsit5", "auto")], rtol=1e-6)


def test_the_stop_note_names_the_saddle_or_the_time_limit():

    solve = SolveOptions()
    stalled = {"converged": False, "stalled_at_saddle": True, "t_final": 31.6, "saddle_loss": 1.987e-4}
    note = stop_note(stalled, solve)
    assert "saddle at t=31.6" in note and "0.0001987" in note and "--seed" in note and "\n" not in note
    assert "t_max=" in stop_note({"converged": False, "stalled_at_saddle": False}, solve)
    assert stop_note({"converged": True, "stalled_at_saddle": False}, solve) is None


def test_progress_bar_reports_through_diffrax_public_meter_interface(capfd):
    """The --progress bar is a diffrax.AbstractProgressMeter (init/step/close and
    jax.debug.callback, no private diffrax methods); it reaches 100 %, in log time for runs to
    convergence, also under vmap."""

    assert _HostBar(None, 0.0).percent(0.25) == 25.0
    # log time: progress 1e-6 of [0, t_max] with t_max / first save = 1e6 is log(2) / log(1e6 + 1)
    assert _HostBar(1e6, 0.0).percent(1e-6) == pytest.approx(100 * np.log(2) / np.log1p(1e6), rel=1e-12)
    net = dlnsim.DeepLinearNet((3, 3, 3), key=jr.PRNGKey(0))
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(1), 3, 3, rank=2))
    meter = LogTimeProgressMeter(None, refresh_steps=1, delay=0.0)
    assert isinstance(meter, diffrax.AbstractProgressMeter)
    dlnsim.simulate(net, "sgd", task, 2.0, progress_meter=meter)
    err = capfd.readouterr().err
    assert "100.0%" in err and "log time" not in err
    batch = dlnsim.init_weights_batch((3, 3, 3), jr.split(jr.PRNGKey(2), 2))
    meter = LogTimeProgressMeter(1e6, refresh_steps=1, delay=0.0)
    dlnsim.simulate_batch(batch, "sgd", task, 2.0, progress_meter=meter)
    err = capfd.readouterr().err
    assert "100.0%" in err and "(log time)" in err
    source = (ROOT / "dlnsim" / "cli" / "_linear.py").read_text()
    assert "_init_bar" not in source and "_step_bar" not in source
