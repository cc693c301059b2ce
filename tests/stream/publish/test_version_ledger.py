"""The version ledger (durable floor under published model versions) and the drift mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stream.errors import PublishError
from stream.publish.drift import changed_rows
from stream.publish.ledger import VersionLedger


def test_reserved_version_only_rises_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "versions.json"
    ledger = VersionLedger(path)
    assert ledger.reserved is None
    assert not path.exists()
    highest = 0
    for version in [0, 3, 2, 3, 9, 1]:
        ledger.reserve(version)
        highest = max(highest, version)
        assert ledger.reserved == highest
        assert VersionLedger(path).reserved == highest
    assert [p.name for p in path.parent.iterdir()] == ["versions.json"]  # no temp files left


@pytest.mark.parametrize("content", ["", "{", '{"format": "x", "reserved_model_version": 1}', "[]"])
def test_a_foreign_or_torn_ledger_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "versions.json"
    path.write_text(content)
    with pytest.raises(PublishError, match="not a streamgnn version ledger"):
        VersionLedger(path)


@pytest.mark.parametrize("version", [-1, 1.5, True, "3"])
def test_reserve_refuses_non_versions(tmp_path: Path, version: object) -> None:
    with pytest.raises(ValueError):
        VersionLedger(tmp_path / "v.json").reserve(version)  # type: ignore[arg-type]


def test_changed_rows_marks_moved_and_never_published_rows() -> None:
    generator = torch.Generator().manual_seed(0)
    current = torch.nn.functional.normalize(torch.randn(50, 8, generator=generator), dim=1)
    published = current.clone()
    moved = torch.arange(50) % 5 == 0
    published[moved] += 0.2  # L2 move of 0.2 * sqrt(8)
    fresh = torch.arange(50) % 7 == 3
    published[fresh] = float("nan")
    mask = changed_rows(current, published, threshold=0.1)
    assert torch.equal(mask, moved | fresh)
    assert torch.equal(changed_rows(current, published, threshold=1.0), fresh)


def test_changed_rows_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        changed_rows(torch.zeros(3, 2), torch.zeros(2, 2), 0.1)
