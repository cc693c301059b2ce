"""Kafka -> validated events -> decayed graph store, applying each event exactly once.

One :meth:`IngestWorker.step` per fetched batch: validate every record; write the rejected
ones to the dead-letter topic and wait for the broker's acks; then apply the good events
*and* the partitions' next offsets in one atomic store write. The store's offsets are the
truth: on every partition assignment the consumer seeks to them (the beginning when the
store has none), so a consumer-group commit that ran ahead of the store can never skip an
event, and records below the store's offset are skipped, so none is applied twice. The
group commit is informational (lag tools read it).

Why aiokafka and not a Faust agent: a Faust agent acknowledges each event and Faust
commits offsets it tracks itself, which contradicts "offsets live in the store's
WriteBatch". aiokafka (Faust's own transport) gives the same asyncio consumer group with
a rebalance listener we control.

The revoke callback takes the same lock as a batch, so a rebalance waits for the batch in
flight; static membership (``group_instance_id``) lets a restarted worker take its
partitions back without waiting out the session timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord, TopicPartition

from stream.events import EventValidator, Interaction, Rejection
from stream.metrics import PipelineMetrics
from stream.settings import Settings
from stream.state.graph_store import DecayedGraphStore, PartitionBatch

log = logging.getLogger("streamgnn.ingest")

# The local broker accepts records up to 8 MiB; a dead letter carries one plus headers.
DLQ_MAX_REQUEST_BYTES = 8 * 1024 * 1024 + 65_536
DLQ_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class AppliedBatch:
    """Events one store write applied, for the trainer (append times feed freshness)."""

    interactions: Sequence[Interaction]
    append_times_ms: Sequence[int]
    positions: dict[int, int]  # partition -> next offset now in the store


@dataclass
class IngestTotals:
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


OnApplied = Callable[[AppliedBatch], None]


class IngestWorker:
    """Consumes the ``interactions`` topic as a group member and applies it to one store.

    Args:
        settings: the process settings (Kafka, events).
        store: the graph store this worker owns.
        metrics: where counts go; a private registry when omitted.
        on_applied: called after each store write with what it applied; must not block
            (the trainer's queue).
        has_room: asked before each fetch; while it returns False the assigned partitions
            are paused (backpressure from the trainer's bounded backlog).
    """

    def __init__(
        self,
        settings: Settings,
        store: DecayedGraphStore,
        metrics: PipelineMetrics | None = None,
        on_applied: OnApplied | None = None,
        has_room: Callable[[], bool] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics if metrics is not None else PipelineMetrics()
        self._on_applied = on_applied
        self._has_room = has_room
        self._validator = EventValidator(settings.events)
        self._lock = asyncio.Lock()
        kafka = settings.kafka
        self._topic = kafka.interactions_topic
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.group_id,
            group_instance_id=kafka.instance_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=max(100, kafka.session_timeout_ms // 4),
            max_poll_records=kafka.max_batch_records,
        )
        self._dlq = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            max_request_size=DLQ_MAX_REQUEST_BYTES,
        )
        self.totals = IngestTotals()

    @property
    def topic(self) -> str:
        return self._topic

    async def start(self) -> None:
        await self._dlq.start()
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=_StoreOffsetListener(self))

    async def stop(self) -> None:
        """Leave after the batch in flight; the store already holds every position."""
        async with self._lock:
            pass  # not held while stopping: leaving the group calls the revoke callback
        await self._consumer.stop()
        await self._dlq.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Step until ``stop`` is set."""
        while not stop.is_set():
            await self.step()

    async def step(self, timeout_ms: int = 500) -> int:
        """Fetch, dead-letter, apply one batch; returns the records it consumed."""
        if self._has_room is not None:
            if not self._has_room():
                self._consumer.pause(*self._consumer.assignment())
                await asyncio.sleep(0.02)
                return 0
            if self._consumer.paused():
                self._consumer.resume(*self._consumer.paused())
        fetched = await self._consumer.getmany(
            timeout_ms=timeout_ms, max_records=self._settings.kafka.max_batch_records
        )
        if not fetched:
            return 0
        async with self._lock:
            return await self._process(fetched)

    async def _process(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> int:
        batches: list[PartitionBatch] = []
        applied_times: list[int] = []
        letters: list[tuple[ConsumerRecord, Rejection]] = []
        consumed = 0
        for tp, records in fetched.items():
            if tp not in self._consumer.assignment():
                continue  # revoked while fetched: its new owner reads it from the store offset
            position = self._store.position(tp.topic, tp.partition)
            start = position[0] if position else 0
            good: list[Interaction] = []
            for record in records:
                if record.offset < start:
                    continue  # already in the store
                consumed += 1
                parsed = self._validator.parse(record.key, record.value)
                if isinstance(parsed, Rejection):
                    letters.append((record, parsed))
                else:
                    good.append(parsed)
                    applied_times.append(record.timestamp)
            if records and records[-1].offset >= start:
                batches.append(PartitionBatch(tp.partition, records[-1].offset + 1, good))
        await self._dead_letter(letters)  # acked before the source offsets count as done
        if not batches:
            return consumed
        result = await asyncio.to_thread(self._store.apply, self._topic, batches)
        self._count(consumed, result.applied, result.duplicates, result.pruned)
        await self._commit_informational(batches)
        if self._on_applied is not None:
            interactions = [i for b in batches for i in b.interactions]
            positions = {b.partition: b.next_offset for b in batches}
            self._on_applied(AppliedBatch(interactions, applied_times, positions))
        return consumed

    def _count(self, consumed: int, applied: int, duplicates: int, pruned: int) -> None:
        m, t = self._metrics, self.totals
        t.consumed += consumed
        t.applied += applied
        t.duplicates += duplicates
        m.events_consumed.inc(consumed)
        m.events_applied.inc(applied)
        m.events_duplicate.inc(duplicates)
        m.edges_pruned.inc(pruned)
        counts = self._store.counts()
        m.graph_nodes.set(counts.nodes)
        m.graph_edges.set(counts.edges)
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            position = self._store.position(tp.topic, tp.partition)
            if end is not None:
                lag = end - (position[0] if position else 0)
                m.consumer_lag.labels(partition=str(tp.partition)).set(max(lag, 0))

    async def _dead_letter(self, letters: list[tuple[ConsumerRecord, Rejection]]) -> None:
        """Send every rejected record and wait until each is acked, retrying outages."""
        if not letters:
            return
        sends = [await self._send_letter(record, rejection) for record, rejection in letters]
        for (record, rejection), sent in zip(letters, sends, strict=True):
            while True:
                try:
                    await sent
                    break
                except KafkaError as exc:  # broker away: retry, never drop, never crash
                    log.warning("dead letter not acked (%s); retrying", exc)
                    await asyncio.sleep(DLQ_RETRY_SECONDS)
                    sent = await self._send_letter(record, rejection)
            self.totals.rejected[rejection.reason] = (
                self.totals.rejected.get(rejection.reason, 0) + 1
            )
            self._metrics.events_rejected.labels(reason=rejection.reason).inc()

    async def _send_letter(
        self, record: ConsumerRecord, rejection: Rejection
    ) -> asyncio.Future[object]:
        headers = [
            *record.headers,
            ("dlq.reason", rejection.reason.encode()),
            ("dlq.detail", rejection.detail.encode("utf-8", "replace")),
            ("dlq.source.topic", record.topic.encode()),
            ("dlq.source.partition", str(record.partition).encode()),
            ("dlq.source.offset", str(record.offset).encode()),
        ]
        topic = self._settings.kafka.dlq_topic
        while True:
            try:
                sent: asyncio.Future[object] = await self._dlq.send(
                    topic, key=record.key, value=record.value, headers=headers
                )
                return sent
            except MessageSizeTooLargeError:
                # Larger than any request we may send: keep the evidence, not the bytes.
                size = len(record.value or b"")
                headers.append(("dlq.value.dropped.bytes", str(size).encode()))
                dropped: asyncio.Future[object] = await self._dlq.send(
                    topic, key=record.key, value=None, headers=headers
                )
                return dropped
            except KafkaError as exc:
                log.warning("dead letter not queued (%s); retrying", exc)
                await asyncio.sleep(DLQ_RETRY_SECONDS)

    async def _commit_informational(self, batches: list[PartitionBatch]) -> None:
        offsets = {TopicPartition(self._topic, b.partition): b.next_offset for b in batches}
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance in progress; the store has the truth
            log.info("informational offset commit skipped: %s", exc)

    def _count_assignment(self, revoked: Collection[TopicPartition] = ()) -> None:
        owned = set(self._consumer.assignment()) - set(revoked)
        self._metrics.assigned_partitions.set(len(owned))

    async def _seek_to_store(self, assigned: set[TopicPartition]) -> None:
        stored: dict[TopicPartition, int] = {}
        for tp in sorted(assigned):
            position = self._store.position(tp.topic, tp.partition)
            if position is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, position[0])
                stored[tp] = position[0]
            log.info("partition %s resumes at %s", tp, position[0] if position else "beginning")
        if stored:  # a crash between a store write and its commit left the commit behind
            try:
                await self._consumer.commit(stored)
            except KafkaError as exc:
                log.info("informational offset commit on assignment skipped: %s", exc)


class _StoreOffsetListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: IngestWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._worker._lock:  # wait for the batch in flight to land in the store
            pass
        self._worker._count_assignment(revoked=revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker._seek_to_store(assigned)
        self._worker._count_assignment()
