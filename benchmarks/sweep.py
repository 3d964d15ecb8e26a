"""Sweep throughput: elements x solver steps per second, measured in one run, for
(1) a Python loop of single-element solves, (2) one vmapped solve on one device, and (3) the same
batch sharded over 2 host devices (a subprocess with
--xla_force_host_platform_device_count=2 added to XLA_FLAGS).

Defaults: n = 16, d = 4, 64 seeds x 4 values of q (qngd, q = 1, 1.5, 2, 3): 256 elements. The
loop runs the first --loop-elements elements (its rate is per element, so a subset suffices).
Times exclude compilation (each path runs once first on the same shapes); the three paths give
the same numbers (checked).

    python benchmarks/sweep.py
    python benchmarks/sweep.py --seeds 16 --t1 2
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dlnsim import _sweep  # noqa: E402
from dlnsim._sharding import batch_mesh  # noqa: E402


def _spec(args) -> _sweep.SweepSpec:
    return _sweep.SweepSpec(
        rules=("qngd",), q=(1.0, 1.5, 2.0, 3.0), depths=(args.depth,), width=args.n, seeds=args.seeds,
        t1=args.t1, saves=50, scales=(0.5,), init="xavier", dtype=args.dtype,
    )  # fmt: skip


def _timed_sweep(spec, devices, chunk):
    mesh = batch_mesh(jax.devices()[:devices])
    _sweep.sweep(spec, chunk_size=chunk, mesh=mesh)  # compile
    start = time.perf_counter()
    rows = _sweep.sweep(spec, chunk_size=chunk, mesh=mesh)
    return time.perf_counter() - start, rows


def _loop(spec, count):
    """Single-element solves of the same compiled program (a batch of one), in a Python loop."""
    group = _sweep.build_groups(spec, spec.elements())[0]
    save_times = jnp.asarray(spec.save_times())
    tol = _sweep.TOLERANCES[spec.dtype]

    def one(k):
        pick = lambda x: x[k : k + 1]  # noqa: E731
        out = _sweep._solve_batch(
            group.static, jax.tree.map(pick, group.arrays), jax.tree.map(pick, group.weights),
            save_times, jnp.asarray(spec.loss_tol), spec.max_steps, tol,
        )  # fmt: skip
        return jax.block_until_ready(out)

    one(0)  # compile
    start = time.perf_counter()
    steps = [int(one(k)[4][0]) for k in range(count)]
    return time.perf_counter() - start, steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--t1", type=float, default=5.0)
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--loop-elements", type=int, default=16)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    spec = _spec(args)
    n_el = len(spec.elements())
    if args.child:  # the 2-device measurement
        wall, rows = _timed_sweep(spec, 2, n_el)
        print(
            json.dumps(
                {"wall": wall, "steps": [r["steps"] for r in rows], "loss": [r["loss_final"] for r in rows]}
            )
        )
        return
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}, {args.dtype}, n = {args.n}, d = {args.depth}, {args.seeds} seeds x 4 q"
    )
    loop_wall, loop_steps = _loop(spec, min(args.loop_elements, n_el))
    one_wall, rows = _timed_sweep(spec, 1, n_el)
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"
    env = {**os.environ, "XLA_FLAGS": flags.strip()}  # the user's own XLA flags are kept
    child = subprocess.run(
        [sys.executable, __file__, "--child", f"--seeds={args.seeds}", f"--n={args.n}",
         f"--depth={args.depth}", f"--t1={args.t1}", f"--dtype={args.dtype}"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    two = json.loads(child.stdout.strip().splitlines()[-1])
    loss = np.asarray([r["loss_final"] for r in rows])
    assert np.allclose(loss, two["loss"], rtol=1e-10), "sharded and unsharded sweeps disagree"
    steps = sum(r["steps"] for r in rows)
    rates = {
        "Python loop (1 element per call)": sum(loop_steps) / loop_wall,
        "vmapped, 1 device": steps / one_wall,
        "vmapped, 2 host devices": sum(two["steps"]) / two["wall"],
    }
    base = rates["Python loop (1 element per call)"]
    for name, rate in rates.items():
        print(f"{name:<36} {rate:12.0f} element-steps/s  ({rate / base:.2f}x)")
    print(f"# {n_el} elements, {steps} steps in all (mean {steps / n_el:.0f} per element)")


if __name__ == "__main__":
    main()
