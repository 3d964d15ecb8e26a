"""Loading the scripts in examples/ as modules, for the smoke tests."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_example(name: str):
    """The module ``examples/<name>.py``, executed."""
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
