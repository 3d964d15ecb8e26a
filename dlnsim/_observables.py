"""The observables of a saved trajectory (Huh 2020, eqs. 1 and 4), and the comparison of a
full-matrix run with its singular-mode ODEs (Huh 2020, eqs. 6, 12, 14, 24-26)."""

from __future__ import annotations

from dataclasses import dataclass

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._analytic import aligned_frames, mode_field_of, project_onto_modes
from ._checks import DynamicsBlowUpError
from ._models import conserved_quantities, network_map
from ._run_checks import _blow_up_hint, _split_task
from ._tasks import StudentTeacherData, Task


@dataclass(frozen=True)
class Trajectory:
    """A learning trajectory at its saved times, with its observables (all NumPy arrays).

    Attributes:
        rule: the rule's name.
        times: shape (T,).
        weights: ``(W_1, ..., W_d)``, each of shape (T, n_i, n_{i-1}).
        loss: the task loss 1/2 Tr[(W - W*) Sigma_x (W - W*)^T] (Huh 2020, eq. 1), shape (T,).
        mode_strengths: u_k^T W Sigma_x v_k in the data's singular basis, shape (T, modes).
        mode_targets: the data's singular values s_k, the strengths' fixed point, shape (modes,).
        conservation_drift: max_i ||C_i(t) - C_i(0)||_F with C_i of Huh 2020 eq. 4, shape (T,).
        parameter_speed: ||dtheta/dt||, shape (T,).
        train_loss, test_loss: for :class:`StudentTeacherData` tasks, else ``None``.
        stopped_early: whether an event ended the run before t1.
        stop_reason: which event: ``"loss threshold"``, ``"determinant saddle"`` (see
            ``simulate(stop_at_saddle=True)``), or None when the run reached t1.
    """

    rule: str
    times: np.ndarray
    weights: tuple[np.ndarray, ...]
    loss: np.ndarray
    mode_strengths: np.ndarray
    mode_targets: np.ndarray
    conservation_drift: np.ndarray
    parameter_speed: np.ndarray
    train_loss: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    stopped_early: bool = False
    stop_reason: str | None = None

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.weights[0].shape[2],) + tuple(w.shape[1] for w in self.weights)

    def maps(self) -> np.ndarray:
        """The input-output map W(t), shape (T, n_d, n_0)."""
        out = self.weights[0]
        for w in self.weights[1:]:
            out = np.einsum("tij,tjk->tik", w, out)
        return out

    def half_times(self) -> np.ndarray:
        """Per mode, the first time its strength reaches half its target.

        NaN if it never does, or if the target is zero (a mode outside the data's rank).
        """
        out = []
        floor = 1e-12 * np.abs(self.mode_targets).max(initial=0.0)
        for k, target in enumerate(self.mode_targets):
            s = self.mode_strengths[:, k]
            half = 0.5 * target
            hit = np.nonzero(s >= half)[0] if target > floor else np.array([], dtype=int)
            if hit.size == 0:
                out.append(np.nan)
            elif hit[0] == 0:
                out.append(float(self.times[0]))
            else:
                i = hit[0]
                frac = (half - s[i - 1]) / (s[i] - s[i - 1])
                out.append(float(self.times[i - 1] + frac * (self.times[i] - self.times[i - 1])))
        return np.asarray(out)


@eqx.filter_jit
def _observables(rule, task: Task, data: StudentTeacherData | None, ws):
    """Per saved state: loss, mode strengths, conservation drift, parameter speed, data losses.

    States are mapped one at a time (``lax.map`` without batching), so that no batched LAPACK
    decomposition runs inside this parallel loop: jaxlib's CPU kernels (0.9.2 and 0.10.2 both
    seen) split a batch into sub-tasks on the XLA thread pool that runs them and block on them,
    and independent batched decompositions running at once then deadlock every pool thread
    (README, "Known problems"). An unbatched decomposition runs inline.
    """

    def one(weights):
        w = network_map(weights)
        c = conserved_quantities(weights)
        speed = jnp.sqrt(sum(jnp.sum(v**2) for v in rule(0.0, weights, task)))
        out = {"loss": task.loss(w), "modes": task.mode_strengths(w), "speed": speed, "C": c}
        if data is not None:
            out["train"] = data.train_loss(w)
            out["test"] = data.test_loss(w)
        return out

    obs = jax.lax.map(one, ws)
    c0 = [c[0] for c in obs["C"]]
    drift = [
        jnp.sqrt(jnp.sum((c - c_init) ** 2, axis=(1, 2))) for c, c_init in zip(obs["C"], c0, strict=True)
    ]
    obs["drift"] = jnp.max(jnp.stack(drift), axis=0) if drift else jnp.zeros_like(obs["loss"])
    del obs["C"]
    return obs


