"""Sweeps (dlnsim._sweep): grids, one compilation per structure, sharding, resuming."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import diffrax
import jax.numpy as jnp
import pytest

import dlnsim
from dlnsim import _sweep
from dlnsim._sweep import SweepSpec, build_groups, sweep
from dlnsim._sweep_outputs import run_sweep
from dlnsim._table import ChunkStore, read_table

SMALL = dict(depths=(2,), width=3, seeds=2, t1=20.0, saves=30, scales=(0.3,), init="xavier")


def test_grid_elements_and_bad_specs():
    spec = SweepSpec(rules=("sgd", "qngd", "damped-ngd"), q=(1.5, 2.0, 3.0), eps=(0.1, 1.0), **SMALL)
    els = spec.elements()
    assert len(els) == (1 + 3 + 2) * 2 and [e["element"] for e in els] == list(range(12))
    assert {e["q"] for e in els if e["rule"] == "qngd"} == {1.5, 2.0, 3.0}
    assert {e["eps"] for e in els if e["rule"] == "damped-ngd"} == {0.1, 1.0}
    with pytest.raises(ValueError, match="need q values"):
        SweepSpec(rules=("qngd",))
    with pytest.raises(ValueError, match="q applies only"):
        SweepSpec(rules=("ngd",), q=(2.0,))
    with pytest.raises(ValueError, match="unknown rule"):
        SweepSpec(rules=("adam",))
    with pytest.raises(ValueError, match="scales"):
        SweepSpec(scales=(0.1, -1.0))


def test_values_share_one_compilation_and_match_single_runs():
    """4 values of q x 2 init scales x 2 seeds are one group: one compilation; each row's final
    loss equals a separate dlnsim.simulate of the same element to solver precision."""
    spec = SweepSpec(rules=("qngd",), q=(1.0, 1.5, 2.0, 3.0), **{**SMALL, "scales": (0.2, 0.4)})
    groups = build_groups(spec, spec.elements())
    assert len(groups) == 1 and len(groups[0].elements) == 16
    before = _sweep._TRACES
    rows = sweep(spec, chunk_size=16)
    assert _sweep._TRACES - before == 1
    assert all(r["status"] in ("ok", "stopped early") for r in rows)
    save_times = spec.save_times()
    for k in (0, 7, 13):
        el, group = rows[k], groups[0]
        w0 = tuple(w[k] for w in group.weights)
        field, task = _sweep.element_field(spec, el), _sweep._task(spec, spec.width, None)
        loss0 = float(task.loss(dlnsim.network_map(w0)))
        traj = dlnsim.simulate(
            w0, field, task, spec.t1, saveat=diffrax.SaveAt(ts=jnp.asarray(save_times)),
            loss_threshold=spec.loss_tol * loss0,
        )  # fmt: skip
        # Not bit-equal: a vmapped dot rounds differently, the step controller's error estimate (a
        # difference of O(1) stages, of size rtol) carries that rounding at the 1e-16 / rtol level,
        # and the two solves take slightly different steps. Each is accurate to the controller's
        # tolerance, so they agree to a few rtol.
        rtol = 10 * dlnsim._simulation.DEFAULT_RTOL
        assert rows[k]["loss_final"] == pytest.approx(float(traj.loss[-1]), rel=rtol)
        assert rows[k]["t_final"] == pytest.approx(float(traj.times[-1]), rel=rtol)


def test_failed_elements_are_recorded_and_the_rest_go_on():
    # NGD from weights so small that its field underflows fails at t = 0 with the hint of
    # dlnsim.simulate; sgd from the same weights sits on its saddle, which is no failure
    spec = SweepSpec(
        rules=("ngd", "sgd"),
        **{**SMALL, "scales": (1e-80,), "depths": (4,), "init": "small", "max_steps": 5000},
    )
    rows = sweep(spec)
    by_rule = {r["rule"]: r for r in rows}
    assert by_rule["sgd"]["status"] in ("ok", "stopped early")
    assert by_rule["ngd"]["status"].startswith("failed")
    assert by_rule["ngd"]["failure_time"] is not None


SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    from dlnsim import _sweep
    from dlnsim._sharding import batch_mesh
    spec = _sweep.SweepSpec(rules=("qngd", "damped-ngd"), q=(1.0, 2.0, 3.0), eps=(0.1, 1.0),
                            depths=(2,), width=3, seeds=4, t1=20.0, saves=30, scales=(0.3,), init="xavier")
    out = {}
    for n in (4, 1):
        before = _sweep._TRACES
        rows = _sweep.sweep(spec, chunk_size=8, mesh=batch_mesh(jax.devices()[:n]))
        out[n] = {"traces": _sweep._TRACES - before, "rows": rows,
                  "groups": len(_sweep.build_groups(spec, spec.elements()))}
    print(json.dumps({"devices": len(jax.devices()), **{str(k): v for k, v in out.items()}}))
    """
)


