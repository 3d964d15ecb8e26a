"""Resources a run needs, estimated and checked before anything is allocated or compiled.

``estimate_linear_run`` (``dlnsim run``, ``compare``, ``sweep``) and ``estimate_wide_run``
(``dlnsim wide``) count the bytes of the arrays a run forms, from the shapes alone, with the number
of copies measured from peak RSS, and estimate the time it spends before and besides integrating:
tracing and compiling, building the initial net, and floors on the decompositions it must do.
``check_resources`` refuses, with one line, an estimate that exceeds a safe fraction of
:func:`available_memory` or the time limit.

Every figure below was measured on 2026-12-02 on this project's 2-core x86 CPU machine (23.5 GiB,
jax/jaxlib 0.9.2, float64, one OpenBLAS thread) with the scripts named beside each constant (kept
in /tmp/res during the measurement, not in the repository). Other sessions were running tests at the
time (load average 3-7 on the 2 cores), so times are process CPU time, not wall time: they do not
count the waits for a core, which made the wall times up to 2.5x longer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ._budget import (  # noqa: F401  (re-exported: the CLI and the tests read them here)
    _F64,
    SAFE_FRACTION,
    TIME_LIMIT_S,
    ResourceEstimate,
    _estimate,
    available_memory,
    cgroup_headroom,
    check_resources,
    format_bytes,
    format_seconds,
    parse_size,
    time_limit,
)
from ._checks import check_depth, check_widths
from ._curvature import CURVATURE_METHODS, GaussNewton, structurally_full_rank
from ._rules import RULES

# ------------------------------------------------------------------------------------------------
# deep linear runs (dlnsim run / compare / sweep)

_BLOCK_RULES = ("ngd-d", "sqrt-ngd-d", "qngd-d")

# The observables are mapped over the saved states in vmapped chunks of this size
# (dlnsim._simulation._observables: jax.lax.map(..., batch_size=64)).
OBSERVABLE_CHUNK = 64


def _curvature_power(rule: str, q: float | None) -> float | None:
    """The power 1/q the rule applies its curvature with; None for gradient flow (sgd, q = inf)."""
    if rule == "sgd":
        return None
    if rule in ("qngd", "qngd-d"):
        if q is None:
            raise ValueError(f"rule {rule!r} needs q >= 1 (q=1 is NGD, q=2 sqrt-NGD, q=inf SGD)")
        q = float(q)
        if math.isnan(q) or q < 1:
            raise ValueError(f"q must be >= 1 (q=1 is NGD, q=2 sqrt-NGD, q=inf SGD), got {q!r}")
        return None if math.isinf(q) else 1.0 / q
    return 0.5 if rule.startswith("sqrt-ngd") else 1.0


def rule_family(rule: str, widths, *, method: str = "auto", q: float | None = None) -> str:
    """How the rule's vector field works at these widths: ``"gradient"`` (sgd, q = inf), one of the
    exact curvature methods ``"dense"``, ``"krylov"``, ``"balanced"`` (as ``GaussNewton`` resolves
    ``method``), ``"block"`` (ngd-d, sqrt-ngd-d, qngd-d) or ``"bernacchia"``."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if method not in CURVATURE_METHODS:
        raise ValueError(f"--curvature must be one of {', '.join(CURVATURE_METHODS)}, got {method!r}")
    power = _curvature_power(rule, q)
    if rule == "bernacchia":
        return "bernacchia"
    if power is None:
        return "gradient"
    if rule in _BLOCK_RULES:
        return "block"
    return GaussNewton(method=method).resolved_method(tuple(widths), power)


