"""The test harness: scenario drivers, fault injectors and topic readers.

Shared by the integration tests and the benchmarks (``bench/`` imports it as
``tests.harness``); never shipped in the package. Child processes that run a harness
module (``python -m tests.harness.crashing_worker``) get the repository root on their
``PYTHONPATH`` through :func:`importable_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def importable_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the repository root first on ``PYTHONPATH`` (so ``tests.harness`` imports).

    >>> importable_env({"PYTHONPATH": "/x"})["PYTHONPATH"] == f"{REPO_ROOT}{os.pathsep}/x"
    True
    """
    rest = env.get("PYTHONPATH")
    path = str(REPO_ROOT) if not rest else f"{REPO_ROOT}{os.pathsep}{rest}"
    return {**env, "PYTHONPATH": path}
