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
import pkgutil
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

#: Where a threshold may come from; a check's ``basis`` starts with one of these, then says more
#: (``"paper: Fig. 3 shows the two curves within 5 %"``, ``"precision: rtol 1e-8 of the solver"``):
#:
#: - ``paper``: a number the paper states or plots;
#: - ``finite-size``: the order of a finite-width or finite-sample effect (1/sqrt(M), 1/sqrt(N));
#: - ``precision``: float64 round-off or the integrator's tolerances;
#: - ``exact``: a qualitative claim whose threshold is its own boundary (a ratio below 1, a sign).
BASES = ("paper", "finite-size", "precision", "exact")

#: A figure's verdict: every paper claim holds, some do, or none does.
VERDICTS = ("reproduces", "partly", "disagrees")
Verdict = Literal["reproduces", "partly", "disagrees"]
Kind = Literal["software", "claim"]


@dataclass(frozen=True)
class Check:
    """One quantitative agreement: ``value relation threshold`` (a non-finite value fails).

    Attributes:
        name: what is measured, in words.
        value: the measured number.
        threshold: the bound, fixed before the result was seen.
        relation: one of ``<=``, ``>=``, ``<``, ``>``.
        passed: whether ``value relation threshold`` holds (and ``value`` is finite).
        kind: ``"software"`` for a check of dlnsim's own correctness (a conservation law, a closed
            form, a dense reference), whose failure is a bug (``dlnsim reproduce`` exits 1);
            ``"claim"`` for a claim of the paper, whose failure is a finding that sets the figure's
            verdict.
        basis: where the threshold comes from, starting with one of :data:`BASES`.
    """

    name: str
    value: float
    threshold: float
    relation: Relation = "<="
    passed: bool = False
    kind: Kind = "software"
    basis: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value if math.isfinite(self.value) else str(self.value),
            "threshold": self.threshold,
            "relation": self.relation,
            "passed": self.passed,
            "kind": self.kind,
            "basis": self.basis,
        }

    def __str__(self) -> str:
        if self.kind == "claim":
            mark = "holds  " if self.passed else "differs"
        else:
            mark = "ok     " if self.passed else "FAIL   "
        return f"{mark} {self.name}: {self.value:.4g} {self.relation} {self.threshold:.4g}"


def _make(name, value, threshold, relation, kind, basis) -> Check:
    if relation not in _RELATIONS:
        raise ValueError(f"relation must be one of {', '.join(_RELATIONS)}, got {relation!r}")
    if basis and basis.split(":")[0].strip() not in BASES:
        raise ValueError(f"a check's basis starts with one of {', '.join(BASES)}, got {basis!r}")
    value, threshold = float(value), float(threshold)
    passed = math.isfinite(value) and _RELATIONS[relation](value, threshold)
    return Check(name, value, threshold, relation, bool(passed), kind, basis)


def check(name: str, value, threshold, relation: Relation = "<=", *, basis: str = "") -> Check:
    """A software check (dlnsim's own correctness) that passes when ``value relation threshold``
    holds and ``value`` is finite; ``basis`` says where the threshold comes from (:data:`BASES`)."""
    return _make(name, value, threshold, relation, "software", basis)


def claim(name: str, value, threshold, relation: Relation = "<=", *, basis: str) -> Check:
    """A check of one of the paper's claims: it holds when ``value relation threshold`` holds. A
    claim that does not hold is a finding (it sets the verdict), not a software failure."""
    return _make(name, value, threshold, relation, "claim", basis)


def verdict_of(checks) -> Verdict | None:
    """``reproduces`` when every claim holds, ``disagrees`` when none does, ``partly`` otherwise;
    None when there are no claims."""
    claims = [c for c in checks if c.kind == "claim"]
    if not claims:
        return None
    held = sum(c.passed for c in claims)
    return "reproduces" if held == len(claims) else ("disagrees" if held == 0 else "partly")


@dataclass
class Reproduction:
    """What one reproduction produced.

    Attributes:
        id: the registry id.
        figure: a ``matplotlib.figure.Figure`` (built without pyplot, so no global state).
        checks: every quantitative agreement, as :class:`Check` objects: software checks and the
            paper's claims.
        settings: the sizes, seeds, hyper-parameters and deviations from the paper actually used
            (JSON-serialisable; written to ``metrics.json``).
        arrays: the curves behind the figure (written to ``data.npz``).
        findings: sentences that state what the run found where it matters beyond the checks
            (a disagreement with the paper and its cause, a setting's effect).
        wall_seconds: the run time, filled in by :func:`reproduce`.
    """

    id: str
    figure: Any
    checks: list[Check]
    settings: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    wall_seconds: float = float("nan")

    @property
    def passed(self) -> bool:
        """Whether every software check passed (the paper's claims set :attr:`verdict` instead)."""
        return all(c.passed for c in self.checks if c.kind == "software")

    @property
    def failed(self) -> list[Check]:
        """The software checks that failed."""
        return [c for c in self.checks if c.kind == "software" and not c.passed]

    @property
    def claims(self) -> list[Check]:
        """The checks of the paper's claims."""
        return [c for c in self.checks if c.kind == "claim"]

    @property
    def verdict(self) -> Verdict | None:
        """``reproduces``, ``partly`` or ``disagrees`` (:func:`verdict_of` of the claims)."""
        return verdict_of(self.checks)

    def __getitem__(self, name: str) -> Check:
        """The check called ``name`` (a ``KeyError`` lists the names)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check {name!r}; the checks are: {[c.name for c in self.checks]}")


@dataclass(frozen=True)
class Experiment:
    """A registered reproduction: its id, what it shows, its source, the function that runs it and
    its verdict at the paper's settings (the full-size run, as measured when it was registered)."""

    id: str
    title: str
    source: str
    run: Callable[..., Reproduction]
    verdict: Verdict | None = None

    def __post_init__(self):
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")

    def __str__(self) -> str:
        return f"{self.id}  {self.title}  [{self.source}]"


# The package whose modules register the built-in reproductions (one per paper or figure group).
_BUILT_IN = "dlnsim._repro"


def _built_in_modules() -> list[str]:
    package = importlib.import_module(_BUILT_IN)
    return sorted(f"{_BUILT_IN}.{m.name}" for m in pkgutil.iter_modules(package.__path__))


class _Registry(MutableMapping[str, Experiment]):
    """The id -> :class:`Experiment` registry. The built-in reproductions are imported on first
    use, so that ``import dlnsim`` loads none of them (nor what they import). Ids iterate in
    sorted order (curvature-fig1, ..., fisher-figS2), whatever the order of registration."""

    def __init__(self):
        self._entries: dict[str, Experiment] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for name in _built_in_modules():
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
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"EXPERIMENTS({', '.join(self)})"


EXPERIMENTS = _Registry()


def register(id: str, *, title: str, source: str, verdict: Verdict | None = None):
    """Decorator: registers ``run(*, fast: bool, seed: int) -> Reproduction`` under ``id``, with
    the verdict its full-size run gave (shown by ``dlnsim reproduce --list``)."""

    def decorate(run: Callable[..., Reproduction]) -> Callable[..., Reproduction]:
        EXPERIMENTS.add(Experiment(id, title, source, run, verdict))
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
            "verdict": rep.verdict,
            "claims_held": f"{sum(c.passed for c in rep.claims)}/{len(rep.claims)}",
            "checks": [c.as_dict() for c in rep.checks],
            "findings": list(rep.findings),
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
