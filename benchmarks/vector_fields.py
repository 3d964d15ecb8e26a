"""Cost of each rule's vector field relative to the sgd field, measured in one run.

Also times an independent dense reference (autodiff Jacobian, P x P Gauss-Newton matrix, eigh)
where P is small enough, and prints its cost divided by ours.

    python benchmarks/vector_fields.py            # (n, d) = (16, 4), (32, 4), (64, 8), (256, 8)
    python benchmarks/vector_fields.py --quick    # a tiny size, as a smoke test

Two states per size: near orthogonal, W_i = 0.6 (Q_i + 0.3 G_i / sqrt(n)), and Gaussian
G_i / sqrt(n); a correlated input covariance. The exact full rules use the default method
("auto": dense eigh of K for n_d n_0 <= 64, or 256 for fractional powers, else matrix-free
krylov). ngd-d and bernacchia use one LU inverse per layer on square nets unless a layer
product is close to the pseudo-inverse cutoff; the script prints which path they took.
"""

import argparse
import os
import platform
import time

# One OpenBLAS thread for jax's CPU LAPACK kernels (dlnsim.limit_lapack_threads explains why);
# set before numpy loads. Export OPENBLAS_NUM_THREADS to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402

import dlnsim  # noqa: E402

RULES = [
    ("sgd", {}),
    ("ngd", {}),
    ("sqrt-ngd", {}),
    ("qngd", {"q": 3.0}),
    ("damped-ngd", {"eps": 1e-3}),
    ("ngd-d", {}),
    ("sqrt-ngd-d", {}),
    ("bernacchia", {}),
]


def timed(fn, *args, repeats=5, min_time=0.2):
    """Best of ``repeats`` mean times (compilation excluded)."""
    jax.block_until_ready(fn(*args))  # compile
    best = float("inf")
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            jax.block_until_ready(fn(*args))
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time / repeats:
                break
        best = min(best, elapsed / n)
    return best


def dense_reference(rule_power):
    """jit-compiled dense reference: J by jacfwd, H+ = J^T J (P x P), eigh pseudo-inverse power."""

    def field(weights, task):
        shapes = [w.shape for w in weights]
        theta = jnp.concatenate([w.ravel() for w in weights])

        def unflat(th):
            out, i = [], 0
            for s in shapes:
                out.append(th[i : i + s[0] * s[1]].reshape(s))
                i += s[0] * s[1]
            return tuple(out)

        def whitened_map(th):
            return (dlnsim.network_map(unflat(th)) @ task.input_cov_sqrt).ravel()

        jac = jax.jacfwd(whitened_map)(theta)
        grad = jax.grad(lambda th: task.loss(dlnsim.network_map(unflat(th))))(theta)
        evals, evecs = jnp.linalg.eigh(jac.T @ jac)
        keep = evals > 1e-10 * evals[-1]
        f = jnp.where(keep, jnp.where(keep, evals, 1.0) ** (-rule_power), 0.0)
        return unflat(-(evecs @ (f * (evecs.T @ grad))))

    return eqx.filter_jit(field)


def state(kind, n, d, key):
    keys = jr.split(key, 2 * d)
    out = []
    for i in range(d):
        g = jr.normal(keys[2 * i], (n, n))
        if kind == "near-orthogonal":
            q, _ = jnp.linalg.qr(jr.normal(keys[2 * i + 1], (n, n)))
            out.append(0.6 * (q + 0.3 * g / n**0.5))
        else:
            out.append(g / n**0.5)
    return tuple(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one tiny size (smoke test)")
    parser.add_argument("--dense-max-params", type=int, default=2048)
    parser.add_argument("--slow-fractional", action="store_true", help="also time sqrt-ngd/qngd at n=256")
    args = parser.parse_args()
    sizes = [(6, 3)] if args.quick else [(16, 4), (32, 4), (64, 8), (256, 8)]
    print(
        f"# {platform.processor() or platform.machine()}, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    print("# ratio = field time / sgd field time; dense/ours = dense P x P reference time / ours")
    for n, d in sizes:
        for kind in ("near-orthogonal", "gaussian"):
            k1, k2, k3 = jr.split(jr.PRNGKey(0), 3)
            weights = state(kind, n, d, k1)
            task = dlnsim.Task(dlnsim.random_teacher(k2, n, n), dlnsim.correlated_input_cov(k3, n))
            params = d * n * n
            print(f"\n(n, d) = ({n}, {d}), P = {params}, {kind} state")
            times = {}
            for name, kw in RULES:
                if n >= 256 and name in ("sqrt-ngd", "qngd") and not args.slow_fractional:
                    continue  # minutes per field at n = 256 (docs/numerics.md); --slow-fractional runs them
                f = eqx.filter_jit(dlnsim.vector_field(name, **kw))
                times[name] = timed(f, 0.0, weights, task, repeats=5 if n < 256 else 1)
            dense = {}
            if params <= args.dense_max_params:
                for name, power in (("ngd", 1.0), ("sqrt-ngd", 0.5)):
                    dense[name] = timed(dense_reference(power), weights, task, repeats=2)
            print(f"{'rule':<12} {'time [ms]':>10} {'x sgd':>9} {'dense/ours':>11}")
            for name, t in times.items():
                ratio = f"{dense[name] / t:11.1f}" if name in dense else f"{'-':>11}"
                print(f"{name:<12} {1e3 * t:10.3f} {t / times['sgd']:9.1f} {ratio}")
            for name, t in dense.items():
                print(f"{'dense ' + name:<12} {1e3 * t:10.3f} {t / times['sgd']:9.1f}")
            lu = dlnsim.vector_field("ngd-d").curvature.takes_inverse_path(weights, task)
            path = "LU inverses" if lu else "SVD / eigh (a product is near the cutoff)"
            print(f"ngd-d / bernacchia path: {path}")


if __name__ == "__main__":
    main()
