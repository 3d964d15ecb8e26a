import os

# One OpenBLAS thread for jax's CPU LAPACK kernels (see dlnsim._checks.limit_lapack_threads):
# set before numpy loads, and inherited by the scripts the tests run.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
