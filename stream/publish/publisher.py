"""Publish changed node vectors to the compacted embedding topics.

Who does what (the split with the trainer):

- The **trainer** decides *which* vectors to publish. It keeps the last published vector
  of every row in a tensor beside its embedding table (row-indexed, checkpointed, bounded
  by the id registry's capacity; no per-id Python dict) and reports the rows with new
  events plus those that moved more than ``TrainerSettings.publish_threshold``
  (``IncrementalTrainer._refresh``); only those are passed here.
- The **publisher** decides *how*: it encodes the records (``stream.publish.schema``),
  keeps ``model_version`` monotone per key across crashes (``stream.publish.ledger``),
  sends with an idempotent producer (``acks="all"``) and returns only once every record
  is acknowledged, so the caller may count the source offsets the vectors cover as done.
  It keeps no per-id state.

The producer is librdkafka's (``confluent_kafka.Producer``), used synchronously:
``publish`` queues every record and blocks in ``flush`` until each delivery report came
back. A step publishes thousands of records at once, and librdkafka queues each in C,
where kafka-python's pure-Python ``send`` holds the GIL that the trainer and the ingest
loop share for far longer per record (bench/freshness.py showed it). The asyncio worker
calls it from its trainer thread: the trainer already runs off the event loop because a
step would block it, a blocking call makes "returns only after every ack" obvious, and
the same object works in tests and tools without an event loop. Admin calls and the
ledger's topic scan stay on kafka-python, but for the topics' ids (Kafka's topic id, which
tells a topic deleted and created again from the one published to), read by librdkafka's.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import numpy.typing as npt
from confluent_kafka import KafkaException
from kafka.errors import KafkaError

from stream.errors import (
    EmbeddingRecordsRefused,
    EmbeddingRecordTooLarge,
    EmbeddingTopicGone,
    PublishError,
    PublishInterrupted,
    SchemaError,
    VersionRegressionError,
)
from stream.kafka.access import NOT_AUTHORIZED_ERRORS, not_authorized, refusal
from stream.kafka.clients import confluent_admin, confluent_producer, kafka_admin
from stream.kafka.failure import kafka_error
from stream.kafka.topics import (
    INVALID_RECORDS,
    NO_TOPIC,
    RECORD_OVERHEAD,
    TOO_LARGE,
    cleanup_policies,
    create_missing_topics,
    topic_configs,
    topic_incarnations,
)
from stream.metrics import PipelineMetrics
from stream.publish.ledger import VersionLedger, scan_max_model_version
from stream.publish.schema import Encoding, NodeKind, encode_records
from stream.settings import KafkaSettings, PublishSettings

if TYPE_CHECKING:  # built by stream.kafka.clients only
    from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

TOPIC_ID_TIMEOUT_S = 5.0  # a check blocks the trainer thread (and a SIGTERM) this long at most


@dataclass(frozen=True)
class NodeVectors:
    """The vectors of one kind of node to publish, one row per id.

    Args:
        kind: ``"user"`` or ``"item"``.
        ids: external node ids, one per row.
        vectors: ``[len(ids), dim]`` array or tensor (any device; copied to CPU float32).
        event_time_ms: the newest event time each row reflects: one int per row, or one
            int for all rows.
    """

    kind: NodeKind
    ids: Sequence[str]
    vectors: Any  # an array-like or a torch.Tensor
    event_time_ms: int | Sequence[int] | npt.NDArray[np.int64]


@dataclass(frozen=True)
class PublishResult:
    """What one :meth:`EmbeddingPublisher.publish` call put on the topics (all acked)."""

    model_version: int
    published: Mapping[NodeKind, int] = field(default_factory=dict)
    publish_time_ms: int = 0
    acked_time_ms: int = 0


def ensure_embedding_topics(
    kafka: KafkaSettings, settings: PublishSettings, timeout_s: float = 30.0
) -> dict[str, int]:
    """Create the user and item topics as compacted if missing; refuse non-compacted ones.
    Returns each topic's ``max.message.bytes``."""
    topics = (settings.user_topic, settings.item_topic)
    request = {
        name: {
            "num_partitions": settings.topic_partitions,
            "replication_factor": settings.topic_replication_factor,
            "configs": {"cleanup.policy": "compact"},
        }
        for name in topics
    }
    try:
        admin = kafka_admin(
            kafka,
            client_id="streamgnn-publisher-admin",
            request_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaError as exc:
        raise PublishError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc}") from exc
    try:
        failed = create_missing_topics(admin, request, timeout_ms=int(timeout_s * 1000))
        refused = [error for error in failed.values() if isinstance(error, NOT_AUTHORIZED_ERRORS)]
        if refused:  # a topic it may not describe is one it does not see, so asks to create
            raise refusal(
                kafka, f"describe or create the embedding topics {topics}", str(refused[0])
            )
        if failed:
            raise PublishError(f"could not create embedding topics: {failed}")
    except KafkaError as exc:
        raise PublishError(f"cannot set up embedding topics {topics}: {exc}") from exc
    finally:
        admin.close()
    described = confluent_admin(kafka, {"client.id": "streamgnn-publisher-admin", "logger": log})
    return {name: _checked_limit(described, kafka, name, timeout_s) for name in topics}


