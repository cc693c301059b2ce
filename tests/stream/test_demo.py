"""``streamgnn demo`` end to end: its own broker, worker and producer, a live summary in
which vectors get published and a user's top-k appears, and a clean stop."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_the_pipeline_and_stops_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "demo", "--duration-s", "20", "--rate", "300"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    lines = [line for line in done.stdout.splitlines() if line.startswith("t=")]
    assert lines, output
    applied = [int(m.group(1)) for m in (re.search(r"applied\s+(\d+)", x) for x in lines) if m]
    assert applied == sorted(applied) and applied[-1] > 0, output
    assert re.search(r"freshness p50\s+[\d.]+s p99\s+[\d.]+s", done.stdout), output
    assert re.search(r"top-5: \S+", done.stdout), output
    assert "stopped (worker exit status 0)" in done.stdout