def vector_field_bytes(widths, family: str) -> dict[str, int]:
    """Bytes of the arrays one evaluation of the vector field forms, by part (float64).

    Counted from the code: every rule forms the prefix and suffix products W_<i (n_{i-1} x n_0) and
    W_>i (n_d x n_i), the map and one output per layer; ``dense`` adds the n_d n_0 x n_d n_0 Gram
    matrix K and two more K-sized matrices (the Kronecker term being added and eigh's eigenvectors;
    measured: 2.73 per state, see the dense-curvature figures below; LAPACK's workspace is counted
    once by :func:`estimate_linear_run`) and the per-layer factors B_i, A_i; ``krylov`` the
    singular bases and the per-layer projected factors (d (n_d^2 + n_0^2) twice, d n_d n_0 twice)
    and the CG vectors; ``block`` two thin SVDs per layer and, on square nets, the LU path's
    inverse chains and condition-estimate stacks (both branches run under vmap); ``bernacchia``
    two covariances and their eigh per layer.
    """
    widths = tuple(int(n) for n in widths)
    d, n0, nd = len(widths) - 1, widths[0], widths[-1]
    params = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    pre = sum(widths[i - 1] * n0 for i in range(1, d + 1))
    suf = sum(nd * widths[i] for i in range(1, d + 1))
    base = pre + suf + params + 2 * nd * n0
    out = {"products and gradient": base}
    m = nd * n0
    if family in ("dense", "krylov", "balanced", "block"):
        out["products and gradient"] += pre  # W_<i Sigma^(1/2)
    if family == "dense":
        out["dense Gram K"] = m * m
        out["Gram assembly and eigh"] = 2 * m * m + m
        out["dense Gram per-layer factors"] = d * (nd * nd + n0 * n0)
    elif family == "krylov":
        out["krylov factors"] = (
            2 * d * (nd * nd + n0 * n0) + 2 * d * m + suf + pre + nd * nd + n0 * n0 + 16 * m
        )
    elif family == "balanced":
        out["balanced SVD"] = nd * nd + n0 * n0 + 4 * m
    elif family == "block":
        svd = 0
        for i in range(1, d + 1):
            ni, nim1 = widths[i], widths[i - 1]
            svd += 2 * (nd * ni + ni * ni + nim1 * n0 + n0 * n0)
        out["per-layer SVDs"] = svd
        if all(a == b for a, b in zip(widths[:-1], widths[1:], strict=True)):
            out["LU path"] = 7 * params + 2 * n0 * n0
    elif family == "bernacchia":
        cov = sum(
            3 * (widths[i] ** 2 + widths[i - 1] ** 2) + widths[i] * widths[i - 1] for i in range(1, d + 1)
        )
        out["per-layer covariances and eigh"] = cov
        if all(a == b for a, b in zip(widths[:-1], widths[1:], strict=True)):
            out["LU path"] = 7 * params + 2 * n0 * n0
    elif family != "gradient":
        raise ValueError(f"unknown vector-field family {family!r}")
    return {k: _F64 * v for k, v in out.items()}


# Trace + compile time of one rule's ``simulate`` (the diffrax solve and the observables), in
# seconds of process CPU time (the busy machine's wall times were up to 2.5x longer; CPU time does
# not count waiting for a core), measured 2026-12-02 with /tmp/res/compile_depth.py:
# ``dlnsim.simulate`` at width 4, init="orthogonal", t1 = 1e-3, 8 saves, first call minus second.
# CPU seconds with one layer shape:
#   d =                      16      64     256    1024
#   sgd                     5.7    14.8    48.2   296.0
#   ngd (dense)             6.4    16.6    64.1
#   sqrt-ngd (krylov)       9.6    19.5    74.1
#   sqrt-ngd-d (block)      8.4    18.8    77.2
#   bernacchia             11.5    36.7   167.6
# The per-layer blocks are unrolled Python loops and XLA's passes grow faster than the graph:
# sgd fits 4 s + 0.135 d + 1.465e-4 d^2 (6.2 / 13.2 / 48.2 / 296 s at these depths). The other
# rules are taken as that curve times their ratio to sgd at d = 256 (within 10% at d = 16 and 64;
# beyond 256 only sgd was measured). The balanced method was not measured; it gets the block
# rules' factor (one SVD per evaluation, the same unrolled products).
# Distinct layer shapes add to it: sgd with every width different (k = d shapes) took
# 14.9 / 28.6 / 78.5 s at d = 16 / 32 / 64, i.e. 9.2 / 19.6 / 63.7 s over one shape, and hidden
# widths cycling through 7 values (9 shapes) added 4-9 s at d = 16 to 256 (sgd, sqrt-ngd-d):
# max(0.75 (k - 1), 0.19 (k - 1)^1.4) s covers both.
COMPILE_BASE_S = 4.0
COMPILE_PER_LAYER_S, COMPILE_PER_LAYER2_S = 0.135, 1.465e-4
COMPILE_FACTOR = {
    "gradient": 1.0,
    "dense": 1.36,
    "krylov": 1.59,
    "balanced": 1.66,
    "block": 1.66,
    "bernacchia": 3.70,
}
COMPILE_PER_SHAPE_S = 0.75
COMPILE_SHAPES_COEFF, COMPILE_SHAPES_EXPONENT = 0.19, 1.4

