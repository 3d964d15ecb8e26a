"""Run-time utilities of dlnsim._checks: the LAPACK thread limit and atomic output directories."""

import jax.numpy as jnp
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import dlnsim


def _scipy_openblas_threads():
    return [i["num_threads"] for i in threadpool_info() if "scipy.libs" in i["filepath"]]


def test_limit_lapack_threads_reaches_the_lapack_jax_calls():
    jnp.linalg.svd(jnp.eye(3))  # jax's CPU kernels have loaded SciPy's LAPACK
    with threadpool_limits(2, user_api="blas"):
        assert _scipy_openblas_threads() == [2]
        with dlnsim.limit_lapack_threads(1):
            assert _scipy_openblas_threads() == [1]
            a = jnp.arange(12.0).reshape(3, 4)
            u, s, vt = jnp.linalg.svd(a)
            np.testing.assert_allclose(u @ jnp.diag(s) @ vt[:3], a, atol=1e-12)
        assert _scipy_openblas_threads() == [2]  # the context manager restores the previous limit


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_limit_lapack_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        dlnsim.limit_lapack_threads(bad)
