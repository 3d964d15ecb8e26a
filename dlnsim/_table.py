"""Tidy tables of runs: resumable chunks while a sweep runs, Parquet and CSV when it ends.

A sweep's rows (one per element: every parameter and summary figure, and a status) are written
a chunk at a time into the run's partial directory (:attr:`dlnsim.OutputTarget.partial`), each
chunk as one JSON file written to a temporary name and renamed, so a chunk is either complete or
absent: an interrupt loses at most the chunk in flight. The directory also records the sweep's
settings (its key); a rerun with the same settings reads the finished element ids and skips
them, a rerun with other settings is refused. JSON keeps float64 values exactly (Python's repr
round-trips).
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from ._outputs import OutputError

_SETTINGS = "sweep.json"


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan", "inf", "-inf": JSON has no literal for them
    return value


def _from_json(value):
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return value


class ChunkStore:
    """The finished rows of one resumable run, kept in ``directory``.

    Args:
        directory: the run's partial directory (created if missing).
        key: the run's settings; an existing store with other settings is refused.
        what: names the run in errors (for example ``"--out runs/sweep"``).
    """

    def __init__(self, directory: Path, key: dict, *, what: str = "this sweep"):
        self.directory = Path(directory)
        self.key = json.loads(json.dumps(key))  # normalized as it will be read back
        settings = self.directory / _SETTINGS
        if settings.exists():
            stored = json.loads(settings.read_text()).get("key")
            if stored != self.key:
                raise OutputError(
                    f"{what} holds an unfinished sweep with other settings; rerun that command to "
                    "resume it, or pass --overwrite to discard it"
                )
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            _atomic_write(settings, json.dumps({"tool": "dlnsim", "key": self.key}, indent=1) + "\n")

    def _chunks(self) -> list[Path]:
        return sorted(self.directory.glob("chunk-*.json"))

    def rows(self) -> list[dict]:
        """Every finished row, ordered by element id (one row per element)."""
        by_id: dict[int, dict] = {}
        for path in self._chunks():
            for row in json.loads(path.read_text()):
                by_id[int(row["element"])] = {k: _from_json(v) for k, v in row.items()}
        return [by_id[i] for i in sorted(by_id)]

    def finished(self) -> set[int]:
        """The ids of the elements whose rows are stored."""
        return {int(r["element"]) for r in self.rows()}

    def add(self, rows: Sequence[dict]) -> None:
        """Stores one chunk of rows atomically (each row has an integer ``element``)."""
        if not rows:
            return
        index = len(self._chunks())
        path = self.directory / f"chunk-{index:06d}.json"
        while path.exists():
            index += 1
            path = self.directory / f"chunk-{index:06d}.json"
        payload = [{k: _jsonable(v) for k, v in row.items()} for row in rows]
        _atomic_write(path, json.dumps(payload) + "\n")


def columns(rows: Iterable[dict]) -> list[str]:
    """Every key of the rows, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        for k in row:
            seen.setdefault(k, None)
    return list(seen)


def write_table(rows: Sequence[dict], directory: Path, stem: str = "table") -> list[Path]:
    """Writes ``rows`` as ``stem.parquet`` (pyarrow) and ``stem.csv``; returns the paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = columns(rows)
    data = {name: [row.get(name) for row in rows] for name in names}
    table = pa.table({name: pa.array(values) for name, values in data.items()})
    parquet, csv_path = Path(directory) / f"{stem}.parquet", Path(directory) / f"{stem}.csv"
    pq.write_table(table, parquet)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in names})
    return [parquet, csv_path]


def read_table(path: Path) -> list[dict]:
    """The rows of a Parquet table written by :func:`write_table`."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