# Building the initial net eagerly (DeepLinearNet: a normal draw and an ord-2 norm, i.e. an SVD, per
# layer), CPU seconds: 0.014 per layer (d = 256, one shape: 3.6 s) and 0.77-0.88 per distinct layer
# shape, as every eager op compiles once per new shape (k = 16 / 32 / 64 all distinct: 12.9 / 28.1 /
# 49.2 s; /tmp/res/init_time.py and compile_depth.py).
INIT_PER_LAYER_S = 0.014
INIT_PER_SHAPE_S = 0.85

# Resident memory of the compiled code (peak RSS growth, /tmp/res/compile_depth.py): per layer and
# rule from d = 16 to 256 with one shape, MiB: sgd 1.45 (1.6 to d = 1024), ngd 1.7, krylov 1.8,
# sqrt-ngd-d 2.0, bernacchia 4.2; per distinct layer shape (eager executables of the initial net and
# the compiled code), 33-36 MiB (sgd, all widths distinct: 983 / 1536 / 2569 MiB at d = 16 / 32 / 64).
COMPILED_BYTES_PER_LAYER = {
    "gradient": 1.6 * 2**20,
    "dense": 1.7 * 2**20,
    "krylov": 1.8 * 2**20,
    "balanced": 2.0 * 2**20,
    "block": 2.0 * 2**20,
    "bernacchia": 4.2 * 2**20,
}
COMPILED_BYTES_PER_SHAPE = 36 * 2**20

# Peak RSS a `dlnsim run` adds beyond its arrays (XLA's compiled solve and observables at small
# depth, matplotlib): the intercepts of the fits below, 310-350 MiB (wide runs: 363 MiB).
RUNTIME_BASELINE_BYTES = 360 * 2**20

# Copies of the saved trajectory at the peak (measured 2026-12-02 with /tmp/res/mem_linear.py,
# peak RSS of `dlnsim run --task teacher --rule sgd --t1 0.001`): depth 1, width 128 (no conserved
# quantities) grew 3.02 x (weights per save) per save between 1000 and 3000 saves; depth 4, width
# 64 grew 3.70 x, i.e. 3 copies of the weights plus 0.93 of the conserved quantities C_i
# (0.75 x the weights there). The copies: the solver's saved states, the rows gathered for the
# observables and the trajectory's own arrays. A sweep of B seeds (`dlnsim sweep`, 2 vs 6 seeds at
# 1000 saves) grew 2.04 x per seed and save: the batched solution plus each seed's trajectory,
# with one seed's transient copy on top; against the peaks (1203 / 2273 MiB) 2.2 B + 1.5 copies
# bounds both. `dlnsim compare` keeps each finished rule's trajectory: 3 gradient-flow rules vs 1
# at 2000 saves (width 64, depth 4) added 1.12 x per rule and save, i.e. 2 + 1.2 R copies for
# R rules.
TRAJECTORY_COPIES_SINGLE = 3
TRAJECTORY_COPIES_PER_SEED, TRAJECTORY_COPIES_BATCH_EXTRA = 2.2, 1.5
TRAJECTORY_COPIES_PER_RULE, TRAJECTORY_COPIES_COMPARE_EXTRA = 1.2, 2

# Tsit5 holds 7 stages, the state before and after a step, the error estimate and the dense
# interpolation data for the save grid, and the while loop double-buffers its carry: 24 states.
TSIT5_STATES = 24

# Kvaerno5 materialises the P x P Jacobian of the vector field (jacfwd: the vector field on P
# tangents at once) and its LU factors: at width 40, depth 3 (P = 4800) it added 1100 MiB of
# peak RSS over Tsit5, against 2 P^2 (Jacobian and LU, 352 MiB) + P x one evaluation (675 MiB).
IMPLICIT_SOLVERS = ("kvaerno5",)

