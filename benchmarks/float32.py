"""float32 accuracy of every rule's field against float64, measured in one run.

Each field is evaluated on the same state in float64 and then, with x64 switched off, in
float32, and the relative error max|f32 - f64| / max|f64| is printed. On a GPU, dlnsim's users
should also set ``jax.default_matmul_precision("highest")``: TF32 matmuls (the GPU default for
float32) carry only about 1e-3 relative precision. On the CPU, float32 matmuls are exact float32.

    python benchmarks/float32.py            # (n, d) = (16, 4) and (32, 4)
    python benchmarks/float32.py --quick
"""

import argparse
import os
import platform

# One OpenBLAS thread for jax's CPU LAPACK kernels (dlnsim.limit_lapack_threads explains why);
# set before numpy loads. Export OPENBLAS_NUM_THREADS to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
from vector_fields import state  # noqa: E402

import dlnsim  # noqa: E402

RULES = [
    ("sgd", {}),
    ("ngd", {}),
    ("sqrt-ngd", {}),
    ("damped-ngd", {"eps": 1e-3}),
    ("ngd-d", {}),
    ("sqrt-ngd-d", {}),
    ("bernacchia", {}),
]


def problem(n, d, kind):
    k1, k2, k3 = jr.split(jr.PRNGKey(0), 3)
    weights = tuple(np.asarray(w) for w in state(kind, n, d, k1))
    teacher = np.asarray(dlnsim.random_teacher(k2, n, n))
    cov = np.asarray(dlnsim.correlated_input_cov(k3, n))
    return weights, teacher, cov


def fields(weights, teacher, cov, method):
    dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
    task = dlnsim.Task(teacher.astype(dtype), cov.astype(dtype))
    ws = tuple(jnp.asarray(w, dtype=task.teacher.dtype) for w in weights)
    out = {}
    for name, kw in RULES:
        if method is not None and name in ("ngd", "sqrt-ngd", "damped-ngd"):
            kw = {**kw, "method": method}
        out[name] = [
            np.asarray(v, dtype=np.float64)
            for v in eqx.filter_jit(dlnsim.vector_field(name, **kw))(0.0, ws, task)
        ]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [(6, 3)] if args.quick else [(16, 4), (32, 4)]
    print(
        f"# {platform.processor() or platform.machine()}, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    cases = [
        (n, d, kind, m)
        for n, d in sizes
        for kind in ("near-orthogonal", "gaussian")
        for m in ("dense", "krylov")
    ]
    problems = {c: problem(*c[:3]) for c in cases}  # float64 data, shared by both precisions
    reference = {c: fields(*problems[c], c[3]) for c in cases}
    jax.config.update("jax_enable_x64", False)
    with jax.default_matmul_precision("highest"):
        single = {c: fields(*(tuple(np.float32(w) for w in p[0]), *p[1:]), c[3]) for c, p in problems.items()}
    print("relative error of the float32 field, max|f32 - f64| / max|f64|")
    for c in cases:
        row = []
        for name, _ in RULES:
            ref, got = reference[c][name], single[c][name]
            err = max(np.abs(a - b).max() for a, b in zip(got, ref)) / max(np.abs(b).max() for b in ref)
            row.append(f"{name} {err:.1e}")
        print(f"(n, d) = ({c[0]}, {c[1]}), {c[2]}, full rules {c[3]}: " + ", ".join(row))


if __name__ == "__main__":
    main()
