"""The graph store's changelog: each partition's state in a compacted topic, written in
Kafka transactions with the consumed offsets (``--changelog``, off by default).

What is logged: per source partition ``p`` of ``interactions``, on partition ``p`` of
``<interactions>-<group>-graph-changelog`` (same partition count,
``cleanup.policy=compact``; one per consumer group: each group is an application),
one record per store key that a write changed, under the store's own key bytes
(:mod:`stream.state.keys`): edge records ``F`` (value ``w_ref, t_ref, partition``), the
duplicate filter ``D`` (event id -> event time) and the position ``O`` (next offset,
watermark: stream time of the partition). A pruned edge or an expired filter entry is a
tombstone, so the topic stays bounded on an endless stream. Everything else is derived
and rebuilt on restore, never logged: reverse adjacency ``R``, node degrees ``N`` (shared
by partitions for items), the expiry indexes ``X`` and ``Y`` and the node and edge counts.
The pruned-edges counter is not restored (it counts this store's prunes).

Atomicity: one transaction per ingest batch holds the batch's changelog records and the
group offsets (``send_offsets_to_transaction``), so committed group offsets + changelog
are the truth and the local RocksDB store is a cache. The store is written first, then
the transaction committed; the trainer hears of a batch only after the commit.

Cache rule, on every assignment of ``p`` (:func:`validate_or_restore`): the store's
position for ``p`` equals the group's committed offset -> the cache is valid (applying
is deterministic given the offsets, so equal positions mean equal state). Otherwise -- a
crash between the store write and the commit left the store ahead, another worker moved
the partition on, the store was wiped, the group has no offset -- ``p``'s state is dropped
from the store and restored from the changelog, read_committed, up to its end; the
restored position must then equal the committed offset. Without one, the changelog's
record of the source topic's id (``S``, written with each partition's first transaction of
a run) decides: the same topic (its offsets expired) resumes at the restored position, a
topic created again under the name (Kafka dropped its offsets) at 0, the graph kept.

A changelog that lacks the state of a partition the group committed offsets for (deleted,
or a group that ran without it before) is written again from the store, or the start
refused (:mod:`stream.ingest.changelog_repair`). One deleted under a running worker fails
its transaction: a commit to retry, or one that failed, reads the topic's id again, so a
retry never lands a batch on a topic created again without the rest of the state
(:class:`ChangelogTopicLost`).

Transactions: ``transactional.id`` is ``<group>.<instance id>.ingest``, stable across
restarts (so ``--instance-id`` is required): ``init_transactions`` on start aborts what a
killed predecessor left open (read_committed readers never wait for its timeout) and
fences it. A fenced worker (another process took its id) raises :class:`ChangelogFenced`
and the worker exits 0 with one error line: restarting it would fence the other in turn.
Any other transaction failure aborts the transaction and raises :class:`ChangelogError`
(the worker exits non-zero; the next start restores what the store wrote ahead). A stop
asked while a transaction waits on brokers that do not answer (``interrupted``) is looked
at every :data:`STOP_CHECK_S`: the transaction is left to its own thread and
:class:`ChangelogInterrupted` raised; the next start's ``init_transactions`` aborts it and
restores what the store wrote ahead, as after a crash. So a stop never waits out a
transaction's timeouts (calling librdkafka in 1 s slices instead was tried: with the
brokers away one stop still waited 58 s).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewPartitions, NewTopic  # type: ignore[attr-defined]

from stream.errors import ChangelogError, ChangelogFenced, ChangelogTopicLost, StreamGNNError
from stream.ingest.source import CLOSE_TIMEOUT_S, close_within
from stream.kafka.access import not_authorized
from stream.kafka.clients import confluent_admin, confluent_consumer, confluent_producer
from stream.kafka.failure import kafka_error
from stream.kafka.topics import (
    NO_TOPIC,
    cleanup_policies,
    topic_configs,
    topic_incarnation,
    topic_incarnations,
)
from stream.metrics import PipelineMetrics
from stream.settings import KafkaSettings, changelog_topic
from stream.state import keys as k
from stream.state.graph_store import DecayedGraphStore
from stream.state.partition_state import drop_partition, restore_partition

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, Producer
    from confluent_kafka.admin import AdminClient

log = logging.getLogger("streamgnn.changelog")

ADMIN_TIMEOUT_S = 15.0
TXN_TIMEOUT_S = 30.0
SLOW_FLUSH_S = 5.0  # a batch's records unacked this long: is the topic still there?
STOP_CHECK_S = 0.5  # how often a transaction's wait looks for a stop
RESTORE_STALL_S = 60.0  # no record and no end of partition for this long: give up
_FENCING = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
# The offsets' group generation moved on under the transaction (see _through_rebalances).
# Not UNKNOWN_MEMBER_ID: a member the group no longer knows may have lost the partitions.
_REBALANCED = {KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS}
REBALANCE_WAIT_S = 60.0  # a rebalance that has not settled by then is not one
REBALANCE_RETRY_S = 0.1

Change = tuple[int, bytes, bytes | None]


class ChangelogInterrupted(Exception):
    """A stop was asked while a transaction waited on the brokers; it is left open (the
    next start aborts it and restores the partitions the store wrote ahead)."""


class _Rebalanced(Exception):
    """A transaction aborted because the group's generation moved on under it."""


