"""64 seeds at n = 16, d = 4: one vmapped diffrax solve against a Python loop of single solves.

Both produce the same trajectories (checked); times exclude compilation (each path runs once
first on the same shapes).

    python benchmarks/sweep.py                 # 64 seeds, sqrt-ngd
    python benchmarks/sweep.py --seeds 8 --rule ngd-d
"""

import argparse
import os
import platform
import time

# One OpenBLAS thread for jax's CPU LAPACK kernels (dlnsim.limit_lapack_threads explains why);
# set before numpy loads. Export OPENBLAS_NUM_THREADS to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import dlnsim  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--rule", default="sqrt-ngd")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--t1", type=float, default=5.0)
    args = parser.parse_args()
    print(
        f"# {platform.processor() or platform.machine()}, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    widths = (args.n,) * (args.depth + 1)
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(1), args.n, args.n))
    keys = jr.split(jr.PRNGKey(2), args.seeds)
    batch = dlnsim.init_weights_batch(widths, keys, init="xavier")
    saveat = diffrax.SaveAt(ts=jnp.linspace(0.0, args.t1, 101))

    def batched():
        return dlnsim.simulate(batch, args.rule, task, args.t1, saveat=saveat)

    def loop():
        return [
            dlnsim.simulate(tuple(w[b] for w in batch), args.rule, task, args.t1, saveat=saveat)
            for b in range(args.seeds)
        ]

    batched()  # compile both paths first
    dlnsim.simulate(tuple(w[0] for w in batch), args.rule, task, args.t1, saveat=saveat)
    start = time.perf_counter()
    res_b = batched()
    t_b = time.perf_counter() - start
    start = time.perf_counter()
    res_l = loop()
    t_l = time.perf_counter() - start
    diff = max(float(np.abs(res_b[i].loss[-1] - res_l[i].loss[-1])) for i in range(args.seeds))
    print(f"{args.seeds} seeds, {args.rule}, n = {args.n}, d = {args.depth}, t1 = {args.t1}")
    print(f"batched (one vmapped solve): {t_b:.2f} s")
    print(f"python loop of single solves: {t_l:.2f} s")
    print(f"loop / batched = {t_l / t_b:.1f}x; max |final loss difference| = {diff:.1e}")


if __name__ == "__main__":
    main()
