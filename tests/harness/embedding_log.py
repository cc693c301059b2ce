"""What a crashed-and-restarted worker left on the embedding topics, read from the log.

The fault scenarios check the publishing half through the topics themselves, the way a
downstream ranker sees them: every record from the beginning (before compaction could
hide anything), in log order per partition. Two invariants come out of it: a key's
``model_version`` never goes down anywhere in its log (kills included), and each
restarted worker published again before the next kill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from stream.publish.schema import decode_record
from tests.harness.embedding_topics import read_topic


@dataclass(frozen=True)
class PublishedVector:
    """One embedding record as it sits in the log."""

    topic: str
    key: bytes
    model_version: int
    publish_time_ms: int


class PublishWatch:
    """Asks the broker whether anything was published on ``topics`` since a given time.

    Record timestamps are the publisher's ``publish_time_ms``, so the broker's
    time index answers without reading a record.
    """

    def __init__(self, bootstrap_servers: str, topics: Sequence[str]) -> None:
        self._topics = list(topics)
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None)

    def published_since(self, since_ms: int) -> bool:
        partitions = _partitions(self._consumer, self._topics)
        if not partitions:
            return False  # the worker has not created the topics yet
        found = self._consumer.offsets_for_times({tp: since_ms for tp in partitions})
        return any(offset is not None for offset in found.values())

    def close(self) -> None:
        self._consumer.close()


def read_published(
    bootstrap_servers: str, topics: Sequence[str], timeout_s: float = 60.0
) -> list[PublishedVector]:
    """Every record of ``topics`` from the beginning to their end as of now, in log order
    per partition."""
    return [
        PublishedVector(topic, record.key, decoded.model_version, decoded.publish_time_ms)
        for topic in topics
        for record in read_topic(bootstrap_servers, topic, timeout_s)
        for decoded in [decode_record(record.value)]
    ]


def version_regressions(log: Sequence[PublishedVector]) -> list[str]:
    """Keys whose ``model_version`` goes down somewhere in their log, described.

    >>> v = lambda version: PublishedVector("t", b"u1", version, 0)
    >>> version_regressions([v(1), v(1), v(2)]), version_regressions([v(2), v(1)])
    ([], ["t/b'u1': 2 then 1"])
    """
    newest: dict[tuple[str, bytes], int] = {}
    found = []
    for vector in log:
        key = (vector.topic, vector.key)
        before = newest.get(key, vector.model_version)
        if vector.model_version < before:
            found.append(f"{vector.topic}/{vector.key!r}: {before} then {vector.model_version}")
        newest[key] = max(before, vector.model_version)
    return found


def published_between(
    log: Sequence[PublishedVector], windows_ms: Sequence[tuple[int, int]]
) -> list[int]:
    """How many records carry a publish time in each ``[start, end)`` window."""
    return [
        sum(start <= vector.publish_time_ms < end for vector in log) for start, end in windows_ms
    ]


def _partitions(consumer: KafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    return [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