def _checked_limit(admin: AdminClient, kafka: KafkaSettings, topic: str, timeout_s: float) -> int:
    """Refuse an embedding topic that is not compacted (an update would not replace the
    vector it updates); return its ``max.message.bytes``. Read with librdkafka:
    kafka-python drops a describe's refusal and answers with no configuration."""
    try:
        configs = topic_configs(admin, topic, timeout_s)
    except KafkaException as exc:
        error = kafka_error(exc)
        what = f"describe the configuration of the embedding topic {topic!r}"
        refused = not_authorized(error, kafka, what)
        if refused is not None:
            raise refused from exc
        raise PublishError(f"cannot describe embedding topic {topic!r}: {error.str()}") from exc
    policies = cleanup_policies(configs)
    policy = ",".join(sorted(policies)) or None
    if "compact" not in policies:
        raise PublishError(
            f"topic {topic!r} has cleanup.policy={policy!r}; embedding topics must be "
            "compacted (cleanup.policy=compact)"
        )
    if "delete" in policies:
        retention = configs.get("retention.ms")
        log.warning(
            "embedding topic %r is cleanup.policy=%s: it also deletes records older than "
            "retention.ms (%s), so the vector of an id idle that long disappears from it "
            "(cleanup.policy=compact keeps every id's newest vector)",
            topic,
            policy,
            None if retention is None else retention.value,
        )
    return int(configs["max.message.bytes"].value)


