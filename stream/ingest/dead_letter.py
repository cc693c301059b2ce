"""The dead-letter topic: each rejected record, with why and where from, in a letter that fits.

A letter is the record's key, value and headers plus ``dlq.*`` headers (reason, detail,
source topic, partition, offset, timestamp). It must always be writable, or rejecting a
record would stop ingestion:

* The topic is checked on :meth:`DeadLetterWriter.start`: created with the broker's
  defaults when missing, and its ``max.message.bytes`` read. The worker refuses to start
  when it can do neither.
* A letter larger than that limit is shrunk before it is sent (:func:`compose`): key,
  value and original headers are cut to a common cap (the smallest keep everything), and
  their original sizes go in ``dlq.{key,value,headers}.bytes``. If the broker still
  refuses one as too large (its limit changed, or framing ran over) it is composed again
  at half the size, down to the ``dlq.*`` headers alone.
* A DLQ deleted under the worker is created again the same way, its letters in flight
  sent again (what it held before is gone with it: one WARNING line, and
  ``streamgnn_dlq_topic_lost_total``), rather than stopping ingestion for an act that
  leaves it nothing to wait for. librdkafka learns of a deletion at its next metadata
  refresh (20-30 s here), so letters held up :data:`SLOW_S` make the writer ask the broker
  itself. One that cannot be created again leaves the letters waiting, as below.
* librdkafka retries a letter (outages, leader moves) for ``dlq_timeout_s``, and not a
  moment longer: a letter still unwritable then raises :class:`DeadLetterError` and the
  worker stops ingesting (exit non-zero, nothing of the batch applied) rather than loop.
  ``streamgnn_dlq_unwritable`` is 1 from the moment letters have waited :data:`SLOW_S`
  (so scrapes see it before the worker exits, and again on every restart that hits the
  same wall) until they are acked. A stop request interrupts the wait at once.

Letters are at least once: a batch interrupted after some letters were acked writes them
again when it is read again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # re-exported

from stream.errors import DeadLetterError, KafkaAccessError
from stream.events import Rejection
from stream.ingest.source import CLOSE_TIMEOUT_S, SourceRecord, close_within
from stream.kafka.access import not_authorized
from stream.kafka.clients import confluent_admin, confluent_producer
from stream.kafka.failure import kafka_error
from stream.kafka.topics import (
    NO_TOPIC,
    RECORD_OVERHEAD,
    TOO_LARGE,
    topic_absent,
    topic_configs,
)
from stream.metrics import PipelineMetrics
from stream.settings import KafkaSettings

if TYPE_CHECKING:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

log = logging.getLogger("streamgnn.ingest")

Header = tuple[str, bytes | None]

HEADER_OVERHEAD = 10  # a header's cost beyond its key and value: their varint lengths
ADMIN_TIMEOUT_S = 30.0
WAIT_SLICE_S = 0.1
SLOW_S = 5.0  # letters unacked this long set streamgnn_dlq_unwritable (until acked)
# Held-up letters: how long to wait for the broker to say whether the DLQ still exists (a
# stop asked meanwhile waits for the answer).
CHECK_TIMEOUT_S = 1.0


class DeadLetterInterrupted(Exception):
    """A stop was requested while letters were in flight; the batch must not be applied."""


@dataclass(frozen=True)
class Letter:
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    shrunk: bool = False

    @property
    def size(self) -> int:
        return letter_size(self.key, self.value, self.headers)


def letter_size(key: bytes | None, value: bytes | None, headers: Sequence[Header]) -> int:
    """An upper bound of the bytes one record takes in a batch of its own."""
    return RECORD_OVERHEAD + len(key or b"") + len(value or b"") + _headers_size(headers)


def _headers_size(headers: Sequence[Header]) -> int:
    return sum(HEADER_OVERHEAD + len(k.encode("utf-8")) + len(v or b"") for k, v in headers)


def compose(record: SourceRecord, rejection: Rejection, topic: str, budget: int) -> Letter | None:
    """The letter for ``record``, at most ``budget`` bytes; None if even the ``dlq.*``
    headers alone do not fit.

    >>> r = SourceRecord(0, 7, b"k" * 50, b"v" * 1000, (), None, 0)
    >>> letter = compose(r, Rejection("bad_json", "x"), "t", 1000)
    >>> letter.size <= 1000, len(letter.key), 200 < len(letter.value) < 1000, letter.shrunk
    (True, 50, True, True)
    """
    meta: list[Header] = [
        ("dlq.reason", rejection.reason.encode()),
        ("dlq.detail", rejection.detail.encode("utf-8", "replace")[:1000]),
        ("dlq.source.topic", topic.encode()),
        ("dlq.source.partition", str(record.partition).encode()),
        ("dlq.source.offset", str(record.offset).encode()),
    ]
    if record.timestamp_ms is not None:
        meta.append(("dlq.source.timestamp", str(record.timestamp_ms).encode()))
    if record.undecodable is not None:
        meta.append(("dlq.headers", b"undecodable"))
    original = list(record.headers)
    if letter_size(record.key, record.value, original + meta) <= budget:
        return Letter(record.key, record.value, original + meta)
    sizes = (len(record.key or b""), len(record.value or b""), _headers_size(original))
    meta += [
        ("dlq.key.bytes", str(sizes[0]).encode()),
        ("dlq.value.bytes", str(sizes[1]).encode()),
        ("dlq.headers.bytes", str(sizes[2]).encode()),
        ("dlq.truncated", b"key,value,headers"),  # the longest it can be; rewritten below
    ]
    room = budget - letter_size(None, None, meta)
    if room < 0:
        return None
    cap = water_level(sizes, room)
    key = None if record.key is None else record.key[:cap]
    value = None if record.value is None else record.value[:cap]
    kept: list[Header] = []
    used = 0
    for header in original:
        used += _headers_size([header])
        if used > cap:
            break
        kept.append(header)
    cut = [
        name
        for name, before, after in (
            ("key", sizes[0], len(key or b"")),
            ("value", sizes[1], len(value or b"")),
            ("headers", len(original), len(kept)),
        )
        if after < before
    ]
    meta[-1] = ("dlq.truncated", ",".join(cut).encode())
    return Letter(key, value, kept + meta, shrunk=True)


def water_level(sizes: Sequence[int], room: int) -> int:
    """The largest cap ``c`` with ``sum(min(s, c) for s in sizes) <= room``.

    >>> water_level([10, 1000, 50], 200), water_level([1, 2], 100)
    (140, 2)
    """
    remaining = room
    ordered = sorted(sizes)
    for i, size in enumerate(ordered):
        share = remaining // (len(ordered) - i)
        if size > share:
            return share
        remaining -= size
    return ordered[-1] if ordered else 0


class DeadLetterWriter:
    """Writes letters to the DLQ and waits for the broker's acks (module docstring)."""

    def __init__(self, kafka: KafkaSettings, metrics: PipelineMetrics) -> None:
        self._kafka = kafka
        self._metrics = metrics
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._creation_failed = False
        self.limit = 0  # the DLQ's max.message.bytes, read on start

    def start(self) -> None:
        """Check (create if missing) the DLQ and read its size limit; blocking."""
        k = self._kafka
        self._admin = confluent_admin(k, {"logger": log})
        self.limit, created = _ensure_topic(self._admin, k)
        if created:
            log.warning("dead-letter topic %r did not exist: created it", k.dlq_topic)
        self._producer = confluent_producer(
            k,
            {
                "client.id": "streamgnn-dead-letters",
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                # A batch never exceeds what the topic accepts; one letter may be alone in it.
                "batch.size": self.limit,
                "message.max.bytes": max(self.limit + 65_536, 1_000_000),
                "message.timeout.ms": int(k.dlq_timeout_s * 1000),
                "logger": log,
            },
        )
        self._metrics.dlq_unwritable.set(0)
        log.info("dead-letter topic %s accepts records up to %d bytes", k.dlq_topic, self.limit)

    def close(self) -> None:
        producer, self._producer, self._admin = self._producer, None, None
        if producer is not None:
            producer.purge()
            close_within({"dead-letter producer": producer.close}, CLOSE_TIMEOUT_S)

    def write(
        self, letters: Sequence[tuple[SourceRecord, Rejection]], interrupted: threading.Event
    ) -> None:
        """Send every letter and return once each is acked (blocking).

        Raises:
            DeadLetterError: a letter could not be written within ``dlq_timeout_s``, or
                does not fit even stripped to its ``dlq.*`` headers.
            DeadLetterInterrupted: ``interrupted`` was set before every ack came back.
        """
        self._require()
        self._creation_failed = False  # warned once per batch of letters
        deadline = time.monotonic() + self._kafka.dlq_timeout_s + 5.0
        budgets = [self.limit] * len(letters)
        pending = list(range(len(letters)))
        while pending:
            outcomes: dict[int, KafkaError | None] = {}
            sizes: dict[int, int] = {}
            for i in pending:
                record, rejection = letters[i]
                letter = compose(record, rejection, self._kafka.interactions_topic, budgets[i])
                if letter is None:
                    self._fail(record, f"it does not fit in {budgets[i]} bytes even stripped")
                sizes[i] = letter.size
                if letter.shrunk:
                    self._metrics.dead_letters_shrunk.inc()
                self._send(letter, i, outcomes, interrupted, deadline, record)
            self._wait(len(pending), outcomes, interrupted, deadline, letters[pending[0]][0])
            retry, gone = [], []
            for i in pending:
                error = outcomes[i]
                if error is None:
                    continue
                if error.code() in NO_TOPIC:
                    gone.append(i)
                    continue
                if error.code() in TOO_LARGE and sizes[i] // 2 > 0:
                    log.warning(
                        "dead letter of %s[%d]@%d refused as too large at %d bytes; halving",
                        self._kafka.interactions_topic,
                        letters[i][0].partition,
                        letters[i][0].offset,
                        sizes[i],
                    )
                    budgets[i] = sizes[i] // 2
                    retry.append(i)
                    continue
                what = f"write dead letters to {self._kafka.dlq_topic!r}"
                self._fail(letters[i][0], error.str(), not_authorized(error, self._kafka, what))
            if gone:
                self._create_again(len(gone), interrupted, deadline, letters[gone[0]][0])
                for i in gone:
                    budgets[i] = min(budgets[i], self.limit)
            pending = sorted(retry + gone)
        self._metrics.dlq_unwritable.set(0)

    def _deleted(self) -> bool:
        """Whether the broker answers that the DLQ does not exist (False when it does not
        answer within :data:`CHECK_TIMEOUT_S`: the letters wait on, as for any outage)."""
        return topic_absent(self._require_admin(), self._kafka.dlq_topic, CHECK_TIMEOUT_S)

    def _create_again(
        self, letters: int, interrupted: threading.Event, deadline: float, first: SourceRecord
    ) -> None:
        """The DLQ does not exist (deleted under the writer): create it again as :meth:`start`
        does, then give the producer a moment to learn of it before the letters go again.
        One that cannot be created (no CreateTopics right, a name that now collides) leaves
        the letters waiting, as an outage does: the dlq timeout still bounds the wait (the
        operator may make it again meanwhile; only at start does a missing right end it)."""
        try:
            self.limit, created = _ensure_topic(self._require_admin(), self._kafka)
        except (DeadLetterError, KafkaAccessError) as exc:
            if not self._creation_failed:
                log.warning("%s; its letters wait for it up to the dlq timeout", exc)
            self._creation_failed = True
            interrupted.wait(min(SLOW_S, max(deadline - time.monotonic(), 0.0)))
            self._check(interrupted, deadline, first)
            return
        if created:
            self._metrics.dlq_topic_lost.inc()
            log.warning(
                "dead-letter topic %r was deleted under the worker: created it again with the "
                "broker's defaults; its %d letter(s) in flight go to the new one (the letters "
                "it held are gone with it)",
                self._kafka.dlq_topic,
                letters,
            )
        interrupted.wait(WAIT_SLICE_S)
        self._check(interrupted, deadline, first)

    def _send(
        self,
        letter: Letter,
        index: int,
        outcomes: dict[int, KafkaError | None],
        interrupted: threading.Event,
        deadline: float,
        record: SourceRecord,
    ) -> None:
        producer = self._require()

        def delivered(error: KafkaError | None, _message: object) -> None:
            outcomes[index] = error

        headers: list[tuple[str, str | bytes | None]] = list(letter.headers)
        while True:
            try:
                producer.produce(
                    self._kafka.dlq_topic,
                    key=letter.key,
                    value=letter.value,
                    headers=headers,
                    on_delivery=delivered,
                )
                return
            except BufferError:  # local queue full: serve delivery reports, then retry
                self._check(interrupted, deadline, record)
                producer.poll(WAIT_SLICE_S)
            except KafkaException as exc:  # refused locally (e.g. too large): same as a nack
                outcomes[index] = kafka_error(exc)
                return

    def _wait(
        self,
        expected: int,
        outcomes: dict[int, KafkaError | None],
        interrupted: threading.Event,
        deadline: float,
        first: SourceRecord,
    ) -> None:
        producer = self._require()
        slow_after = time.monotonic() + SLOW_S
        while len(outcomes) < expected:
            self._check(interrupted, deadline, first)
            producer.flush(WAIT_SLICE_S)
            if time.monotonic() > slow_after:  # held up: visible while it lasts, alertable
                self._metrics.dlq_unwritable.set(1)
                # librdkafka learns of a deleted topic at a metadata refresh, tens of
                # seconds later: ask the broker now (the letters then go by its retries)
                if self._deleted():
                    self._create_again(expected - len(outcomes), interrupted, deadline, first)
                slow_after = time.monotonic() + SLOW_S

    def _check(self, interrupted: threading.Event, deadline: float, record: SourceRecord) -> None:
        if interrupted.is_set():
            self._require().purge()
            raise DeadLetterInterrupted("stop requested while dead letters were in flight")
        if time.monotonic() > deadline:
            self._fail(record, f"no ack within {self._kafka.dlq_timeout_s} s")

    def _fail(
        self, record: SourceRecord, why: str, refused: KafkaAccessError | None = None
    ) -> NoReturn:
        """Stop ingesting: ``refused`` (a missing ACL) if given, else :class:`DeadLetterError`."""
        self._metrics.dlq_unwritable.set(1)
        if self._producer is not None:
            self._producer.purge()
        if refused is not None:
            raise refused
        raise DeadLetterError(
            f"cannot write the dead letter of {self._kafka.interactions_topic}"
            f"[{record.partition}]@{record.offset} to {self._kafka.dlq_topic!r}: {why}. "
            "Ingestion stops; the store holds everything before this batch."
        )

    def _require(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("the dead-letter writer is not started")
        return self._producer

    def _require_admin(self) -> AdminClient:
        if self._admin is None:
            raise RuntimeError("the dead-letter writer is not started")
        return self._admin


def _ensure_topic(admin: AdminClient, kafka: KafkaSettings) -> tuple[int, bool]:
    """Create the DLQ with the broker's defaults if missing; return its max.message.bytes
    and whether this call created it. A refusal for want of an ACL ends the command
    (:func:`stream.kafka.access.not_authorized`)."""
    topic = kafka.dlq_topic
    try:
        created = False
        if topic not in admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics:
            future = admin.create_topics([NewTopic(topic)], request_timeout=ADMIN_TIMEOUT_S)[topic]
            try:
                future.result(ADMIN_TIMEOUT_S)
                created = True
            except KafkaException as exc:
                if kafka_error(exc).code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        configs = topic_configs(admin, topic, ADMIN_TIMEOUT_S)
        return int(configs["max.message.bytes"].value), created
    except KafkaException as exc:
        error = kafka_error(exc)
        refused = not_authorized(
            error, kafka, f"describe or create the dead-letter topic {topic!r}"
        )
        if refused is not None:
            raise refused from exc
        raise DeadLetterError(
            f"dead-letter topic {topic!r} does not exist and cannot be created, or cannot be "
            f"described: {error.str()}. Create it, or grant the "
            "worker CreateTopics and DescribeConfigs on it"
        ) from exc
