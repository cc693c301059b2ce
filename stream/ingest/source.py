"""Reading the ``interactions`` topic: librdkafka's consumer, positioned by the store.

Why librdkafka (``confluent_kafka.Consumer``) and not aiokafka, which this module used
before: aiokafka decodes every record of a fetched batch inside ``getmany``, and raises
there, before the application sees a record, when it cannot (a header key that is not
UTF-8: ``UnicodeDecodeError``; a zstd, lz4 or snappy batch without the optional Python
codec: ``UnsupportedCodecError``). The same fetch then fails on every retry and after
every restart: one record stalls its partition for good. librdkafka hands over every
record with its offset, key, value and timestamp, decompresses every codec itself, and
only ``Message.headers()`` raises for such header keys, per record, so that one record is
dead-lettered with what could be read (:attr:`SourceRecord.undecodable`) and the
partition goes on. It also reports a stored offset that fell out of retention as an
event (``auto.offset.reset=error``), so the skip is counted, not silent.

Offsets: the consumer never resumes from a group commit. Every assignment is positioned at
the store's offsets (the beginning when the store has none); the group commit is
informational. Rebalance callbacks run inside :meth:`RecordSource.poll`, which the
ingest loop calls between batches only, so a revocation never lands in the middle of a
batch.

Rebalancing is incremental (``cooperative-sticky``, KIP-429): when a worker joins or
leaves, only the partitions that change owner are revoked and assigned; the others keep
their fetch positions and prefetched records and are read on through the rebalance. The
eager protocol (librdkafka's default, ``range,roundrobin``) revoked every partition of
every member on each join and leave, and none read again until all had rejoined: one
member slow to rejoin stopped the whole group (bench/rebalance.py measures both). A group
cannot mix the two: a member of a build before this one (eager) in the group refuses this
one's join (``INCONSISTENT_GROUP_PROTOCOL``); past a session timeout (the build before,
just stopped, may still be listed) that stops the worker with one line.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_LOG_APPEND_TIME,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from stream.errors import ConfigError, GroupLeft, GroupShared
from stream.events import record_clock
from stream.kafka.access import not_authorized
from stream.kafka.clients import confluent_consumer, fetch_available, rebalance_callback
from stream.kafka.failure import kafka_error
from stream.kafka.group import (
    INGEST_CLIENT_ID,
    TRAINING_CLIENT_ID,
    Role,
    group_admin,
    leaving_for,
    lingering_s,
)
from stream.kafka.topics import cleanup_policies, topic_configs, topic_incarnation
from stream.settings import KafkaSettings

if TYPE_CHECKING:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient

log = logging.getLogger("streamgnn.ingest")

WATERMARK_TIMEOUT_S = 2.0
# Only the partitions that move are revoked on a join or leave (see the module docstring).
ASSIGNMENT_STRATEGY = "cooperative-sticky"
# How often both clients ask for the topic's metadata (librdkafka's default: 5 minutes).
# Partitions added to the topic are consumed, and their lag reported, within this.
METADATA_REFRESH_MS = 30_000
PREFETCH_KBYTES = 16_384
CLOSE_TIMEOUT_S = 3.0
POLICY_TIMEOUT_S = 2.0  # the start's look at the topic's cleanup.policy
COMMITTED_TIMEOUT_S = 30.0
INCARNATION_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record of the interactions topic, as far as the client could decode it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int | None  # the Kafka record timestamp; None when the record has none
    received_ms: int  # the worker's clock when it was read
    undecodable: str | None = None  # what the client could not decode: dead-letter it
    appended: bool = False  # timestamp_ms is the broker's (LogAppendTime), not the producer's

    @property
    def clock_ms(self) -> int:
        """The clock this record vouches for (:func:`stream.events.record_clock`)."""
        return record_clock(self.timestamp_ms, self.received_ms, self.appended)


# ``Message.headers()`` through a C-level call. For a header key that is not UTF-8,
# confluent_kafka returns a list holding a (NULL, value) tuple with the decode error still
# set; a call through the C API turns that into SystemError every time, but once the
# adaptive interpreter (3.11+) specialises a plain ``message.headers()`` call site, the
# list can come back as a value, and reading the tuple dereferences NULL: the worker died
# of SIGSEGV in ``_header`` in the hostile-record suite, and a loop calling
# ``message.headers()`` on 200 such records crashed every time (through this: SystemError
# each time, no crash).
_HEADERS = operator.methodcaller("headers")


def read_record(message: Message, received_ms: int) -> SourceRecord:
    """A :class:`SourceRecord` from a librdkafka message; never raises."""
    undecodable = None
    try:
        headers = tuple(_header(item) for item in _HEADERS(message) or ())
    except (SystemError, UnicodeDecodeError, ValueError) as exc:
        # confluent_kafka decodes header keys as UTF-8 and raises (SystemError chained to a
        # UnicodeDecodeError) when one is not: the keys' bytes cannot be read back at all.
        # librdkafka passes keys as C strings, so a key is only read up to a NUL byte.
        cause = exc.__cause__ or exc.__context__ or exc
        headers = ()
        undecodable = f"header keys not decodable: {type(cause).__name__}: {cause}"[:300]
    kind, stamp = message.timestamp()
    has_time = kind != 0 and stamp is not None and stamp != -1  # TIMESTAMP_NOT_AVAILABLE
    return SourceRecord(
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=message.value(),
        headers=headers,
        timestamp_ms=stamp if has_time else None,
        received_ms=received_ms,
        undecodable=undecodable,
        appended=has_time and kind == TIMESTAMP_LOG_APPEND_TIME,
    )


def _header(item: Sequence[object]) -> tuple[str, bytes | None]:
    key, value = item[0], item[1]  # confluent_kafka gives (str, bytes | None) pairs
    return str(key), value if value is None or isinstance(value, bytes) else str(value).encode()


PositionOf = Callable[[int], int | None]
"""Partition -> the store's next offset for it (None when the store has none)."""