class EmbeddingPublisher:
    """Publishes node vectors with monotone model versions; each call returns once acked.

    Args:
        kafka: the brokers (and how to connect to them).
        settings: topics, encoding, ledger path, flush timeout.
        metrics: receives freshness, staleness, model version and vectors published.
        clock: wall clock in seconds (tests may pass a fake one).
        create_topics: create (or check) the compacted topics on construction.

    ``min_version`` is the smallest model version the next ``publish`` may use. After a
    restart it is one above anything that may already be on the topics, so a trainer
    restored from an older checkpoint continues at
    ``max(checkpoint_version + 1, publisher.min_version)``.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: PublishSettings | None = None,
        metrics: PipelineMetrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
        create_topics: bool = True,
    ) -> None:
        self._kafka = kafka
        self._settings = settings if settings is not None else PublishSettings()
        self._metrics = metrics if metrics is not None else PipelineMetrics()
        self._clock = clock
        self._topics: dict[NodeKind, str] = {
            "user": self._settings.user_topic,
            "item": self._settings.item_topic,
        }
        # each kind's topic's max.message.bytes (None: not read, the topics not checked)
        self._limits: dict[NodeKind, int | None] = dict.fromkeys(self._topics)
        if create_topics:
            self._note_limits(ensure_embedding_topics(kafka, self._settings))
        try:
            self._admin = confluent_admin(
                kafka, {"client.id": "streamgnn-publisher-admin", "logger": log}
            )
        except KafkaException as exc:
            raise PublishError(f"cannot configure the admin client: {exc}") from exc
        self._topic_ids = self._read_topic_ids(created=create_topics)
        self._ledger = VersionLedger(self._settings.ledger_path)
        if self._ledger.reserved is None:
            found = scan_max_model_version(kafka, list(self._topics.values()))
            if found is not None:
                log.warning(
                    "no version ledger at %s; recovered version floor %d from the topics",
                    self._ledger.path,
                    found,
                )
                self._ledger.reserve(found)
        reserved = self._ledger.reserved
        self._min_version = 0 if reserved is None else reserved + 1
        self._newest_event_ms: int | None = None
        self._interrupted = threading.Event()
        self._metrics.staleness.set_function(self._staleness_seconds)
        try:
            self._producer = confluent_producer(
                kafka,
                {
                    "client.id": "streamgnn-embedding-publisher",
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "message.max.bytes": 8 * 1024 * 1024,
                    # A batch never exceeds what the smaller topic accepts (librdkafka does
                    # not split a batch the broker refuses as too large).
                    "batch.size": min(
                        [1_000_000, *(limit for limit in self._limits.values() if limit)]
                    ),
                    "queue.buffering.max.messages": 1_000_000,
                    # Delivery reports for failures only: an acked record needs no Python
                    # call (under the GIL the ingest threads share) for each of the
                    # thousands a step publishes; flush's count says what is not acked yet.
                    "delivery.report.only.error": True,
                    "logger": log,
                },
            )
        except KafkaException as exc:
            raise PublishError(
                f"cannot configure the producer for {kafka.bootstrap_servers}: {exc}"
            ) from exc

    @property
    def min_version(self) -> int:
        """The smallest ``model_version`` the next :meth:`publish` accepts."""
        return self._min_version

    @property
    def topic_ids(self) -> dict[NodeKind, str | None]:
        """Kafka's id of each kind's embedding topic as last read (None: the broker keeps
        none): the topic the vectors published so far are on."""
        return dict(self._topic_ids)

    def replaced_topics(self) -> list[NodeKind]:
        """The kinds whose embedding topic is not the one published to so far: deleted and
        created again (by anyone; a missing one is created here, compacted as at start), so
        it holds none of the vectors published before. Reads the topics' ids again.

        Raises:
            PublishError: the ids could not be read, or a missing topic not created.
        """
        try:
            now, created = self._read_topic_ids(), False
        except EmbeddingTopicGone:
            self._note_limits(ensure_embedding_topics(self._kafka, self._settings))
            now, created = self._read_topic_ids(created=True), True
        before, self._topic_ids = self._topic_ids, now
        replaced = [kind for kind, was in before.items() if was != now[kind]]
        if replaced and not created:  # created by someone else: as start would check it
            try:
                self._note_limits(ensure_embedding_topics(self._kafka, self._settings))
            except PublishError as exc:
                log.error("%s: published to all the same; a restart refuses it", exc)
        return replaced

    def _read_topic_ids(self, created: bool = False) -> dict[NodeKind, str | None]:
        """Each kind's topic id; ``created``: the topics were just created, and a broker
        may not know them yet for a moment (asked again for up to ``TOPIC_ID_TIMEOUT_S``)."""
        deadline = time.monotonic() + (TOPIC_ID_TIMEOUT_S if created else 0.0)
        while True:
            try:
                topics = list(dict.fromkeys(self._topics.values()))
                ids = topic_incarnations(self._admin, topics, TOPIC_ID_TIMEOUT_S)
                return {kind: ids[topic] for kind, topic in self._topics.items()}
            except KafkaException as exc:
                if kafka_error(exc).code() not in NO_TOPIC:
                    raise PublishError(f"cannot read the embedding topics' ids: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise EmbeddingTopicGone(f"an embedding topic does not exist: {exc}") from exc
                time.sleep(0.2)
            except TimeoutError as exc:
                wait = f"no answer in {TOPIC_ID_TIMEOUT_S:.0f} s"
                raise PublishError(f"cannot read the embedding topics' ids: {wait}") from exc

    @property
    def encoding(self) -> Encoding:
        return self._settings.vector_encoding  # type: ignore[return-value]  # validated

    def publish(
        self,
        batches: Iterable[NodeVectors],
        *,
        model_version: int,
        append_times_ms: npt.ArrayLike = (),
    ) -> PublishResult:
        """Publish ``batches`` at ``model_version``; return once every record is acked.

        ``append_times_ms`` are the Kafka append timestamps (ms) of the interaction events
        the published vectors reflect, each event once: every one is observed in the
        freshness histogram as ack time minus append time.

        Raises:
            VersionRegressionError: ``model_version < min_version``; nothing is sent.
            SchemaError: a row does not fit the wire schema; nothing is sent.
            EmbeddingTopicGone: a topic does not exist (deleted under the publisher): see
                :meth:`replaced_topics`, then publish again.
            PublishError: a record was not acked; publish again (same version is fine).
        """
        self._check_interrupt()
        if isinstance(model_version, bool) or not isinstance(model_version, int):
            raise ValueError(f"model_version must be an int, got {model_version!r}")
        if model_version < self._min_version:
            raise VersionRegressionError(
                f"model_version {model_version} is below the floor {self._min_version}: a "
                "version at or above it may already be published"
            )
        appended = np.asarray(append_times_ms, dtype=np.int64).reshape(-1)
        publish_time_ms = int(self._clock() * 1000)
        staged = self._stage(batches, model_version, publish_time_ms)
        self._require_fits(staged)
        # Reserve before the first send: the ledger is always >= what the topics hold.
        self._ledger.reserve(model_version)
        self._min_version = model_version
        failures: list[object] = []

        def delivered(error: object, _message: object) -> None:
            if error is not None:
                failures.append(error)

        for kind, key, value in staged.records:
            self._produce(self._topics[kind], key, value, publish_time_ms, delivered)
        unacked = self._flush(self._settings.flush_timeout_s)
        self._check_interrupt()  # purged by interrupt(): not a failure to retry
        if unacked:
            raise PublishError(
                f"{unacked} of {len(staged.records)} embedding records not acked within "
                f"{self._settings.flush_timeout_s} s"
            )
        if failures:
            raise self._failure(failures, len(staged.records))
        acked_time_ms = int(self._clock() * 1000)
        self._record_metrics(staged, model_version, appended, acked_time_ms)
        return PublishResult(model_version, dict(staged.counts), publish_time_ms, acked_time_ms)

    def _failure(self, failures: Sequence[object], sent: int) -> Exception:
        """What a publish of ``sent`` records ends with, given its delivery ``failures``:
        a refusal, or records the brokers will refuse again, end the command (never
        retried); a topic gone is created again; anything else is retried."""
        for failure in failures:
            refused = not_authorized(failure, self._kafka, "write the embedding topics")
            if refused is not None:
                return refused
        by_code: dict[object, list[object]] = {}
        for failure in failures:
            by_code.setdefault(getattr(failure, "code", lambda: None)(), []).append(failure)
        too_large = sum(len(by_code.get(code, ())) for code in TOO_LARGE)
        if too_large:  # a topic's limit lowered under it: the start reads it again
            return EmbeddingRecordTooLarge(
                f"an embedding topic refused {too_large} records as larger than its "
                "max.message.bytes (lowered since the start?): a restart reads the topics' "
                "limits again"
            )
        invalid = [f for code in INVALID_RECORDS for f in by_code.get(code, ())]
        if invalid:
            return EmbeddingRecordsRefused(
                f"the brokers refused {len(invalid)} of {sent} embedding records for good: "
                f"{invalid[0]!r}. A record's timestamp is this worker's clock: an embedding "
                "topic's message.timestamp.before.max.ms or after.max.ms refuses records "
                "when this clock is that far from the broker's"
            )
        gone = [f for code in NO_TOPIC for f in by_code.get(code, ())]
        if gone:
            return EmbeddingTopicGone(f"an embedding topic does not exist: {gone[0]!r}")
        return PublishError(
            f"{len(failures)} of {sent} embedding records were not acked: {failures[0]!r}"
        )

    def _require_fits(self, staged: _Staged) -> None:
        """Refuse, before anything is sent, a record its topic would refuse as too large
        (each record looked at only when the kind's bound says one may be)."""
        over = {  # the kinds one of whose records may not fit, with their topic's limit
            kind: limit
            for kind, bound in staged.bound.items()
            if (limit := self._limits[kind]) is not None and bound + RECORD_OVERHEAD > limit
        }
        if not over:
            return
        for kind, key, value in staged.records:
            size = len(key) + len(value) + RECORD_OVERHEAD
            if kind in over and size > (limit := over[kind]):
                raise EmbeddingRecordTooLarge(
                    f"the {kind} vector of {key.decode()!r} takes {size} bytes as a record, "
                    f"and embedding topic {self._topics[kind]!r} accepts {limit} "
                    "(max.message.bytes): raise the topic's max.message.bytes, or publish "
                    "--vector-encoding f32le-base64 (about a third of the JSON's size)"
                )

    def _note_limits(self, limits: Mapping[str, int]) -> None:
        for kind, topic in self._topics.items():
            self._limits[kind] = limits[topic]

    def _produce(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        timestamp_ms: int,
        on_delivery: Callable[[object, object], None],
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, timestamp=timestamp_ms, on_delivery=on_delivery
                )
                return
            except BufferError:  # the local queue is full: serve delivery reports, retry
                self._check_interrupt()
                self._producer.poll(0.1)
            except KafkaException as exc:
                if kafka_error(exc).code() in NO_TOPIC:
                    raise EmbeddingTopicGone(f"embedding topic {topic!r} does not exist") from exc
                raise PublishError(f"embedding record not queued: {exc}") from exc

    def _flush(self, timeout_s: float) -> int:
        """Wait for acks in short slices, so :meth:`interrupt` ends the wait at once."""
        deadline = time.monotonic() + timeout_s
        while True:
            unacked = int(self._producer.flush(min(0.1, max(deadline - time.monotonic(), 0))))
            if not unacked or time.monotonic() >= deadline:
                return unacked
            self._check_interrupt()

    def interrupt(self) -> None:
        """Make a :meth:`publish` in progress (another thread) give up now: it raises
        :class:`PublishInterrupted`, unsent records are dropped, and so does every later
        call. For a worker that must stop within seconds while the brokers refuse it."""
        self._interrupted.set()
        self._producer.purge()

    def _check_interrupt(self) -> None:
        if self._interrupted.is_set():
            raise PublishInterrupted("publishing interrupted (the worker is stopping)")

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush what is pending (librdkafka closes the producer when it is collected);
        after :meth:`interrupt` nothing is pending."""
        if not self._interrupted.is_set():
            self._flush(timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _stage(
        self, batches: Iterable[NodeVectors], model_version: int, publish_time_ms: int
    ) -> _Staged:
        staged = _Staged()
        for batch in batches:
            ids = list(batch.ids)
            matrix = _as_matrix(batch.vectors, len(ids))
            try:
                times = np.broadcast_to(np.asarray(batch.event_time_ms, np.int64), (len(ids),))
            except ValueError as exc:
                raise SchemaError(f"event_time_ms must be one int or one per id: {exc}") from exc
            values = encode_records(
                batch.kind, ids, model_version, matrix, times, publish_time_ms, self.encoding
            )
            keys = [node_id.encode() for node_id in ids]
            staged.records.extend(zip(itertools.repeat(batch.kind), keys, values, strict=False))
            if values:
                bound = max(map(len, keys)) + max(map(len, values))  # no Python loop a record
                staged.bound[batch.kind] = max(staged.bound.get(batch.kind, 0), bound)
                staged.counts[batch.kind] = staged.counts.get(batch.kind, 0) + len(values)
                newest = int(times.max())
                if staged.newest_event_ms is None or newest > staged.newest_event_ms:
                    staged.newest_event_ms = newest
        return staged

    def _record_metrics(
        self,
        staged: _Staged,
        model_version: int,
        appended: npt.NDArray[np.int64],
        acked_time_ms: int,
    ) -> None:
        m = self._metrics
        for kind, count in staged.counts.items():
            m.vectors_published.labels(kind=kind).inc(count)
        if staged.records:
            m.model_version.set(model_version)
        for seconds in np.maximum(acked_time_ms - appended, 0).tolist():
            m.freshness.observe(seconds / 1000.0)
        if staged.newest_event_ms is not None and (
            self._newest_event_ms is None or staged.newest_event_ms > self._newest_event_ms
        ):
            self._newest_event_ms = staged.newest_event_ms

    def _staleness_seconds(self) -> float:
        if self._newest_event_ms is None:
            return float("nan")  # nothing published yet: no age to report
        return max(self._clock() - self._newest_event_ms / 1000.0, 0.0)


@dataclass
class _Staged:
    records: list[tuple[NodeKind, bytes, bytes]] = field(default_factory=list)
    counts: dict[NodeKind, int] = field(default_factory=dict)
    newest_event_ms: int | None = None
    # per kind, the longest key plus the longest value: at least any record's key + value
    bound: dict[NodeKind, int] = field(default_factory=dict)


def _as_matrix(vectors: Any, rows: int) -> npt.NDArray[np.float32]:
    detach = getattr(vectors, "detach", None)
    if callable(detach):  # a torch tensor, possibly on a GPU or requiring grad
        vectors = detach().to("cpu").float().numpy()
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise SchemaError(f"vectors must have shape [{rows}, dim], got {matrix.shape}")
    return matrix
