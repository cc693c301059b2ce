"""The local Kafka node the suite and local runs depend on, tested against itself."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from stream.errors import BrokerError
from stream.local_broker import broker as broker_module
from stream.local_broker.broker import LocalKafkaBroker, free_ports
from stream.local_broker.jars import ensure_kafka_jars

_LARGE_PAYLOAD_BYTES = 3 * 1024 * 1024  # above Kafka's 1 MiB default, below our 8 MiB limit


def _produce_acked(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=8388608)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()


def _read(
    bootstrap: str, topic: str, count: int, timeout_s: float = 30.0
) -> list[tuple[bytes, bytes]]:
    """Read ``count`` records of partition 0 from the start, without a consumer group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        records: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend((r.key, r.value) for r in batch)
        return records
    finally:
        consumer.close()


def _cluster_id(bootstrap: str) -> str:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return str(admin.describe_cluster()["cluster_id"])
    finally:
        admin.close()


@pytest.mark.integration
def test_records_round_trip_including_multi_megabyte_payloads(
    kafka_broker: LocalKafkaBroker, topic_factory
) -> None:
    topic = topic_factory("round-trip")
    sent = [(b"user-1", b"item-7"), (b"user-2", bytes(range(256)) * (_LARGE_PAYLOAD_BYTES // 256))]

    _produce_acked(kafka_broker.bootstrap_servers, topic, sent)

    assert _read(kafka_broker.bootstrap_servers, topic, len(sent)) == sent


@pytest.mark.integration
def test_create_topics_tolerates_existing_topics(
    kafka_broker: LocalKafkaBroker, topic_factory
) -> None:
    topic = topic_factory("existing", partitions=3)

    kafka_broker.create_topics({topic: 3})  # must not raise

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    assert len(described["partitions"]) == 3


@pytest.mark.integration
def test_acked_record_survives_kill_and_restart(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(tmp_path / "kafka")
    try:
        broker.start()
        bootstrap, cluster_id = broker.bootstrap_servers, _cluster_id(broker.bootstrap_servers)
        broker.create_topics({"durable": 1})
        _produce_acked(bootstrap, "durable", [(b"k", b"acked before the crash")])

        broker.kill()
        assert not broker.is_running()
        assert broker.pid is None

        broker.start()
        assert broker.bootstrap_servers == bootstrap
        assert _cluster_id(bootstrap) == cluster_id
        assert _read(bootstrap, "durable", 1) == [(b"k", b"acked before the crash")]
    finally:
        broker.stop()
    assert not broker.is_running()


@pytest.mark.integration
def test_start_fails_with_the_broker_log_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        broker = LocalKafkaBroker(tmp_path / "kafka", port=squatter.getsockname()[1])
        with pytest.raises(BrokerError, match="before it was ready") as failure:
            broker.start(timeout_s=60)
    assert broker.log_tail() in str(failure.value)
    assert not broker.is_running()


@pytest.mark.integration
def test_ensure_kafka_jars_resolves_once_then_stays_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    libs = ensure_kafka_jars(tmp_path / "libs")
    assert (libs / "kafka_2.13-3.9.1.jar").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["libs"]  # no staging dir left behind

    def no_tools(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached jar folder must not run mvn or look it up")

    monkeypatch.setattr(subprocess, "run", no_tools)
    monkeypatch.setattr(shutil, "which", no_tools)
    assert ensure_kafka_jars(tmp_path / "libs") == libs


def test_ensure_kafka_jars_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "notes.txt").write_text("not a jar cache")

    with pytest.raises(BrokerError, match=r"no .* marker"):
        ensure_kafka_jars(tmp_path / "libs")


@pytest.mark.parametrize(
    ("port", "controller_port"), [(0, None), (65536, None), (None, -1), (29092, 29092)]
)
def test_bad_ports_are_rejected(
    tmp_path: Path, port: int | None, controller_port: int | None
) -> None:
    with pytest.raises(ValueError, match="port"):
        LocalKafkaBroker(tmp_path, port=port, controller_port=controller_port)


def test_bad_partition_counts_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'events'.*0"):
        LocalKafkaBroker(tmp_path).create_topics({"events": 0})


def test_only_loopback_listeners_are_configured(tmp_path: Path) -> None:
    properties = LocalKafkaBroker(tmp_path).server_properties()

    for key in ("listeners", "advertised.listeners", "controller.quorum.voters"):
        hosts = [
            entry.split("//")[-1].split("@")[-1].rsplit(":", 1)[0]
            for entry in properties[key].split(",")
        ]
        assert set(hosts) == {"127.0.0.1"}, key


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A listener restarted on its port must not find it taken by a client's local end."""
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("20000\t31000\n")  # leaves 31001-32767 of LISTEN_PORTS
    monkeypatch.setattr(broker_module, "EPHEMERAL_RANGE_FILE", ranges)
    ports = free_ports(40)
    assert len(set(ports)) == 40
    assert all(31_000 < p < 32_768 for p in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    ranges.write_text("1024 65535\n")  # nothing outside it: the kernel chooses
    assert len(set(free_ports(3))) == 3
    monkeypatch.setattr(broker_module, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    assert len(set(free_ports(3))) == 3
