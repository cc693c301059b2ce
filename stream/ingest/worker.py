"""Kafka -> validated events -> decayed graph store, applying each event exactly once.

One :meth:`IngestWorker.step` per fetched batch: validate every record against the clock
it came with; write the rejected ones (and those the client could not decode) to the
dead-letter topic and wait for the broker's acks; then apply the good events *and* the
partitions' next offsets in one atomic store write. The store's offsets are the truth: on
every partition assignment the consumer starts at them (:mod:`stream.ingest.source`), and
records below them are skipped, so none is applied twice. The group commit is
informational (lag tools read it).

Only the events the store applied (not duplicates, not ignored ones) are handed to the
trainer, each with its partition and the time it was appended (its record's clock), so a
duplicate is trained, observed and published once.

Stopping: the loop ends after the batch in flight. If that batch is stuck waiting for
dead-letter acks (the DLQ refuses or is away), :meth:`IngestWorker.run` cuts the wait
after :data:`STOP_GRACE_S`; the batch, never written to the store, is read again on the
next start.

The lag gauge is refreshed every :data:`LAG_INTERVAL_S` from the broker's end offsets and
the store's positions by its own task, so it stays true while ingestion is paused or
stalled; the gauge of a revoked partition is removed.

With ``[store] changelog`` on (:mod:`stream.ingest.changelog`), each store write is
followed by one Kafka transaction holding its changelog records and the group offsets,
which are then the truth instead of the store's (no informational commit); each assigned
partition's store state is checked against the committed offset, and restored from the
changelog when it differs, before the partition is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from stream.events import EventValidator, Interaction, Rejection
from stream.ingest.changelog import Changelog, ChangelogInterrupted, validate_or_restore
from stream.ingest.changelog_repair import write_missing_state
from stream.ingest.dead_letter import DeadLetterInterrupted, DeadLetterWriter
from stream.ingest.source import RecordSource, SourceRecord
from stream.metrics import PipelineMetrics
from stream.settings import Settings
from stream.state.graph_store import ApplyResult, DecayedGraphStore, PartitionBatch

log = logging.getLogger("streamgnn.ingest")

CLOCK_WARNING_EVERY_S = 60.0  # records ahead of this worker's clock: one WARNING this often

LAG_INTERVAL_S = 1.0
STOP_GRACE_S = 2.0  # how long a stop waits for dead letters in flight before cutting them
PAUSED_POLL_S = 0.02


@dataclass(frozen=True)
class AppliedBatch:
    """Events one store write applied, for the trainer (append times feed freshness)."""

    interactions: Sequence[Interaction]
    append_times_ms: Sequence[int]
    positions: dict[int, int]  # partition -> next offset now in the store
    partitions: Sequence[int] = ()  # each interaction's source partition (empty: all 0)


@dataclass
class IngestTotals:
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    offsets_skipped: int = 0


OnApplied = Callable[[AppliedBatch], None]
# A partition's state restored from the graph changelog: its live records by store key.
OnRestored = Callable[[dict[bytes, bytes]], None]


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
        on_restored: with the changelog on, called with the records of each partition
            restored on assignment (the trainer folds them into its graph, which it built
            from the store before the partitions were checked).
    """

    def __init__(
        self,
        settings: Settings,
        store: DecayedGraphStore,
        metrics: PipelineMetrics | None = None,
        on_applied: OnApplied | None = None,
        has_room: Callable[[], bool] | None = None,
        on_restored: OnRestored | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics if metrics is not None else PipelineMetrics()
        self._on_applied = on_applied
        self._has_room = has_room
        self._on_restored = on_restored
        self._validator = EventValidator(settings.events)
        self._topic = settings.kafka.interactions_topic
        self._changelog = (
            Changelog(settings.kafka, self._metrics) if settings.store.changelog else None
        )
        self._source = RecordSource(
            settings.kafka,
            self._stored_offset,
            on_assigned=self._assigned,
            on_revoked=self._revoked,
            on_skipped=self._skipped,
            on_assigning=self._assigning if self._changelog is not None else None,
            training=on_applied is not None,  # a trainer learns what it applies
            on_incarnation=self._incarnation,
        )
        self._dlq = DeadLetterWriter(settings.kafka, self._metrics)
        self._interrupted = threading.Event()
        self._gauges = threading.Lock()  # lag gauges: the lag task vs revocations
        self._clock_warned: float | None = None  # monotonic time of the last such WARNING
        self.totals = IngestTotals()

    @property
    def topic(self) -> str:
        return self._topic

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        """Check the DLQ (the worker refuses to start without one) and join the group;
        False when ``stop`` was set while the changelog's start waited on the brokers or
        the group (nothing joined; the next start takes it up again)."""
        await asyncio.to_thread(self._dlq.start)
        if self._changelog is not None:  # before joining: fences and aborts a predecessor's
            relay = asyncio.create_task(self._relay(stop, 0.0)) if stop else None
            try:
                await asyncio.to_thread(self._changelog.start, self._interrupted)
                await asyncio.to_thread(
                    write_missing_state, self._changelog, self._store, self._interrupted
                )
            except ChangelogInterrupted as exc:
                log.warning("stopped while starting the changelog: %s", exc)
                return False
            finally:
                if relay is not None:
                    relay.cancel()
        await asyncio.to_thread(self._source.start)
        return True

    async def stop(self) -> None:
        """Leave the group (the store already holds every position) and close the clients,
        side by side: each close is bounded, and with the brokers away they all wait."""
        closes = [self._source.close, self._dlq.close]
        if self._changelog is not None:
            closes.append(self._changelog.close)
        await asyncio.gather(*(asyncio.to_thread(close) for close in closes))

    async def run(self, stop: asyncio.Event) -> None:
        """Step until ``stop`` is set; the lag gauge is kept true meanwhile."""
        relay = asyncio.create_task(self._relay(stop, STOP_GRACE_S))
        # Its own daemon thread, not the loop's executor: a lag query hanging on a broker
        # that is away must never hold up the exit.
        done = threading.Event()
        lag = threading.Thread(target=self._watch_lag, args=(done,), daemon=True)
        lag.start()
        try:
            while not stop.is_set():
                await self.step()
        finally:
            done.set()
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)

    async def step(self, timeout_ms: int = 500) -> int:
        """Fetch, dead-letter, apply one batch; returns the records it applied a position for."""
        timeout_s = timeout_ms / 1000
        if self._has_room is not None:
            if self._has_room():
                self._source.resume()
            else:
                self._source.pause()  # keep polling: the group membership stays alive
                timeout_s = PAUSED_POLL_S
        fetched = await asyncio.to_thread(
            self._source.poll, timeout_s, self._settings.kafka.max_batch_records
        )
        if not fetched:
            return 0
        if self._source.paused:  # fetched before the pause took hold: read them later
            self._source.rewind(fetched)
            return 0
        return await self._process(fetched)

    async def _process(self, fetched: dict[int, list[SourceRecord]]) -> int:
        member = self._source.member_id()  # the member these records were read as
        batches: list[PartitionBatch] = []
        letters: list[tuple[SourceRecord, Rejection]] = []
        consumed = 0
        for partition, records in sorted(fetched.items()):
            if partition not in self._source.assigned:
                continue  # revoked while fetched: its new owner reads it from the store offset
            start = self._stored_offset(partition) or 0
            good: list[Interaction] = []
            for record in records:
                if record.offset < start:
                    continue  # already in the store
                consumed += 1
                parsed = self._parse(record)
                if isinstance(parsed, Rejection):
                    letters.append((record, parsed))
                else:
                    good.append(parsed)
            if records[-1].offset >= start:
                batches.append(PartitionBatch(partition, records[-1].offset + 1, good))
        self._check_clock(fetched)
        try:  # acked before the source offsets count as done
            await asyncio.to_thread(self._dlq.write, letters, self._interrupted)
        except DeadLetterInterrupted:
            log.info("stopping: the batch in flight is left for the next start")
            return 0
        self._count_rejections(letters)
        if not batches:
            return consumed
        result = await asyncio.to_thread(self._store.apply, self._topic, batches)
        positions = {b.partition: b.next_offset for b in batches}
        if self._changelog is not None:
            try:
                await asyncio.to_thread(
                    self._changelog.commit,
                    result.changes,
                    positions,
                    functools.partial(self._source.group_metadata, member),
                    self._interrupted,
                )
            except ChangelogInterrupted as exc:
                log.warning(
                    "stopping: the batch in flight is left for the next start, which restores "
                    "its partitions from the changelog (transaction not committed: %s)",
                    exc,
                )
                return 0
        self._count(consumed, result)
        self._source.commit(positions)
        if self._on_applied is not None:
            self._on_applied(_applied(batches, result))
        return consumed

    def _parse(self, record: SourceRecord) -> Interaction | Rejection:
        if record.undecodable is not None:
            return Rejection("undecodable", record.undecodable)
        return self._validator.parse(record.key, record.value, record.clock_ms)

    # -- counts and gauges --------------------------------------------------------------

    def _check_clock(self, fetched: dict[int, list[SourceRecord]]) -> None:
        """Count, and say at most once a minute, records whose producer-set Kafka timestamp
        runs past the skew ahead of this worker's clock. Either clock may be wrong: such a
        record cannot vouch for a time later than the worker's own
        (:func:`stream.events.record_clock`), so while this worker's clock is slow every
        event is dead-lettered as ts_in_future (a LogAppendTime topic's records vouch for
        the broker's clock instead)."""
        skew = self._settings.events.max_future_skew_ms
        ahead = [
            r.timestamp_ms - r.received_ms
            for records in fetched.values()
            for r in records
            if r.timestamp_ms is not None
            and not r.appended
            and r.timestamp_ms - r.received_ms > skew
        ]
        if not ahead:
            return
        self._metrics.records_ahead_of_clock.inc(len(ahead))
        now = time.monotonic()
        if self._clock_warned is not None and now - self._clock_warned < CLOCK_WARNING_EVERY_S:
            return
        self._clock_warned = now
        log.warning(
            "%d of %d records read carry a Kafka timestamp up to %.0f s ahead of this "
            "worker's clock, past --max-future-skew-ms (%d ms): this worker's clock is slow "
            "(check its time sync) or their producers' clocks are fast; their events are "
            "checked against this worker's clock, so those ahead of it are dead-lettered "
            "as ts_in_future (streamgnn_records_ahead_of_clock_total)",
            len(ahead),
            sum(map(len, fetched.values())),
            max(ahead) / 1000,
            skew,
        )

    def _count_rejections(self, letters: Sequence[tuple[SourceRecord, Rejection]]) -> None:
        for _, rejection in letters:
            reason = rejection.reason
            self.totals.rejected[reason] = self.totals.rejected.get(reason, 0) + 1
            self._metrics.events_rejected.labels(reason=reason).inc()

    def _count(self, consumed: int, result: ApplyResult) -> None:
        m, t = self._metrics, self.totals
        t.consumed += consumed
        t.applied += result.applied
        t.duplicates += result.duplicates
        m.events_consumed.inc(consumed)
        m.events_applied.inc(result.applied)
        m.events_duplicate.inc(result.duplicates)
        for reason, count in result.ignored.items():
            t.ignored[reason] = t.ignored.get(reason, 0) + count
            m.events_ignored.labels(reason=reason).inc(count)
        m.edges_pruned.inc(result.pruned)
        self._export_graph_size()

    def _export_graph_size(self) -> None:
        """The graph's size gauges: after each batch, and after each assignment (a restart
        with nothing to read, or a restore, must not leave them at 0). Edges are those of
        the partitions assigned now, so the sum over workers is the graph's; the store
        also keeps the partitions a worker gave away (a cache for their return). Not on a
        revocation: the group's eager protocol assigns right after one, and a worker that
        stops keeps telling its last graph."""
        self._metrics.graph_nodes.set(self._store.counts().nodes)
        self._metrics.graph_edges.set(self._store.partition_edges(self._source.assigned))

    def _watch_lag(self, done: threading.Event) -> None:
        while not done.is_set():
            try:
                self._refresh_lag()
            except Exception as exc:  # the broker away: the gauge keeps its last truth
                log.info("consumer lag not refreshed: %s", exc)
            done.wait(LAG_INTERVAL_S)

    def _refresh_lag(self) -> None:
        """Lag = partition end - store position, for every partition owned now."""
        for partition in sorted(self._source.assigned):
            low, high = self._source.offsets(partition)
            stored = self._stored_offset(partition)
            lag = max(high - (low if stored is None else max(stored, low)), 0)
            with self._gauges:
                if partition in self._source.assigned:
                    self._metrics.consumer_lag.labels(partition=str(partition)).set(lag)

    async def _relay(self, stop: asyncio.Event, grace_s: float) -> None:
        """Set ``_interrupted`` ``grace_s`` after ``stop``. While running: letters being acked
        normally arrive within milliseconds, and the batch then lands whole (a batch cut
        after some of its letters were acked would write those again on restart); only a
        stalled wait is cut. While starting nothing is in flight: no grace."""
        await stop.wait()
        await asyncio.sleep(grace_s)
        self._interrupted.set()

    # -- callbacks of the record source (inside poll) ------------------------------------

    def _stored_offset(self, partition: int) -> int | None:
        position = self._store.position(self._topic, partition)
        return None if position is None else position[0]

    def _assigned(self, partitions: frozenset[int]) -> None:
        self._metrics.assigned_partitions.set(len(partitions))
        self._export_graph_size()
        for partition in partitions:  # a restore counter per owned partition, 0 until one
            self._metrics.restore_records.labels(partition=str(partition))

    def _revoked(self, partitions: Collection[int]) -> None:
        with self._gauges:
            for partition in partitions:
                with contextlib.suppress(KeyError):  # never measured
                    self._metrics.consumer_lag.remove(str(partition))
        self._metrics.assigned_partitions.set(len(self._source.assigned))

    def _assigning(self, committed: dict[int, int | None]) -> frozenset[int]:
        """Check or restore the assigned partitions' state; returns those to hold back
        (none, or all of them when a stop cut their restore short: the store unchanged,
        the next start restores them)."""
        if self._changelog is None:
            return frozenset()
        try:
            restored = validate_or_restore(
                self._store, self._changelog, self._topic, committed, self._interrupted
            )
        except ChangelogInterrupted as exc:
            log.warning("stopping: a restore was cut short, its partitions are not read (%s)", exc)
            return frozenset(committed)
        for records in restored.values():
            if self._on_restored is not None:
                self._on_restored(records)
        # Their state is in the changelog (the start's repair saw to it): say of which topic.
        self._changelog.stamp([p for p, offset in sorted(committed.items()) if offset is not None])
        return frozenset()

    def _incarnation(self, incarnation: str) -> bool:
        """Record the topic's id with the store's offsets (and the changelog's next
        transactions); True when a topic created again under its name moved them all back
        to its beginning. With the changelog, a partition whose offsets were not committed
        since is moved there again on its next assignment (its changelog names the old id)."""
        if self._changelog is not None:
            self._changelog.follow_source(incarnation)
        moved = self._store.begin_incarnation(self._topic, incarnation)
        if moved:
            log.warning(
                "topic %s was deleted and created again (its id is now %s): partitions %s "
                "are read from its beginning, not from the offsets the store held of the old one",
                self._topic,
                incarnation,
                ",".join(map(str, moved)),
            )
        return bool(moved)

    def _skipped(self, partition: int, first_kept: int, skipped: int) -> None:
        """Record the jump in the store, so the gap is counted once, whatever restarts."""
        result = self._store.apply(self._topic, [PartitionBatch(partition, first_kept, ())])
        if self._changelog is not None:
            self._changelog.commit(
                result.changes, {partition: first_kept}, self._source.group_metadata
            )
        self.totals.offsets_skipped += skipped
        self._metrics.offsets_skipped.inc(skipped)


def _applied(batches: Sequence[PartitionBatch], result: ApplyResult) -> AppliedBatch:
    """What the store applied, in order, with each event's partition and append time."""
    interactions: list[Interaction] = []
    partitions: list[int] = []
    for batch, kept in zip(batches, result.kept, strict=True):
        interactions.extend(batch.interactions[i] for i in kept)
        partitions.extend([batch.partition] * len(kept))
    append_times = [e.ts if e.clock_ms is None else e.clock_ms for e in interactions]
    positions = {b.partition: b.next_offset for b in batches}
    return AppliedBatch(interactions, append_times, positions, partitions)
