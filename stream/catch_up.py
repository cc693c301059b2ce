"""Events the store holds but the trainer never trained on, read back from their topic.

After a restart the store may be ahead of the newest checkpoint: a worker killed between
a checkpoint and the next, or one that ran with ``--train false``. Those events are in the
graph (the trainer's mirror is rebuilt from the store) but were never trained on.
:class:`UntrainedEvents` reads each partition's span ``[trained offset, stored offset)``
back from the interactions topic with a consumer of its own (no group: it commits
nothing and never disturbs the ingest consumer), validates each record with the ingest
rules, and yields the events in chunks, each with the offsets it reaches, so training on
them can be checkpointed (and interrupted) chunk by chunk.

Three rules follow the store's: a rejected record is skipped (ingest dead-lettered it; the
time rules are checked against the record's clock, as ingest does), an event of weight 0
is skipped (the store ignored it), and a repeated ``event_id`` within the partition's
dedup window (by :attr:`~stream.events.Interaction.stream_ts`) counts once. Only repeats
inside the span are seen; a repeat of an event trained before the span trains again.

What cannot be read back is reported in :attr:`UntrainedEvents.missed` instead of
raising: offsets that retention deleted, a client error on some record, or a broker that
gives nothing for ``stall_s``. The caller then trains on what the store itself shows
(:meth:`stream.learn.trainer.IncrementalTrainer.stored_edges`), so a restart never
crash-loops on its catch-up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kafka import TopicPartition

from stream.events import EventValidator, Interaction, Rejection, record_clock
from stream.kafka.clients import kafka_consumer
from stream.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaConsumer

log = logging.getLogger("streamgnn.catch_up")

Span = tuple[int, int]  # [first offset, end offset) of one partition


@dataclass
class CaughtUp:
    """Events read back (in offset order per partition) and the offsets they reach."""

    interactions: list[Interaction] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset


class UntrainedEvents:
    """Reads ``spans`` (partition -> [start, end)) of the interactions topic back.

    Args:
        settings: Kafka address, topic and the event rules.
        spans: what to read; empty spans are ignored.
        stall_s: give up on what is left after this long without a record.
    """

    def __init__(self, settings: Settings, spans: Mapping[int, Span], stall_s: float = 30.0):
        self._settings = settings
        self._spans = {p: span for p, span in spans.items() if span[1] > span[0]}
        self._stall_s = stall_s
        self._validator = EventValidator(settings.events)
        self._betas = {name: b.beta for name, b in settings.events.behaviours.items()}
        self._window_ms = settings.events.dedup_window_ms
        self.missed: dict[int, Span] = {}
        self.complete = False  # every span was read or reported missed

    def chunks(self, max_events: int, stop: threading.Event) -> Iterator[CaughtUp]:
        """The events in chunks of at most ``max_events``; ends early once ``stop`` is set."""
        if not self._spans:
            self.complete = True
            return
        next_offset = {p: start for p, (start, _) in self._spans.items()}
        try:
            consumer = self._open(next_offset)
        except Exception as exc:  # no broker, an unknown topic
            log.warning("catch-up cannot read the topic (%s); caught up from the store", exc)
        else:
            try:
                yield from self._read(consumer, next_offset, max_events, stop)
            finally:
                consumer.close()
        left = {p: (o, self._spans[p][1]) for p, o in next_offset.items() if o < self._spans[p][1]}
        if left and stop.is_set():
            return  # stopped: the rest is read at the next start
        for p, (start, end) in left.items():  # given up on: caught up from the store instead
            self.missed[p] = (min(start, self.missed.get(p, (start, end))[0]), end)
        self.complete = True

    def _open(self, next_offset: dict[int, int]) -> KafkaConsumer:
        """A group-less consumer at each span's start (or the log's, after retention)."""
        topic = self._settings.kafka.interactions_topic
        consumer = kafka_consumer(
            self._settings.kafka,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="streamgnn-catch-up",
        )
        try:
            partitions = [TopicPartition(topic, p) for p in sorted(next_offset)]
            consumer.assign(partitions)
            first = consumer.beginning_offsets(partitions)
            for tp in partitions:
                start, end = self._spans[tp.partition]
                if first[tp] > start:  # deleted by retention
                    self.missed[tp.partition] = (start, min(first[tp], end))
                    start = next_offset[tp.partition] = min(first[tp], end)
                consumer.seek(tp, start)
        except BaseException:
            consumer.close()
            raise
        return consumer

    def _read(
        self,
        consumer: KafkaConsumer,
        next_offset: dict[int, int],
        max_events: int,
        stop: threading.Event,
    ) -> Iterator[CaughtUp]:
        seen: dict[int, _Dedup] = {p: _Dedup(self._window_ms) for p in next_offset}
        chunk = CaughtUp()
        last_record = time.monotonic()  # the last fetch that read a record
        while not stop.is_set():
            left = [p for p, offset in next_offset.items() if offset < self._spans[p][1]]
            if not left:
                break
            if time.monotonic() - last_record > self._stall_s:
                log.warning("catch-up read stalled for %.0f s at %s", self._stall_s, next_offset)
                break
            try:
                got = self._poll(consumer, next_offset, seen, chunk, max_events)
            except Exception as exc:  # e.g. a record the client cannot decode
                log.warning("catch-up read failed at %s: %s", next_offset, exc)
                break
            if got:
                last_record = time.monotonic()
            if len(chunk.interactions) >= max_events:
                yield chunk
                chunk = CaughtUp()
        if chunk.positions:
            yield chunk

    def _poll(
        self,
        consumer: KafkaConsumer,
        next_offset: dict[int, int],
        seen: Mapping[int, _Dedup],
        chunk: CaughtUp,
        max_events: int,
    ) -> int:
        """One fetch into ``chunk``; returns the records it read from the spans."""
        got = 0
        room = max(1, max_events - len(chunk.interactions))
        for tp, records in consumer.poll(timeout_ms=500, max_records=room).items():
            end = self._spans[tp.partition][1]
            now_ms = int(time.time() * 1000)
            for record in records:
                if record.offset >= end:
                    break
                got += 1
                next_offset[tp.partition] = chunk.positions[tp.partition] = record.offset + 1
                appended = record.timestamp_type == 1  # LogAppendTime: the broker's clock
                clock = record_clock(record.timestamp, now_ms, appended)
                event = self._validator.parse(record.key, record.value, clock)
                if isinstance(event, Rejection) or not seen[tp.partition].first(event):
                    continue
                if self._betas[event.event_type] * event.weight != 0.0:
                    chunk.interactions.append(event)
        for tp in consumer.assignment() - consumer.paused():
            end = self._spans[tp.partition][1]
            if consumer.position(tp) >= end:  # past the span (or only markers were left)
                next_offset[tp.partition] = chunk.positions[tp.partition] = end
                consumer.pause(tp)
        return got


class _Dedup:
    """The store's rule within one partition: an ``event_id`` seen within ``window_ms``
    of event time before the partition's newest event is a repeat."""

    def __init__(self, window_ms: int) -> None:
        self._window_ms = window_ms
        self._seen: dict[str, int] = {}
        self._watermark = -1
        self._prune_at = 1024

    def first(self, event: Interaction) -> bool:
        self._watermark = max(self._watermark, event.stream_ts)
        if event.event_id is None:
            return True
        seen_ts = self._seen.get(event.event_id)
        if seen_ts is not None and seen_ts >= self._watermark - self._window_ms:
            return False
        self._seen[event.event_id] = event.ts
        if len(self._seen) >= self._prune_at:  # forget ids past the window: memory stays bounded
            oldest = self._watermark - self._window_ms
            self._seen = {eid: ts for eid, ts in self._seen.items() if ts >= oldest}
            self._prune_at = max(1024, 2 * len(self._seen))
        return True
