"""XLA's CPU compile time and run time under the compile flags the test suite uses, measured in one run.

Each flag set runs in its own child process (XLA reads XLA_FLAGS once, at start-up). A child
integrates four deep-linear rules (sgd, ngd, sqrt-ngd, ngd-d) on a (6, 5, 3, 5, 6) bottleneck net,
measuring XLA's backend compile time (jax.monitoring), then times the compiled solves again
(run time only) and prints the final losses. The parent prints each flag set's compile and run
times as ratios to the default flags, and the largest relative difference of the losses. Your
own XLA_FLAGS are appended to every row's.

    python benchmarks/compile_flags.py            # width scale 1 (the suite's sizes) and 2
    python benchmarks/compile_flags.py --quick    # sgd at width scale 1, default and FAST only: a smoke test

tests/conftest.py turns on ``FAST`` for the suite, whose tests each compile a small program and
run it briefly. Long runs of large nets may prefer XLA's defaults: compare the run-time ratio.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

FLAG_SETS = {
    "default": "",
    "no fusion emitters": "--xla_cpu_use_fusion_emitters=false",
    "FAST (the suite's)": "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0",
}
RULES = ("sgd", "ngd", "sqrt-ngd", "ngd-d")


def child(scale: int, rules) -> dict:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.monitoring
    import jax.random as jr

    import dlnsim

    compile_s = [0.0]

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compile_s[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    widths = tuple(scale * n for n in (6, 5, 3, 5, 6))
    net = dlnsim.DeepLinearNet(widths, key=jr.PRNGKey(0))
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(1), widths[-1], widths[0], rank=3))
    start = time.perf_counter()
    losses = [float(dlnsim.simulate(net, rule, task, 5.0).loss[-1]) for rule in rules]
    first = time.perf_counter() - start
    start = time.perf_counter()
    for rule in rules:  # compiled: run time only
        dlnsim.simulate(net, rule, task, 5.0)
    run = time.perf_counter() - start
    return {"compile": compile_s[0], "first": first, "run": run, "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sgd, width scale 1, two flag sets")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    rules = ("sgd",) if args.quick else RULES
    if args.child is not None:
        print(json.dumps(child(args.child, rules)))
        return
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; XLA_FLAGS per row")
    for scale in (1,) if args.quick else (1, 2):
        print(f"\nwidths x{scale}: {len(rules)} solve(s) ({', '.join(rules)}), t = 5")
        header = ("flags", "compile s", "ratio", "run s", "ratio", "max rel. diff.")
        print("{:22s} {:>10s} {:>6s} {:>8s} {:>6s} {:>15s}".format(*header))
        base = None
        for name, flags in FLAG_SETS.items():
            if args.quick and name == "no fusion emitters":
                continue
            env = dict(os.environ, XLA_FLAGS=f"{flags} {os.environ.get('XLA_FLAGS', '')}".strip())
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(scale), *(["--quick"] if args.quick else [])],
                env=env,
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                print(f"{name:22s} refused by this XLA: {out.stderr.strip().splitlines()[-1:]}")
                continue
            res = json.loads(out.stdout.strip().splitlines()[-1])
            base = base or res
            diff = max(abs(a - b) / abs(b) for a, b in zip(res["losses"], base["losses"], strict=True))
            print(
                f"{name:22s} {res['compile']:10.2f} {res['compile'] / base['compile']:6.2f} "
                f"{res['run']:8.3f} {res['run'] / base['run']:6.2f} {diff:15.1e}"
            )


if __name__ == "__main__":
    main()
