"""Resumable chunk stores and tidy tables (dlnsim._table)."""

import math

import pytest

from dlnsim import OutputError
from dlnsim._table import ChunkStore, read_table, write_table

ROWS = [
    {"element": 0, "rule": "ngd", "q": None, "loss_final": 0.1 + 0.2, "status": "ok"},
    {"element": 1, "rule": "qngd", "q": 1.5, "loss_final": float("nan"), "status": "failed: x"},
    {"element": 2, "rule": "qngd", "q": 3.0, "loss_final": float("inf"), "status": "ok"},
]


def _same(a, b):
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_chunks_round_trip_exactly_and_resume(tmp_path):
    store = ChunkStore(tmp_path / "p", {"rules": ["ngd"], "t1": 1.0})
    store.add(ROWS[2:])
    store.add(ROWS[:2])
    again = ChunkStore(tmp_path / "p", {"rules": ["ngd"], "t1": 1.0})  # a rerun with the same settings
    assert again.finished() == {0, 1, 2}
    rows = again.rows()
    assert [r["element"] for r in rows] == [0, 1, 2]
    for got, want in zip(rows, ROWS):
        assert all(_same(got[k], want[k]) for k in want)  # 0.1 + 0.2 kept to the last bit
    assert not list((tmp_path / "p").glob("*.tmp"))


def test_other_settings_are_refused(tmp_path):
    ChunkStore(tmp_path / "p", {"t1": 1.0})
    with pytest.raises(OutputError, match="unfinished sweep with other settings"):
        ChunkStore(tmp_path / "p", {"t1": 2.0}, what="--out runs/x")


def test_table_parquet_and_csv(tmp_path):
    parquet, csv_path = write_table(ROWS, tmp_path)
    back = read_table(parquet)
    assert [r["element"] for r in back] == [0, 1, 2] and back[0]["q"] is None
    assert back[0]["loss_final"] == 0.1 + 0.2 and math.isnan(back[1]["loss_final"])
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "element,rule,q,loss_final,status"
    assert lines[1] == f"0,ngd,,{0.1 + 0.2!r},ok"
