"""A changelog transaction whose group generation moved on under it.

With incremental rebalancing the consumer rejoins by itself, so the group metadata a
batch's offsets were sent with can be a generation old by the commit: the broker refuses
the offsets and the transaction is aborted. It is written again under the new generation
(the batch's records once in the changelog, its offsets committed); a generation that
never settles ends in a :class:`ChangelogError`, not a loop; a batch read as a member the
consumer no longer is (its session expired) is never committed.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from stream.errors import ChangelogError, GroupLeft
from stream.ingest import changelog as changelog_module
from stream.ingest.changelog import Changelog
from stream.ingest.source import RecordSource
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.settings import KafkaSettings
from tests.conftest import TopicFactory
from tests.harness.changelog_state import fold_changelog

pytestmark = pytest.mark.integration

PARTITIONS = 2


def _member(broker: LocalKafkaBroker, topic: str, group: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": group,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "session.timeout.ms": 6_000,
        }
    )
    consumer.subscribe([topic])
    return consumer


def _poll_until(consumers: list[Consumer], condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        for consumer in consumers:
            consumer.poll(0.1)


@pytest.fixture
def stale(
    kafka_broker: LocalKafkaBroker, topic_factory: TopicFactory
) -> Iterator[tuple[KafkaSettings, Consumer, Any]]:
    """A member's settings, the member, and its group metadata from before a second
    member joined (a generation ago)."""
    source = topic_factory("generation", partitions=PARTITIONS)
    group = f"gen-{uuid.uuid4().hex[:8]}"
    first = _member(kafka_broker, source, group)
    second = None
    try:
        _poll_until([first], lambda: len(first.assignment()) == PARTITIONS, "the first member")
        before = first.consumer_group_metadata()
        second = _member(kafka_broker, source, group)
        _poll_until([first, second], lambda: bool(second.assignment()), "the second member")
        kafka = KafkaSettings(
            bootstrap_servers=kafka_broker.bootstrap_servers,
            interactions_topic=source,
            group_id=group,
            instance_id="w1",
        )
        yield kafka, first, before
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_transaction_a_rebalance_aborted_is_written_again_under_the_new_generation(
    stale: tuple[KafkaSettings, Consumer, Any],
) -> None:
    kafka, member, before = stale
    (owned,) = [tp.partition for tp in member.assignment()][:1]
    handed: list[Any] = []

    def metadata() -> Any:  # the stale generation first, as a batch fetched before it had
        handed.append(before if not handed else member.consumer_group_metadata())
        return handed[-1]

    log = Changelog(kafka, PipelineMetrics())
    log.start()
    log.commit([(owned, b"edge", b"v1")], {owned: 7}, metadata)
    assert len(handed) >= 2  # the first was refused
    state, records, _ = fold_changelog(kafka.bootstrap_servers, log.topic, PARTITIONS)
    assert state[owned][b"edge"] == b"v1"
    # the edge and its partition's source-id record, once each: the aborted attempt wrote
    # them too, and is never read committed
    assert records == 2
    assert fold_changelog(kafka.bootstrap_servers, log.topic, PARTITIONS, committed=False)[1] == 4
    committed = member.committed([TopicPartition(kafka.interactions_topic, owned)], timeout=10)
    assert committed[0].offset == 7


def test_a_generation_that_never_settles_ends_in_a_changelog_error(
    stale: tuple[KafkaSettings, Consumer, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka, member, before = stale
    monkeypatch.setattr(changelog_module, "REBALANCE_WAIT_S", 1.0)
    log = Changelog(kafka, PipelineMetrics())
    log.start()
    owned = member.assignment()[0].partition
    with pytest.raises(ChangelogError, match="generation kept moving"):
        log.commit([(owned, b"edge", b"v1")], {owned: 7}, lambda: before)
    state, _, _ = fold_changelog(kafka.bootstrap_servers, log.topic, PARTITIONS)
    assert b"edge" not in state[owned]


def test_a_batch_read_as_a_member_the_consumer_no_longer_is_never_committed(
    kafka_broker: LocalKafkaBroker, topic_factory: TopicFactory
) -> None:
    """A session that expired and a join again under a new member id: the partitions the
    batch was read from may be another worker's, so its transaction is not written."""
    source = topic_factory("generation-left", partitions=PARTITIONS)
    kafka = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        interactions_topic=source,
        group_id=f"left-{uuid.uuid4().hex[:8]}",
        instance_id="w1",
        session_timeout_ms=6_000,
    )
    owned: list[frozenset[int]] = []
    records = RecordSource(kafka, lambda _p: None, owned.append, lambda _g: None, lambda *_: None)
    records.start()
    try:
        deadline = time.monotonic() + 60
        while not records.assigned:
            assert time.monotonic() < deadline, "never assigned"
            records.poll(0.1, 10)
        member = records.member_id()
        assert member
        log = Changelog(kafka, PipelineMetrics())
        log.start()
        log.commit([(0, b"kept", b"v")], {0: 3}, functools.partial(records.group_metadata, member))
        with pytest.raises(GroupLeft, match="joined again"):
            log.commit(
                [(1, b"lost", b"v")],
                {1: 5},
                functools.partial(records.group_metadata, "the-member-it-was"),
            )
        state, _, _ = fold_changelog(kafka.bootstrap_servers, log.topic, PARTITIONS)
        assert b"kept" in state[0] and b"lost" not in state[1]
    finally:
        records.close()
