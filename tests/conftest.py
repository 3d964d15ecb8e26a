import os
import shutil
import tempfile

# One OpenBLAS thread for jax's CPU LAPACK kernels (see dlnsim.limit_lapack_threads):
# set before numpy loads, and inherited by the scripts the tests run.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

# A persistent compilation cache shared by the xdist workers and the scripts the tests start,
# created empty for each pytest session (so the suite's time is that of a cold start): test modules
# compile the same programs again (the in-memory caches are cleared after each module, below), and
# the workers compile many of the same programs (measured on three test files: 15 % less CPU). A
# size limit turns on jax's file lock, so that processes never read an entry while it is written.
_CACHE_ENV = "DLNSIM_TEST_JAX_CACHE"
_CACHE_OPTIONS = {
    "jax_compilation_cache_max_size": 8 << 30,
    "jax_persistent_cache_min_compile_time_secs": 0.1,
}


def pytest_configure(config):
    if _CACHE_ENV not in os.environ:  # the controller (or a run without xdist)
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="dlnsim-test-jax-cache-")
        config._dlnsim_jax_cache = os.environ[_CACHE_ENV]
    cache = os.environ[_CACHE_ENV]
    jax.config.update("jax_compilation_cache_dir", cache)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache  # inherited by the scripts tests run
    for name, value in _CACHE_OPTIONS.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)


def pytest_unconfigure(config):
    cache = getattr(config, "_dlnsim_jax_cache", None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches():
    """Drops compiled executables after each test module. The suite compiles thousands of
    functions; keeping them all made one process hold GBs of JIT code and memory maps."""
    yield
    jax.clear_caches()
