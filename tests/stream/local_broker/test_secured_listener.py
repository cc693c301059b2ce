"""The local node's SASL_SSL listener: SCRAM users from Kafka's own tooling, TLS, mTLS."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from stream.errors import KafkaAccessError
from stream.kafka.access import check_access_blocking
from stream.kafka.clients import confluent_consumer, confluent_producer, kafka_consumer
from stream.local_broker.broker import LocalKafkaBroker
from stream.local_broker.secured import SecuredListener
from stream.settings import KafkaSettings, Secret, SecuritySettings
from tests.harness.secured_cluster import SecuredCluster, start_secured_broker
from tests.harness.tls import make_pki


def _topic(cluster: SecuredCluster) -> str:
    name = f"secured-{uuid.uuid4().hex[:12]}"
    cluster.broker.create_topics({name: 1})  # through the PLAINTEXT listener
    return name


def _produce(kafka: KafkaSettings, topic: str) -> set[bytes]:
    """Records through the producer the product builds (librdkafka, every producer's)."""
    producer = confluent_producer(kafka, {})
    sent = {b"one", b"two"}
    for value in sent:
        producer.produce(topic, value)
    assert producer.flush(30) == 0, "confluent-kafka did not deliver"
    return sent


def _read_with_kafka_python(kafka: KafkaSettings, topic: str, count: int) -> set[bytes]:
    """Read as the embedding readers do (kafka-python, built by the same builder)."""
    consumer = kafka_consumer(kafka, auto_offset_reset="earliest", consumer_timeout_ms=30_000)
    consumer.subscribe([topic])
    try:
        values: set[bytes] = set()
        for record in consumer:
            values.add(record.value)
            if len(values) >= count:
                break
        return values
    finally:
        consumer.close()


def _read_with_librdkafka(kafka: KafkaSettings, topic: str, count: int) -> set[bytes]:
    """Read as the worker's ingest consumer does (librdkafka, built by the same builder)."""
    consumer = confluent_consumer(
        kafka,
        {
            "group.id": f"read-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        },
    )
    consumer.subscribe([topic])
    try:
        values: set[bytes] = set()
        deadline = time.monotonic() + 30
        while len(values) < count and time.monotonic() < deadline:
            for message in consumer.consume(10, 0.5):
                if message.error() is None and message.value() is not None:
                    values.add(message.value())
        return values
    finally:
        consumer.close()


@pytest.mark.integration
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_the_scram_user_from_format_time_works_with_every_client_library(
    secured_cluster: SecuredCluster, mechanism: str
) -> None:
    kafka, topic = secured_cluster.kafka(mechanism), _topic(secured_cluster)
    check_access_blocking(kafka)
    sent = _produce(kafka, topic)
    assert _read_with_librdkafka(kafka, topic, len(sent)) == sent
    assert _read_with_kafka_python(kafka, topic, len(sent)) == sent


@pytest.mark.integration
@pytest.mark.parametrize(
    ("username", "password"), [("right", "wrong-password"), ("nobody", "any-password")]
)
def test_a_refused_login_is_an_authentication_error_at_once(
    secured_cluster: SecuredCluster, username: str, password: str
) -> None:
    security = SecuritySettings(
        "SASL_SSL",
        "SCRAM-SHA-256",
        secured_cluster.username if username == "right" else username,
        Secret(password),
        ssl_cafile=secured_cluster.tls.ca_file,
    )
    started = time.monotonic()
    with pytest.raises(KafkaAccessError, match="authentication failed") as caught:
        check_access_blocking(
            KafkaSettings(secured_cluster.bootstrap_servers, security=security), timeout_s=10
        )
    assert time.monotonic() - started < 10, "the refusal must not wait out a timeout"
    assert password not in str(caught.value)


@pytest.mark.integration
def test_a_broker_certificate_from_another_ca_is_a_tls_error(
    secured_cluster: SecuredCluster, tmp_path: Path
) -> None:
    stranger = make_pki(tmp_path / "other-ca")
    security = SecuritySettings(
        "SASL_SSL",
        "SCRAM-SHA-256",
        secured_cluster.username,
        Secret(secured_cluster.password),
        ssl_cafile=stranger.ca_file,
    )
    with pytest.raises(KafkaAccessError, match="certificate was not verified"):
        check_access_blocking(
            KafkaSettings(secured_cluster.bootstrap_servers, security=security), timeout_s=10
        )


@pytest.mark.integration
def test_a_user_added_through_the_admin_api_can_log_in(secured_cluster: SecuredCluster) -> None:
    admin = AdminClient({"bootstrap.servers": secured_cluster.broker.bootstrap_servers})
    password = uuid.uuid4().hex
    upsert = UserScramCredentialUpsertion(
        "late-user", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode()
    )
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=30)
    security = SecuritySettings(
        "SASL_SSL",
        "SCRAM-SHA-512",
        "late-user",
        Secret(password),
        ssl_cafile=secured_cluster.tls.ca_file,
    )
    deadline = time.monotonic() + 30
    while True:  # the credential reaches the listener once the broker applies the record
        try:
            check_access_blocking(
                KafkaSettings(secured_cluster.bootstrap_servers, security=security), timeout_s=10
            )
            break
        except KafkaAccessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.integration
def test_format_secrets_stay_out_of_argv_and_other_users_reach(
    secured_cluster: SecuredCluster,
) -> None:
    data_dir = secured_cluster.broker.data_dir
    assert not list(data_dir.glob(".format-*.args")), "the storage tool's argfile is left behind"
    assert (data_dir / "server.properties").stat().st_mode & 0o077 == 0
    pid = secured_cluster.broker.pid
    assert pid is not None
    argv = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert secured_cluster.password.encode() not in argv
    assert secured_cluster.tls.store_password.encode() not in argv


@pytest.mark.integration
def test_an_mtls_listener_refuses_clients_without_a_certificate(tmp_path: Path) -> None:
    cluster = start_secured_broker(
        tmp_path, client_auth="required", client_key_password="client-key-pw"
    )
    try:
        with pytest.raises(KafkaAccessError, match="client certificate"):
            check_access_blocking(cluster.kafka(), timeout_s=10)
        kafka = cluster.kafka(client_certificate=True)
        check_access_blocking(kafka, timeout_s=10)
        topic = _topic(cluster)
        sent = _produce(kafka, topic)
        assert _read_with_librdkafka(kafka, topic, len(sent)) == sent
        assert _read_with_kafka_python(kafka, topic, len(sent)) == sent
    finally:
        cluster.broker.stop()


def test_secured_listener_settings_are_validated(tmp_path: Path) -> None:
    keystore = tmp_path / "ks.p12"
    with pytest.raises(ValueError, match="needs a truststore"):
        SecuredListener(keystore, "pw", client_auth="required")
    with pytest.raises(ValueError, match="client_auth must be one of"):
        SecuredListener(keystore, "pw", client_auth="always")
    with pytest.raises(ValueError, match="the password of SCRAM user 'a'"):
        SecuredListener(keystore, "pw", scram_users={"a": "has,comma"})
    with pytest.raises(ValueError, match="need sasl=True"):
        SecuredListener(keystore, "pw", sasl=False, scram_users={"a": "b"})
    listener = SecuredListener(keystore, "store-pw", scram_users={"a": "user-pw"})
    assert "store-pw" not in repr(listener) and "user-pw" not in repr(listener)


def test_the_secured_listener_joins_the_node_configuration(tmp_path: Path) -> None:
    listener = SecuredListener(tmp_path / "ks.p12", "pw", scram_users={"a": "b"})
    broker = LocalKafkaBroker(tmp_path, secured=listener)
    properties = broker.server_properties()
    address = broker.secured_servers
    assert f"SASL_SSL://{address}" in properties["listeners"].split(",")
    assert f"SASL_SSL://{address}" in properties["advertised.listeners"].split(",")
    assert "SASL_SSL:SASL_SSL" in properties["listener.security.protocol.map"].split(",")
    assert properties["inter.broker.listener.name"] == "PLAINTEXT"
    mechanisms = properties["listener.name.sasl_ssl.sasl.enabled.mechanisms"].split(",")
    assert mechanisms == ["SCRAM-SHA-256", "SCRAM-SHA-512"]
    for mechanism in mechanisms:
        assert (
            "ScramLoginModule"
            in properties[f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config"]
        )
    assert len({broker.port, broker.controller_port, int(address.rpartition(":")[2])}) == 3
