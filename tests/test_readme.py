"""The README names only paths that exist (STYLE.md: docs no test runs rot)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATH = re.compile(r"`((?:stream|models|bench|deploy|schema|tests|\.ci)/[^`\s,]*)`")


def test_every_path_the_readme_names_exists() -> None:
    named = set(PATH.findall((ROOT / "README.md").read_text()))
    assert named, "the README names no repository paths: did the pattern break?"
    missing = sorted(p for p in named if "<" not in p and not (ROOT / p).exists())  # <x>: a pattern
    assert not missing, f"README names paths that do not exist: {missing}"