def test_sharded_sweep_equals_unsharded():
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    env = {**os.environ, "XLA_FLAGS": flags.strip()}  # keeps the suite's compile flags
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED], capture_output=True, text=True, timeout=900, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["devices"] == 4
    for n in ("4", "1"):
        assert res[n]["traces"] == res[n]["groups"]  # one compilation per group
    for a, b in zip(res["4"]["rows"], res["1"]["rows"]):
        for key in ("loss_final", "t_final", "half_time", "max_conservation_drift"):
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-300), key
        assert a["status"] == b["status"]


def test_interrupted_sweep_resumes_without_losing_or_doubling_rows(tmp_path, monkeypatch):
    spec = SweepSpec(rules=("sqrt-ngd", "sgd"), **{**SMALL, "seeds": 3})
    whole = run_sweep(spec, tmp_path / "whole", chunk_size=2, progress=False)
    calls = {"n": 0}
    real_add = ChunkStore.add

    def add_then_stop(self, rows):
        real_add(self, rows)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ChunkStore, "add", add_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "cut", chunk_size=2, progress=False)
    assert not (tmp_path / "cut").exists() and (tmp_path / ".cut.partial").is_dir()
    monkeypatch.setattr(ChunkStore, "add", real_add)
    resumed = run_sweep(spec, tmp_path / "cut", chunk_size=2, progress=False)
    # groups of 3 (one per rule) in chunks of 2 and 1: the first two chunks hold 3 elements
    assert resumed.resumed == 3 and resumed.computed == len(spec.elements()) - 3
    assert read_table(tmp_path / "cut" / "table.parquet") == read_table(tmp_path / "whole" / "table.parquet")
    assert not (tmp_path / ".cut.partial").exists()
    again = run_sweep(spec, tmp_path / "cut", chunk_size=2, progress=False)
    assert again.already_complete and again.computed == 0 and len(again.rows) == len(whole.rows)
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [
        ".dlnsim-output.json", "loss_final.png", "summary.json", "table.csv", "table.parquet",
    ]  # fmt: skip


DISTRIBUTED = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    from dlnsim._sharding import initialize_distributed
    initialize_distributed(sys.argv[1], 2, int(sys.argv[2]))
    from dlnsim import _sweep, _sweep_outputs
    spec = _sweep.SweepSpec(rules=("qngd",), q=(1.0, 2.0), depths=(2,), width=3, seeds=3, t1=20.0,
                            saves=30, scales=(0.3,), init="xavier")
    outcome = _sweep_outputs.run_sweep(spec, sys.argv[3], chunk_size=4, progress=False)
    print("process", jax.process_index(), "of", jax.process_count(), "devices", len(jax.devices()))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_same_table_as_one(tmp_path):
    spec = SweepSpec(rules=("qngd",), q=(1.0, 2.0), **{**SMALL, "seeds": 3})
    single = run_sweep(spec, tmp_path / "single", chunk_size=4, progress=False)
    address = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DISTRIBUTED, address, str(i), str(tmp_path / "joint")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in (0, 1)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    assert "process 0 of 2 devices 2" in outs[0][0] and "process 1 of 2 devices 2" in outs[1][0]
    joint = read_table(tmp_path / "joint" / "table.parquet")
    assert len(joint) == len(single.rows)
    for a, b in zip(joint, single.rows):
        assert a["element"] == b["element"] and a["status"] == b["status"]
        assert a["loss_final"] == pytest.approx(b["loss_final"], rel=1e-12)


def test_auto_method_between_dense_and_krylov_is_vmappable_over_q():
    """At n_d n_0 = 256 'auto' takes dense for q = 1 and krylov otherwise, chosen at run time; under
    vmap both run, and the krylov CG that cannot converge at q = 1 (K singular) must not fail the
    elements that use dense."""
    spec = SweepSpec(rules=("qngd",), q=(1.0, 2.0), depths=(2,), width=16, seeds=1, t1=1.0, saves=5,
                     scales=(0.5,), init="xavier")  # fmt: skip
    rows = sweep(spec)
    assert [r["status"] for r in rows] == ["ok", "ok"] and rows[0]["loss_final"] < rows[0]["loss_initial"]
