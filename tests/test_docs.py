"""The documentation site: it builds with ``mkdocs build --strict``, its API reference covers every
public name, the names it quotes exist, and the import graph on docs/architecture.md is current."""

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFRESH = "python docs/import_graph.py --write"
# API page of each public namespace (docs/api/<page>.md)
API_PAGES = {"dlnsim": "dlnsim", "dlnsim.analytic": "analytic", "dlnsim.wide": "wide",
             "dlnsim.experiments": "experiments"}  # fmt: skip


def load_import_graph():
    """docs/import_graph.py as a module (docs/ is not a package); no bytecode is written there."""
    spec = importlib.util.spec_from_file_location("import_graph", DOCS / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


def test_import_graph_is_current_and_acyclic():
    graph = load_import_graph()
    edges, _ = graph.import_graph(ROOT)
    assert "dlnsim" in edges and len(edges) > 10, sorted(edges)
    cycle = graph.find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    assert graph.block(ROOT) in page, f"docs/architecture.md is out of date: run `{REFRESH}`"


def test_import_graph_finds_cycles_and_local_imports(tmp_path):
    pkg = tmp_path / "dlnsim"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\nfrom .sub import c\n")
    (pkg / "a.py").write_text("from .b import x\nimport numpy\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "sub" / "__init__.py").write_text("from .c import y\n")
    (pkg / "sub" / "c.py").write_text("from .. import b\nfrom typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n    from ..a import z\n")  # fmt: skip
    graph = load_import_graph()
    edges, local = graph.import_graph(tmp_path)
    assert edges == {
        "dlnsim": {"dlnsim.a", "dlnsim.sub", "dlnsim.sub.c"},
        "dlnsim.a": {"dlnsim.b"},
        "dlnsim.b": {"dlnsim.a"},
        "dlnsim.sub": {"dlnsim.sub.c"},
        "dlnsim.sub.c": {"dlnsim.b"},
    }
    assert local == {("dlnsim.b", "dlnsim.a")}
    assert graph.find_cycle(edges) == ["dlnsim.a", "dlnsim.b", "dlnsim.a"]
    del edges["dlnsim.b"]
    edges = {m: t - {"dlnsim.b"} for m, t in edges.items()}
    assert graph.find_cycle(edges) is None
    assert graph.layers(edges) == {"dlnsim.a": 0, "dlnsim.sub.c": 0, "dlnsim.sub": 1, "dlnsim": 2}


def public_names(namespace: str) -> list[str]:
    module = importlib.import_module(namespace)
    return [n for n in module.__all__ if not isinstance(getattr(module, n), types.ModuleType)]


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for namespace, page in API_PAGES.items():
        html = (site / "api" / page / "index.html").read_text(encoding="utf-8")
        missing = [n for n in public_names(namespace) if f'id="{namespace}.{n}"' not in html]
        assert not missing, f"docs/api/{page}.md does not render {namespace}.{missing}"
    for image in (DOCS / "gallery").glob("*.png"):
        assert (site / "gallery" / image.name).exists(), image.name


def resolve(dotted: str):
    """The object a dotted name such as ``dlnsim.analytic.stiffness`` or ``dlnsim._linalg`` names."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("page", sorted(p.relative_to(ROOT).as_posix() for p in [ROOT / "README.md",
                                        *DOCS.rglob("*.md")]))  # fmt: skip
def test_quoted_names_exist(page):
    """Every `dlnsim.x.y` quoted in a page (README, docs/) names an existing module or object."""
    text = (ROOT / page).read_text(encoding="utf-8")
    names = sorted(set(re.findall(r"`(dlnsim(?:\.[A-Za-z_]\w*)+)", text)))
    missing = []
    for name in names:
        try:
            resolve(name)
        except (AttributeError, ModuleNotFoundError):
            missing.append(name)
    assert not missing, f"{page} names objects that do not exist: {missing}"


def test_the_verdict_table_matches_the_registry():
    from dlnsim import experiments

    page = (DOCS / "reproductions.md").read_text(encoding="utf-8")
    table = page.split("<!-- verdicts:start -->")[1].split("<!-- verdicts:end -->")[0]
    rows = re.findall(r"^\| `([\w-]+)` \| (\w+) \|", table, flags=re.M)
    registry = {i: experiments.experiment(i).verdict for i in experiments.EXPERIMENTS}
    assert dict(rows) == registry and len(rows) == len(registry)
