"""Karakida & Osawa 2020: the six figure reproductions (Figs. 1a, 1b, 2, 3, S.1, S.2) via the public API.

python examples/reproduce_fisher.py [OUT_DIR] [--full]

Each figure goes to OUT_DIR/ID (figure.png, figure.pdf, metrics.json, data.npz); the software checks,
the paper's claims ("holds" / "differs"), the verdict and the findings are printed.
"""

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from dlnsim import experiments  # noqa: E402

IDS = ("fisher-fig1a", "fisher-fig1b", "fisher-fig2", "fisher-fig3", "fisher-figS1", "fisher-figS2")


def main(out_dir, fast: bool = True, ids=None) -> dict:
    """Runs the given ids (default: all six) into ``out_dir``; returns {id: Reproduction}."""
    out_dir = Path(out_dir)
    results = {}
    for id in IDS if ids is None else ids:
        rep = experiments.reproduce(id, fast=fast, seed=0, out=out_dir / id, overwrite=True)
        results[id] = rep
        status = "software checks passed" if rep.passed else "SOFTWARE CHECKS FAILED"
        print(f"{id}: {status}, verdict {rep.verdict} in {rep.wall_seconds:.1f} s")
        for c in rep.checks:
            print(f"  {c}")
        for finding in rep.findings:
            print(f"  finding: {finding}")
    return results


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    args = [a for a in sys.argv[1:] if a != "--full"]
    main(Path(args[0]) if args else Path("fisher_figures"), fast="--full" not in sys.argv)
