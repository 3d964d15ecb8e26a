"""Resources of a wide-network run (``dlnsim wide``), estimated before anything is allocated.

The bytes and seconds of :func:`estimate_wide_run` follow the conventions and measurements of
:mod:`dlnsim._resources` (2026-12-02, 2-core CPU, jax 0.9.2, float64).
"""

from __future__ import annotations

from collections.abc import Sequence

from ._checks import check_widths
from ._resources import (
    _F64,
    EIGH_SECONDS_PER_M3,
    ResourceEstimate,
    _count,
    _estimate,
    format_seconds,
    time_limit,
)
from .wide import fisher_class, loss_named

# Copies of the MLP's parameters at the peak of `dlnsim wide` (the initial net, the trained one, the
# update and each Fisher's per-parameter arrays), from peak RSS at width 2048 and 4096, depth 3,
# N = 16, 3 steps (measured 2026-12-02 with /tmp/res/mem_wide.py; 129 MiB of parameters at 4096):
# bd 4.26, exact 3.8, kfac 4.96, unit-wise 5.26, diagonal 6.94, quasi-diagonal 10.2 copies, over an
# intercept of 360 MiB. The default run (width 512, N = 16) peaked at 412 MiB over the imports, about
# 385 MiB besides its arrays: WIDE_RUNTIME_BASELINE_BYTES.
WIDE_RUNTIME_BASELINE_BYTES = 400 * 2**20
WIDE_PARAMETER_COPIES = {
    "exact": 4.5,
    "bd": 4.5,
    "tri-diagonal": 4.5,
    "kfac": 5.5,
    "unit-wise": 5.5,
    "diagonal": 7.5,
    "quasi-diagonal": 10.5,
}

# Sample-space matrices (A = N C training rows, L layers), in A x A matrices: the layer-wise Fishers
# (bd, tri-diagonal, exact with cross-entropy) form L Gram matrices, their eigenvectors and the
# (L A) x (L A) coupled matrix with its pseudo-inverse (dlnsim.wide._fisher.layerwise_operator). Peak RSS
# of `dlnsim wide --width 64 --steps 2` over the intercept, MiB (/tmp/res/mem_wide.py):
#   bd, depth 3, N = 600 / 1200: 247 / 784;  bd, depth 6, N = 600: 570;  N = 1200, depth 3: exact 168,
#   kfac 361, unit-wise 5542 (129 units). estimate_wide_run gives 227 / 836 / 693 and 220 / 407 / 5805
#   (5 (L A)^2 + 8 L A^2 for bd, with Theta_bar and the NTK, parameters, signals and compiled code).
WIDE_LAYERWISE_COUPLED = 5
WIDE_LAYERWISE_PER_LAYER = 8

# Trace + compile time of compare_with_theory (CPU seconds, width 32, N = 8, 2 steps;
# /tmp/res/compile_wide.py, 2026-12-02). bd at L = 3 / 12 / 48 / 64 / 96 / 128: 3.9 / 6.7 / 22.1 /
# 32.8 / 118.7 / 263.2 s: the layer-wise operator builds L^2 blocks, and its compile time grows
# about as L^3 at large L: WIDE_COMPILE_BASE_S + 0.2 L + 1.2e-4 L^3 bounds every point. kfac at
# L = 48 took 5.7 s (no L^2 blocks): 0.2 s per layer bounds it.
WIDE_COMPILE_BASE_S = 4.0
WIDE_COMPILE_PER_LAYER_S = 0.2
WIDE_COMPILE_CUBIC_S = 1.2e-4
# Resident compiled code: bd grew 464 / 726 / 905 / 1255 / 1890 MiB at L = 3 / 48 / 64 / 96 / 128.
WIDE_COMPILED_BYTES_PER_LAYER = 6 * 2**20
WIDE_COMPILED_BYTES_PER_LAYER2 = 0.06 * 2**20


def _wide_fisher(fisher: str, loss: str) -> str:
    fisher_class(fisher)
    loss_named(loss)
    return fisher


def _coupled(fisher: str, loss: str) -> bool:
    """Whether the Fisher forms the (L N C)^2 coupled layer-wise matrix."""
    return fisher in ("bd", "tri-diagonal") or (fisher == "exact" and loss == "cross-entropy")


def wide_compile_seconds(depth: int, fisher: str, loss: str = "mse") -> float:
    """Estimated CPU seconds to trace and compile ``dlnsim wide`` at depth L (see WIDE_COMPILE_*)."""
    seconds = WIDE_COMPILE_BASE_S + WIDE_COMPILE_PER_LAYER_S * depth
    if _coupled(fisher, loss):
        seconds += WIDE_COMPILE_CUBIC_S * depth**3
    return seconds


