"""Kafka -> validated events -> decayed graph store, applying each event exactly once.

The loop per fetched batch: validate every record; write rejected records to the
dead-letter topic and wait for the broker's acks; then apply the good events *and* the
partitions' next offsets in one atomic store write. On start the consumer seeks every
assigned partition to the store's offset (the beginning when the store has none), so a
consumer commit that ran ahead of the store can never skip an event; records below the
store's offset are skipped, so none is applied twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from stream.events import EventValidator, Interaction, Rejection
from stream.settings import Settings
from stream.state.graph_store import DecayedGraphStore, PartitionBatch


@dataclass
class IngestTotals:
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class IngestLoop:
    """Consumes ``interactions`` partitions and applies them to one store."""

    def __init__(self, settings: Settings, store: DecayedGraphStore) -> None:
        self._settings = settings
        self._store = store
        self._validator = EventValidator(settings.events)
        kafka = settings.kafka
        self._consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._dlq = KafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            max_request_size=8 * 1024 * 1024 + 65_536,
        )
        partitions = self._consumer.partitions_for_topic(kafka.interactions_topic) or set()
        self._tps = [TopicPartition(kafka.interactions_topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._tps)
        for tp in self._tps:
            pos = store.position(tp.topic, tp.partition)
            if pos is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, pos[0])
        self.totals = IngestTotals()

    def poll_once(self, timeout_ms: int = 500) -> int:
        """Fetch, dead-letter, apply one batch; returns the records consumed."""
        fetched = self._consumer.poll(
            timeout_ms=timeout_ms, max_records=self._settings.kafka.max_batch_records
        )
        batches = []
        pending: list[Any] = []
        consumed = 0
        for tp, records in fetched.items():
            pos = self._store.position(tp.topic, tp.partition)
            start = pos[0] if pos else 0
            good: list[Interaction] = []
            for record in records:
                if record.offset < start:
                    continue  # already in the store
                consumed += 1
                parsed = self._validator.parse(record.key, record.value)
                if isinstance(parsed, Rejection):
                    pending.append(self._dead_letter(record, parsed))
                else:
                    good.append(parsed)
            if records:
                batches.append(PartitionBatch(tp.partition, records[-1].offset + 1, good))
        for future in pending:
            future.get(timeout=60)  # acked before the source offset counts as done
        if batches:
            result = self._store.apply(self._settings.kafka.interactions_topic, batches)
            self.totals.applied += result.applied
            self.totals.duplicates += result.duplicates
            self._consumer.commit()  # informational only: the store's offsets are the truth
        self.totals.consumed += consumed
        return consumed

    def _dead_letter(self, record: object, rejection: Rejection) -> Any:
        reasons = self.totals.rejected
        reasons[rejection.reason] = reasons.get(rejection.reason, 0) + 1
        headers = [
            *(getattr(record, "headers", None) or []),
            ("dlq.reason", rejection.reason.encode()),
            ("dlq.detail", rejection.detail.encode("utf-8", "replace")),
            ("dlq.source.topic", str(getattr(record, "topic", "")).encode()),
            ("dlq.source.partition", str(getattr(record, "partition", "")).encode()),
            ("dlq.source.offset", str(getattr(record, "offset", "")).encode()),
        ]
        send: Callable[..., Any] = self._dlq.send
        return send(
            self._settings.kafka.dlq_topic,
            key=getattr(record, "key", None),
            value=getattr(record, "value", None),
            headers=headers,
        )

    def close(self) -> None:
        self._dlq.flush()
        self._dlq.close()
        self._consumer.close()
