"""An exact sqrt-NGD trajectory on an n = 256, d = 8 deep linear net, to loss <= 1e-6 x initial.

P = d n^2 = 524288 parameters, and K = J J^T is 65536 x 65536, so neither the P x P matrix nor K
can be decomposed. The net starts balanced (W_i = 0.5 Q_i Q_{i-1}^T) with white inputs; the
conservation law (Huh 2020, eq. 4) keeps it balanced, so the closed-form method
``GaussNewton(method="balanced")`` is exact all along. The start is not aligned with the
teacher, but no saddle lies on its way (see ``balanced_start``). The script prints the
imbalance, and checks the closed form against the matrix-free krylov method (which does not
assume balance) at the start and the end. ``--method krylov`` integrates with krylov instead.

    python benchmarks/trajectory.py                   # n = 256, d = 8
    python benchmarks/trajectory.py --n 32            # smaller
    python benchmarks/trajectory.py --method krylov   # matrix-free CG quadrature all along
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

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402

import dlnsim  # noqa: E402
from dlnsim._curvature import GaussNewton, imbalance  # noqa: E402


def balanced_start(n, d, *, seed, layer_scale=0.5, max_angle=1.2):
    """A balanced net W_i = 0.5 Q_i Q_{i-1}^T and a teacher W* = U S V^T (S from 3 to 0.5).

    The intermediate frames Q_1..Q_{d-1} are Haar random; the end frames are Q_0 = V and
    Q_d = U R with R = expm(A) for a random skew A of spectral norm ``max_angle`` < pi/2, so the
    student's singular vectors are rotated away from the teacher's by up to 69 degrees (not
    aligned: the modes are coupled). Why not Haar-random end frames: a square map cannot flip
    the sign of its determinant, nor pass a negative real eigenvalue of W*^-1 W0, without going
    through a singular map, a saddle where the flow stalls. A random W0 has such eigenvalues
    (at n = 256 the run sat at a loss ratio of 6e-4 at t = 30); with R's rotation angles below
    pi/2, W*^-1 W0 = c V S^-1 R V^T has eigenvalues with positive real parts only.
    """
    keys = jr.split(jr.PRNGKey(seed), d + 3)
    u, _ = jnp.linalg.qr(jr.normal(keys[0], (n, n)))
    v, _ = jnp.linalg.qr(jr.normal(keys[1], (n, n)))
    teacher = (u * jnp.linspace(3.0, 0.5, n)) @ v.T
    g = jr.normal(keys[2], (n, n))
    skew = g - g.T
    skew = max_angle * skew / jnp.linalg.norm(skew, ord=2)
    frames = (
        [v]
        + [jnp.linalg.qr(jr.normal(k, (n, n)))[0] for k in keys[3 : d + 2]]
        + [u @ jax.scipy.linalg.expm(skew)]
    )
    weights = tuple(layer_scale * frames[i + 1] @ frames[i].T for i in range(d))
    return dlnsim.DeepLinearNet.from_weights(weights), teacher


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument(
        "--method", default="balanced", choices=["balanced", "krylov"],
        help="curvature method of the integrated field (krylov does not assume balance)",
    )  # fmt: skip
    args = parser.parse_args()
    n, d = args.n, args.depth
    print(
        f"# {platform.processor() or platform.machine()}, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    net, teacher = balanced_start(n, d, seed=0)
    task = dlnsim.Task(teacher)
    loss0 = float(task.loss(dlnsim.network_map(net.weights)))
    rule = dlnsim.vector_field("sqrt-ngd", method=args.method)
    start = time.perf_counter()
    traj = dlnsim.simulate(
        net, rule, task, 1e4, loss_threshold=args.tol * loss0,
        saveat=diffrax.SaveAt(ts=jnp.concatenate([jnp.zeros(1), jnp.geomspace(1e-3, 1e4, 60)])),
    )  # fmt: skip
    wall = time.perf_counter() - start
    final = tuple(jnp.asarray(w[-1]) for w in traj.weights)
    print(f"n = {n}, d = {d}, P = {d * n * n}: sqrt-ngd ({args.method} method) from balanced init")
    print(f"wall time {wall:.1f} s (compilation included); t_final = {traj.times[-1]:.3f}")
    print(f"loss {loss0:.4g} -> {traj.loss[-1]:.3g} (ratio {traj.loss[-1] / loss0:.2e}), "
          f"stopped early: {traj.stopped_early}")  # fmt: skip
    print(f"imbalance at t = 0: {imbalance(net.weights):.1e}, at the end: {imbalance(final):.1e}")
    print(f"max conservation drift {traj.conservation_drift.max():.2e}")
    # the closed form's exactness along the way: against the matrix-free krylov method, which
    # does not assume balance, at the start and at the end, for the power used (sqrt) and q = 1
    for label, state in (("start", net.weights), ("final", final)):
        for q in (2.0, 1.0):
            exact = dlnsim.NaturalGradientFlow(GaussNewton(method="krylov"), q)
            closed = dlnsim.NaturalGradientFlow(GaussNewton(method="balanced"), q)
            begin = time.perf_counter()
            a = jax.block_until_ready(eqx.filter_jit(exact)(0.0, state, task))
            t_krylov = time.perf_counter() - begin
            b = closed(0.0, state, task)
            err = max(float(jnp.abs(x - y).max()) for x, y in zip(a, b)) / max(
                float(jnp.abs(y).max()) for y in a
            )
            print(f"{label} state, q = {q:g}: balanced closed form vs krylov, rel. diff {err:.1e} "
                  f"(krylov {t_krylov:.1f} s with compilation)")  # fmt: skip


if __name__ == "__main__":
    main()
