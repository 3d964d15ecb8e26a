"""Independent dense references: the P x P Gauss-Newton matrix built from an autodiff Jacobian.

Nothing here uses dlnsim's curvature code: the Jacobian comes from jax.jacfwd of the map, the
gradient from jax.grad of the loss, and powers from numpy's eigh of the dense matrices.
"""

import jax
import jax.numpy as jnp
import numpy as np


def flatten(weights):
    return np.concatenate([np.asarray(w).ravel() for w in weights])


def unflatten(theta, shapes):
    out, i = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(np.asarray(theta[i : i + n]).reshape(s))
        i += n
    return tuple(out)


def _map_of(theta, shapes):
    ws = []
    i = 0
    for s in shapes:
        n = s[0] * s[1]
        ws.append(theta[i : i + n].reshape(s))
        i += n
    out = ws[0]
    for w in ws[1:]:
        out = w @ out
    return out


def dense_parts(weights, teacher, input_cov):
    """Returns (H+ as a P x P array, gradient g as a P vector, block slices)."""
    shapes = [tuple(w.shape) for w in weights]
    theta = jnp.asarray(flatten(weights))
    cov = np.asarray(input_cov)
    evals, evecs = np.linalg.eigh(cov)
    sqrt_cov = jnp.asarray((evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T)

    def whitened_map(th):
        return (_map_of(th, shapes) @ sqrt_cov).ravel()

    def loss(th):
        d = _map_of(th, shapes) - teacher
        return 0.5 * jnp.trace(d @ jnp.asarray(cov) @ d.T)

    jac = np.asarray(jax.jacfwd(whitened_map)(theta))
    hess = jac.T @ jac
    grad = np.asarray(jax.grad(loss)(theta))
    slices, i = [], 0
    for s in shapes:
        slices.append(slice(i, i + s[0] * s[1]))
        i += s[0] * s[1]
    return hess, grad, slices


def pinv_power(m, power, rcond=1e-10):
    evals, evecs = np.linalg.eigh(0.5 * (m + m.T))
    keep = evals > rcond * evals.max()
    f = np.zeros_like(evals)
    f[keep] = evals[keep] ** (-power)
    return (evecs * f) @ evecs.T


def reference_field(rule, weights, teacher, input_cov, q=None, eps=None):
    """dtheta/dt of a named rule, as a tuple of matrices, from the dense P x P construction."""
    hess, grad, slices = dense_parts(weights, teacher, input_cov)
    shapes = [tuple(w.shape) for w in weights]
    d = len(weights)
    if rule == "sgd":
        upd = -grad
    elif rule in ("ngd", "sqrt-ngd", "qngd"):
        qq = {"ngd": 1.0, "sqrt-ngd": 2.0}.get(rule, q)
        upd = -pinv_power(hess, 1.0 / qq) @ grad
    elif rule in ("ngd-d", "sqrt-ngd-d", "qngd-d", "bernacchia"):
        qq = {"ngd-d": 1.0, "sqrt-ngd-d": 2.0, "bernacchia": 1.0}.get(rule, q)
        upd = np.zeros_like(grad)
        for s in slices:
            upd[s] = -(d ** (-1.0 / qq)) * pinv_power(hess[s, s], 1.0 / qq) @ grad[s]
    elif rule == "damped-ngd":
        upd = -(eps + 1.0) * np.linalg.solve(eps * np.eye(len(grad)) + hess, grad)
    else:
        raise KeyError(rule)
    return unflatten(upd, shapes)
