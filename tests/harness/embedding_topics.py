"""Test helpers for the embedding topics: unique settings, reading a topic to its end, and a
topic deleted (or deleted and created again) under a worker."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from kafka import TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from stream.kafka.clients import kafka_admin, kafka_consumer
from stream.settings import KafkaSettings, PublishSettings


def unique_settings(ledger_dir: Path, **overrides: Any) -> PublishSettings:
    """Fresh topic names (the app creates them) and a ledger under ``ledger_dir``."""
    tag = uuid.uuid4().hex[:12]
    values: dict[str, Any] = {
        "user_topic": f"user-embeddings-{tag}",
        "item_topic": f"item-embeddings-{tag}",
        "ledger_path": ledger_dir / "versions.json",
        "flush_timeout_s": 30.0,
    }
    values.update(overrides)
    return PublishSettings(**values)


def read_topic(
    bootstrap_servers: str | KafkaSettings, topic: str, timeout_s: float = 30.0
) -> list[Any]:
    """Every record of ``topic`` from the beginning to its end as of now, in log order
    per partition (partitions one after another). ``bootstrap_servers``: an address, or
    the settings of a secured cluster."""
    consumer = kafka_consumer(_kafka(bootstrap_servers), group_id=None)
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        by_partition: dict[int, list[Any]] = {tp.partition: [] for tp in partitions}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end in {timeout_s}s")
            for tp, records in consumer.poll(timeout_ms=500).items():
                by_partition[tp.partition].extend(records)
        return [r for p in sorted(by_partition) for r in by_partition[p]]
    finally:
        consumer.close()


def end_offsets(bootstrap_servers: str | KafkaSettings, topic: str) -> dict[int, int]:
    consumer = kafka_consumer(_kafka(bootstrap_servers), group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return {tp.partition: end for tp, end in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def delete_topic(bootstrap: str, topic: str, create_again: NewTopic | None = None) -> None:
    """Delete ``topic`` and wait until the broker no longer lists it; then, with
    ``create_again``, create that topic (same name: a new topic id, an empty log)."""
    admin = kafka_admin(KafkaSettings(bootstrap), client_id="test-delete-topic")
    try:
        admin.delete_topics([topic])
        deadline = time.monotonic() + 60
        while topic in admin.list_topics():
            assert time.monotonic() < deadline, f"{topic} still listed a minute after deletion"
            time.sleep(0.2)
        while create_again is not None:  # the broker may still be removing the old logs
            try:
                admin.create_topics([create_again])
                return
            except TopicAlreadyExistsError:
                assert time.monotonic() < deadline, f"{topic} could not be created again"
                time.sleep(0.2)
    finally:
        admin.close()


def _kafka(bootstrap_servers: str | KafkaSettings) -> KafkaSettings:
    if isinstance(bootstrap_servers, KafkaSettings):
        return bootstrap_servers
    return KafkaSettings(bootstrap_servers)