# Dense curvature: the peak RSS of `dlnsim run --rule ngd --widths 30,2,30` (n_d n_0 = 900, dense)
# grew by 850 MiB between 15 and 100 saves (observable chunks of 16 and 64 states): 2.73 K-sized
# matrices per state at once (K, the Kronecker term, eigh's eigenvectors). vector_field_bytes
# counts 1 + 2 per state and LAPACK's 2 m^2 workspace once.
# eigh of an m x m matrix took 2.0e-10 m^3 s of CPU (one thread, m = 1024 / 2048 / 3000:
# 0.21 / 1.60 / 5.6 s; /tmp/res/eigh_time.py).
EIGH_SECONDS_PER_M3 = 2.0e-10


# Depths beyond this are refused before a widths tuple is even built: compiling them would take
# weeks by the fits above (and a tuple of 10^9 widths alone fills memory).
MAX_DEPTH = 100_000


def _check_depth(depth) -> int:
    depth = check_depth(depth)
    if depth > MAX_DEPTH:
        raise ValueError(
            f"depth must be at most {MAX_DEPTH}, got {depth}: tracing and compiling takes minutes at "
            "depth 1000 already (see dlnsim._resources)"
        )
    return depth


def resolve_widths(depth: int, width: int, widths: str | Sequence[int] | None) -> tuple[int, ...]:
    """The net's widths from the CLI's ``--depth``/``--width`` or ``--widths 5,3,2,3,4``, as
    ``dlnsim run`` builds them, without building anything. An empty ``--widths`` is refused."""

    if widths is not None:
        if isinstance(widths, str):
            try:
                parsed = tuple(int(w) for w in widths.split(","))
            except ValueError:
                raise ValueError(
                    f"--widths must be comma-separated integers like 5,3,2,3,4, got {widths!r}"
                ) from None
        else:
            parsed = tuple(widths)
        parsed = check_widths(parsed)
        _check_depth(len(parsed) - 1)
        return parsed
    depth = _check_depth(depth)
    return (_count("width", width, 1),) * (depth + 1)


def wide_widths(depth: int, width: int, input_dim: int, outputs: int) -> tuple[int, ...]:
    """The MLP's widths ``(M_0, M, ..., M, C)`` of ``dlnsim wide --depth L --width M``."""
    depth = _check_depth(depth)
    for name, v in (("width", width), ("input-dim", input_dim), ("outputs", outputs)):
        _count(name, v, 1)
    return (int(input_dim),) + (int(width),) * (depth - 1) + (int(outputs),)


def _count(name: str, value, low: int) -> int:
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= low
    except (TypeError, ValueError, OverflowError):  # nan, inf, None, strings
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _layer_shapes(widths) -> int:
    return len(set(zip(widths[:-1], widths[1:], strict=True)))


def _shapes_seconds(shapes: int) -> float:
    k = max(shapes - 1, 0)
    return max(COMPILE_PER_SHAPE_S * k, COMPILE_SHAPES_COEFF * k**COMPILE_SHAPES_EXPONENT)


def compile_seconds(depth: int, family: str, shapes: int = 1) -> float:
    """Estimated CPU seconds to trace and compile one rule's ``simulate`` for ``depth`` layers of
    ``shapes`` distinct shapes (see COMPILE_PER_LAYER_S)."""
    per_depth = COMPILE_PER_LAYER_S * depth + COMPILE_PER_LAYER2_S * depth**2
    return COMPILE_BASE_S + COMPILE_FACTOR[family] * per_depth + _shapes_seconds(shapes)


def _set_up_seconds(depth: int, families, shapes: int, batch: int = 1) -> float:
    """Building the initial net(s) and compiling every rule, for ``depth`` layers of ``shapes``
    distinct shapes."""
    shapes = min(shapes, depth) if depth else 1
    compile_ = sum(compile_seconds(depth, f, shapes) for f in families)
    return compile_ + (1 + (batch > 1)) * (INIT_PER_LAYER_S * depth + INIT_PER_SHAPE_S * shapes)


def max_depth(families, budget: float, *, shapes: int = 1, batch: int = 1) -> int:
    """The largest depth whose estimated set-up time (:func:`_set_up_seconds`) fits in ``budget``."""
    families = [families] if isinstance(families, str) else list(families)
    lo, hi = 0, 1
    while _set_up_seconds(hi, families, shapes, batch) <= budget and hi < 2**40:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _set_up_seconds(mid, families, shapes, batch) <= budget else (lo, mid)
    return lo


