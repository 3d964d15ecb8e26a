"""The linear-algebra core: decompositions one matrix at a time, with jnp.linalg's values and
derivatives, and never a batched LAPACK call in a vmapped learning rule (the deadlock's cause)."""

import re

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dlnsim
from dlnsim import _linalg as L

RNG = np.random.default_rng(0)
TOL = 1e-12  # float64 round-off on O(1) 5 x 5 problems


def _compare(mine, reference, x):
    """Values, forward and reverse Jacobians, plainly and under jit(vmap), to TOL."""
    xs = jnp.stack([x, 1.3 * x + 0.1])
    pairs = [
        (jax.jit(mine)(x), reference(x)),
        (jax.jit(jax.jacfwd(mine))(x), jax.jit(jax.jacfwd(reference))(x)),
        (jax.jit(jax.jacrev(mine))(x), jax.jit(jax.jacrev(reference))(x)),
        (jax.jit(jax.vmap(mine))(xs), jax.jit(jax.vmap(reference))(xs)),
        (jax.jit(jax.vmap(jax.jacrev(mine)))(xs), jax.jit(jax.vmap(jax.jacrev(reference)))(xs)),
    ]
    for a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL * max(1.0, float(jnp.max(jnp.abs(b)))))


def test_eigh_matches_jnp_with_derivatives():
    a = jnp.asarray(RNG.standard_normal((5, 5)))

    def rebuild(eig):  # sign-invariant: V diag(w^3) V^T, and the eigenvalues
        return lambda m: (lambda w, v: (v * w**3) @ v.T + jnp.diag(w))(*eig(m))

    _compare(rebuild(L.eigh), rebuild(jnp.linalg.eigh), a + a.T)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4)])
def test_svd_matches_jnp_with_derivatives(shape):
    a = jnp.asarray(RNG.standard_normal(shape))

    def rebuild(svd):
        return lambda m: (lambda u, s, vt: (u * s**3) @ vt)(*svd(m))

    _compare(rebuild(L.svd), rebuild(lambda m: jnp.linalg.svd(m, full_matrices=False)), a)
    _compare(lambda m: L.svd(m, compute_uv=False), lambda m: jnp.linalg.svd(m, compute_uv=False), a)


def test_square_full_svd_is_differentiable_and_nonsquare_full_svd_says_why_not():
    a = jnp.asarray(RNG.standard_normal((4, 4)))
    u, s, vt = L.svd(a, full_matrices=True)
    np.testing.assert_allclose((u * s) @ vt, a, atol=TOL)
    jax.jacfwd(lambda m: L.svd(m, full_matrices=True)[1])(a)
    b = jnp.asarray(RNG.standard_normal((3, 5)))
    assert L.svd(b, full_matrices=True)[2].shape == (5, 5)
    with pytest.raises(NotImplementedError, match="full_matrices=False"):
        jax.jacfwd(lambda m: L.svd(m, full_matrices=True)[0])(b)


def test_inv_matches_jnp_with_derivatives():
    a = jnp.asarray(RNG.standard_normal((4, 4))) + 3 * jnp.eye(4)
    _compare(L.inv, jnp.linalg.inv, a)


def test_stacks_are_decomposed_matrix_by_matrix():
    stack = jnp.asarray(RNG.standard_normal((2, 3, 4, 4)))
    stack = stack + jnp.swapaxes(stack, -1, -2)
    w, v = L.eigh(stack)
    w_ref = jnp.linalg.eigh(stack)[0]
    np.testing.assert_allclose(w, w_ref, atol=TOL * 10)
    np.testing.assert_allclose(v @ (w[..., None] * jnp.swapaxes(v, -1, -2)), stack, atol=1e-12 * 10)
    assert _lapack_operand_ranks(jax.jit(L.eigh).lower(stack).as_text()) == {2}


@pytest.mark.parametrize("which", ["damping", "power"])
def test_psd_function_is_differentiable_in_its_damping_and_power(which):
    a = jnp.asarray(RNG.standard_normal((5, 5)))
    m, v = a @ a.T, jnp.asarray(RNG.standard_normal(5))

    def reference(p, eps):
        w, vecs = jnp.linalg.eigh(m)
        return vecs @ ((w + eps) ** -p * (vecs.T @ v))

    if which == "damping":
        _compare(lambda e: L.psd_function_apply(m, v, 0.5, e, 1e-12), lambda e: reference(0.5, e), 0.1)
    else:
        _compare(lambda p: L.psd_function_apply(m, v, p, 0.1, 1e-12), lambda p: reference(p, 0.1), 0.7)


def test_default_rcond_is_ten_size_eps():
    assert L.default_rcond(7, jnp.float64) == 70 * np.finfo(np.float64).eps
    assert L.default_rcond(3, jnp.float32) == 30 * np.finfo(np.float32).eps


def _lapack_operand_ranks(hlo: str) -> set[int]:
    """The ranks of the first operand of every LAPACK custom call in lowered StableHLO."""
    calls = re.findall(r"custom_call @lapack_\w+\(.*?\).*?: \(tensor<([^>]*)>", hlo)
    assert calls, "no LAPACK call found: the check would be vacuous"
    return {len(shape.split("x")) - 1 for shape in calls}


@pytest.mark.parametrize("rule", ["ngd", "sqrt-ngd", "ngd-d", "sqrt-ngd-d", "damped-ngd", "bernacchia"])
def test_vmapped_rules_never_batch_a_decomposition(rule):
    """A vmapped field (as in sweeps and batched simulate) loops over its batch for every
    decomposition: batched LAPACK kernels deadlocked jaxlib's CPU pool (docs/known-problems.md)."""
    widths = (3, 4, 2, 3)
    task = dlnsim.Task(
        dlnsim.random_teacher(jr.PRNGKey(1), 3, 3), dlnsim.correlated_input_cov(jr.PRNGKey(2), 3, decay=2.0)
    )
    field = dlnsim.vector_field(rule, eps=0.3 if rule == "damped-ngd" else None)
    ws = dlnsim.init_weights_batch(widths, jr.split(jr.PRNGKey(0), 4), init="xavier")
    hlo = jax.jit(jax.vmap(lambda w: field(0.0, w, task))).lower(ws).as_text()
    assert _lapack_operand_ranks(hlo) == {2}
    batched = jax.jit(jax.vmap(lambda w: field(0.0, w, task)))(ws)
    for i in range(4):
        one = field(0.0, tuple(w[i] for w in ws), task)
        for b, o in zip(batched, one):
            np.testing.assert_allclose(b[i], o, rtol=0, atol=1e-13 * max(1.0, float(jnp.max(jnp.abs(o)))))
