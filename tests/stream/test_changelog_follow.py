"""``streamgnn train``'s changelog reader and a changelog deleted and created again (the
ingest worker writes it again from its store): the reader reads the new log from its
beginning and says which partitions began again, and the trainer then trains on every
record of it, while it runs or when it starts from a checkpoint of the old one. Before,
the reader jumped to the new log's end (librdkafka's default reset) and a trainer that
resumed took the old log's offsets as trained through."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Producer
from kafka.admin import NewPartitions, NewTopic

from stream.ingest import changelog_follow
from stream.ingest.changelog_follow import ChangelogFollower, ChangelogRecord
from stream.kafka.clients import kafka_admin
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.settings import KafkaSettings, Settings, changelog_topic
from stream.train import ChangelogTraining
from tests.harness.embedding_topics import delete_topic

pytestmark = pytest.mark.integration


def _write(bootstrap: str, topic: str, keys: range, partition: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for n in keys:
        producer.produce(topic, key=b"k%d" % n, value=b"v%d" % n, partition=partition)
    assert producer.flush(30) == 0


def _read(follower: ChangelogFollower, count: int) -> list[ChangelogRecord]:
    records: list[ChangelogRecord] = []
    deadline = time.monotonic() + 60
    while len(records) < count:
        assert time.monotonic() < deadline, f"read {len(records)} of {count} records in 60 s"
        records += follower.poll(1_000, 0.2)
    return records


def _changelog(broker: LocalKafkaBroker, topic_factory, prefix: str) -> tuple[KafkaSettings, str]:
    """An ingest group's settings and its one-partition changelog, made here."""
    source = topic_factory(prefix)
    group = f"g-{source}"
    topic = changelog_topic(source, group)
    broker.create_topics({topic: 1}, {"cleanup.policy": "compact"})
    bootstrap = broker.bootstrap_servers
    return KafkaSettings(
        bootstrap_servers=bootstrap, interactions_topic=source, group_id=group
    ), topic


def test_a_changelog_created_again_is_read_from_its_beginning_and_said_so(
    kafka_broker: LocalKafkaBroker, topic_factory
) -> None:
    kafka, topic = _changelog(kafka_broker, topic_factory, "follow-again")
    bootstrap = kafka.bootstrap_servers
    _write(bootstrap, topic, range(6))
    follower = ChangelogFollower(kafka, PipelineMetrics())
    try:
        assert follower.start(threading.Event())
        first_id = follower.topic_id
        assert [r.offset for r in _read(follower, 6)] == list(range(6))
        assert follower.take_begun_again() == []
        compacted = NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})
        delete_topic(bootstrap, topic, create_again=compacted)
        _write(bootstrap, topic, range(100, 102))  # a shorter log than what was read
        again = _read(follower, 2)
        assert [(r.offset, r.key) for r in again] == [(0, b"k100"), (1, b"k101")]
        assert follower.take_begun_again() == [0]
        assert follower.topic_id not in (None, first_id)
        assert follower.take_begun_again() == []  # said once
    finally:
        follower.close()


def test_partitions_added_to_the_changelog_are_followed_from_their_beginning(
    kafka_broker: LocalKafkaBroker, topic_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ingest worker grows the changelog when its source grows; before, the trainer
    followed only the partitions it found at its start, until it was restarted."""
    monkeypatch.setattr(changelog_follow, "PARTITIONS_LOOK_S", 0.5)
    kafka, topic = _changelog(kafka_broker, topic_factory, "follow-grown")
    bootstrap = kafka.bootstrap_servers
    _write(bootstrap, topic, range(3))
    follower = ChangelogFollower(kafka, PipelineMetrics())
    try:
        assert follower.start(threading.Event())
        assert len(_read(follower, 3)) == 3
        admin = kafka_admin(kafka, client_id="test-grow")
        try:
            admin.create_partitions({topic: NewPartitions(total_count=3)})
        finally:
            admin.close()
        _write(bootstrap, topic, range(10, 14), partition=2)
        _write(bootstrap, topic, range(20, 22), partition=1)
        added = _read(follower, 6)
        assert sorted((r.partition, r.offset, r.key) for r in added) == [
            *((1, n, b"k%d" % (20 + n)) for n in range(2)),
            *((2, n, b"k%d" % (10 + n)) for n in range(4)),
        ]
        assert follower.partitions == [0, 1, 2]
        deadline = time.monotonic() + 30
        while not follower.caught_up:  # the new partitions' ends, too
            assert time.monotonic() < deadline, "never caught up with the added partitions"
            assert follower.poll(100, 0.2) == []
    finally:
        follower.close()


def test_a_trainer_resumed_on_a_changelog_created_again_trains_on_all_of_it(
    tmp_path: Path,
) -> None:
    settings = Settings()
    settings = replace(settings, worker=replace(settings.worker, checkpoint_dir=tmp_path))
    training = ChangelogTraining(settings, PipelineMetrics(), threading.Event())

    def resumed(trained_on: str | None) -> ChangelogTraining:
        training._trained_topic_id = trained_on
        training.trained_through = {0: 2}
        training._fold_only = {0: 2}
        return training

    resumed("same").follow("same")
    assert training.trained_through == {0: 2} and training._fold_only == {0: 2}
    resumed("old").follow("new")
    assert training.trained_through == {} and training._fold_only == {}
    assert training.source_topic_id == "new"  # what the next checkpoint records
    resumed(None).follow("new")  # a checkpoint from before the id was kept
    assert training._fold_only == {0: 2}
    resumed("old").log_began_again(0, "new")
    assert training._fold_only == {} and training.trained_through == {0: 0}
