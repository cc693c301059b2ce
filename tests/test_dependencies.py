"""Runtime dependencies are what the product imports; optional paths use extras.

Every third-party package imported at module level under ``stream/`` or ``models/`` must
be a runtime dependency in pyproject.toml; a package of an extra (matplotlib for
``eval --plot``, tqdm for progress bars) may only be imported inside a function, and
every runtime dependency must be imported somewhere (none declared for nothing).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# import name -> distribution name, where they differ
DISTRIBUTION = {
    "kafka": "kafka-python",
    "confluent_kafka": "confluent-kafka",
    "prometheus_client": "prometheus-client",
    "torch_geometric": "torch-geometric",
}
OURS = {"stream", "models"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(module-level, function-level) top-level packages imported by the file."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    lazy: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = {node.module.partition(".")[0]}
        else:
            continue
        (top if node.col_offset == 0 else lazy).update(names)
    third_party = set(sys.stdlib_module_names) | OURS
    return top - third_party, lazy - third_party


def _used() -> tuple[set[str], set[str]]:
    top: set[str] = set()
    lazy: set[str] = set()
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            t, z = _imports(path)
            top |= t
            lazy |= z
    as_dist = lambda names: {DISTRIBUTION.get(n, n).replace("_", "-").lower() for n in names}  # noqa: E731
    return as_dist(top), as_dist(lazy)


def test_module_level_imports_are_runtime_dependencies() -> None:
    runtime = {_name(r) for r in PROJECT["dependencies"]}
    top, _ = _used()
    assert top <= runtime, f"imported at module level but not a dependency: {top - runtime}"
    assert runtime <= top, f"declared but never imported at module level: {runtime - top}"


def test_optional_packages_are_extras_imported_lazily() -> None:
    extras = PROJECT["optional-dependencies"]
    runtime = {_name(r) for r in PROJECT["dependencies"]}
    top, lazy = _used()
    assert {"matplotlib", "tqdm", "psutil", "faust-streaming"}.isdisjoint(runtime)
    assert {"matplotlib", "tqdm"} <= lazy - top  # only inside the functions that need them
    for package in lazy - runtime:
        assert any(package in {_name(r) for r in reqs} for reqs in extras.values()), package


def test_dev_installs_every_extra_the_tests_need() -> None:
    dev = " ".join(PROJECT["optional-dependencies"]["dev"])
    for extra in ("plot", "progress", "bench"):
        assert re.search(rf"streamgnn\[[^\]]*\b{extra}\b", dev), extra
