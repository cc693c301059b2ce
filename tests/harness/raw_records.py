"""Producing records no well-behaved client would: header keys that are not UTF-8, negative
or missing timestamps, any compression codec. For the hostile-record tests and bench.

Every record is sent with a real client, so the broker sees exactly what a hostile
producer could send it:

* A record with a header key that is not UTF-8 goes through kafka-python, which builds
  its batches in Python and encodes a header key with ``key.encode("utf-8")``: a ``str``
  subclass whose ``encode`` returns raw bytes (:class:`RawHeaderKey`) puts any bytes on the
  wire (the broker does not check them). Its codec is gzip unless ``none`` (kafka-python's
  other codecs need libraries not installed here).
* Every other record goes through librdkafka (confluent_kafka): every codec (gzip, snappy,
  lz4, zstd) and any record timestamp, negative ones included.

:func:`send_records` returns each record's ``(partition, offset)``, or the broker's
refusal, so a test knows exactly what entered the topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, Producer
from kafka import KafkaProducer
from kafka.errors import KafkaError as PyKafkaError

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # past the broker's limit: the broker must refuse


class RawHeaderKey(str):
    """A header key that kafka-python writes as the given bytes, valid UTF-8 or not."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawHeaderKey:
        key = super().__new__(cls, raw.decode("utf-8", "replace"))
        key.raw = raw
        return key

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


@dataclass(frozen=True)
class RawRecord:
    """One record to send; header keys are bytes, written as they are."""

    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[bytes, bytes | None]] = ()
    timestamp_ms: int | None = None  # None: the producer's clock
    codec: str = "none"


@dataclass
class Sent:
    """Where a record landed, or why the broker refused it."""

    partition: int = -1
    offset: int = -1
    refused: str | None = None


def send_records(bootstrap: str, topic: str, records: Sequence[RawRecord]) -> list[Sent]:
    """Send every record (each through the client that can) and wait for every answer."""
    sender = RecordSender(bootstrap)
    try:
        return sender.send(topic, records)
    finally:
        sender.close()


class RecordSender:
    """The producers :func:`send_records` needs, made when first needed and kept, so a long
    run pays their connection set-up once."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._python: dict[str, KafkaProducer] = {}  # none / gzip
        self._rdkafka: dict[str, Producer] = {}  # by codec

    def send(self, topic: str, records: Sequence[RawRecord]) -> list[Sent]:
        sent = [Sent() for _ in records]
        futures = []
        for index, record in enumerate(records):
            if all(_is_utf8(k) for k, _ in record.headers):
                _send_librdkafka(self._rdkafka, self._bootstrap, topic, record, sent[index])
                continue
            codec = "none" if record.codec == "none" else "gzip"
            if codec not in self._python:
                self._python[codec] = KafkaProducer(
                    bootstrap_servers=self._bootstrap,
                    acks="all",
                    linger_ms=5,
                    max_request_size=MAX_REQUEST_BYTES,
                    compression_type=None if codec == "none" else "gzip",
                )
            future = self._python[codec].send(
                topic,
                key=record.key,
                value=record.value,
                headers=[(RawHeaderKey(k), v) for k, v in record.headers],
                timestamp_ms=record.timestamp_ms,
            )
            futures.append((index, future))
        for producer in self._python.values():
            producer.flush()
        for index, future in futures:
            try:
                metadata = future.get(timeout=60)
                sent[index].partition, sent[index].offset = metadata.partition, metadata.offset
            except PyKafkaError as exc:
                sent[index].refused = type(exc).__name__
        for librdkafka in self._rdkafka.values():
            if librdkafka.flush(60):
                raise TimeoutError("librdkafka producer did not finish within 60 s")
        return sent

    def close(self) -> None:
        for producer in self._python.values():
            producer.close()
        for librdkafka in self._rdkafka.values():
            librdkafka.close()
        self._python, self._rdkafka = {}, {}


def _send_librdkafka(
    rdkafka: dict[str, Producer], bootstrap: str, topic: str, record: RawRecord, sent: Sent
) -> None:
    producer = rdkafka.get(record.codec)
    if producer is None:
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": record.codec,
                "message.max.bytes": MAX_REQUEST_BYTES,
            }
        )
        rdkafka[record.codec] = producer

    def delivered(error: KafkaError | None, message: object) -> None:
        if error is not None:
            sent.refused = error.name()
        else:
            sent.partition = message.partition()  # type: ignore[attr-defined]
            sent.offset = message.offset()  # type: ignore[attr-defined]

    headers = [(k.decode("utf-8"), v) for k, v in record.headers]
    try:
        producer.produce(
            topic,
            key=record.key,
            value=record.value,
            headers=headers,  # type: ignore[arg-type]
            timestamp=record.timestamp_ms or 0,
            on_delivery=delivered,
        )
    except BufferError:
        producer.flush(60)
        producer.produce(
            topic,
            key=record.key,
            value=record.value,
            headers=headers,  # type: ignore[arg-type]
            timestamp=record.timestamp_ms or 0,
            on_delivery=delivered,
        )
    except Exception as exc:  # refused locally (e.g. larger than any request may be)
        sent.refused = type(exc).__name__
    producer.poll(0)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
