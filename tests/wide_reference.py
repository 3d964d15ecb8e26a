"""Independent dense P x P references for the Fisher approximations of dlnsim.wide.

Nothing here uses dlnsim's sample-space algebra: the Jacobian is jax.jacfwd of the network output
with respect to the flat parameter vector, each Fisher is built densely with its block structure,
and pseudo-inverses come from numpy's eigh.
"""

import jax
import jax.numpy as jnp
import numpy as np


def flat_params(mlp):
    """theta = (W_1, b_1, W_2, b_2, ...) flattened, and the index ranges of every part."""
    parts, layout, i = [], [], 0
    for layer in range(mlp.depth):
        w = np.asarray(mlp.weights[layer])
        parts.append(w.ravel())
        entry = {"w": (i, i + w.size, w.shape)}
        i += w.size
        if mlp.has_bias:
            b = np.asarray(mlp.biases[layer])
            parts.append(b)
            entry["b"] = (i, i + b.size)
            i += b.size
        layout.append(entry)
    return np.concatenate(parts), layout


def activation_of(mlp):
    """The activation phi written out again (eq. 1, S.156 for the shifted relu)."""
    return {
        "relu": jax.nn.relu,
        "tanh": jnp.tanh,
        "erf": jax.scipy.special.erf,
        "identity": lambda u: u,
        "shifted-relu": lambda u: jnp.maximum(u, -mlp.shift),
    }[mlp.activation]


def forward(mlp, theta, x, layout):
    """The network written out again from eq. 1, as a function of the flat parameters."""
    phi = activation_of(mlp)
    h = x
    for layer, e in enumerate(layout):
        a, b, shape = e["w"]
        w = theta[a:b].reshape(shape)
        u = np.sqrt(mlp.sigma_w2) / np.sqrt(shape[1]) * h @ w.T
        if "b" in e:
            u = u + np.sqrt(mlp.sigma_b2) * theta[e["b"][0] : e["b"][1]]
        h = phi(u) if layer < len(layout) - 1 else u
    return h


def jacobian(mlp, x):
    theta, layout = flat_params(mlp)
    jac = jax.jacfwd(lambda t: forward(mlp, t, x, layout).reshape(-1))(jnp.asarray(theta))
    return np.asarray(jac), theta, layout


def pinv(m, rcond=1e-10):
    evals, evecs = np.linalg.eigh(0.5 * (m + m.T))
    keep = np.abs(evals) > rcond * np.abs(evals).max()
    inv = np.zeros_like(evals)
    inv[keep] = 1.0 / evals[keep]
    return (evecs * inv) @ evecs.T


def layer_index(layout):
    """Parameter indices of each layer (weights and bias together)."""
    out = []
    for e in layout:
        idx = list(range(*e["w"][:2]))
        if "b" in e:
            idx += list(range(*e["b"]))
        out.append(np.asarray(idx))
    return out


def unit_index(layout):
    """Parameter indices of each unit (one row of W_l and its bias), all layers."""
    out = []
    for e in layout:
        a, _, (m_out, m_in) = e["w"]
        for i in range(m_out):
            idx = list(range(a + i * m_in, a + (i + 1) * m_in))
            if "b" in e:
                idx.append(e["b"][0] + i)
            out.append(np.asarray(idx))
    return out


def dense_fisher_inverse(mlp, x, name, damping=0.0, kfac_bias="augmented"):
    """The dense P x P matrix (G + rho I)^+ of the named approximation (MSE), and J."""
    jac, theta, layout = jacobian(mlp, x)
    n = x.shape[0]
    p = theta.size
    full = jac.T @ jac / n
    eye = np.eye(p)
    if name == "exact":
        return pinv(full + damping * eye), jac
    if name in ("bd", "tri-diagonal"):
        layers = layer_index(layout)
        g = np.zeros((p, p))
        for a, ia in enumerate(layers):
            for b, ib in enumerate(layers):
                if a == b or (name == "tri-diagonal" and abs(a - b) == 1):
                    g[np.ix_(ia, ib)] = full[np.ix_(ia, ib)]
        if damping > 0:
            return np.linalg.inv(g + damping * eye), jac
        return pinv(g), jac
    if name == "unit-wise":
        inv = np.zeros((p, p))
        for idx in unit_index(layout):
            inv[np.ix_(idx, idx)] = pinv(full[np.ix_(idx, idx)] + damping * np.eye(idx.size))
        return inv, jac
    if name == "diagonal":
        d = np.diag(full) + damping
        return np.diag(np.where(d > 1e-12 * d.max(), 1.0 / np.where(d > 0, d, 1), 0.0)), jac
    if name == "kfac":
        return _dense_kfac_inverse(mlp, x, jac, layout, damping, kfac_bias), jac
    raise KeyError(name)


