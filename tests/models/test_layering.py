"""Layers point one way: ``models/`` imports torch and PyG only, never the application.

Every module under ``models/`` is parsed (imports inside functions included) and each
imported top-level package must be the standard library, torch, torch_geometric, numpy or
``models`` itself.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"
ALLOWED = {"torch", "torch_geometric", "numpy", "models"} | set(sys.stdlib_module_names)
MODULES = sorted(MODELS.rglob("*.py"))


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in the file (relative ones stay inside)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found


def test_the_models_package_is_found() -> None:
    assert len(MODULES) > 5 and MODELS / "base.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_models_module_imports_torch_and_pyg_only(path: Path) -> None:
    outside = imported_packages(path) - ALLOWED
    assert not outside, f"{path.name} imports {sorted(outside)}"


def test_the_parser_sees_a_stream_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from stream.errors import ConfigError\n    import stream\n")
    assert "stream" in imported_packages(bad)


def test_importing_every_model_loads_no_stream_module() -> None:
    modules = [f"models.{p.stem}" for p in MODULES if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'stream' or m.startswith('stream.'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=MODELS.parent)
