"""The registry of paper-figure reproductions behind ``dlnsim reproduce``.

Each reproduction is a function ``run(*, fast, seed) -> Reproduction`` registered under an id with
:func:`register`. It builds its figure from the public API and states every quantitative agreement
with the paper or its theory as a :class:`Check`. :func:`reproduce` runs one and writes its figure,
``metrics.json`` and the arrays behind the figure, all or nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import platform
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._outputs import OutputTarget, claim_output

Relation = Literal["<=", ">=", "<", ">"]
_RELATIONS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda v, t: v <= t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    ">": lambda v, t: v > t,
}


@dataclass(frozen=True)
class Check:
    """One quantitative agreement: ``value relation threshold`` (a non-finite value fails)."""

    name: str
    value: float
    threshold: float
    relation: Relation = "<="
    passed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value if math.isfinite(self.value) else str(self.value),
            "threshold": self.threshold,
            "relation": self.relation,
            "passed": self.passed,
        }

    def __str__(self) -> str:
        mark = "ok  " if self.passed else "FAIL"
        return f"{mark} {self.name}: {self.value:.4g} {self.relation} {self.threshold:.4g}"


def check(name: str, value, threshold, relation: Relation = "<=") -> Check:
    """A :class:`Check` that passes when ``value relation threshold`` holds and ``value`` is finite."""
    if relation not in _RELATIONS:
        raise ValueError(f"relation must be one of {', '.join(_RELATIONS)}, got {relation!r}")
    value, threshold = float(value), float(threshold)
    passed = math.isfinite(value) and _RELATIONS[relation](value, threshold)
    return Check(name, value, threshold, relation, bool(passed))


@dataclass
class Reproduction:
    """What one reproduction produced.

    Attributes:
        id: the registry id.
        figure: a ``matplotlib.figure.Figure`` (built without pyplot, so no global state).
        checks: every quantitative agreement, as :class:`Check` objects.
        settings: the sizes, seeds, hyper-parameters and deviations from the paper actually used
            (JSON-serialisable; written to ``metrics.json``).
        arrays: the curves behind the figure (written to ``data.npz``).
        wall_seconds: the run time, filled in by :func:`reproduce`.
    """

    id: str
    figure: Any
    checks: list[Check]
    settings: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    wall_seconds: float = float("nan")

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


@dataclass(frozen=True)
class Experiment:
    """A registered reproduction: its id, what it shows, its source and the function that runs it."""

    id: str
    title: str
    source: str
    run: Callable[..., Reproduction]

    def __str__(self) -> str:
        return f"{self.id}  {self.title}  [{self.source}]"


# The modules that register the built-in reproductions (one per source paper).
_BUILT_IN = ("dlnsim._repro_curvature", "dlnsim._repro_exactng", "dlnsim._repro_fisher")


class _Registry(MutableMapping[str, Experiment]):
    """The id -> :class:`Experiment` registry. The built-in reproductions are imported on first
    use, so that ``import dlnsim`` loads none of them (nor what they import)."""

    def __init__(self):
        self._entries: dict[str, Experiment] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for name in _BUILT_IN:
                importlib.import_module(name)

    def add(self, exp: Experiment) -> None:
        if exp.id in self._entries:
            raise ValueError(f"reproduction id {exp.id!r} is registered twice")
        self._entries[exp.id] = exp

    def __getitem__(self, id: str) -> Experiment:
        self._load()
        return self._entries[id]

    def __setitem__(self, id: str, exp: Experiment) -> None:
        self._load()
        self._entries[id] = exp

    def __delitem__(self, id: str) -> None:
        self._load()
        del self._entries[id]

    def __iter__(self):
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"EXPERIMENTS({', '.join(self)})"


EXPERIMENTS = _Registry()


def register(id: str, *, title: str, source: str):
    """Decorator: registers ``run(*, fast: bool, seed: int) -> Reproduction`` under ``id``."""

    def decorate(run: Callable[..., Reproduction]) -> Callable[..., Reproduction]:
        EXPERIMENTS.add(Experiment(id, title, source, run))
        return run

    return decorate


def experiment(id: str) -> Experiment:
    """The registered :class:`Experiment` ``id``; a one-line ``ValueError`` lists the known ids."""
    if id not in EXPERIMENTS:
        raise ValueError(f"unknown reproduction {id!r}; choose one of: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[id]


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def metrics(rep: Reproduction, *, fast: bool, seed: int) -> dict[str, Any]:
    """The ``metrics.json`` record of a reproduction."""
    import jax

    exp = EXPERIMENTS.get(rep.id)
    return _jsonable(
        {
            "id": rep.id,
            "title": exp.title if exp else None,
            "source": exp.source if exp else None,
            "fast": fast,
            "seed": seed,
            "passed": rep.passed,
            "checks": [c.as_dict() for c in rep.checks],
            "settings": rep.settings,
            "wall_seconds": rep.wall_seconds,
            "machine": {
                "platform": platform.platform(),
                "jax_backend": jax.default_backend(),
                "jax_version": jax.__version__,
                "x64": bool(jax.config.jax_enable_x64),
            },
        }
    )


def write_reproduction(rep: Reproduction, out, *, fast: bool, seed: int, overwrite: bool = False) -> Path:
    """Writes ``figure.png``, ``figure.pdf``, ``metrics.json`` and ``data.npz`` into ``out``.

    ``out`` is a new directory, an empty one, or (with ``overwrite``) an earlier dlnsim result;
    anything else raises :class:`dlnsim.OutputError`. The directory appears complete or not at
    all (written to a temporary path, then renamed).
    """
    target = out if isinstance(out, OutputTarget) else claim_output(out, overwrite=overwrite)
    with target, target.writing() as tmp:
        rep.figure.savefig(tmp / "figure.png", dpi=110, bbox_inches="tight")
        rep.figure.savefig(tmp / "figure.pdf", bbox_inches="tight")
        (tmp / "metrics.json").write_text(json.dumps(metrics(rep, fast=fast, seed=seed), indent=2) + "\n")
        np.savez(tmp / "data.npz", **{k: np.asarray(v) for k, v in rep.arrays.items()})
    return target.path


def reproduce(
    id: str, *, fast: bool = False, seed: int = 0, out=None, overwrite: bool = False
) -> Reproduction:
    """Runs the reproduction ``id`` and, if ``out`` is given, writes its files there.

    Args:
        id: a registered id (``dlnsim.experiments.EXPERIMENTS``).
        fast: shrink the sizes so the run takes about a minute on 2 CPU cores; the checks stay
            meaningful. The default runs the paper's sizes.
        seed: the base random seed (the same seed gives the same numbers).
        out: a directory for ``figure.png``, ``figure.pdf``, ``metrics.json`` and ``data.npz``:
            a new or empty directory, or an earlier dlnsim result with ``overwrite``. It is
            checked and locked before the computation starts.
        overwrite: replace an earlier dlnsim result at ``out`` (never anything else).

    Float64 must be switched on by the caller (``jax.config.update("jax_enable_x64", True)``);
    the ``dlnsim`` CLI does so.
    """
    exp = experiment(id)
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    target = out if out is None or isinstance(out, OutputTarget) else claim_output(out, overwrite=overwrite)
    with target if target is not None else contextlib.nullcontext():
        start = time.perf_counter()
        rep = exp.run(fast=bool(fast), seed=int(seed))
        rep.wall_seconds = time.perf_counter() - start
        if rep.id != id:
            raise RuntimeError(f"reproduction {id!r} returned a result labelled {rep.id!r}")
        if target is not None:
            write_reproduction(rep, target, fast=bool(fast), seed=int(seed))
    return rep


def new_figure(nrows: int = 1, ncols: int = 1, *, panel_size=(4.2, 3.4), **subplots_kwargs):
    """A ``matplotlib.figure.Figure`` and its axes grid (``squeeze=False``), built without pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots_kwargs)
    return fig, axes
