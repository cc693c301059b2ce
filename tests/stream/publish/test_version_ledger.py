"""The version ledger (durable floor under published model versions) and the drift mask."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from stream.errors import PublishError, VersionLedgerUnwritable
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


def test_a_ledger_its_disk_refuses_stops_publishing_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By hand, a ledger on a full tmpfs ended the worker with two chained tracebacks; now
    one error naming the file, the cause and the way out, no temp file left, the floor
    where it was."""
    path = tmp_path / "versions.json"
    ledger = VersionLedger(path)
    ledger.reserve(3)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(VersionLedgerUnwritable) as raised:
        ledger.reserve(4)
    assert str(raised.value).startswith(f"cannot write the version ledger {path}: No space left")
    assert isinstance(raised.value, PublishError)  # the publish fails with it, unsent
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["versions.json"]
    assert ledger.reserved == VersionLedger(path).reserved == 3
