"""Partitions added to the interactions topic under a running worker are consumed, and
their lag reported, within the clients' metadata refresh
(:data:`stream.ingest.source.METADATA_REFRESH_MS`), not librdkafka's default five minutes.

Before, a worker took up the new partitions only at its next five-minute metadata refresh,
and its lag gauge stopped for every partition: the client asking for watermarks did not
know the new ones and each refresh failed on the first of them."""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from kafka.admin import NewPartitions

from stream.kafka.clients import kafka_admin
from stream.local_broker.broker import LocalKafkaBroker
from stream.settings import KafkaSettings, changelog_topic
from tests.harness.faults import CrashReport, count_applications, prepare_topic, produce
from tests.harness.progress import StoreCompletion
from tests.harness.worker_process import WorkerProcess, wait_for, worker_env

pytestmark = pytest.mark.integration

PER_PARTITION = 1_000
# The refresh, a rebalance (the group's session timeout at most) and the catch-up, with
# room; well under librdkafka's five minutes.
TAKEN_UP_S = 90


def _lag_reported(metrics_address: str, partition: int) -> bool:
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=2.0) as response:
        text = response.read().decode()
    return f'streamgnn_consumer_lag{{partition="{partition}"}} 0.0' in text.splitlines()


def test_a_partition_added_under_the_worker_is_consumed_and_its_lag_reported(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = prepare_topic(kafka_broker, PER_PARTITION, partitions=1)
    store = tmp_path / "graph"
    env = worker_env(bootstrap, topic, f"g-{topic}", store, 250)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        wait_for(StoreCompletion(store, topic, PER_PARTITION), 120, "partition 0")
        _grow(bootstrap, topic, 2)
        produce(bootstrap, topic, PER_PARTITION, first=PER_PARTITION, partition=1)
        wait_for(StoreCompletion(store, topic, 2 * PER_PARTITION), TAKEN_UP_S, "partition 1")
        address = env["STREAMGNN_METRICS_ADDRESS"]
        wait_for(lambda: _lag_reported(address, 1), TAKEN_UP_S, "partition 1's lag gauge")
        assert _lag_reported(address, 0)
        assert worker.terminate(60) == 0
    finally:
        if worker.exit_status() is None:
            worker.kill()
    report = CrashReport("grown", sent=2 * PER_PARTITION)
    count_applications(store, topic, report)
    assert (report.lost, report.duplicated, report.applied) == (0, 0, 2 * PER_PARTITION)


def _grow(bootstrap: str, topic: str, partitions: int) -> None:
    admin = kafka_admin(KafkaSettings(bootstrap), client_id="test-grow")
    try:
        admin.create_partitions({topic: NewPartitions(total_count=partitions)})
    finally:
        admin.close()


def test_partitions_added_to_a_changelog_workers_topic_grow_its_changelog(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    """With ``--changelog`` a partition added under the worker, and one added while it was
    down, get changelog partitions of their own, so their state is logged and restored.
    Before, the running worker's restore of a new partition waited on a changelog
    partition that did not exist (its events unread) until it died 60 s later, and every
    start after was refused ("changelog ... has 1 partitions, ... has 2").

    The restart comes back within the session timeout, as a static member
    (``--instance-id``): the coordinator hands it its previous run's assignment without a
    rebalance, so before, the partition added while it was down stayed unread (90 s of
    the test's wait, with or without the changelog); now the start waits for the previous
    run to go."""
    bootstrap = kafka_broker.bootstrap_servers
    topic = prepare_topic(kafka_broker, PER_PARTITION, partitions=1)
    store = tmp_path / "graph"
    env = {**worker_env(bootstrap, topic, f"g-{topic}", store, 250), "STREAMGNN_CHANGELOG": "true"}

    def run(name: str, events: int, then: Callable[[], None] = lambda: None) -> None:
        worker = WorkerProcess(env, tmp_path / f"{name}.log")
        worker.start()
        try:
            then()
            wait_for(StoreCompletion(store, topic, events), TAKEN_UP_S, name)
            assert worker.terminate(60) == 0
        finally:
            if worker.exit_status() is None:
                worker.kill()

    def grow_under_the_worker() -> None:
        wait_for(StoreCompletion(store, topic, PER_PARTITION), 120, "partition 0")
        _grow(bootstrap, topic, 2)
        produce(bootstrap, topic, PER_PARTITION, first=PER_PARTITION, partition=1)

    run("grown-running", 2 * PER_PARTITION, grow_under_the_worker)
    _grow(bootstrap, topic, 3)
    produce(bootstrap, topic, PER_PARTITION, first=2 * PER_PARTITION, partition=2)
    run("grown-stopped", 3 * PER_PARTITION)
    shutil.rmtree(store)  # the store lost: everything comes back from the changelog
    run("restored", 3 * PER_PARTITION)
    restored = (tmp_path / "restored.log").read_text()
    for partition in range(3):  # from the changelog, not read again from the topic
        assert f"partition {topic}[{partition}]: restored " in restored
        assert f"partition {topic}[{partition}]: restored 0 live" not in restored
    changelog = changelog_topic(topic, f"g-{topic}")
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(changelog, timeout=10)
    assert len(metadata.topics[changelog].partitions) == 3
    report = CrashReport("grown", sent=3 * PER_PARTITION)
    count_applications(store, topic, report)
    assert (report.lost, report.duplicated, report.applied) == (0, 0, 3 * PER_PARTITION)