def _make_trajectory(
    name, rule, task, data, times, ws, stopped_early, n_valid=None, stop_reason=None
) -> Trajectory:
    """Observables for the first ``n_valid`` saved states (all by default).

    Rows past ``n_valid`` are filled with the last valid state before the observables are
    computed, so that every run with the same save grid reuses one compiled function.
    """
    n_total = times.shape[0]
    n_valid = n_total if n_valid is None else n_valid
    idx = np.minimum(np.arange(n_total), n_valid - 1)
    ws = tuple(jnp.asarray(np.asarray(w)[idx]) for w in ws)
    obs = _observables(rule, task, data, ws)
    obs = jax.tree_util.tree_map(lambda x: np.asarray(x)[:n_valid], obs)
    finite = np.ones(n_valid, dtype=bool)
    for value in jax.tree_util.tree_leaves(obs):
        finite &= np.all(np.isfinite(value.reshape(n_valid, -1)), axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise DynamicsBlowUpError(
            float(np.asarray(times)[bad]),
            "the field or the loss was not finite at a saved state (all precision was lost)",
            _blow_up_hint(rule),
        )
    _, s, _ = task.mode_basis()
    return Trajectory(
        rule=name,
        times=np.asarray(times)[:n_valid],
        weights=tuple(np.asarray(w)[:n_valid] for w in ws),
        loss=obs["loss"],
        mode_strengths=obs["modes"],
        mode_targets=np.asarray(s),
        conservation_drift=obs["drift"],
        parameter_speed=obs["speed"],
        train_loss=obs.get("train"),
        test_loss=obs.get("test"),
        stopped_early=stopped_early,
        stop_reason=(stop_reason or "loss threshold") if stopped_early else None,
    )


@dataclass(frozen=True)
class ModeComparison:
    """A full-matrix run on aligned weights beside the integrated singular-mode ODEs.

    Attributes:
        times: shape (T,).
        layer_values: per-layer mode singular values L_i^T W_i(t) L_{i-1} of the full run, (T, d, m).
        layer_values_theory: the same from the mode ODEs (Huh 2020, eqs. 6, 12, 14, 24-26), (T, d, m).
        sigma_star: the teacher's mode strengths, shape (m,).
        input_eigenvalues: Sigma_x on each mode's input direction, shape (m,).
        max_mode_deviation: max over t, k of |sigma_k(t) - sigma_k^theory(t)| / max_k sigma*_k,
            for the map strengths sigma_k = prod_i sigma_{i,k}.
        max_layer_deviation: the same for the per-layer values, relative to their largest value.
    """

    times: np.ndarray
    layer_values: np.ndarray
    layer_values_theory: np.ndarray
    sigma_star: np.ndarray
    input_eigenvalues: np.ndarray
    max_mode_deviation: float
    max_layer_deviation: float

    def map_strengths(self) -> np.ndarray:
        return np.prod(self.layer_values, axis=1)

    def map_strengths_theory(self) -> np.ndarray:
        return np.prod(self.layer_values_theory, axis=1)


def compare_with_modes(traj: Trajectory, rule, task) -> ModeComparison:
    """Integrates the singular-mode ODEs from the aligned start of ``traj`` and compares.

    ``rule`` is the rule ``traj`` ran (name or vector field) and ``task`` its task. The run must
    start from aligned weights (``DeepLinearNet(init="aligned")``, Huh 2020 footnote 2).
    """
    if not isinstance(traj, Trajectory):
        raise TypeError(f"traj must be a dlnsim.Trajectory (from simulate), got {type(traj).__name__}")
    base, _ = _split_task(task)
    mode_field = mode_field_of(rule)
    w0 = tuple(w[0] for w in traj.weights)
    frames = aligned_frames(w0, base.teacher)
    sig0 = project_onto_modes(w0, frames)
    scale = max(np.abs(w).max() for w in w0)
    for i, w in enumerate(w0):
        if np.abs((frames[i + 1] * sig0[i]) @ frames[i].T - w).max() > 1e-8 * scale:
            raise ValueError("the trajectory does not start from aligned weights; use init='aligned'")
    teacher, cov = np.asarray(base.teacher), np.asarray(base.input_cov)
    sigma_star = np.einsum("ik,ij,jk->k", frames[-1], teacher, frames[0])
    # modes outside the teacher's rank have sigma* = 0 up to rounding; make it exact, or a mode
    # would have to cross the saddle at 0 to reach a target of -1e-17
    sigma_star = np.where(np.abs(sigma_star) <= 1e-12 * np.abs(sigma_star).max(), 0.0, sigma_star)
    lam = np.einsum("ik,ij,jk->k", frames[0], cov, frames[0])
    ts = jnp.asarray(traj.times)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(mode_field), diffrax.Tsit5(), ts[0], ts[-1], None, jnp.asarray(sig0),
        args=(jnp.asarray(sigma_star), jnp.asarray(lam)), saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12), max_steps=1_000_000,
        throw=False,
    )  # fmt: skip
    if not diffrax.is_successful(sol.result):
        reached = np.asarray(sol.ts)[np.isfinite(np.asarray(sol.ts))]
        raise DynamicsBlowUpError(
            float(reached[-1]) if reached.size else float(ts[0]), "the singular-mode ODE failed",
            _blow_up_hint(mode_field, discrete=False),
        )  # fmt: skip
    theory = np.asarray(sol.ys)
    full = project_onto_modes(traj.weights, frames)
    map_dev = np.abs(np.prod(full, axis=1) - np.prod(theory, axis=1)).max()
    return ModeComparison(
        times=np.asarray(traj.times),
        layer_values=full,
        layer_values_theory=theory,
        sigma_star=sigma_star,
        input_eigenvalues=lam,
        max_mode_deviation=float(map_dev / max(np.abs(sigma_star).max(), 1e-300)),
        max_layer_deviation=float(np.abs(full - theory).max() / max(np.abs(theory).max(), 1e-300)),
    )


__all__ = ["ModeComparison", "Trajectory", "compare_with_modes"]
