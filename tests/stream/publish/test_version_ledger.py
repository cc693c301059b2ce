"""The version ledger (durable floor under published model versions) and the drift mask."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.errors import PublishError
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


def test_two_ledgers_on_one_file_never_take_it_down(tmp_path: Path) -> None:
    """Two workers started with one ledger path: neither lowers the other's reservation (a
    restart of the first would take a floor below what it had published)."""
    path = tmp_path / "versions.json"
    first, second = VersionLedger(path), VersionLedger(path)
    first.reserve(10)
    second.reserve(5)
    assert VersionLedger(path).reserved == 10
    assert second.reserved == 10  # the file covers its versions up to 10 already
    second.reserve(12)
    first.reserve(11)
    assert VersionLedger(path).reserved == 12
    assert [p.name for p in tmp_path.iterdir()] == ["versions.json"]


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
