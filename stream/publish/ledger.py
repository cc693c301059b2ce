"""The durable floor under published model versions.

A key's ``model_version`` must never go backwards on the embedding topics, also when the
publisher crashes and the trainer restarts from a checkpoint older than what it already
published. The rule that guarantees it:

1. Before the first record of model version ``v`` is sent, ``v`` is *reserved*: written
   to the ledger file (temp file, fsync, rename, fsync of the folder). So the ledger is
   always >= every version that can be on the topics.
2. A restarted publisher starts with ``min_version = reserved + 1``: whatever the crash
   left half-published at ``reserved`` stays below everything published from now on.
3. The file never goes down: a reservation reads it again under a lock on its folder and
   keeps the higher version (two processes given one ledger path cannot lower each
   other's floor).

One fsync per new model version (not per record) is the whole cost. If the ledger file
is gone (a fresh disk), :func:`scan_max_model_version` reads both topics once from the
beginning and takes the highest version found: compaction keeps each key's newest
record, so the maximum survives compaction.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from kafka import TopicPartition
from kafka.errors import TopicAuthorizationFailedError

from stream.errors import PublishError, VersionLedgerUnwritable
from stream.kafka.access import refusal
from stream.kafka.clients import kafka_consumer
from stream.settings import KafkaSettings

_FORMAT = "streamgnn.version-ledger"


class VersionLedger:
    """The highest model version that may have been published, kept in one small file.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "versions.json"
    >>> ledger = VersionLedger(path)
    >>> ledger.reserved is None
    True
    >>> ledger.reserve(3); ledger.reserve(2)
    >>> VersionLedger(path).reserved
    3
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._reserved = self._read()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def reserved(self) -> int | None:
        """The reserved version, ``None`` when the file does not exist yet."""
        return self._reserved

    def reserve(self, version: int) -> None:
        """Durably raise the reserved version to ``version`` (a no-op if not higher).

        The file never goes down, also when another process reserves in it (two workers
        started with one ledger path: each would otherwise overwrite the other's higher
        version, and a restart would take a floor below what it had published): it is read
        again under a lock on its folder, and the higher version stays.
        """
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"version must be an integer >= 0, got {version!r}")
        if self._reserved is not None and version <= self._reserved:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self._path.parent):
            on_disk = self._read()
            if on_disk is None or version > on_disk:
                self._write(version)
            self._reserved = version if on_disk is None else max(version, on_disk)

    def _read(self) -> int | None:
        try:
            text = self._path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PublishError(f"cannot read the version ledger {self._path}: {exc}") from exc
        try:
            data = json.loads(text)
            version = data["reserved_model_version"]
            ok = data.get("format") == _FORMAT and isinstance(version, int) and version >= 0
        except (ValueError, TypeError, KeyError, AttributeError):
            ok = False
        if not ok:
            raise PublishError(
                f"{self._path} is not a streamgnn version ledger; remove it to recover the "
                "version floor from the embedding topics"
            )
        return int(version)

    def _write(self, version: int) -> None:
        try:
            self._replace(version)
        except OSError as exc:
            raise VersionLedgerUnwritable(
                f"cannot write the version ledger {self._path}: {exc.strerror or exc}; no "
                "vector is published before its version is reserved there. Free space on "
                "its volume (a ledger that is missing is recovered from the embedding topics)"
            ) from None

    def _replace(self, version: int) -> None:
        """The file replaced whole: temp file, fsync, rename, fsync of the folder."""
        folder = self._path.parent
        payload = json.dumps({"format": _FORMAT, "reserved_model_version": version}) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=folder)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power loss
        finally:
            os.close(dir_fd)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (the ledger file itself is replaced by a rename)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def scan_max_model_version(
    kafka: KafkaSettings, topics: Sequence[str], timeout_s: float = 120.0
) -> int | None:
    """Highest ``model_version`` on ``topics`` (read once, beginning to end); ``None`` if none.

    Records that do not parse are ignored here: they cannot constrain the floor.
    """
    consumer = kafka_consumer(
        kafka,
        group_id=None,
        enable_auto_commit=False,
        client_id="streamgnn-version-scan",
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return None
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends: dict[TopicPartition, int] = consumer.end_offsets(partitions)
        best: int | None = None
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise PublishError(
                    f"could not read {list(topics)} to their end within {timeout_s}s"
                )
            try:
                fetched = consumer.poll(timeout_ms=500)
            except TopicAuthorizationFailedError as exc:  # never retried: the command ends
                what = "read the embedding topics (their highest model version)"
                raise refusal(kafka, what, str(exc)) from None
            for records in fetched.values():
                for record in records:
                    version = _model_version(record.value)
                    if version is not None and (best is None or version > best):
                        best = version
        return best
    finally:
        consumer.close()


def _model_version(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        version = json.loads(value).get("model_version")
    except (ValueError, AttributeError):
        return None
    return version if isinstance(version, int) and not isinstance(version, bool) else None
