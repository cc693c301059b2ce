"""Every Kafka client streamgnn uses is built here, from the ``kafka`` settings.

Three client libraries, one per job: aiokafka for the worker's ingest loop (consumer and
dead-letter producer), confluent-kafka (librdkafka) for the embedding publisher, and
kafka-python for the producer command, the embedding readers and the admin calls. Every
builder starts from the connection settings all clients share (the brokers today; TLS
and SASL are to be added in :func:`_common`, in each library's dialect), so no call site
can forget them; call sites add only what is specific to their job.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Producer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from stream.settings import KafkaSettings


def _common(kafka: KafkaSettings) -> dict[str, Any]:
    """What every kafka-python and aiokafka client is given (they share one dialect)."""
    return {"bootstrap_servers": kafka.bootstrap_servers}


def _common_librdkafka(kafka: KafkaSettings) -> dict[str, Any]:
    """:func:`_common` in librdkafka's dotted dialect."""
    return {"bootstrap.servers": kafka.bootstrap_servers}


def aiokafka_consumer(kafka: KafkaSettings, **options: Any) -> AIOKafkaConsumer:
    """The ingest loop's consumer (asyncio)."""
    return AIOKafkaConsumer(**_common(kafka), **options)


def aiokafka_producer(kafka: KafkaSettings, **options: Any) -> AIOKafkaProducer:
    """The ingest loop's dead-letter producer (asyncio)."""
    return AIOKafkaProducer(**_common(kafka), **options)


def confluent_producer(kafka: KafkaSettings, config: dict[str, Any]) -> Producer:
    """A librdkafka producer (the embedding publisher: thousands of records per step)."""
    return Producer({**_common_librdkafka(kafka), **config})


def kafka_producer(kafka: KafkaSettings, **options: Any) -> KafkaProducer:
    """A kafka-python producer (``streamgnn produce``)."""
    return KafkaProducer(**_common(kafka), **options)


def kafka_consumer(kafka: KafkaSettings, **options: Any) -> KafkaConsumer:
    """A kafka-python consumer (the embedding table, the version scan)."""
    return KafkaConsumer(**_common(kafka), **options)


def kafka_admin(kafka: KafkaSettings, **options: Any) -> KafkaAdminClient:
    """A kafka-python admin client (topic creation and checks)."""
    return KafkaAdminClient(**_common(kafka), **options)
