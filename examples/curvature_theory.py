"""Huh 2020's singular-mode theory in a few lines: stiffness, exact map dynamics, scaling laws.

python examples/curvature_theory.py [OUT_DIR]
"""

import math
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.random as jr  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import dlnsim  # noqa: E402
from dlnsim import analytic  # noqa: E402


def main(out_dir: Path | None = None) -> dict:
    # 1. Stiffness p (eq. 21) and effective depth (eq. 22) for SGD, sqrt-NGD and NGD.
    for q in (math.inf, 2.0, 1.0):
        row = [
            f"p={analytic.stiffness(d, q):.3f}/deff={analytic.effective_depth(d, q):.2f}" for d in (2, 4, 8)
        ]
        print(f"q={q:<4}  d=2,4,8: " + "  ".join(row))

    # 2. Exact balanced map dynamics (Huh 2020, Fig. 2): closed forms and the general-p inversion.
    t = np.linspace(0, 12, 400)
    curves = {}
    for d, q in ((2, 1.0), (2, 2.0), (4, 2.0), (2, math.inf), (4, math.inf)):
        p = analytic.stiffness(d, q)
        sigma0 = 0.0 if p < 1 else 0.01
        curves[p] = analytic.balanced_map_trajectory(t, depth=d, q=q, sigma_star=1.0, sigma0=sigma0)

    # 3. An aligned, balanced full-matrix run follows it to integration accuracy.
    teacher = dlnsim.random_teacher(jr.PRNGKey(0), 4, 4, spectrum=[2.0, 1.0])
    net = dlnsim.DeepLinearNet(
        (4,) * 5, key=jr.PRNGKey(1), init="aligned", teacher=teacher, singular_values=0.2
    )
    traj = dlnsim.simulate(net, "sqrt-ngd", dlnsim.Task(teacher), 6.0)
    exact = analytic.balanced_map_trajectory(traj.times, depth=4, q=2.0, sigma_star=2.0, sigma0=0.2**4)
    deviation = float(np.abs(traj.mode_strengths[:, 0] - exact).max() / 2.0)
    print(f"full-matrix sqrt-NGD vs exact eq. 21 solution: max relative deviation {deviation:.1e}")

    # 4. Scaling laws S.I.16-17 measured with the full-matrix vector fields.
    fits = {}
    for rule, q in (("sgd", math.inf), ("sqrt-ngd", 2.0), ("ngd", 1.0)):
        m = analytic.measure_scaling(rule, depth=3, scales=np.geomspace(0.05, 2.0, 6))
        fits[rule] = (m["update_exponent"], m["loss_rate_exponent"])
        print(f"{rule:<9} fitted exponents {fits[rule][0]:+.6f}, {fits[rule][1]:+.6f};"
              f" theory {analytic.scaling_exponents(3, q)}")  # fmt: skip

    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for p, c in curves.items():
            ax.plot(t, c, label=f"p = {p:.2f}")
        ax.set(xlabel="t", ylabel="map strength sigma(t)", title="Huh 2020 eq. 21, sigma* = 1")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "map_dynamics.png", dpi=120)
        plt.close(fig)
    return {"deviation": deviation, "fits": fits}


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
