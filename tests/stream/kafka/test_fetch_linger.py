"""fetch_available against the real broker: after the first record it waits up to its
linger for more (ingest's ``batch_linger_ms``), and without one takes only what is there."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from stream.kafka.clients import confluent_consumer, confluent_producer, fetch_available
from stream.local_broker.broker import LocalKafkaBroker
from stream.settings import KafkaSettings

pytestmark = pytest.mark.integration

LATE_S = 3.0  # the second record is sent this long after the fetch starts


def _fetch_with_a_late_second_record(broker: LocalKafkaBroker, linger_s: float) -> list[bytes]:
    topic = f"linger-{uuid.uuid4().hex[:8]}"
    broker.create_topics({topic: 1})
    kafka = KafkaSettings(broker.bootstrap_servers)
    producer = confluent_producer(kafka, {"acks": "all"})
    producer.produce(topic, value=b"first")
    producer.flush(10)
    consumer = confluent_consumer(kafka, {"group.id": f"g-{topic}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])

    def late() -> None:
        time.sleep(LATE_S)
        producer.produce(topic, value=b"second")
        producer.flush(10)

    sender = threading.Thread(target=late)
    sender.start()
    try:
        # at most 2: with a linger the fetch returns once the second is in, not at its end
        return [m.value() for m in fetch_available(consumer, 2, 30.0, linger_s)]
    finally:
        sender.join()
        consumer.close()


def test_a_linger_waits_for_records_that_arrive_within_it(kafka_broker: LocalKafkaBroker) -> None:
    assert _fetch_with_a_late_second_record(kafka_broker, LATE_S + 10.0) == [b"first", b"second"]


def test_without_a_linger_only_what_is_there_is_taken(kafka_broker: LocalKafkaBroker) -> None:
    assert _fetch_with_a_late_second_record(kafka_broker, 0.0) == [b"first"]
