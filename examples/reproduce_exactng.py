"""Bernacchia et al. 2018, Fig. 1: online natural gradient (eqs. 20-21) against SGD, four panels.

python examples/reproduce_exactng.py [OUT_DIR] [--full]

Each panel runs through the public API, ``dlnsim.experiments.reproduce``, and writes figure.png,
figure.pdf, metrics.json and data.npz under OUT_DIR/<id>. It prints each panel's verdict (whether the
paper's claims hold), its checks and findings; the exit code is 1 only if a software check fails.
``--full`` runs the paper's sizes (minutes per panel on a 2-core CPU); the default is the fast size.
"""

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from dlnsim import experiments  # noqa: E402

IDS = ("exactng-fig1a", "exactng-fig1b", "exactng-fig1c", "exactng-fig1d")


def main(out_dir: Path | None = None, fast: bool = True, ids=None) -> dict:
    """Runs the panels ``ids`` (all four by default); returns {id: Reproduction}."""
    results = {}
    for id in IDS if ids is None else ids:
        out = None if out_dir is None else Path(out_dir) / id
        rep = experiments.reproduce(id, fast=fast, seed=0, out=out, overwrite=True)
        status = "software checks passed" if rep.passed else "software checks FAILED"
        print(f"{id}: verdict {rep.verdict} ({status}) in {rep.wall_seconds:.1f} s")
        for c in rep.checks:
            print(f"  {c}")
        for line in rep.findings:
            print(f"  finding: {line}")
        results[id] = rep
    return results


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    reps = main(Path(args[0]) if args else Path("runs/exactng"), fast="--full" not in sys.argv)
    sys.exit(0 if all(r.passed for r in reps.values()) else 1)
