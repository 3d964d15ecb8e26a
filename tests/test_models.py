import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dlnsim
from dlnsim._models import prefix_products, suffix_products

WIDTHS = [(4, 4, 4, 4), (3, 5, 4, 2), (5, 3, 2, 3, 4)]


@pytest.mark.parametrize("widths", WIDTHS)
@pytest.mark.parametrize("init", ["small", "orthogonal", "balanced", "xavier"])
def test_shapes_and_map(widths, init):
    net = dlnsim.DeepLinearNet(widths, key=jr.PRNGKey(0), init=init)
    assert net.widths == widths
    assert [w.shape for w in net.weights] == [(b, a) for a, b in zip(widths[:-1], widths[1:])]
    expected = np.linalg.multi_dot([np.asarray(w) for w in net.weights[::-1]]) if len(widths) > 2 else None
    np.testing.assert_allclose(net.map(), expected, rtol=1e-13, atol=1e-15)
    x = jr.normal(jr.PRNGKey(1), (7, widths[0]))
    np.testing.assert_allclose(net(x), x @ expected.T, rtol=1e-12, atol=1e-15)


def test_small_init_largest_singular_value():
    net = dlnsim.DeepLinearNet((16,) * 5, key=jr.PRNGKey(0))
    for w in net.weights:
        assert np.linalg.norm(np.asarray(w), 2) == pytest.approx(0.05, rel=1e-12)


def test_orthogonal_init_is_semi_orthogonal():
    net = dlnsim.DeepLinearNet((3, 5, 4, 2), key=jr.PRNGKey(0), init="orthogonal", scale=0.7)
    for w in net.weights:
        w = np.asarray(w) / 0.7
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-12)


@pytest.mark.parametrize("widths", WIDTHS)
def test_balanced_init_has_zero_conserved_quantities(widths):
    net = dlnsim.DeepLinearNet(widths, key=jr.PRNGKey(3), init="balanced", scale=0.8)
    for c in dlnsim.conserved_quantities(net.weights):
        np.testing.assert_allclose(c, 0.0, atol=1e-12)
    # every layer has min(widths) singular values equal to the scale
    for w in net.weights:
        s = np.linalg.svd(np.asarray(w), compute_uv=False)
        np.testing.assert_allclose(s[: min(widths)], 0.8, rtol=1e-12)


def test_xavier_variance():
    net = dlnsim.DeepLinearNet((200, 300), key=jr.PRNGKey(0), init="xavier")
    assert np.var(np.asarray(net.weights[0])) == pytest.approx(2.0 / 500, rel=0.02)


@pytest.mark.parametrize("widths", [(4, 4, 4, 4), (4, 6, 5, 3), (5, 3, 2, 3, 4)])
def test_aligned_init_follows_footnote_2(widths):
    teacher = dlnsim.random_teacher(jr.PRNGKey(1), widths[-1], widths[0], rank=min(widths[0], widths[-1]))
    depth, modes = len(widths) - 1, min(widths)
    s = np.linspace(0.3, 0.9, depth * modes).reshape(depth, modes)
    net = dlnsim.DeepLinearNet(widths, key=jr.PRNGKey(2), init="aligned", teacher=teacher, singular_values=s)
    u, _, vt = np.linalg.svd(np.asarray(teacher))
    # the map is L* diag(prod_i s_i) R*^T on the first `modes` teacher modes
    expected = (u[:, :modes] * np.prod(s, axis=0)) @ vt[:modes]
    np.testing.assert_allclose(net.map(), expected, atol=1e-12)
    # layer singular values are the given ones
    for w, si in zip(net.weights, s):
        np.testing.assert_allclose(
            np.sort(np.linalg.svd(np.asarray(w), compute_uv=False))[::-1][:modes],
            np.sort(si)[::-1],
            atol=1e-12,
        )


def test_prefix_and_suffix_products():
    net = dlnsim.DeepLinearNet((3, 5, 4, 2), key=jr.PRNGKey(0), init="xavier")
    pre, suf = prefix_products(net.weights), suffix_products(net.weights)
    for i in range(3):
        np.testing.assert_allclose(suf[i] @ net.weights[i] @ pre[i], net.map(), atol=1e-13)


def test_same_seed_same_weights():
    a = dlnsim.DeepLinearNet((4, 6, 3), key=jr.PRNGKey(5))
    b = dlnsim.DeepLinearNet((4, 6, 3), key=jr.PRNGKey(5))
    c = dlnsim.DeepLinearNet((4, 6, 3), key=jr.PRNGKey(6))
    assert all(np.array_equal(x, y) for x, y in zip(a.weights, b.weights))
    assert not np.array_equal(a.weights[0], c.weights[0])


def test_float64_by_default_in_tests():
    assert dlnsim.DeepLinearNet((2, 2), key=jr.PRNGKey(0)).weights[0].dtype == jnp.float64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(widths=(3,)), "at least an input and an output"),
        (dict(widths=(3, 0, 2)), "integer >= 1"),
        (dict(widths=(3, 2), init="magic"), "unknown init"),
        (dict(widths=(3, 2), scale=-1.0), "scale"),
        (dict(widths=(3, 2), scale=float("nan")), "scale"),
        (dict(widths=(3, 2), init="aligned"), "teacher"),
        (dict(widths=(3, 2), init="aligned", teacher=np.ones((3, 3))), "teacher has shape"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dlnsim.DeepLinearNet(key=jr.PRNGKey(0), **kwargs)


def test_from_weights_checks():
    net = dlnsim.DeepLinearNet.from_weights([np.ones((4, 3)), np.ones((2, 4))])
    assert net.widths == (3, 4, 2)
    with pytest.raises(ValueError, match="mismatched widths"):
        dlnsim.DeepLinearNet.from_weights([np.ones((4, 3)), np.ones((2, 5))])
    with pytest.raises(ValueError, match="non-finite"):
        dlnsim.DeepLinearNet.from_weights([np.full((4, 3), np.nan)])