def estimate_wide_run(
    widths: Sequence[int],
    *,
    samples: int,
    outputs: int,
    fisher: str,
    steps: int,
    test_samples: int,
    bias: bool = True,
    loss: str = "mse",
) -> ResourceEstimate:
    """Memory and set-up time of ``dlnsim wide`` (dlnsim.wide.compare_with_theory).

    Args:
        widths: ``(M_0, M_1, ..., M_{L-1}, C)``.
        samples, test_samples: N and N'.
        outputs: C (must equal ``widths[-1]``).
        fisher: the Fisher approximation (``--fisher``); ``loss`` mse or cross-entropy.
        steps: NGD steps T.

    Counted: the parameters (measured copies per Fisher), the forward and backward signals on the
    training and test inputs (h_l: N x M_l, delta_l: N x C x M_l, formed three times), the data,
    and each Fisher's sample-space matrices (A = N C): the layer-wise Fishers' L Gram matrices
    and (L A)^2 coupled matrix, exact's sum of Grams, K-FAC's factors (L A^2 and L N^2), the
    unit-wise Fisher's M_l Gram matrices of size A^2 per layer; for all, Theta_bar and the NTK on
    train and test rows. The time is the measured compile time and a floor of one eigh of the
    largest sample-space matrix per step.
    """
    widths = check_widths(widths)
    fisher = _wide_fisher(fisher, loss)
    n = _count("samples", samples, 1)
    nt = _count("test-samples", test_samples, 1)
    c = _count("outputs", outputs, 1)
    steps = _count("steps", steps, 0)
    if widths[-1] != c:
        raise ValueError(f"the last width is the number of outputs C = {c}, got widths {list(widths)}")
    depth = len(widths) - 1
    params = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    if bias:
        params += sum(widths[1:])
    a, at = n * c, nt * c

    parts: dict[str, float] = {}
    hints: dict[str, tuple[str, ...]] = {}
    copies = WIDE_PARAMETER_COPIES[fisher]
    label = f"parameters ({params}) x {copies:g} copies"
    parts[label] = _F64 * params * copies
    hints[label] = ("--width", "--depth")
    units = sum(widths[1:])
    label = "signals on train and test inputs"
    parts[label] = _F64 * 3 * (n + nt) * (sum(widths[:-1]) + c * units)
    hints[label] = ("--samples/--test-samples", "--width")
    parts["data"] = _F64 * 3 * (n + nt) * (widths[0] + c)
    hints["data"] = ("--samples/--test-samples",)
    sample_hint = ("--samples",)
    if _coupled(fisher, loss):
        label = f"coupled layer-wise matrix ({depth * a} x {depth * a})"
        parts[label] = _F64 * WIDE_LAYERWISE_COUPLED * (depth * a) ** 2
        hints[label] = sample_hint + ("--depth",)
        label = f"layer Gram matrices ({depth} x {a} x {a})"
        parts[label] = _F64 * WIDE_LAYERWISE_PER_LAYER * depth * a * a
        hints[label] = sample_hint
    elif fisher == "exact":
        label = f"layer Gram matrices ({depth} x {a} x {a})"
        parts[label] = _F64 * (3 * depth + 4) * a * a
        hints[label] = sample_hint
    elif fisher == "kfac":
        label = f"K-FAC factors ({depth} x ({a}^2 + {n}^2))"
        parts[label] = _F64 * (6 * depth * a * a + 4 * depth * n * n)
        hints[label] = sample_hint
    elif fisher == "unit-wise":
        label = f"unit-wise Gram matrices ({units} units x {a} x {a})"
        parts[label] = _F64 * (4 * units * a * a + max(widths[1:]) * at * a)
        hints[label] = ("--samples", "--width")
    label = f"Theta_bar and NTK ({a} x {a}, {at} x {a})"
    parts[label] = _F64 * (4 * a * a + 2 * depth * at * a)
    hints[label] = sample_hint
    label = f"compiled code ({depth} layers)"
    parts[label] = WIDE_COMPILED_BYTES_PER_LAYER * depth + (
        WIDE_COMPILED_BYTES_PER_LAYER2 * depth**2 if _coupled(fisher, loss) else 0
    )
    hints[label] = ("--depth",)
    parts["runtime baseline"] = WIDE_RUNTIME_BASELINE_BYTES

    times: dict[str, float] = {}
    notes: dict[str, str] = {}
    limit = time_limit()
    label = f"trace and compile {depth} layers"
    times[label] = wide_compile_seconds(depth, fisher, loss)
    fits = 0
    while wide_compile_seconds(fits + 1, fisher, loss) <= limit and fits < 10**7:
        fits = fits + 1 if fits < 1000 else int(fits * 1.01) + 1
    notes[label] = (
        f"measured on a 2-core CPU: {WIDE_COMPILE_BASE_S:g} s + {WIDE_COMPILE_PER_LAYER_S:g} s x L"
        + (
            f" + {WIDE_COMPILE_CUBIC_S:g} s x L^3 for the layer-wise Fishers"
            if _coupled(fisher, loss)
            else ""
        )
        + f"; depth <= {fits} fits in {format_seconds(limit)}"
    )
    hints[label] = ("--depth",)
    evals = steps + 1
    if _coupled(fisher, loss):
        m, count = depth * a, evals
    elif fisher == "unit-wise":
        m, count = a, evals * units
    elif fisher == "kfac":
        m, count = max(a, n), evals * 2 * depth
    else:
        m, count = a, evals
    label = f"eigh of {count} sample-space matrices of size {m}"
    times[label] = count * EIGH_SECONDS_PER_M3 * float(m) ** 3
    notes[label] = (
        f"a floor: {EIGH_SECONDS_PER_M3:g} m^3 s per eigh (measured), once per step and at the start"
    )
    hints[label] = sample_hint
    return _estimate(parts, times, hints, notes)
