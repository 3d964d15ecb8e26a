"""Reproduce the figures of Huh 2020 (curvature-corrected learning dynamics) through dlnsim's registry.

python examples/reproduce_curvature.py [OUT_DIR] [--full]

Runs curvature-fig1, -fig2, -fig3, -figS1 and -figS2 (shrunk sizes unless --full) and writes each
figure, its metrics.json (the software checks, the paper's claims and the verdict they give) and
data.npz to OUT_DIR/ID. Exits 1 only when a software check fails: a claim of the paper that does not
hold is a finding, reported in the verdict.
"""

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from dlnsim import experiments  # noqa: E402

IDS = ("curvature-fig1", "curvature-fig2", "curvature-fig3", "curvature-figS1", "curvature-figS2")


def main(out_dir: Path, fast: bool = True, ids=None) -> dict:
    """Runs the given ids (all five by default); returns {id: Reproduction}."""
    results = {}
    for fid in IDS if ids is None else ids:
        exp = experiments.experiment(fid)
        rep = experiments.reproduce(fid, fast=fast, seed=0, out=Path(out_dir) / fid, overwrite=True)
        print(f"{fid}: {exp.title} [{exp.source}]")
        for c in rep.checks:
            print(f"  {c}")
        for finding in rep.findings:
            print(f"  finding: {finding}")
        status = "software checks passed" if rep.passed else "software checks FAILED"
        print(f"  {status}; verdict {rep.verdict} in {rep.wall_seconds:.1f} s")
        results[fid] = rep
    return results


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    args = [a for a in sys.argv[1:] if a != "--full"]
    reps = main(Path(args[0]) if args else Path("reproductions"), fast="--full" not in sys.argv)
    sys.exit(0 if all(r.passed for r in reps.values()) else 1)
