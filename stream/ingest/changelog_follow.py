"""Following the graph changelog to its end and beyond: the reader of ``streamgnn train``.

One librdkafka consumer, assigned every partition of the changelog topic (it never joins
a group and never commits: the trainer's checkpoint holds its offsets), reading
``read_committed``, so an ingest worker's open or aborted transaction is never seen. It
starts at the beginning: the compacted topic is the whole graph, and a restarted trainer
folds what its checkpoint trained through again without training on it (its mirror is
not in the checkpoint). The end of each partition is known from librdkafka's
end-of-partition event; the gap to it is the ``streamgnn_changelog_lag`` gauge. It holds
the group's trainer lease (:class:`stream.kafka.group.GroupLease`): one follower a group.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from stream.errors import ChangelogError
from stream.kafka.access import not_authorized
from stream.kafka.clients import confluent_admin, confluent_consumer, fetch_available
from stream.kafka.group import GroupLease
from stream.kafka.topics import topic_incarnation
from stream.metrics import PipelineMetrics
from stream.settings import KafkaSettings, changelog_topic

log = logging.getLogger("streamgnn.changelog")

TOPIC_WAIT_LOG_S = 30.0  # how often the wait for the topic says so
TOPIC_ID_TIMEOUT_S = 5.0
# How often the follower looks for partitions added to the changelog (an ingest worker
# grows it when partitions are added to the interactions topic).
PARTITIONS_LOOK_S = 30.0


@dataclass(frozen=True)
class ChangelogRecord:
    """One record of the changelog: its source partition, offset, key and value."""

    partition: int
    offset: int
    key: bytes
    value: bytes | None  # None: a tombstone


class ChangelogFollower:
    """Reads every partition of one group's graph changelog, read_committed."""

    def __init__(self, kafka: KafkaSettings, metrics: PipelineMetrics) -> None:
        self.topic = changelog_topic(kafka.interactions_topic, kafka.group_id)
        self._kafka = kafka
        self._metrics = metrics
        self._consumer = confluent_consumer(
            kafka,
            {
                "group.id": f"{kafka.group_id}.trainer",  # assigns, never joins or commits
                "client.id": "streamgnn-changelog-trainer",
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                # Live following: librdkafka's 500 ms default held read_committed fetches
                # for most of it after a batch's commit (split freshness p50 1.08 s; 0.28 s).
                "fetch.wait.max.ms": 20,
                "enable.auto.commit": False,
                # A position past the log's end (the topic deleted and created again):
                # the new log from its beginning, not its end (librdkafka's default)
                "auto.offset.reset": "earliest",
                "logger": log,
            },
        )
        self._admin = confluent_admin(kafka, {"logger": log})
        self.topic_id: str | None = None  # Kafka's id of the topic followed
        self._begun_again: set[int] = set()
        self.partitions: list[int] = []
        self.positions: dict[int, int] = {}  # partition -> next offset after what was read
        self._ended: set[int] = set()  # partitions whose end was reached at least once
        self._partitions_seen = 0.0  # time.monotonic() of the last look at the count
        self._lease = GroupLease(kafka, f"{kafka.group_id}.trainer")  # one trainer a group

    def start(self, stop: threading.Event, timeout_s: float = 15.0) -> bool:
        """Wait until the changelog topic exists (the ingest workers create it), then assign
        every partition from the beginning; False when stopped first."""
        waited = time.monotonic()
        while True:
            topics = self._consumer.list_topics(self.topic, timeout_s).topics
            found = topics.get(self.topic)
            if found is not None and found.error is None and found.partitions:
                break
            if found is not None:  # one this principal may not see is never found
                refused = not_authorized(found.error, self._kafka, f"read {self.topic!r}")
                if refused is not None:
                    raise refused
            if stop.wait(0.5):
                return False
            if time.monotonic() - waited > TOPIC_WAIT_LOG_S:
                log.info("waiting for changelog %s (is `streamgnn ingest` running?)", self.topic)
                waited = time.monotonic()
        if not self._lease.acquire(self.topic, stop.is_set):
            return False
        self.partitions = sorted(found.partitions)
        self.topic_id = topic_incarnation(self._admin, self.topic, timeout_s)
        self._consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self.partitions]
        )
        self._partitions_seen = time.monotonic()
        log.info("following changelog %s (%d partitions)", self.topic, len(self.partitions))
        return True

    def _follow_added_partitions(self) -> None:
        """Every :data:`PARTITIONS_LOOK_S`, assign from their beginning the partitions
        added to the changelog since (a broker that does not answer: the next look)."""
        if time.monotonic() - self._partitions_seen < PARTITIONS_LOOK_S:
            return
        self._partitions_seen = time.monotonic()
        try:
            topics = self._consumer.list_topics(self.topic, TOPIC_ID_TIMEOUT_S).topics
        except KafkaException as exc:
            log.debug("changelog %s: partitions not looked at: %s", self.topic, exc)
            return
        found = topics.get(self.topic)
        if found is None or found.error is not None:
            return
        added = sorted(set(found.partitions) - set(self.partitions))
        if not added:
            return
        self._consumer.incremental_assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in added]
        )
        self.partitions = sorted([*self.partitions, *added])
        log.info("following changelog %s: partitions %s added", self.topic, added)

    @property
    def caught_up(self) -> bool:
        """Whether every partition's end has been reached at least once."""
        return bool(self.partitions) and self._ended.issuperset(self.partitions)

    def poll(self, max_records: int, timeout_s: float) -> list[ChangelogRecord]:
        """Up to ``max_records`` records, in log order per partition (waits up to
        ``timeout_s`` for the first only: :func:`stream.kafka.clients.fetch_available`)."""
        self._lease.poll()  # raises GroupShared if a trainer that joined with this one stays
        self._follow_added_partitions()
        records: list[ChangelogRecord] = []
        for message in fetch_available(self._consumer, max_records, timeout_s):
            error = message.error()
            partition = int(message.partition() or 0)  # set on records and partition events
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                self._ended.add(partition)
                continue
            if error is not None:
                refused = not_authorized(error, self._kafka, f"read {self.topic!r}", groups=False)
                if refused is not None:
                    raise refused
                if error.fatal():
                    raise ChangelogError(f"following {self.topic}: {error.str()}")
                log.warning("changelog follow: %s", error.str())
                continue
            key = message.key()
            if key is None:
                raise ChangelogError(f"{self.topic}[{partition}] holds a keyless record")
            offset = int(message.offset() or 0)
            if offset < self.positions.get(partition, 0):  # a new log: the topic made again
                self._begun_again.add(partition)
            records.append(ChangelogRecord(partition, offset, key, message.value()))
            self.positions[partition] = offset + 1
        return records

    def take_begun_again(self) -> list[int]:
        """The partitions whose log began again (offsets back to the beginning) since the
        last call, the topic's id read again: the topic was deleted and created again."""
        begun, self._begun_again = sorted(self._begun_again), set()
        if begun:
            try:
                self.topic_id = topic_incarnation(self._admin, self.topic, TOPIC_ID_TIMEOUT_S)
            except (KafkaException, TimeoutError) as exc:
                log.warning("changelog %s: topic id not read again: %s", self.topic, exc)
        return begun

    def export_lag(self) -> None:
        """Set the lag gauge: records between what was read and each partition's end (the
        last stable offset, as of the last fetch)."""
        tps = [TopicPartition(self.topic, p) for p in self.partitions]
        lag = 0
        for tp in self._consumer.position(tps):
            _, end = self._consumer.get_watermark_offsets(tp, cached=True)
            if end >= 0:
                lag += max(int(end) - max(int(tp.offset), 0), 0)
        self._metrics.changelog_lag.set(lag)

    def close(self) -> None:
        self._lease.close()
        self._consumer.close()
