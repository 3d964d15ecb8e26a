import os
import shutil
import subprocess
import sys
import tempfile

# One OpenBLAS thread for jax's CPU LAPACK kernels (see dlnsim.limit_lapack_threads):
# set before numpy loads, and inherited by the scripts the tests run.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# XLA's CPU compiler options for a compile-bound suite: the legacy loop emitters for fused
# elementwise code and no LLVM optimisation. Nearly every test compiles its own small program and
# runs it briefly, so compiling dominates: on four deep-linear solves these flags cut XLA's compile
# time from 15.6 to 4.0 s (benchmarks/compile_flags.py measures it, and the run time they cost).
# Results agree with the default flags to float precision (the fusion emitters alone change no
# bit). Probed once per session in a child process, since an XLA that does not know a flag aborts
# the process; a user's own XLA_FLAGS come after these, so they win.
FAST_COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"
_FLAGS_ENV = "DLNSIM_TEST_XLA_FLAGS"


def _accepted(xla_flags: str) -> bool:
    """Whether a child jax process starts and computes with XLA_FLAGS=xla_flags."""
    probe = "import jax.numpy as jnp; jnp.zeros(2).sum().block_until_ready()"
    env = dict(os.environ, XLA_FLAGS=xla_flags)
    try:
        child = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return child.returncode == 0


if _FLAGS_ENV not in os.environ:  # the controller (or a run without xdist); workers inherit it
    combined = f"{FAST_COMPILE_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()
    accepted = _accepted(combined)
    os.environ[_FLAGS_ENV] = FAST_COMPILE_FLAGS if accepted else ""
    if accepted:
        os.environ["XLA_FLAGS"] = combined

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