def estimate_linear_run(
    widths: Sequence[int],
    *,
    saves: int,
    rule: str | Sequence[str],
    method: str = "auto",
    batch: int = 1,
    q: float | None = None,
    solver: str = "tsit5",
    samples: int = 0,
    test_samples: int = 0,
) -> ResourceEstimate:
    """Memory and set-up time of a deep linear run (``dlnsim run``, ``compare``, ``sweep``).

    Args:
        widths: ``(n_0, ..., n_d)``.
        saves: saved times (``--saves``); the final state is saved too.
        rule: a rule name, or for ``compare`` the list of rules run one after another (each
            finished trajectory is kept until the outputs are written).
        method: ``--curvature`` (auto, dense, krylov, balanced), resolved as ``GaussNewton`` does.
        batch: initial weights integrated at once (``sweep --seeds``).
        q: the power of qngd / qngd-d.
        solver: ``tsit5`` or ``kvaerno5`` (implicit: a dense P x P Jacobian).
        samples, test_samples: rows of the student-teacher data set (0 for a noise-free task);
            each saved state's train and test loss forms the residuals of all of them.

    The memory is the saved trajectory (measured copies), the conserved quantities of every saved
    state, the vector field's arrays (:func:`vector_field_bytes`) for all states evaluated at once
    (the batch in the solve, 64 saved states in the observables), the solver state, the data and
    the compiled code. The time is the measured trace + compile time of each rule (growing as
    d + 1.1e-3 d^2 and with the number of distinct layer shapes), building the initial net, and for
    dense curvature a floor of one eigh of K per saved state.
    """
    widths = check_widths(widths)
    saves = _count("saves", saves, 2)
    batch = _count("batch (seeds)", batch, 1)
    samples = _count("samples", samples, 0)
    test_samples = _count("test_samples", test_samples, 0)
    if solver not in ("tsit5",) + IMPLICIT_SOLVERS:
        raise ValueError(f"--solver must be one of tsit5, {', '.join(IMPLICIT_SOLVERS)}, got {solver!r}")
    rules = [rule] if isinstance(rule, str) else list(rule)
    if not rules:
        raise ValueError("give at least one rule")
    d, n0, nd = len(widths) - 1, widths[0], widths[-1]
    shapes = _layer_shapes(widths)
    params = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    state = _F64 * params
    rows = saves + 1
    chunk = min(OBSERVABLE_CHUNK, rows)
    at_once = max(batch, chunk)
    if len(rules) > 1:
        copies = TRAJECTORY_COPIES_PER_RULE * len(rules) * batch + TRAJECTORY_COPIES_COMPARE_EXTRA
    elif batch > 1:
        copies = TRAJECTORY_COPIES_PER_SEED * batch + TRAJECTORY_COPIES_BATCH_EXTRA
    else:
        copies = TRAJECTORY_COPIES_SINGLE

    families = {
        r: rule_family(r, widths, method=method, q=q if r in ("qngd", "qngd-d") else None) for r in rules
    }
    per_eval = {r: vector_field_bytes(widths, f) for r, f in families.items()}
    worst = max(rules, key=lambda r: sum(per_eval[r].values()))

    parts: dict[str, float] = {}
    hints: dict[str, tuple[str, ...]] = {}
    saved = f"weights x {saves} saves" + (f" x {batch} seeds" if batch > 1 else "")
    if len(rules) > 1:
        saved += f" x {len(rules)} rules"
    parts[saved] = rows * state * copies
    hints[saved] = ("--saves", "--width/--widths", "--depth") + (("--seeds",) if batch > 1 else ())
    hidden = sum(n * n for n in widths[1:-1])
    if hidden:
        label = f"conserved quantities x {saves} saves"
        parts[label] = _F64 * rows * hidden
        hints[label] = ("--saves", "--width/--widths")
    dense_advice = (
        "use --curvature krylov or smaller input and output widths (K is n_d n_0 x n_d n_0)"
        if structurally_full_rank(widths)
        else "use smaller input and output widths (K is n_d n_0 x n_d n_0)"
    )
    for part, nbytes in per_eval[worst].items():
        label = f"{part} x {at_once} states"
        parts[label] = at_once * nbytes
        hints[label] = (
            (dense_advice,)
            if part.startswith("dense") or part.startswith("Gram")
            else ("--width/--widths", "--depth") + (("--seeds",) if batch > 1 else ())
        )
    if families[worst] == "dense":
        parts["eigh workspace"] = _F64 * 2 * (n0 * nd) ** 2
        hints["eigh workspace"] = hints[f"dense Gram K x {at_once} states"]
    label = "solver state" + (f" x {batch} seeds" if batch > 1 else "")
    parts[label] = TSIT5_STATES * state * batch
    hints[label] = ("--width/--widths", "--depth")
    if solver in IMPLICIT_SOLVERS:
        label = f"{solver} Jacobian ({params} x {params}) and LU"
        parts[label] = 2 * _F64 * params * params * batch
        hints[label] = ("use --solver tsit5 (the implicit solver forms a dense P x P Jacobian)",)
        label2 = f"{solver} Jacobian: vector field on {params} tangents"
        parts[label2] = params * sum(per_eval[worst].values()) * batch
        hints[label2] = hints[label]
    if samples or test_samples:
        label = "data residuals" + f" x {chunk} states"
        parts[label] = (
            _F64 * (samples + test_samples) * (n0 + 2 * nd) + _F64 * chunk * (samples + test_samples) * nd
        )
        hints[label] = ("--samples",)
    parts["task"] = _F64 * (4 * n0 * nd + 3 * n0 * n0)
    label = f"compiled code ({d} layers)"
    parts[label] = sum(COMPILED_BYTES_PER_LAYER[f] for f in families.values()) * d
    hints[label] = ("--depth",)
    if shapes > 1:
        label = f"compiled code ({shapes} layer shapes)"
        parts[label] = COMPILED_BYTES_PER_SHAPE * shapes
        hints[label] = ("use fewer distinct --widths",)
    parts["runtime baseline"] = RUNTIME_BASELINE_BYTES

    times: dict[str, float] = {}
    notes: dict[str, str] = {}
    limit = time_limit()
    label = f"trace and compile {d} layers" + (f", {shapes} layer shapes" if shapes > 1 else "")
    times[label] = sum(compile_seconds(d, f, shapes) for f in families.values())
    slowest = max(families.values(), key=lambda f: COMPILE_FACTOR[f])
    fams = list(families.values())
    notes[label] = (
        f"{COMPILE_BASE_S:g} s + {COMPILE_FACTOR[slowest]:g} x ({COMPILE_PER_LAYER_S:g} d + "
        f"{COMPILE_PER_LAYER2_S:.3g} d^2) s for {slowest} rules and 0.75-1 s per distinct layer shape, "
        f"measured on a 2-core CPU; {format_seconds(limit)} fits depth {max_depth(fams, limit, batch=batch)}"
        f" ({max_depth(fams, limit, shapes=2**62, batch=batch)} if every width differs)"
        + (f", for these {len(rules)} rules" if len(rules) > 1 else "")
    )
    hints[label] = ("--depth", "use fewer distinct --widths")
    label = f"build the initial net ({shapes} layer shape{'s' if shapes > 1 else ''})"
    times[label] = (1 + (batch > 1)) * (INIT_PER_LAYER_S * d + INIT_PER_SHAPE_S * shapes)
    notes[label] = (
        f"measured {INIT_PER_SHAPE_S:g} s per distinct layer shape, {INIT_PER_LAYER_S:g} s per layer"
    )
    hints[label] = ("use fewer distinct --widths",)
    dense = [r for r, f in families.items() if f == "dense"]
    if dense:
        m = n0 * nd
        label = f"dense eigh of K ({m} x {m}) on every saved state"
        evals = len(dense) * batch * (rows + 7)
        times[label] = evals * EIGH_SECONDS_PER_M3 * float(m) ** 3
        notes[label] = (
            f"a floor: {evals} evaluations x {EIGH_SECONDS_PER_M3:g} m^3 s per eigh (measured), before "
            "counting the solver's steps"
        )
        hints[label] = ("--saves", dense_advice)
    return _estimate(parts, times, hints, notes)