class RecordSource:
    """The ingest consumer (a group member) over one topic.

    Args:
        kafka: brokers, topic, group.
        position: the store's next offset of a partition (where an assignment starts).
        on_assigned: called with the partitions owned after each assignment.
        on_revoked: called with partitions given up (before they go).
        on_skipped: called as ``(partition, resume_offset, skipped)`` when the stored offset
            is outside the log: fallen out of retention (the partition resumes at its
            earliest offset) or past its end, the log truncated (at its end; 0 skipped).
        on_incarnation: called with the topic's id (:func:`stream.kafka.topics.topic_incarnation`)
            on each assignment and before a position outside the log is moved; returns
            True when that moved the stored positions (the topic was created again).
        on_assigning: called with each newly assigned partition's committed group offset
            (None when none) before it is positioned: the changelog's cache check and
            restore (:mod:`stream.ingest.changelog`); returns the partitions to hold back
            (a restore a stop cut short), assigned paused and never read. With it, the
            group offsets are the truth and only transactions commit them: no
            informational commits.
        training: whether this consumer is a training worker's; its ``client.id`` says so,
            and each assignment checks that no member it may not share the group with is
            in it (:func:`stream.kafka.group.must_leave`), raising
            :class:`~stream.errors.GroupShared` from :meth:`poll` if one is.

    A Kafka client error in an assignment or revocation (its committed offsets not read,
    say) raises :class:`~stream.errors.RebalanceError` from :meth:`poll`.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        position: PositionOf,
        on_assigned: Callable[[frozenset[int]], None],
        on_revoked: Callable[[frozenset[int]], None],
        on_skipped: Callable[[int, int, int], None],
        on_assigning: Callable[[dict[int, int | None]], Collection[int]] | None = None,
        training: bool = False,
        on_incarnation: Callable[[str], bool] | None = None,
    ) -> None:
        self._kafka = kafka
        self._on_incarnation = on_incarnation
        self._admin: AdminClient | None = None
        self._training = training
        self._on_assigning = on_assigning
        self._topic = kafka.interactions_topic
        self._position = position
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._on_skipped = on_skipped
        self._assigned: frozenset[int] = frozenset()
        self._refused_since: float | None = None  # the group refused our protocol then
        self._paused = False
        self._consumer: Consumer | None = None
        self._offsets: Consumer | None = None  # watermark queries only, from any thread
        self._offsets_lock = threading.Lock()  # a query and the close never overlap

    @property
    def assigned(self) -> frozenset[int]:
        return self._assigned

    def start(self) -> None:
        """Create the clients and subscribe (blocking; partitions arrive in :meth:`poll`)."""
        k = self._kafka
        config: dict[str, str | int | float | bool | object] = {
            "group.id": k.group_id,
            "client.id": TRAINING_CLIENT_ID if self._training else INGEST_CLIENT_ID,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # A position outside the log is reported to us (see _offset_reset), never
            # silently moved: the store's offsets are the truth.
            "auto.offset.reset": "error",
            # Prefetch about two batches, not librdkafka's default 100,000 messages / 64 MB:
            # memory stays bounded, and what the worker has not read waits in Kafka as lag.
            "queued.min.messages": 2 * k.max_batch_records,
            "queued.max.messages.kbytes": PREFETCH_KBYTES,
            "partition.assignment.strategy": ASSIGNMENT_STRATEGY,
            "session.timeout.ms": k.session_timeout_ms,
            "heartbeat.interval.ms": max(100, k.session_timeout_ms // 4),
            "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
            "logger": log,
        }
        if k.instance_id:
            config["group.instance.id"] = k.instance_id
        try:
            self._consumer = confluent_consumer(k, config)
            self._offsets = confluent_consumer(
                k,
                {
                    "group.id": f"{k.group_id}.watermarks",  # never joins: queries only
                    "client.id": "streamgnn-ingest-offsets",
                    "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
                    "logger": log,
                },
            )
            # the topic's id and the group checks of every assignment
            self._admin = group_admin(k)
        except KafkaException as exc:
            raise ConfigError(f"cannot configure the Kafka consumer: {exc}") from exc
        _say_if_compacted(self._admin, self._topic)
        self._consumer.subscribe(
            [self._topic],
            on_assign=self._assign,
            on_revoke=self._revoke,
            on_lost=self._revoke,
        )

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Leave the group (revokes everything) and close both clients.

        librdkafka's close waits for the group coordinator, which may be away: it gets
        ``timeout_s`` in a daemon thread and is then left behind (the store holds every
        position; the group notices the departure at its session timeout).
        """
        closers: dict[str, Callable[[], object]] = {}
        if self._consumer is not None:
            closers["consumer"] = self._consumer.close
            self._consumer = None
        offsets = self._offsets
        if offsets is not None:

            def close_offsets() -> None:
                with self._offsets_lock:  # never under a lag query still in flight
                    self._offsets = None
                    offsets.close()

            closers["offsets client"] = close_offsets
        close_within(closers, timeout_s)

    # -- reading ------------------------------------------------------------------------

    def poll(self, timeout_s: float, max_records: int) -> dict[int, list[SourceRecord]]:
        """Up to ``max_records`` records by partition, in offset order: waits up to
        ``timeout_s`` for the first, then up to ``batch_linger_ms`` for more
        (:func:`stream.kafka.clients.fetch_available`)."""
        linger_s = self._kafka.batch_linger_ms / 1000
        messages = fetch_available(self._require(), max_records, timeout_s, linger_s)
        now_ms = int(time.time() * 1000)
        fetched: dict[int, list[SourceRecord]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                self._client_error(error, message)
                continue
            record = read_record(message, now_ms)
            fetched.setdefault(record.partition, []).append(record)
        return fetched

    def pause(self) -> None:
        """Stop fetching (now, and for partitions assigned while paused)."""
        self._paused = True
        if self._assigned:
            self._require().pause(self._partitions(self._assigned))

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._assigned:
                self._require().resume(self._partitions(self._assigned))

    @property
    def paused(self) -> bool:
        return self._paused

    def rewind(self, fetched: dict[int, list[SourceRecord]]) -> None:
        """Put records fetched before a pause back: they are read again after a resume."""
        consumer = self._require()
        for partition, records in fetched.items():
            if partition in self._assigned and records:
                consumer.seek(TopicPartition(self._topic, partition, records[0].offset))

    def member_id(self) -> str:
        """The consumer's member id in its group now ("" before it first joined)."""
        return self._require().memberid() or ""

    def group_metadata(self, member_id: str | None = None) -> object:
        """The consumer's group metadata, for a transaction's offsets; with ``member_id``,
        only while the consumer is still that member: one whose session expired and that
        joined again has lost the partitions it read a batch of (a revocation waits for
        :meth:`poll`, a loss does not), and may not commit their offsets
        (:class:`GroupLeft`)."""
        if member_id is not None and self.member_id() != member_id:
            raise GroupLeft(
                f"the consumer left group {self._kafka.group_id!r} and joined again while a "
                f"batch read as member {member_id!r} was being committed (its session "
                "expired: a stall longer than the session timeout); the batch's partitions "
                "may be another worker's now, so it is not committed: stopping, the next "
                "start restores them from the changelog"
            )
        return self._require().consumer_group_metadata()

    def commit(self, positions: dict[int, int]) -> None:
        """Informational group commit (lag tools read it); failures are only logged."""
        if not positions or self._on_assigning is not None:
            return
        offsets = [TopicPartition(self._topic, p, o) for p, o in sorted(positions.items())]
        try:
            self._require().commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.info("informational offset commit skipped: %s", exc)

    def offsets(self, partition: int) -> tuple[int, int]:
        """``(earliest, end)`` offsets of a partition, asked of the broker now (any thread).

        A partition added to the topic since this client last read its metadata is unknown
        to it (the consumer may know it first): the metadata is read again, once."""
        with self._offsets_lock:
            if self._offsets is None:
                raise RuntimeError("the record source is closed")
            where = TopicPartition(self._topic, partition)
            try:
                low, high = self._offsets.get_watermark_offsets(
                    where, timeout=WATERMARK_TIMEOUT_S, cached=False
                )
            except KafkaException as exc:
                if kafka_error(exc).code() != KafkaError._UNKNOWN_PARTITION:
                    raise
                self._offsets.list_topics(self._topic, timeout=WATERMARK_TIMEOUT_S)
                low, high = self._offsets.get_watermark_offsets(
                    where, timeout=WATERMARK_TIMEOUT_S, cached=False
                )
        return int(low), int(high)

    # -- rebalancing (runs inside poll) ----------------------------------------------

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with rebalance_callback(f"taking {self._topic}{_numbers(partitions)}"):
            self._take(consumer, partitions)

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with rebalance_callback(f"giving up {self._topic}{_numbers(partitions)}"):
            self._give_up(consumer, partitions)

    def _take(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._refused_since = None
        self._refuse_a_shared_group(consumer)
        if partitions:  # a topic deleted and created again is assigned afresh: asked here
            self._check_incarnation()
        held: Collection[int] = ()
        if self._on_assigning is not None and partitions:
            held = self._on_assigning(self._committed(consumer, partitions))
        if self._on_assigning is None:  # the changelog restores a lost store instead
            for partition, offset in self._lost_positions(consumer, partitions).items():
                self._store_lost(partition, offset)
        placed = []
        for tp in sorted(partitions, key=lambda t: t.partition):
            stored = self._position(tp.partition)
            placed.append(
                TopicPartition(
                    tp.topic, tp.partition, OFFSET_BEGINNING if stored is None else stored
                )
            )
            log.info(
                "partition %s[%d] resumes at %s",
                tp.topic,
                tp.partition,
                "the beginning" if stored is None else stored,
            )
        consumer.incremental_assign(placed)  # held back too: an assignment is answered whole
        self._assigned = self._assigned | {
            tp.partition for tp in placed if tp.partition not in held
        }
        # backpressure holds for partitions arriving meanwhile; held ones are never read
        paused = [tp for tp in placed if self._paused or tp.partition in held]
        if paused:
            consumer.pause(paused)
        # A crash between a store write and its commit left the commit behind.
        self.commit({tp.partition: tp.offset for tp in placed if tp.offset >= 0})
        self._on_assigned(self._assigned)

    def _committed(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> dict[int, int | None]:
        """The group's committed offset of each of ``partitions`` (None: none committed),
        which the store's state is checked against before a record is read; one not read
        (the coordinator away for :data:`COMMITTED_TIMEOUT_S`, a partition's error) raises."""
        asked = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        committed = consumer.committed(asked, timeout=COMMITTED_TIMEOUT_S)
        for tp in committed:
            if tp.error is not None:
                raise KafkaException(tp.error)
        return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in committed}

    def _lost_positions(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> dict[int, int]:
        """The group's committed offsets of the partitions this store holds nothing of:
        state read before into a store that is not this one."""
        blank = [
            TopicPartition(tp.topic, tp.partition)
            for tp in partitions
            if self._position(tp.partition) is None
        ]
        if not blank:
            return {}
        try:
            committed = consumer.committed(blank, timeout=COMMITTED_TIMEOUT_S)
        except KafkaException as exc:  # only a warning is at stake: the assignment goes on
            log.warning("the group's committed offsets not read: %s", exc)
            return {}
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}

    def _store_lost(self, partition: int, committed: int) -> None:
        """The group read ``partition`` up to ``committed`` into a store that is not this
        one (this one lost, deleted or replaced; or, without ``--changelog``, another
        worker's): this store is rebuilt from the log's start, and what retention removed
        before it is missing from the graph, counted as skipped (alerted) once."""
        try:
            low, _ = self.offsets(partition)
        except KafkaException as exc:  # the assignment goes on; the gap goes uncounted
            low = 0
            log.warning("partition %s[%d]: log start not read: %s", self._topic, partition, exc)
        log.warning(
            "partition %s[%d]: this store holds nothing of it, but group %r committed offset "
            "%d: the store that read it was lost or replaced (or, without --changelog, is "
            "another worker's); rebuilding from the log start %d%s",
            self._topic,
            partition,
            self._kafka.group_id,
            committed,
            low,
            f": offsets 0..{low - 1} are out of retention, the graph lacks them" if low else "",
        )
        if low > 0:
            self._on_skipped(partition, low, low)

    def _refuse_a_shared_group(self, consumer: Consumer) -> None:
        """Raise :class:`GroupShared` when this member must leave (two joined at once)."""
        role: Role = "worker" if self._training else "ingest"
        assert self._admin is not None  # made before the subscription
        why = leaving_for(self._kafka, role, consumer.memberid() or "", self._admin)
        if why is not None:
            raise GroupShared(why)

    def _give_up(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = frozenset(tp.partition for tp in partitions)
        self._assigned = self._assigned - gone  # first: the lag task must not see them again
        self._on_revoked(gone)
        if partitions:
            consumer.incremental_unassign(partitions)

    # -- errors -------------------------------------------------------------------------

    def _client_error(self, error: KafkaError, message: Message) -> None:
        if error.code() == KafkaError._AUTO_OFFSET_RESET:
            self._offset_reset(message.partition() or 0, message.offset())
            return
        if error.fatal():
            raise KafkaException(error)
        if error.code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL:
            self._eager_members()
            return
        refused = not_authorized(
            error, self._kafka, f"consume {self._topic!r} in group {self._kafka.group_id!r}"
        )
        if refused is not None:
            raise refused
        # Connection trouble and the like: librdkafka recovers by itself.
        log.warning("Kafka consumer: %s", error.str())

    def _eager_members(self) -> None:
        """The group refused this member's join: members in it rebalance eagerly. One
        that has just stopped (a static member stays until its session times out: the
        build before this one, restarted) is waited out; one still there stops the
        worker."""
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = now
            log.warning(
                "group %r refuses this member: members in it rebalance eagerly; waiting up "
                "to %.0f s for them to leave",
                self._kafka.group_id,
                lingering_s(self._kafka),
            )
        if now - self._refused_since < lingering_s(self._kafka):
            return
        raise ConfigError(
            f"group {self._kafka.group_id!r} has members that rebalance eagerly (a streamgnn "
            f"build before incremental rebalancing, or another application under this group "
            f"id); this worker rebalances incrementally ({ASSIGNMENT_STRATEGY}) and the two "
            f"cannot share a group: stop those members, or give this worker another --group-id"
        )

    def _check_incarnation(self) -> bool:
        """Hand the topic's id to ``on_incarnation``; True when the stored positions moved.
        An id that cannot be read is logged and the check skipped (it runs again on the
        next assignment and the next position outside the log)."""
        if self._on_incarnation is None or self._admin is None:
            return False
        try:
            incarnation = topic_incarnation(self._admin, self._topic, INCARNATION_TIMEOUT_S)
        except (KafkaException, TimeoutError) as exc:
            log.warning("the id of topic %s could not be read: %s", self._topic, exc)
            return False
        return incarnation is not None and self._on_incarnation(incarnation)

    def _offset_reset(self, partition: int, requested: int | None) -> None:
        """The position is outside the log. A topic created again is read from its
        beginning; otherwise resume at its earliest offset, counting the gap, or, past its
        end, at its end; either way the new position is stored, so it holds."""
        if self._check_incarnation():
            self._place(None, 0)
            return
        low, high = self.offsets(partition)
        stored = self._position(partition)
        if stored is not None and low <= stored <= high and stored != requested:
            self._place(None, 0)  # the error is about a position left since: the stored holds
            return
        wanted = requested if requested is not None and requested >= 0 else stored
        if wanted is not None and wanted < low:
            skipped = low - wanted
            log.warning(
                "partition %s[%d]: offsets %d..%d fell out of retention before they were read; "
                "%d records skipped, resuming at %d",
                self._topic,
                partition,
                wanted,
                low - 1,
                skipped,
                low,
            )
            self._on_skipped(partition, low, skipped)
            resume = low
        else:  # beyond the end, in the same topic: the log was truncated
            log.warning(
                "partition %s[%d]: offset %s is beyond the log end %d (the log was truncated); "
                "resuming at the end",
                self._topic,
                partition,
                wanted,
                high,
            )
            self._on_skipped(partition, high, 0)
            resume = high
        self._place(partition, resume)

    def _place(self, partition: int | None, offset: int) -> None:
        """Position every owned partition at its stored offset, ``partition`` at ``offset``.

        By assigning them again, not by a seek: librdkafka refuses to seek a partition
        whose fetch stopped on an offset outside the log (``_STATE``)."""
        consumer = self._require()
        positions = []
        for p in sorted(self._assigned):
            stored = self._position(p)
            at = offset if p == partition else (OFFSET_BEGINNING if stored is None else stored)
            positions.append(TopicPartition(self._topic, p, at))
        consumer.incremental_unassign(self._partitions(self._assigned))
        consumer.incremental_assign(positions)  # re-reading other partitions is harmless:
        if self._paused:  # the ingest loop skips offsets below the store's
            consumer.pause(positions)

    def _partitions(self, partitions: frozenset[int]) -> list[TopicPartition]:
        return [TopicPartition(self._topic, p) for p in sorted(partitions)]

    def _require(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("the record source is not started")
        return self._consumer


def _numbers(partitions: list[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in partitions)


def close_within(closers: dict[str, Callable[[], object]], timeout_s: float) -> None:
    """Run each close in a daemon thread and wait ``timeout_s`` in all; a close still
    blocked then (on a broker that is away) is left behind, never waited out."""
    deadline = time.monotonic() + timeout_s
    threads = []
    for name, close in closers.items():
        thread = threading.Thread(target=close, name=f"close {name}", daemon=True)
        thread.start()
        threads.append((name, thread))
    for name, thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
        if thread.is_alive():
            log.warning("Kafka %s not closed within %.0f s; left behind", name, timeout_s)


def _say_if_compacted(admin: AdminClient, topic: str) -> None:
    """Warn once at start of an interactions topic that compacts: once compacted it keeps
    only the latest event of each key (a user), so a graph rebuilt from it (a store lost
    without ``--changelog``, a new group) lacks the rest, with no gap in the offsets to
    count. A topic this principal may not describe, or not yet there, is not looked at."""
    try:
        configs = topic_configs(admin, topic, POLICY_TIMEOUT_S)
    except (KafkaException, TimeoutError) as exc:
        log.debug("cleanup.policy of %s not read: %r", topic, exc)
        return
    if "compact" in cleanup_policies(configs):
        log.warning(
            "interactions topic %s is cleanup.policy=%s: once compacted it keeps only each "
            "user's latest event, so a graph rebuilt from it (a store lost without "
            "--changelog, a new group) lacks the others; an interactions topic should be "
            "cleanup.policy=delete",
            topic,
            configs["cleanup.policy"].value,
        )
