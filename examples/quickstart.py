"""Quickstart: rules as diffrax vector fields, simulate(), and the NGD / sqrt-NGD contrast.

python examples/quickstart.py [OUT_DIR]
"""

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # float64 is the caller's choice, never an import side effect

import diffrax  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import dlnsim  # noqa: E402
from dlnsim._plotting import plot_loss, plot_modes  # noqa: E402


def main(out_dir: Path | None = None) -> dict:
    # A depth-4 net of width 8 from small random weights (largest singular value 0.05),
    # learning a rank-3 teacher from whitened inputs (Huh 2020, eq. 1).
    net = dlnsim.DeepLinearNet((8,) * 5, key=jr.PRNGKey(0))
    task = dlnsim.Task(dlnsim.random_teacher(jr.PRNGKey(1), 8, 8, rank=3))

    # 1. A rule is a plain diffrax vector field f(t, weights, task).
    f = dlnsim.vector_field("sqrt-ngd")
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f), diffrax.Tsit5(), 0.0, 5.0, None, net.weights, args=task,
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
    )  # fmt: skip
    final = tuple(w[-1] for w in sol.ys)
    before, after = float(task.loss(net.map())), float(task.loss(dlnsim.network_map(final)))
    print(f"own diffrax solve: loss {before:.4f} -> {after:.3e}")

    # 2. simulate() adds observables: loss, mode strengths, conservation drift, parameter speed.
    results = {}
    trajs = []
    for rule, t1 in (("ngd", 20.0), ("sqrt-ngd", 20.0), ("sgd", 1500.0)):
        traj = dlnsim.simulate(net, rule, task, t1)
        trajs.append(traj)
        half = traj.half_times()[:3]
        results[rule] = dict(loss=float(traj.loss[-1]), drift=float(traj.conservation_drift.max()), half=half)
        print(
            f"{rule:<9} final loss {traj.loss[-1]:.3e}"
            f"  conservation drift {traj.conservation_drift.max():.1e}"
            f"  half-times of modes 1-3: {np.array2string(half, precision=3)}"
        )
    # NGD learns every mode on one time scale; sqrt-NGD and SGD learn strong modes first.
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_loss(trajs, str(out_dir / "quickstart_loss.png"))
        plot_modes(trajs, str(out_dir / "quickstart_modes.png"))
    return results


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
