"""Thin launcher: ``python app.py run ...`` is the same as ``dlnsim run ...``."""

import os

# One OpenBLAS thread for jax's CPU LAPACK kernels (see dlnsim.limit_lapack_threads), set before
# numpy loads; the console script sets the same limit at its entry.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from dlnsim.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
