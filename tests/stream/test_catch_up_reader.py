"""Reading untrained spans back from the real broker: exactly the spans, in offset order,
rejected records skipped, a repeated event_id once; what retention deleted is reported as
missed, never raised; a stop ends the read early and says it is incomplete."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from stream.catch_up import UntrainedEvents
from stream.local_broker.broker import LocalKafkaBroker
from stream.settings import load_settings

pytestmark = pytest.mark.integration

TS = 1_700_000_000_000


def fill(bootstrap: str, topic: str, partition: int, count: int) -> None:
    """``count`` records: every 10th is not JSON, events ``k`` and ``k + 1`` share an id
    when ``k % 10 == 4``."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for k in range(count):
        eid = f"e{k - 1}" if k % 10 == 5 else f"e{k}"
        user = f"p{partition}u{k}"
        body = {"user_id": user, "item_id": "i", "event_type": "click", "ts": TS + k}
        value = b"{not json" if k % 10 == 9 else json.dumps(body | {"event_id": eid}).encode()
        producer.send(topic, key=user.encode(), value=value, partition=partition)
    producer.flush()
    producer.close()


def reader(
    broker: LocalKafkaBroker, topic: str, spans: dict[int, tuple[int, int]]
) -> UntrainedEvents:
    env = {"STREAMGNN_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
    settings = load_settings({"kafka.interactions_topic": topic}, env)
    return UntrainedEvents(settings, spans, stall_s=10.0)


def test_spans_are_read_back_as_ingest_applied_them(
    kafka_broker: LocalKafkaBroker, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("catch-up", partitions=2)
    fill(kafka_broker.bootstrap_servers, topic, 0, 100)
    fill(kafka_broker.bootstrap_servers, topic, 1, 100)
    spans = {0: (20, 60), 1: (0, 100)}
    source = reader(kafka_broker, topic, spans)
    chunks = list(source.chunks(25, threading.Event()))
    assert source.complete and source.missed == {}
    assert all(len(c.interactions) <= 25 for c in chunks)
    got = [e.user_id for c in chunks for e in c.interactions]
    kept = {p: [k for k in range(a, b) if k % 10 not in (5, 9)] for p, (a, b) in spans.items()}
    for p, ks in kept.items():  # each partition's events, once each, in offset order
        assert [int(u.partition("u")[2]) for u in got if u.startswith(f"p{p}u")] == ks
    assert len(got) == sum(map(len, kept.values()))
    assert {p: max(c.positions.get(p, 0) for c in chunks) for p in (0, 1)} == {0: 60, 1: 100}


def test_what_retention_deleted_is_reported_missed(
    kafka_broker: LocalKafkaBroker, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("catch-up-retention")
    fill(kafka_broker.bootstrap_servers, topic, 0, 50)
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        admin.delete_records({TopicPartition(topic, 0): 30})
    finally:
        admin.close()
    source = reader(kafka_broker, topic, {0: (10, 50)})
    got = [e.user_id for c in source.chunks(1_000, threading.Event()) for e in c.interactions]
    assert source.complete and source.missed == {0: (10, 30)}
    assert got == [f"p0u{k}" for k in range(30, 50) if k % 10 not in (5, 9)]


def test_a_stop_ends_the_read_incomplete(
    kafka_broker: LocalKafkaBroker, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("catch-up-stop")
    fill(kafka_broker.bootstrap_servers, topic, 0, 200)
    stop = threading.Event()
    source = reader(kafka_broker, topic, {0: (0, 200)})
    for _chunk in source.chunks(10, stop):
        stop.set()
    assert not source.complete and source.missed == {}
