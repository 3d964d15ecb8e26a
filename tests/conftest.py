import os

# One OpenBLAS thread for jax's CPU LAPACK kernels (see dlnsim.limit_lapack_threads):
# set before numpy loads, and inherited by the scripts the tests run.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches():
    """Drops compiled executables after each test module. The suite compiles thousands of
    functions; keeping them all made one process hold GBs of JIT code and memory maps."""
    yield
    jax.clear_caches()
