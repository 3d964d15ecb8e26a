"""Writes the verdict table and the gallery of docs/reproductions.md from reproduction outputs.

    dlnsim reproduce all --fast --out /tmp/repro-fast
    dlnsim reproduce all --out /tmp/repro-full
    python docs/gallery.py --fast /tmp/repro-fast --full /tmp/repro-full --write

Each id's ``metrics.json`` gives its verdict, its claims with their measured numbers and its wall
time; the fast figures are copied to docs/gallery/. The text between the ``gallery:start`` and
``gallery:end`` markers of docs/reproductions.md is replaced (without ``--write`` it is printed).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

DOCS = Path(__file__).resolve().parent
PAGE = DOCS / "reproductions.md"
START, END = "<!-- gallery:start -->", "<!-- gallery:end -->"


def _metrics(root: Path | None) -> dict[str, dict]:
    if root is None:
        return {}
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/metrics.json"))}


def _number(value) -> str:
    return value if isinstance(value, str) else f"{value:.3g}"


def _claims(m: dict) -> str:
    rows = [c for c in m["checks"] if c.get("kind") == "claim"]
    parts = []
    for c in rows:
        mark = "holds" if c["passed"] else "differs"
        parts.append(f"{mark}: {c['name']}: {_number(c['value'])} {c['relation']} {_number(c['threshold'])}")
    return "; ".join(parts)


def render(fast: dict[str, dict], full: dict[str, dict]) -> str:
    ids = list(full or fast)
    lines = [
        "| id | verdict (paper's settings) | verdict (`--fast`) | claims held (full) | time full / fast |",
        "|---|---|---|---|---|",
    ]
    for fid in ids:
        f, s = full.get(fid), fast.get(fid)
        t_full = f"{f['wall_seconds']:.0f} s" if f else "-"
        t_fast = f"{s['wall_seconds']:.0f} s" if s else "-"
        lines.append(
            f"| `{fid}` | {f['verdict'] if f else '-'} | {s['verdict'] if s else '-'} | "
            f"{f['claims_held'] if f else '-'} | "
            f"{t_full} / {t_fast} |"
        )
    lines.append("")
    for fid in ids:
        m = full.get(fid) or fast[fid]
        lines.append(f"### `{fid}`: {m['verdict']}")
        lines.append("")
        lines.append(f"{m['title']} ({m['source']}).")
        lines.append("")
        lines.append(f"Claims at the paper's settings: {_claims(m)}.")
        for finding in m.get("findings", []):
            lines.append("")
            lines.append(f"- {finding}")
        lines.append("")
        if fid in fast:
            lines.append(f"![{fid}](gallery/{fid}.png)")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", type=Path, help="directory of `dlnsim reproduce all --fast` outputs")
    parser.add_argument("--full", type=Path, help="directory of full-size outputs")
    parser.add_argument("--write", action="store_true", help="update docs/reproductions.md and docs/gallery")
    args = parser.parse_args()
    fast, full = _metrics(args.fast), _metrics(args.full)
    text = render(fast, full)
    if not args.write:
        print(text)
        return
    page = PAGE.read_text()
    head, rest = page.split(START)
    _, tail = rest.split(END)
    PAGE.write_text(f"{head}{START}\n{text}{END}{tail}")
    for fid in fast:
        shutil.copyfile(args.fast / fid / "figure.png", DOCS / "gallery" / f"{fid}.png")


if __name__ == "__main__":
    main()
