"""The resource budget: an estimate's type, the memory and time a run may use, and the check.

:class:`ResourceEstimate` holds the bytes and seconds a run is expected to need;
:func:`available_memory` reads the machine's (cgroup or /proc/meminfo, or DLNSIM_MEMORY_LIMIT),
:func:`time_limit` the accepted set-up time (DLNSIM_TIME_LIMIT), and :func:`check_resources`
refuses, with one line, an estimate over a safe fraction of either. The estimates themselves
live in ``dlnsim._resources`` (deep linear runs) and ``dlnsim._resources_wide`` (wide nets).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

_F64 = 8  # bytes per float64 entry

# ------------------------------------------------------------------------------------------------
# thresholds

# An estimate is refused when it exceeds this fraction of the available memory: the estimates count
# the arrays a run forms, not the allocator's fragmentation, XLA's temporaries or other processes
# that grow while the run goes on.
SAFE_FRACTION = 0.8

# The longest estimated time besides the integration accepted (tracing and compiling, building the
# net, floors on the decompositions), in seconds: "a few minutes". DLNSIM_TIME_LIMIT (seconds)
# overrides it.
TIME_LIMIT_S = 300.0


# ------------------------------------------------------------------------------------------------
# the estimate


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human figure: 312 GiB, 21.3 GiB, 640 MiB, 12 KiB."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            v = n / size
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:.0f} {unit}"
    return f"{int(n)} B"


def format_seconds(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.3g} h"
    if s >= 60:
        return f"{s / 60:.3g} min"
    return f"{s:.3g} s"


@dataclass(frozen=True)
class ResourceEstimate:
    """What a run will need, from its sizes alone.

    Attributes:
        total_bytes: the estimated peak memory in bytes (the sum of ``breakdown``).
        breakdown: bytes per part of the run, largest first, e.g.
            ``{"weights x 600 saves": ..., "dense Gram K": ...}``.
        seconds: the estimated time that does not depend on the dynamics (tracing and compiling,
            and where it can be bounded, a floor on the computation), the sum of ``time_breakdown``.
        time_breakdown: seconds per part.
        hints: per part of ``breakdown`` or ``time_breakdown``, what shrinks it: options to reduce
            (``"--saves"``) or advice (``"use --curvature krylov"``).
        time_notes: per part of ``time_breakdown``, the measurement its figure comes from and the
            largest size that stays within the time limit.
    """

    total_bytes: int
    breakdown: dict[str, int]
    seconds: float = 0.0
    time_breakdown: dict[str, float] = field(default_factory=dict)
    hints: dict[str, tuple[str, ...]] = field(default_factory=dict)
    time_notes: dict[str, str] = field(default_factory=dict)

    def describe(self, parts: int = 3) -> str:
        """One line: the memory and its largest parts, then the time where it is a second or more,
        e.g. ``about 312 GiB (weights x 600 saves: 298 GiB, dense Gram K x 64 states: 14 GiB)``."""
        out = self.memory_summary(parts)
        if self.seconds >= 1.0:
            out += f", and {self.time_summary()}"
        return out

    def memory_summary(self, parts: int = 3) -> str:
        top = [(k, v) for k, v in self.breakdown.items() if v > 0][:parts]
        inner = ", ".join(f"{k}: {format_bytes(v)}" for k, v in top)
        return f"about {format_bytes(self.total_bytes)}" + (f" ({inner})" if inner else "")

    def time_summary(self) -> str:
        big = [(k, v) for k, v in self.time_breakdown.items() if v >= 0.05 * self.seconds][:2]
        inner = ", ".join(f"{k}: {format_seconds(v)}" for k, v in big)
        return f"about {format_seconds(self.seconds)} besides the integration ({inner})"

    def _hint(self, labels) -> str:
        options: list[str] = []
        advice: list[str] = []
        for k in labels:
            for h in self.hints.get(k, ()):
                target = options if h.startswith("--") else advice
                if h not in target:
                    target.append(h)
        out = []
        if options:
            out.append(
                "reduce " + (", ".join(options[:-1]) + " or " if len(options) > 1 else "") + options[-1]
            )
        out += advice
        return " or ".join(out) if out else "reduce the sizes"

    def memory_hint(self) -> str:
        """The options that shrink the largest parts of ``breakdown`` (joined, without repeats)."""
        return self._hint(list(self.breakdown)[:3])

    def time_hint(self) -> str:
        """The options that shrink the largest parts of ``time_breakdown``."""
        return self._hint(list(self.time_breakdown)[:1])


def _estimate(parts: dict[str, float], times: dict[str, float], hints, notes) -> ResourceEstimate:
    memory = dict(sorted(((k, int(math.ceil(v))) for k, v in parts.items()), key=lambda kv: -kv[1]))
    times = dict(sorted(times.items(), key=lambda kv: -kv[1]))
    return ResourceEstimate(
        total_bytes=int(sum(memory.values())),
        breakdown=memory,
        seconds=float(sum(times.values())),
        time_breakdown=times,
        hints=dict(hints),
        time_notes=dict(notes),
    )


# ------------------------------------------------------------------------------------------------
# available memory


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtTpP]?)(?:i?[bB])?\s*$")


def parse_size(text: str, name: str = "DLNSIM_MEMORY_LIMIT") -> int:
    """Bytes from ``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"8589934592"`` (K, M, G, T, P: powers of 1024)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"{name} must be a byte count like 8G, 512M or 8589934592, got {text!r}")
    value = float(m.group(1)) * 1024 ** " KMGTP".index((m.group(2) or " ").upper())
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive byte count like 8G, got {text!r}")
    return int(value)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _inactive_file(stat_path: str, key: str) -> int:
    try:
        with open(stat_path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key and value.strip().isdigit():
                    return int(value)
    except OSError:
        pass
    return 0


def _cgroup_dirs() -> list[tuple[str, str]]:
    """(version, directory) of every cgroup memory controller directory that can limit this
    process: its own cgroup and each ancestor, for cgroup v2 and v1 layouts."""
    own = {"v1": "/", "v2": "/"}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                parts = line.strip().split(":", 2)
                if len(parts) == 3 and parts[0] == "0" and parts[1] == "":
                    own["v2"] = parts[2] or "/"
                elif len(parts) == 3 and "memory" in parts[1].split(","):
                    own["v1"] = parts[2] or "/"
    except OSError:
        pass
    out = []
    for version, root in (("v2", "/sys/fs/cgroup"), ("v1", "/sys/fs/cgroup/memory")):
        path = own[version].strip("/")
        chain = path.split("/") if path else []
        for k in range(len(chain), -1, -1):
            out.append((version, os.path.join(root, *chain[:k])))
    return out


def cgroup_headroom() -> int | None:
    """Bytes this process's memory cgroups still allow (limit - usage + inactive file cache), the
    smallest over its cgroup and their ancestors; None where no limit is set."""
    best = None
    for version, d in _cgroup_dirs():
        if version == "v2":
            limit = _read_int(os.path.join(d, "memory.max"))  # "max" (no limit) reads as None
            usage = _read_int(os.path.join(d, "memory.current"))
            cache = _inactive_file(os.path.join(d, "memory.stat"), "inactive_file")
        else:
            limit = _read_int(os.path.join(d, "memory.limit_in_bytes"))
            usage = _read_int(os.path.join(d, "memory.usage_in_bytes"))
            cache = _inactive_file(os.path.join(d, "memory.stat"), "total_inactive_file")
        if limit is None or limit >= 2**60:  # v1 writes "no limit" as about 2^63
            continue
        room = max(0, limit - max(0, (usage or 0) - cache))
        best = room if best is None else min(best, room)
    return best


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> int:
    """Bytes of memory available to this process now.

    ``DLNSIM_MEMORY_LIMIT`` (bytes, or with a suffix: ``8G``, ``512M``) overrides everything.
    Otherwise MemAvailable of /proc/meminfo (or, where there is none, the free physical pages from
    ``os.sysconf``), capped by the headroom of any cgroup memory limit (v2 ``memory.max`` or v1
    ``memory.limit_in_bytes``).
    """
    env = os.environ.get("DLNSIM_MEMORY_LIMIT")
    if env is not None and env.strip():
        return parse_size(env)
    avail = _meminfo_available()
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    room = cgroup_headroom()
    if avail is None and room is None:
        raise ValueError(
            "cannot tell how much memory is available (no /proc/meminfo); set DLNSIM_MEMORY_LIMIT, e.g. 8G"
        )
    return int(min(v for v in (avail, room) if v is not None))


def time_limit() -> float:
    """The time limit in seconds: DLNSIM_TIME_LIMIT if set, else :data:`TIME_LIMIT_S`."""
    env = os.environ.get("DLNSIM_TIME_LIMIT")
    if env is None or not env.strip():
        return TIME_LIMIT_S
    try:
        value = float(env)
    except ValueError:
        value = float("nan")
    if not value > 0:  # also catches nan
        raise ValueError(f"DLNSIM_TIME_LIMIT must be a number of seconds > 0 (inf allowed), got {env!r}")
    return value


def check_resources(estimate: ResourceEstimate, *, what: str) -> None:
    """Raises a one-line ValueError when ``estimate`` needs more than :data:`SAFE_FRACTION` of the
    available memory, or more time than the limit (:data:`TIME_LIMIT_S`, or DLNSIM_TIME_LIMIT);
    the message names what is over, the measured figure behind a time limit, and what to reduce.

    ``what`` starts the message, e.g. ``"this run"`` or ``"dlnsim wide"``.
    """
    avail = available_memory()
    limit = time_limit()
    problems, hints = [], []
    if estimate.total_bytes > SAFE_FRACTION * avail:
        source = bool(os.environ.get("DLNSIM_MEMORY_LIMIT", "").strip())
        problems.append(
            f"needs {estimate.memory_summary()} but {format_bytes(avail)} is available "
            f"({'DLNSIM_MEMORY_LIMIT; ' if source else ''}a run may use {SAFE_FRACTION:.0%} of it)"
        )
        hints.append(estimate.memory_hint())
    if estimate.seconds > limit:
        part = next(iter(estimate.time_breakdown), "")
        note = estimate.time_notes.get(part, "")
        problems.append(
            f"would take about {format_seconds(estimate.seconds)} besides the integration ({part}"
            f"{': ' + note if note else ''}), over the {format_seconds(limit)} limit"
        )
        hints.append(estimate.time_hint() + ", or raise DLNSIM_TIME_LIMIT (seconds)")
    if problems:
        raise ValueError(f"{what} {' and '.join(problems)}; {'; '.join(hints)}")