class Changelog:
    """The transactional writer and the restore reader of one worker's changelog."""

    def __init__(self, kafka: KafkaSettings, metrics: PipelineMetrics) -> None:
        if not kafka.instance_id:
            raise ChangelogError("the changelog needs --instance-id (its transactional.id)")
        self.kafka = kafka
        self._metrics = metrics
        self.topic = changelog_topic(kafka.interactions_topic, kafka.group_id)
        self.transactional_id = f"{kafka.group_id}.{kafka.instance_id}.ingest"
        self._producer: Producer | None = None
        self._reader: Consumer | None = None  # made by the first read (see reading)
        self._admin: AdminClient | None = None
        self._incarnation: str | None = None  # the topic's Kafka id when started
        self.source_id: str | None = None  # the interactions topic's Kafka id
        self._stamped: set[int] = set()  # partitions whose source id this run wrote
        self._partitions = 0  # the changelog's partition count, as last made sure of

    def start(self, interrupted: threading.Event | None = None) -> None:
        """Create (or check) the topic, then take the transactional id (blocking; with
        ``interrupted`` as :meth:`commit`). Then
        :func:`stream.ingest.changelog_repair.write_missing_state` checks what it holds."""
        admin = self._admin = confluent_admin(self.kafka, {"logger": log})
        self._partitions = _ensure_topic(admin, self.topic, self.kafka)
        source = self.kafka.interactions_topic
        ids = topic_incarnations(admin, [self.topic, source], ADMIN_TIMEOUT_S)  # one request
        self._incarnation = ids[self.topic]
        self.follow_source(ids[source])
        self._producer = confluent_producer(
            self.kafka,
            {
                "client.id": "streamgnn-changelog",
                "transactional.id": self.transactional_id,
                "linger.ms": 5,
                "logger": log,
            },
        )
        try:
            self._abandonable(lambda: self._require().init_transactions(TXN_TIMEOUT_S), interrupted)
        except KafkaException as exc:
            raise _failure(exc, self.kafka, self.transactional_id, "could not take") from exc
        log.info("changelog %s, transactional.id %s", self.topic, self.transactional_id)

    def close(self) -> None:
        """Drop the producer (nothing is pending between transactions; GC closes it) and
        close the reader, within :data:`CLOSE_TIMEOUT_S` (a broker away is not waited out)."""
        self._producer = None
        reader, self._reader = self._reader, None
        if reader is not None:
            close_within({"changelog reader": reader.close}, CLOSE_TIMEOUT_S)

    def cover(self, partitions: Collection[int]) -> None:
        """Make sure the changelog has a partition for each of ``partitions``: ones added to
        the interactions topic under the running worker have none yet (the source grew).
        The changelog grows to the source's count, and the producer and the reader are told
        (a transaction's record for a partition librdkafka does not know fails at once)."""
        if not partitions or max(partitions) < self._partitions:
            return
        self._partitions = _ensure_topic(self._require_admin(), self.topic, self.kafka)
        if max(partitions) >= self._partitions:  # the admin's metadata lags the consumer's
            raise ChangelogError(
                f"partition {self.kafka.interactions_topic}[{max(partitions)}] is assigned, "
                f"but the topic shows {self._partitions} partitions to the changelog's admin"
            )
        for client in (self._producer, self._reader):
            if client is not None:
                _await_partitions(client, self.topic, self._partitions)

    def follow_source(self, topic_id: str | None) -> None:
        """The interactions topic's Kafka id now (None: the broker keeps none). Each
        partition's next transaction records it (``S``) with the partition's offsets."""
        if topic_id != self.source_id:
            self.source_id, self._stamped = topic_id, set()

    def stamp(self, partitions: Sequence[int]) -> None:
        """Record the source's id for ``partitions`` now, in a transaction of its own: for
        those whose state the changelog holds and that may see no batch before the topic
        is created again (an assignment's partitions with committed offsets)."""
        if not self._stamps(partitions):
            return
        try:
            self._transaction([], {}, None, partitions)
        except (ChangelogFenced, ChangelogTopicLost):
            raise
        except ChangelogError as exc:  # aborted; each partition's next batch records it
            log.warning("changelog: the source topic's id not recorded now (%s)", exc)

    def _stamps(self, partitions: Sequence[int]) -> list[Change]:
        if self.source_id is None:
            return []
        value = self.source_id.encode()
        topic = self.kafka.interactions_topic
        return [(p, k.source_key(topic, p), value) for p in partitions if p not in self._stamped]

    def commit(
        self,
        changes: Sequence[Change],
        offsets: dict[int, int],
        group: Callable[[], Any],
        interrupted: threading.Event | None = None,
    ) -> None:
        """One transaction: the changed records and the consumer group's next offsets
        (``group``: gives the consumer's group metadata, unused without offsets). With
        ``interrupted``, it runs in a daemon thread of its own, and once ``interrupted`` is
        set while it still waits, :class:`ChangelogInterrupted` is raised and the thread
        left behind (it can never hold up the exit); the producer is not used again."""
        self._abandonable(lambda: self._through_rebalances(changes, offsets, group), interrupted)

    def _through_rebalances(
        self, changes: Sequence[Change], offsets: dict[int, int], group: Callable[[], Any]
    ) -> None:
        """The transaction, written again while a rebalance moves the group's generation
        under it. The consumer rejoins by itself (incremental rebalancing: only a
        partition's revocation waits for the ingest loop), so the generation a batch's
        offsets were sent under can be gone by the commit; the broker then refuses the
        offsets and the transaction is aborted. Every partition of the batch is still this
        worker's while it is the same member (a revocation waits for the loop's next poll;
        ``group`` raises once the consumer is another member), so the same records and
        offsets under the new generation are the same transaction."""
        deadline = time.monotonic() + REBALANCE_WAIT_S
        while True:
            try:
                self._transaction(changes, offsets, group())
                return
            except _Rebalanced as exc:
                if time.monotonic() > deadline:
                    raise ChangelogError(
                        f"changelog: the group's generation kept moving for "
                        f"{REBALANCE_WAIT_S:.0f} s under transactional.id "
                        f"{self.transactional_id!r}: {exc}"
                    ) from exc
                log.info("changelog transaction aborted by a rebalance (%s); written again", exc)
                time.sleep(REBALANCE_RETRY_S)

    def _abandonable(self, call: Callable[[], None], interrupted: threading.Event | None) -> None:
        """``call`` (a wait on the brokers with the producer), here without ``interrupted``;
        with it, in a daemon thread left behind once ``interrupted`` is set while it still
        waits: :class:`ChangelogInterrupted`, and the producer is not used again."""
        if interrupted is None:
            call()
            return
        failures: list[BaseException] = []

        def run() -> None:
            try:
                call()
            except BaseException as exc:  # handed to the caller's thread
                failures.append(exc)

        thread = threading.Thread(target=run, name="changelog-transaction", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(STOP_CHECK_S)
            if thread.is_alive() and interrupted.is_set():
                self._producer = None  # in the abandoned thread's hands now
                raise ChangelogInterrupted(f"transactional.id {self.transactional_id!r}")
        if failures:
            raise failures[0]

    def _transaction(
        self,
        changes: Sequence[Change],
        offsets: dict[int, int],
        group: Any,
        stamped: Sequence[int] = (),
    ) -> None:
        """One transaction: ``changes``, the source's id for each partition of ``offsets``
        and ``stamped`` that this run has not recorded yet, and ``offsets``."""
        producer = self._require()
        positions = [
            TopicPartition(self.kafka.interactions_topic, p, o) for p, o in sorted(offsets.items())
        ]
        stamps = self._stamps(sorted({*offsets, *stamped}))
        try:
            producer.begin_transaction()
            for partition, key, value in [*changes, *stamps]:
                while True:
                    try:
                        producer.produce(self.topic, value=value, key=key, partition=partition)
                        break
                    except BufferError:  # the local queue is full: let it drain
                        producer.poll(0.05)
            if producer.flush(SLOW_FLUSH_S) > 0:  # records with nowhere to go?
                self._check_topic()
            if positions:
                producer.send_offsets_to_transaction(positions, group, TXN_TIMEOUT_S)
            _commit(producer, self._check_topic)
            self._stamped.update(p for p, _, _ in stamps)
        except (KafkaException, ChangelogTopicLost) as exc:
            failure = (
                exc
                if isinstance(exc, ChangelogTopicLost)
                else _failure(exc, self.kafka, self.transactional_id, "aborted a transaction of")
            )
            if not isinstance(failure, ChangelogFenced):
                try:
                    producer.abort_transaction(TXN_TIMEOUT_S)
                except KafkaException as abort_exc:
                    log.error("changelog transaction not aborted: %s", abort_exc)
                else:
                    error = kafka_error(exc)
                    if isinstance(exc, KafkaException) and error.code() in _REBALANCED:
                        raise _Rebalanced(error.str()) from exc
            raise failure from exc

    def read_partitions(
        self, partitions: Sequence[int], interrupted: threading.Event | None = None
    ) -> dict[int, dict[bytes, bytes]]:
        """Each of ``partitions`` folded by key (read_committed, beginning to end): its live
        records. One reader for all (an empty partition costs its end-of-partition event).
        ``interrupted``: as :meth:`to_ends`."""
        folded: dict[int, dict[bytes, bytes]] = {p: {} for p in partitions}
        # closed here, not when collected: a keyless record's error must not leave the
        # reader assigned until its traceback goes
        with contextlib.closing(self.to_ends(partitions, "restoring", interrupted)) as batches:
            for records, _ in batches:
                self._fold(records, folded)
        return folded

    def _fold(self, records: list[Message], folded: dict[int, dict[bytes, bytes]]) -> None:
        read = dict.fromkeys(folded, 0)
        for message in records:
            p = int(message.partition() or 0)
            key, value = message.key(), message.value()
            if key is None:
                raise ChangelogError(f"{self.topic}[{p}] holds a keyless record")
            if value is None:
                folded[p].pop(key, None)
            else:
                folded[p][key] = value
            read[p] += 1
        for p, count in read.items():
            self._metrics.restore_records.labels(partition=str(p)).inc(count)

    def to_ends(
        self,
        partitions: Sequence[int],
        doing: str,
        interrupted: threading.Event | None = None,
        first_only: bool = False,
    ) -> Generator[tuple[list[Message], list[int]], None, None]:
        """``partitions``' committed records from their beginning, a fetched batch at a
        time: ``(records, ended)``, the batch's records in order and the partitions whose
        end it reached. ``first_only``: a partition is read no further after its first
        record (a question of whether it holds any). ``doing`` names the read in errors.

        A refused read or a fatal error raises; another error is logged and the read goes
        on; no record and no end for :data:`RESTORE_STALL_S` raises ChangelogError.
        ``interrupted`` set (a stop; the read may wait on brokers that are away, inside a
        rebalance callback) raises :class:`ChangelogInterrupted` within a fetch's wait."""
        reading = set(partitions)
        if not reading:
            return
        count = len(reading) if first_only else 10_000
        reads = f"read {self.topic!r}"
        with self.reading(partitions) as consumer:
            last_progress = time.monotonic()
            while reading:
                if interrupted is not None and interrupted.is_set():
                    raise ChangelogInterrupted(f"{doing} {self.topic}{sorted(reading)}")
                messages = consumer.consume(count, 0.1)  # returns at the count or timeout
                if messages:
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > RESTORE_STALL_S:
                    raise ChangelogError(
                        f"{doing} {self.topic}{sorted(reading)}: no record and no end of "
                        f"partition for {RESTORE_STALL_S:.0f} s"
                    )
                records: list[Message] = []
                ended: list[int] = []
                for message in messages:
                    p, error = int(message.partition() or 0), message.error()
                    if p not in reading:
                        continue
                    if error is None:
                        records.append(message)
                        if not first_only:
                            continue
                    elif error.code() == KafkaError._PARTITION_EOF:
                        ended.append(p)
                    else:
                        refused = not_authorized(error, self.kafka, reads, groups=False)
                        if refused is not None:
                            raise refused
                        if error.fatal():
                            raise ChangelogError(f"{doing} {self.topic}: {error.str()}")
                        log.warning("changelog %s: %s", doing, error.str())
                        continue
                    # its end, or its first record where that is all that is asked
                    reading.discard(p)
                    consumer.pause([TopicPartition(self.topic, p)])
                yield records, ended

    def _check_topic(self) -> None:
        """Raise :class:`ChangelogTopicLost` if the changelog was deleted, or replaced,
        since :meth:`start` (a broker that does not answer is left to the caller)."""
        try:
            now = topic_incarnation(self._require_admin(), self.topic, ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            if kafka_error(exc).code() in NO_TOPIC:
                now = "none: deleted"
            else:
                return
        except TimeoutError:
            return
        if now != self._incarnation:
            raise ChangelogTopicLost(
                f"changelog {self.topic!r} was deleted under the worker (topic id "
                f"{self._incarnation}, now {now}): the batch is not committed. The next "
                "start writes the state it lacks again from this store (see docs/changelog.md)"
            )

    def _require_admin(self) -> AdminClient:
        if self._admin is None:
            raise RuntimeError("the changelog is not started")
        return self._admin

    @contextlib.contextmanager
    def reading(self, partitions: Sequence[int]) -> Iterator[Consumer]:
        """The changelog's read_committed reader (it assigns, never joins), assigned
        ``partitions`` from their beginning for the block. One reader for the changelog's
        life: a new client took ~0.5 s to its first end of partition, a kept one ~0.05 s
        (scratch, local broker), and restores run inside the rebalance callback, where the
        consumer reads nothing else. A partition the block paused is resumed before it is
        unassigned: librdkafka keeps the pause for its next assignment."""
        if self._reader is None:
            self._reader = self._new_reader()
        reader = self._reader
        reader.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        try:
            yield reader
        finally:
            reader.resume([TopicPartition(self.topic, p) for p in partitions])
            reader.unassign()

    def _new_reader(self) -> Consumer:
        return confluent_consumer(
            self.kafka,
            {
                "group.id": f"{self.kafka.group_id}.changelog-restore",
                "client.id": "streamgnn-changelog-reader",
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                # The end is known only from an empty fetch there: do not wait 500 ms for it.
                "fetch.wait.max.ms": 20,
                "enable.auto.commit": False,
                "logger": log,
            },
        )

    def _require(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("the changelog is not started")
        return self._producer


def validate_or_restore(
    store: DecayedGraphStore,
    changelog: Changelog,
    topic: str,
    committed: dict[int, int | None],
    interrupted: threading.Event | None = None,
) -> dict[int, dict[bytes, bytes]]:
    """Keep each partition's cached state if the store's position is its committed offset
    (``committed``: partition -> offset, None when the group has none); otherwise drop it
    and restore it from the changelog (the module's cache rule); returns the records
    restored by partition (those whose cache was kept are not in it).

    Without a committed offset the changelog is read even for an empty store: state it holds
    for the same topic incarnation (the group's offsets expired) resumes at its position;
    state of an incarnation deleted since (Kafka dropped its offsets with it) is kept as the
    graph, its position moved to the new topic's beginning (:func:`_resume_without_offsets`).
    ``interrupted`` set during the read raises :class:`ChangelogInterrupted`, the store
    not yet changed.
    """
    changelog.cover(committed)
    stale = []
    for partition, offset in sorted(committed.items()):
        position = store.position(topic, partition)
        stored = None if position is None else position[0]
        if offset is not None and stored == offset:
            log.info("partition %s[%d]: store position %s is committed", topic, partition, stored)
            continue
        log.info(
            "partition %s[%d]: store at %s, group committed %s: restoring from %s",
            topic,
            partition,
            stored,
            offset,
            changelog.topic,
        )
        stale.append(partition)
    started = time.monotonic()
    restored_records = changelog.read_partitions(stale, interrupted)  # the store unchanged
    for partition, records in restored_records.items():
        dropped = drop_partition(store, topic, partition)
        source_id = records.get(k.source_key(topic, partition))
        restore_partition(store, topic, partition, records, changelog.topic)
        position = store.position(topic, partition)
        restored = None if position is None else position[0]
        if committed[partition] is None and restored is not None:
            _resume_without_offsets(store, changelog, partition, restored, source_id)
        elif restored != committed[partition]:
            raise ChangelogError(
                f"partition {topic}[{partition}]: the changelog restores position {restored}, "
                f"the group committed {committed[partition]}; were offsets committed outside "
                "the changelog?"
            )
        log.info(
            "partition %s[%d]: restored %d live records (%d cached edges dropped) in %.2f s",
            topic,
            partition,
            len(records),
            dropped,
            time.monotonic() - started,
        )
    return restored_records


def _resume_without_offsets(
    store: DecayedGraphStore,
    changelog: Changelog,
    partition: int,
    restored: int,
    source_id: bytes | None,
) -> None:
    """The changelog holds ``partition``'s state through offset ``restored`` but the group
    committed none. Its topic id (``source_id``) tells why: the same topic's offsets expired
    (resume at ``restored``), or the topic was deleted and created again (its offsets start
    again at 0: the store's position goes there, the graph is kept). The next transaction
    commits the offset and the id. A changelog written before ids were kept is refused."""
    topic, group = changelog.kafka.interactions_topic, changelog.kafka.group_id
    now = changelog.source_id
    if source_id is None or now is None:
        raise ChangelogError(
            f"partition {topic}[{partition}]: the changelog holds group {group!r}'s state "
            f"through offset {restored}, but the group has no committed offset for it, and "
            "the changelog does not say which incarnation of the topic it read (it was "
            "written before it did, or the broker keeps no topic ids): Kafka drops a topic's "
            "offsets when the topic is deleted, and expires them after "
            "offsets.retention.minutes with no member in the group. If the topic is the "
            f"same one, commit offset {restored} for the group (kafka-consumer-groups.sh "
            f"--group {group} --topic {topic}:{partition} --reset-offsets --to-offset "
            f"{restored} --execute) and start again; if it was created again, the changelog's "
            "offsets mean nothing for it: a new group starts over (the new topic replayed "
            "into an empty graph)"
        )
    was = source_id.decode(errors="replace")
    if was == now:
        log.warning(
            "partition %s[%d]: group %s has no committed offset (expired after "
            "offsets.retention.minutes, or deleted); the changelog's state is of this same "
            "topic (id %s): resuming at its position %d",
            topic,
            partition,
            group,
            now,
            restored,
        )
        return
    store.rewind(topic, partition)
    log.warning(
        "partition %s[%d]: the changelog's state is of topic id %s, the topic is now %s (deleted "
        "and created again): its graph is kept, its reading starts again at offset 0, not at "
        "the old topic's %d",
        topic,
        partition,
        was,
        now,
        restored,
    )


def _commit(producer: Producer, check_topic: Callable[[], None]) -> None:
    """Commit, retrying what librdkafka says is retriable, unless the topic is no longer
    the one this worker started on (a retry would land the batch's records on a topic
    created again without the rest of the state)."""
    while True:
        try:
            producer.commit_transaction(TXN_TIMEOUT_S)
            return
        except KafkaException as exc:
            error = kafka_error(exc)
            if not error.retriable():
                check_topic()  # the likeliest cause of records that never found a partition
                raise
            check_topic()
            log.warning("changelog commit retried: %s", error.str())


def _failure(
    exc: KafkaException, kafka: KafkaSettings, transactional_id: str, what: str
) -> StreamGNNError:
    error = kafka_error(exc)
    what = f"write the changelog with transactional.id {transactional_id!r}"
    refused = not_authorized(error, kafka, what)
    if refused is not None:
        return refused
    if error.code() in _FENCING:
        return ChangelogFenced(
            f"fenced: another worker took transactional.id {transactional_id!r} (same group "
            "and --instance-id); this one stops. Give every worker its own --instance-id."
        )
    return ChangelogError(f"changelog: {what} transactional.id {transactional_id!r}: {error.str()}")


def _ensure_topic(admin: AdminClient, topic: str, kafka: KafkaSettings) -> int:
    """Create the compacted changelog with the source's partition count, or check it;
    returns its partition count. A source with more partitions than the changelog (some
    added since it was made) grows it: the new partitions have no state to log yet."""
    source = kafka.interactions_topic
    try:
        topics = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
        if source not in topics:  # or not visible to this principal: ask it by name
            named = admin.list_topics(source, timeout=ADMIN_TIMEOUT_S).topics.get(source)
            if named is not None:
                refused = not_authorized(named.error, kafka, f"read {source!r}")
                if refused is not None:
                    raise refused
            raise ChangelogError(f"topic {source!r} does not exist: no changelog for it")
        partitions = topics[source].partitions
        count = len(partitions)
        if topic not in topics:
            replicas = len(next(iter(partitions.values())).replicas)
            new = NewTopic(topic, count, replicas, config={"cleanup.policy": "compact"})
            if _settle(admin.create_topics([new], request_timeout=ADMIN_TIMEOUT_S)[topic]):
                log.info("created changelog topic %s (%d partitions)", topic, count)
        elif len(topics[topic].partitions) < count:
            grown = NewPartitions(topic, count)
            if _settle(admin.create_partitions([grown], request_timeout=ADMIN_TIMEOUT_S)[topic]):
                log.info(
                    "changelog %s grown from %d to %d partitions, as %s was",
                    topic,
                    len(topics[topic].partitions),
                    count,
                    source,
                )
        found = _await_partitions(admin, topic, count)
        if found > count:
            raise ChangelogError(
                f"changelog {topic!r} has {found} partitions, {source!r} has {count}: a "
                "topic's partitions are never removed, so was the source deleted and created "
                "again with fewer? A new --group-id starts a changelog of its own"
            )
        if found < count:
            raise ChangelogError(
                f"changelog {topic!r} shows {found} partitions {ADMIN_TIMEOUT_S:.0f} s after "
                f"it was made or grown to {source!r}'s {count}"
            )
        configs = topic_configs(admin, topic, ADMIN_TIMEOUT_S)
        if "compact" not in cleanup_policies(configs):
            policy = configs["cleanup.policy"].value
            raise ChangelogError(f"changelog {topic!r} has cleanup.policy={policy!r}, not compact")
        return count
    except KafkaException as exc:
        raise ChangelogError(f"changelog topic {topic!r} unusable: {exc}") from exc


def _settle(future: Any) -> bool:
    """Wait for a topic's creation or growth: True when this call made it, False when
    another worker of the group had done it first (as good)."""
    try:
        future.result(ADMIN_TIMEOUT_S)
        return True
    except KafkaException as exc:
        if kafka_error(exc).code() not in (
            KafkaError.TOPIC_ALREADY_EXISTS,
            KafkaError.INVALID_PARTITIONS,  # already this many (or more: checked after)
        ):
            raise
        return False


def _await_partitions(client: Any, topic: str, count: int) -> int:
    """The topic's partition count as ``client`` (an admin, producer or consumer) sees it,
    once it sees ``count`` or more or :data:`ADMIN_TIMEOUT_S` passed (metadata catching up
    with a topic just made or grown; the look refreshes the client's own metadata)."""
    deadline = time.monotonic() + ADMIN_TIMEOUT_S
    while True:
        found = client.list_topics(topic, timeout=ADMIN_TIMEOUT_S).topics.get(topic)
        seen = 0 if found is None or found.error is not None else len(found.partitions)
        if seen >= count or time.monotonic() >= deadline:
            return seen
        time.sleep(0.1)
