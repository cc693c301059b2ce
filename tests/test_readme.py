"""The README and the pages under docs/ name only paths that exist (STYLE.md: docs no test
runs rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATH = re.compile(r"`((?:stream|models|bench|deploy|schema|tests|docs|\.ci)/[^`\s,]*)`")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_path_a_page_names_exists(page: Path) -> None:
    named = set(PATH.findall(page.read_text()))
    assert named, f"{page.name} names no repository paths: did the pattern break?"
    missing = sorted(p for p in named if "<" not in p and not (ROOT / p).exists())  # <x>: a pattern
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_the_readme_names_every_page_under_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    pages = sorted(p.relative_to(ROOT).as_posix() for p in PAGES[1:])
    assert pages, "docs/ holds no pages"
    assert not [p for p in pages if f"`{p}`" not in readme]


def _layout_rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_the_layout_table_names_every_module() -> None:
    rows = _layout_rows()
    assert rows, "the README has no layout table"
    modules = [
        p.relative_to(ROOT)
        for folder in ("stream", "models", "tests/harness")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if p.name != "__init__.py"
    ]

    def named(module: Path) -> bool:
        if any(f"`{module.as_posix()}`" in row for row in rows):
            return True
        folder = f"| `{module.parent.as_posix()}/`"
        return any(row.startswith(folder) and f"`{module.name}`" in row for row in rows)

    assert not [m.as_posix() for m in modules if not named(m)]
