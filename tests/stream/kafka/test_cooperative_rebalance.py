"""Incremental rebalancing (``cooperative-sticky``) of the ingest consumer.

A join or a leave revokes only the partitions that change owner: the member already
reading keeps the rest, and never owns nothing meanwhile. A group holding a member that
rebalances eagerly (a build before this one) refuses this one's join: a member that has
just stopped (a static member, kept until its session times out) is waited out, one still
there stops the worker with one line.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer

import stream.kafka.group as group_module
from stream.errors import ConfigError
from stream.ingest.source import RecordSource
from stream.local_broker.broker import LocalKafkaBroker
from stream.settings import KafkaSettings
from tests.conftest import TopicFactory

pytestmark = pytest.mark.integration

PARTITIONS = 4


class Member:
    """One ingest consumer with what its callbacks were told."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.owned: list[frozenset[int]] = []  # the owned set after each assignment
        self.revoked: list[frozenset[int]] = []
        self.source = RecordSource(
            kafka,
            lambda _partition: None,
            on_assigned=self.owned.append,
            on_revoked=self.revoked.append,
            on_skipped=lambda *_: None,
        )
        self.source.start()

    def gave_up(self) -> frozenset[int]:
        return frozenset().union(*self.revoked)


def _kafka(broker: LocalKafkaBroker, topic: str, group: str, instance: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        interactions_topic=topic,
        group_id=group,
        instance_id=instance,
        session_timeout_ms=6_000,
    )


def _poll_until(members: list[Member], condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        for member in members:
            member.source.poll(0.1, 10)


def test_a_join_and_a_leave_move_only_the_partitions_that_change_owner(
    kafka_broker: LocalKafkaBroker, topic_factory: TopicFactory
) -> None:
    topic = topic_factory("coop", partitions=PARTITIONS)
    group = f"coop-{uuid.uuid4().hex[:8]}"
    everything = frozenset(range(PARTITIONS))
    first = Member(_kafka(kafka_broker, topic, group, "a"))
    second = None
    try:
        _poll_until([first], lambda: first.source.assigned == everything, 60, "a owning all")
        second = Member(_kafka(kafka_broker, topic, group, "b"))
        both = [first, second]

        def shared() -> bool:
            return bool(second.source.assigned) and (
                first.source.assigned | second.source.assigned == everything
            )

        _poll_until(both, shared, 60, "the two sharing the partitions")
        assert not first.source.assigned & second.source.assigned
        # what the first gave up is exactly what the second took; it owned something throughout
        assert first.gave_up() == second.source.assigned
        assert all(first.owned), first.owned
        kept = first.source.assigned
        second.source.close()
        second = None
        _poll_until([first], lambda: first.source.assigned == everything, 60, "a owning all again")
        assert first.gave_up() == everything - kept  # the leave revoked nothing of it
        assert all(first.owned), first.owned
    finally:
        first.source.close()
        if second is not None:
            second.source.close()


def test_every_assignment_checks_the_group_through_the_client_made_at_the_start(
    kafka_broker: LocalKafkaBroker, topic_factory: TopicFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each assignment asks the coordinator who is in the group (two training workers that
    joined at once find each other there), through the admin client the source made at
    its start: a client made and dropped inside the callback held up the deliveries of
    the partitions the member kept, ~1 s at most joins (by hand, 2026-12-07)."""
    topic = topic_factory("coop-check", partitions=PARTITIONS)
    group = f"check-{uuid.uuid4().hex[:8]}"
    everything = frozenset(range(PARTITIONS))
    first = Member(_kafka(kafka_broker, topic, group, "a"))
    second = None
    try:
        _poll_until([first], lambda: first.source.assigned == everything, 60, "a owning all")
        second = Member(_kafka(kafka_broker, topic, group, "b"))  # its clients made here
        made: list[str] = []
        checks: list[str] = []
        make, describe = group_module.confluent_admin, group_module.group_members
        monkeypatch.setattr(
            group_module, "confluent_admin", lambda k, c: made.append(k.group_id) or make(k, c)
        )
        monkeypatch.setattr(
            group_module,
            "group_members",
            lambda k, *rest: checks.append(k.instance_id or "") or describe(k, *rest),
        )
        both = [first, second]
        _poll_until(both, lambda: bool(second and second.source.assigned), 60, "b sharing")
        assert {"a", "b"} <= set(checks)  # both members' assignments were checked
        assert made == []
    finally:
        first.source.close()
        if second is not None:
            second.source.close()


def _eager_member(broker: LocalKafkaBroker, topic: str, group: str, instance: str) -> Consumer:
    """A static member of ``group`` that rebalances eagerly (librdkafka's default), owning
    the topic once this returns."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": group,
            "group.instance.id": instance,
            "session.timeout.ms": 6_000,
            "partition.assignment.strategy": "range,roundrobin",
        }
    )
    owned: list[int] = []
    consumer.subscribe([topic], on_assign=lambda _c, ps: owned.extend(p.partition for p in ps))
    deadline = time.monotonic() + 60
    while len(owned) < PARTITIONS:
        if time.monotonic() > deadline:
            raise TimeoutError("the eager member was never assigned")
        consumer.poll(0.1)
    return consumer


def test_a_member_that_rebalances_eagerly_stops_the_worker_with_one_line(
    kafka_broker: LocalKafkaBroker, topic_factory: TopicFactory
) -> None:
    topic = topic_factory("coop-eager", partitions=PARTITIONS)
    group = f"eager-{uuid.uuid4().hex[:8]}"
    eager = _eager_member(kafka_broker, topic, group, "old")
    member = None
    try:
        member = Member(_kafka(kafka_broker, topic, group, "new"))
        started = time.monotonic()
        with pytest.raises(ConfigError, match="rebalance eagerly") as refused:
            _poll_until([member], lambda: False, 60, "the refusal")
        # it waited out a session timeout first (a static member that had just stopped)
        assert time.monotonic() - started >= 6.0
        assert group in str(refused.value)
        assert member.owned == []
    finally:
        eager.close()
        if member is not None:
            member.source.close()


def test_the_build_before_stopped_is_waited_out_and_its_partitions_taken(
    kafka_broker: LocalKafkaBroker, topic_factory: TopicFactory
) -> None:
    """The upgrade: an eager static member stops (it stays in the group until its session
    times out) and this build starts under the same instance id at once."""
    topic = topic_factory("coop-upgrade", partitions=PARTITIONS)
    group = f"upgrade-{uuid.uuid4().hex[:8]}"
    _eager_member(kafka_broker, topic, group, "w1").close()
    member = Member(_kafka(kafka_broker, topic, group, "w1"))
    try:
        everything = frozenset(range(PARTITIONS))
        _poll_until([member], lambda: member.source.assigned == everything, 60, "the partitions")
        assert member.owned[-1] == everything
    finally:
        member.source.close()
