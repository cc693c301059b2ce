"""Every Kafka client streamgnn uses is built here, from the ``kafka`` settings.

Three client libraries, one per job: confluent-kafka (librdkafka) for every producer (the
producer command, the embedding publisher, the dead-letter producer) and the worker's ingest
(consumer and the DLQ check: every codec, and a record it cannot decode is handed over, not
raised in the fetch, see :mod:`stream.ingest.source`); kafka-python for the embedding readers
and the admin calls; aiokafka for the access check's one-broker probe only. Every
builder starts from the connection settings all clients share: the brokers and
``kafka.security`` (TLS, SASL) in the library's dialect (:mod:`stream.kafka.security`),
so no call site can forget them; call sites add only what is specific to their job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from aiokafka.conn import AIOKafkaConnection, create_conn
from confluent_kafka import Consumer, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient, KafkaConsumer

from stream.errors import RebalanceError
from stream.kafka.failure import kafka_error
from stream.kafka.security import aiokafka_options, confluent_options, kafka_python_options
from stream.settings import KafkaSettings


def _common(kafka: KafkaSettings) -> dict[str, Any]:
    """What every kafka-python client is given."""
    return {"bootstrap_servers": kafka.bootstrap_servers, **kafka_python_options(kafka.security)}


def _common_librdkafka(kafka: KafkaSettings) -> dict[str, Any]:
    """:func:`_common` in librdkafka's dotted dialect."""
    return {"bootstrap.servers": kafka.bootstrap_servers, **confluent_options(kafka.security)}


def confluent_consumer(kafka: KafkaSettings, config: dict[str, Any]) -> Consumer:
    """A librdkafka consumer (the ingest consumer and its watermark queries)."""
    return Consumer({**_common_librdkafka(kafka), **config})


def confluent_producer(kafka: KafkaSettings, config: dict[str, Any]) -> Producer:
    """A librdkafka producer (``streamgnn produce``; the embedding publisher: thousands of
    records per step; the dead-letter producer)."""
    return Producer({**_common_librdkafka(kafka), **config})


def confluent_admin(kafka: KafkaSettings, config: dict[str, Any]) -> AdminClient:
    """A librdkafka admin client (the DLQ's check or creation at start-up)."""
    return AdminClient({**_common_librdkafka(kafka), **config})


def kafka_consumer(kafka: KafkaSettings, **options: Any) -> KafkaConsumer:
    """A kafka-python consumer (the embedding table, the version scan, the restart catch-up)."""
    return KafkaConsumer(**_common(kafka), **options)


def kafka_admin(kafka: KafkaSettings, **options: Any) -> KafkaAdminClient:
    """A kafka-python admin client (topic creation and checks)."""
    return KafkaAdminClient(**_common(kafka), **options)


async def aiokafka_connection(
    kafka: KafkaSettings, host: str, port: int, **options: Any
) -> AIOKafkaConnection:
    """One connected, logged-in connection to one broker (the access check's probe)."""
    common = aiokafka_options(kafka.security)
    return await create_conn(host, port, **common, **options)


def fetch_available(
    consumer: Consumer, max_records: int, timeout_s: float, linger_s: float = 0.0
) -> list[Message]:
    """Up to ``max_records`` messages: waits up to ``timeout_s`` for the first, then up to
    ``linger_s`` for more (0: takes what the client has fetched already, without waiting).

    librdkafka's ``consume(n, timeout)`` returns only once it holds ``n`` messages or the
    timeout passed: below ``n`` records per timeout (2,000 events/s against 5,000 per
    0.5 s) every record would wait out the timeout. Under load the batches still grow:
    records queue up in the client while the last batch is handled. A short linger makes
    them grow where handling a batch is quick (the ingest loop: see
    ``KafkaSettings.batch_linger_ms``)."""
    messages: list[Message] = consumer.consume(1, timeout_s)
    if messages and max_records > 1:
        messages.extend(consumer.consume(max_records - 1, linger_s))
    return messages


@contextlib.contextmanager
def rebalance_callback(doing: str) -> Iterator[None]:
    """Around a rebalance callback's body: a Kafka client error raised in it leaves as
    :class:`~stream.errors.RebalanceError`. confluent-kafka (2.16) hands a client call's
    KafkaException that escapes a callback to ``poll``'s caller as a bare KafkaError, no
    BaseException: nothing can catch it, and a ``poll`` in an executor thread ends that
    thread and leaves its future, and the worker awaiting it, waiting for ever."""
    try:
        yield
    except KafkaException as exc:
        raise RebalanceError(f"{doing}: {kafka_error(exc).str()}") from exc