def _dense_kfac_inverse(mlp, x, jac, layout, rho, kfac_bias):
    """K-FAC (S.95) built per layer as the Kronecker product B* x A* in the (W~ = [W | b]) ordering."""
    n = x.shape[0]
    c = mlp.widths[-1]
    p = jac.shape[1]
    inv = np.zeros((p, p))
    # activations: recompute h_{l-1} and delta_l densely from the Jacobian of the bias-free forward pass
    hs = _activations(mlp, x)
    augmented = mlp.has_bias and kfac_bias == "augmented"
    for layer, e in enumerate(layout):
        a, b, (m_out, m_in) = e["w"]
        h = np.sqrt(mlp.sigma_w2 / m_in) * hs[layer]
        if augmented:
            h = np.concatenate([h, np.sqrt(mlp.sigma_b2) * np.ones((n, 1))], axis=1)
        a_star = h.T @ h / n
        # delta_l = df/du_l read off the Jacobian of W_l: df/dW_l[i, j] = delta_i h~_j
        jw = jac[:, a:b].reshape(n * c, m_out, m_in)
        hw = np.sqrt(mlp.sigma_w2 / m_in) * hs[layer]
        col = np.argmax(np.abs(hw).min(0))
        delta = jw[:, :, col] / np.repeat(hw[:, col], c)[:, None]
        b_star = np.eye(c) / n if layer == len(layout) - 1 else delta.T @ delta / n
        kron_inv = np.kron(pinv(b_star + rho * np.eye(m_out)), pinv(a_star + rho * np.eye(a_star.shape[0])))
        if augmented:
            cols = a_star.shape[0]
            order = []  # W~ index (i, j) -> flat parameter index
            for i in range(m_out):
                for j in range(cols):
                    order.append(a + i * m_in + j if j < m_in else e["b"][0] + i)
            order = np.asarray(order)
            inv[np.ix_(order, order)] = kron_inv
        else:
            idx = np.arange(a, b)
            inv[np.ix_(idx, idx)] = kron_inv
            if "b" in e:
                ib = np.arange(*e["b"])
                jb = jac[:, ib]
                inv[np.ix_(ib, ib)] = pinv(jb.T @ jb / n**2 + rho * np.eye(ib.size))
    return inv


def _activations(mlp, x):
    phi = activation_of(mlp)
    hs, h = [], np.asarray(x)
    for layer in range(mlp.depth):
        hs.append(np.asarray(h))
        u = np.sqrt(mlp.sigma_w2 / mlp.widths[layer]) * h @ np.asarray(mlp.weights[layer]).T
        if mlp.has_bias:
            u = u + np.sqrt(mlp.sigma_b2) * np.asarray(mlp.biases[layer])
        h = np.asarray(phi(u))
    return hs


def dense_quasi_diagonal_update(mlp, x, grad, damping=0.0):
    """Ollivier's quasi-diagonal update, unit by unit, from the dense Fisher's entries."""
    jac, theta, layout = jacobian(mlp, x)
    full = jac.T @ jac / x.shape[0]
    out = np.zeros_like(grad)
    for idx in unit_index(layout):
        if not mlp.has_bias:
            d = np.diag(full)[idx] + damping
            out[idx] = np.where(d > 0, grad[idx] / np.where(d > 0, d, 1), 0)
            continue
        w, b0 = idx[:-1], idx[-1]
        a00 = full[b0, b0] + damping
        vj = np.zeros(w.size)
        for t, j in enumerate(w):
            block = np.array([[a00, full[b0, j]], [full[b0, j], full[j, j] + damping]])
            sol = np.linalg.pinv(block, rcond=1e-12) @ np.array([grad[b0], grad[j]])
            vj[t] = sol[1]
        out[w] = vj
        out[b0] = (grad[b0] - full[b0, w] @ vj) / a00 if a00 > 0 else 0.0
    return out


def flatten_update(mlp, ws, bs):
    parts = []
    for layer in range(mlp.depth):
        parts.append(np.asarray(ws[layer]).ravel())
        if mlp.has_bias:
            parts.append(np.asarray(bs[layer]))
    return np.concatenate(parts)
