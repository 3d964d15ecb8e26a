"""Karakida & Osawa 2020 in a few lines: seven Fisher approximations on a wide ReLU net, digits 0 vs 7.

python examples/wide_ngd.py [OUT_DIR]
"""

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.random as jr  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dlnsim import wide  # noqa: E402


def main(out_dir: Path | None = None, width: int = 512, samples: int = 32, steps: int = 4) -> dict:
    """Every Fisher at eta = 0.5 / alpha_theory (so that the theory (1/2)^(2t) of the loss is visible;
    the default 1/alpha converges in one step), the entry-wise ones at their default rate."""
    task = wide.digits_task(jr.PRNGKey(0), samples, classes=(0, 7), test_samples=100)
    results = {}
    for fisher in wide.FISHERS:
        # K-FAC's alpha = N L needs the augmented bias (S.B.3.3) and M0 = 64 >= N
        mlp = wide.MLP.uniform(depth=3, width=width, input_dim=64, key=jr.PRNGKey(1))
        alpha = wide.alpha_theory(fisher, mlp, samples)
        lr = None if alpha is None else 0.5 / alpha
        res = wide.compare_with_theory(mlp, task, fisher, steps=steps, learning_rate=lr)
        results[fisher] = res
        theory = "-" if res.alpha_theory is None else f"{res.alpha_theory:.6g}"
        print(
            f"{fisher:<15} alpha theory {theory:>8}  measured {res.alpha_measured:10.6g}  "
            f"cond {res.isotropy_condition_number:8.4g}  lr {res.learning_rate:.3g}  "
            f"loss {res.train_loss[0]:.3e} -> {res.train_loss[-1]:.3e}  "
            f"max dev {res.max_deviation:.2e}  test acc {res.test_accuracy_final:.2f}"
        )
    gd = results["bd"]
    print(f"GD on the NTK: condition number {gd['gd_ntk_condition_number']:.3g}, "
          f"theory loss after {steps} steps {gd['gd_theory_loss'][-1]:.3e}")  # fmt: skip
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(6, 4))
        t = np.arange(steps + 1)
        for name, res in results.items():
            (line,) = ax.semilogy(t, np.maximum(res.train_loss, 1e-30), "o", label=name)
            ax.semilogy(t, np.maximum(res.theory_loss, 1e-30), "-", color=line.get_color())
        ax.semilogy(t, gd["gd_theory_loss"], "k--", label="GD (NTK theory)")
        ax.set(xlabel="step", ylabel="training loss (markers: measured, lines: theory)", ylim=(1e-8, 2),
               title=f"L=3, M={width}, digits 0 vs 7, eta = 0.5/alpha")  # fmt: skip
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "wide_ngd.png", dpi=120)
        plt.close(fig)
    return {
        name: {
            k: r[k] for k in ("alpha_theory", "alpha_measured", "isotropy_condition_number", "max_deviation")
        }
        for name, r in results.items()
    }


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
