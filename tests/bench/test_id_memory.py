"""bench/id_memory.py: a short run's series and the fit it reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.id_memory import cpu_tensor_mb, kb_per_id, main


def test_every_event_brings_one_new_id_and_the_fit_covers_the_last_two_thirds(
    tmp_path: Path,
) -> None:
    out = tmp_path / "id_memory.json"
    assert main(["--calls", "6", "--batch", "300", "--items", "50", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    calls = doc["calls"]
    assert [c["call"] for c in calls] == list(range(6))
    # each event's user is new, and the 50 items all arrive in the first call
    assert [c["ids_live"] for c in calls] == [300 * (k + 1) + 50 for k in range(6)]
    assert all(c["cpu_tensor_mb"] > 0 and c["rss_mb"] > c["cpu_tensor_mb"] for c in calls)
    assert doc["fitted_calls"] == [2, 5]
    low, high = doc["edges_over_fitted_calls"]  # a call's edges are dead two calls later
    assert 300 <= low <= high <= 2 * 300
    assert doc["cpu_tensor_kb_per_id"] == kb_per_id(calls[2:], "cpu_tensor_mb")
    caps = doc["default_caps"]["max_users"] + doc["default_caps"]["max_items"]
    assert doc["bound_gb_at_default_caps"] == round(doc["rss_kb_per_id"] * caps / 2**20, 1)


def test_the_slope_is_kb_per_id_and_tensors_are_counted_once_per_storage() -> None:
    rows = [{"ids_live": 1000.0 * k, "rss_mb": 500 + 2.0 * k} for k in range(5)]
    assert kb_per_id(rows, "rss_mb") == pytest.approx(2.048, abs=0.005)  # 2 MB / 1,000 ids
    before = cpu_tensor_mb()
    table = torch.zeros(2**18)  # 1 MiB
    views = [table[: 2**17], table.view(2, -1)]  # share its storage: no more bytes
    assert cpu_tensor_mb() - before == pytest.approx(1.0, abs=0.05)
    del table, views
