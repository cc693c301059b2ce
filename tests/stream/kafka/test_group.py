"""A training worker is alone in its consumer group (``stream.kafka.group``).

The rules on described members (pure), two group consumers that joined at once (exactly
one leaves, the other ends with every partition), and worker processes: a second training
worker, or an ingest worker beside a training one, is refused at start with exit 2 and one
line naming the member, while the first keeps every partition; ingest workers share a
group as before; ``streamgnn train``'s lease (one trainer a group) is refused to a second
holder, and of two that joined at once one stays.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from stream.errors import GroupShared
from stream.ingest.source import RecordSource
from stream.kafka import group as group_module
from stream.kafka.group import (
    INGEST_CLIENT_ID,
    TRAINING_CLIENT_ID,
    GroupLease,
    Member,
    conflicts,
    group_members,
    must_leave,
    unowned,
)
from stream.local_broker.broker import LocalKafkaBroker
from stream.settings import KafkaSettings
from tests.conftest import TopicFactory
from tests.harness.worker_process import WorkerProcess, training_env, wait_for, worker_env

TRAINER = Member("streamgnn-worker-1", TRAINING_CLIENT_ID, "/10.0.0.1")
INGEST_A = Member("streamgnn-ingest-a", INGEST_CLIENT_ID, "/10.0.0.2", "a")
INGEST_B = Member("streamgnn-ingest-b", INGEST_CLIENT_ID, "/10.0.0.3", "b")


def test_a_training_worker_conflicts_with_every_other_member_but_itself() -> None:
    members = [TRAINER, INGEST_A, INGEST_B]
    assert conflicts(members, True, None, own_id=TRAINER.member_id) == [INGEST_A, INGEST_B]
    assert conflicts([TRAINER], True, None, own_id=TRAINER.member_id) == []
    # before joining (no id yet) a member with its static instance id is its previous run
    previous = Member("streamgnn-worker-old", TRAINING_CLIENT_ID, "/h", "w1")
    assert conflicts([previous], True, "w1") == []
    assert conflicts([previous], True, "w2") == [previous]


def test_an_ingest_worker_conflicts_only_with_training_workers() -> None:
    assert conflicts([INGEST_A, INGEST_B], False, "a") == []
    assert conflicts([INGEST_A, TRAINER], False, "a") == [TRAINER]


def test_of_each_conflicting_pair_exactly_one_leaves() -> None:
    other = Member("streamgnn-worker-2", TRAINING_CLIENT_ID, "/h")
    pairs = [(TRAINER, True, other, True), (TRAINER, True, INGEST_A, False)]
    for one, one_trains, two, two_trains in pairs:
        members = [one, two]
        leaves = [
            must_leave(members, one_trains, one.instance_id, one.member_id) is not None,
            must_leave(members, two_trains, two.instance_id, two.member_id) is not None,
        ]
        assert sorted(leaves) == [False, True], (one, two)
    assert must_leave([INGEST_A, INGEST_B], False, "a", INGEST_A.member_id) is None
    assert must_leave([INGEST_A, INGEST_B], False, "b", INGEST_B.member_id) is None


def test_partitions_no_member_holds_are_named_only_of_a_described_assignment() -> None:
    holds = lambda *partitions: frozenset(("t", p) for p in partitions)  # noqa: E731
    former = replace(INGEST_A, assignment=holds(0, 1) | {("other", 2)})
    assert unowned([former], "t", range(3)) == [2]  # added since it was assigned
    assert unowned([former, replace(INGEST_B, assignment=holds(2))], "t", range(3)) == []
    assert unowned([former, INGEST_B], "t", range(4)) == [2, 3]
    assert unowned([INGEST_A, INGEST_B], "t", range(3)) == []  # described mid-rebalance


def _source(kafka: KafkaSettings, assigned: list[frozenset[int]]) -> RecordSource:
    return RecordSource(
        kafka,
        lambda _partition: None,
        on_assigned=assigned.append,
        on_revoked=lambda _gone: None,
        on_skipped=lambda *_: None,
        training=True,
    )


@pytest.mark.integration
def test_two_training_consumers_that_joined_at_once_end_with_one_holding_everything(
    kafka_broker: LocalKafkaBroker, topic_factory: TopicFactory
) -> None:
    topic = topic_factory("group-race", partitions=4)
    kafka = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        interactions_topic=topic,
        group_id=f"race-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=6000,
    )
    assigned: dict[int, list[frozenset[int]]] = {0: [], 1: []}
    sources = {n: _source(kafka, assigned[n]) for n in assigned}
    refused: dict[int, GroupShared] = {}
    for source in sources.values():
        source.start()  # both subscribe before either is assigned: the start check is passed
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for n, source in sources.items():
                if n in refused:
                    continue
                try:
                    source.poll(0.2, 10)
                except GroupShared as exc:
                    refused[n] = exc
                    source.close()
            stayed = [n for n in sources if n not in refused]
            if len(stayed) == 1 and sources[stayed[0]].assigned == frozenset(range(4)):
                break
    finally:
        for n, source in sources.items():
            if n not in refused:
                source.close()
    assert len(refused) == 1, assigned
    (stayed,) = [n for n in sources if n not in refused]
    assert assigned[stayed][-1] == frozenset(range(4))
    (left,) = refused
    assert "must be alone" in str(refused[left])


def _env(tmp_path: Path, bootstrap: str, topic: str, group: str, tag: str) -> dict[str, str]:
    env = worker_env(bootstrap, topic, group, tmp_path / f"graph-{tag}", 500)
    return env | {"STREAMGNN_INSTANCE_ID": tag}


@pytest.mark.integration
@pytest.mark.parametrize("second_trains", [True, False])
def test_a_worker_that_may_not_share_the_group_is_refused_at_start(
    kafka_broker: LocalKafkaBroker, topic_factory: TopicFactory, tmp_path: Path, second_trains: bool
) -> None:
    topic = topic_factory("group-second", partitions=4)
    kafka_broker.create_topics({f"{topic}.dlq": 1})
    group = f"second-{tmp_path.name}"
    first_env = _env(tmp_path, kafka_broker.bootstrap_servers, topic, group, "first")
    first_env |= training_env(tmp_path, "first", dim=8) | {"STREAMGNN_DEVICE": "cpu"}
    second_env = _env(tmp_path, kafka_broker.bootstrap_servers, topic, group, "second")
    if second_trains:
        second_env |= training_env(tmp_path, "second", dim=8) | {"STREAMGNN_DEVICE": "cpu"}
    first = WorkerProcess(first_env, tmp_path / "first.log")
    second = WorkerProcess(second_env, tmp_path / "second.log")
    first.start()
    try:
        wait_for(first.owns_partitions, 120, "the first worker's partitions")
        second.start()
        wait_for(lambda: second.exit_status() is not None, 120, "the second worker to exit")
        text = (tmp_path / "second.log").read_text()
        assert second.exit_status() == 2, text
        (line,) = [x for x in text.splitlines() if "already has" in x]
        assert f"consumer group {group!r} already has {TRAINING_CLIENT_ID}" in line
        assert "instance first" in line and "Traceback" not in text
        kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, group_id=group)
        (member,) = group_members(kafka)  # the first alone, never made to share
        assert member.instance_id == "first"
        assert (tmp_path / "first.log").read_text().count("resumes at") == 4
        assert first.terminate(60) == 0
    finally:
        for process in (first, second):
            if process.exit_status() is None:
                process.kill()


@pytest.mark.integration
def test_ingest_workers_share_a_group(
    kafka_broker: LocalKafkaBroker, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic = topic_factory("group-ingest", partitions=4)
    kafka_broker.create_topics({f"{topic}.dlq": 1})
    group = f"ingest-{tmp_path.name}"
    workers = [
        WorkerProcess(
            _env(tmp_path, kafka_broker.bootstrap_servers, topic, group, tag),
            tmp_path / f"{tag}.log",
        )
        for tag in ("a", "b")
    ]
    for worker in workers:
        worker.start()
    try:
        kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, group_id=group)
        wait_for(lambda: len(group_members(kafka)) == 2, 120, "both in the group")
        wait_for(lambda: all(w.owns_partitions() for w in workers), 120, "partitions shared")
        assert [w.terminate(60) for w in workers] == [0, 0]
    finally:
        for worker in workers:
            if worker.exit_status() is None:
                worker.kill()


@pytest.mark.integration
def test_a_second_trainer_lease_is_refused_and_of_two_at_once_one_stays(
    kafka_broker: LocalKafkaBroker, topic_factory: TopicFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = topic_factory("lease", partitions=2)
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, session_timeout_ms=6000)
    group = f"lease-{uuid.uuid4().hex[:8]}.trainer"
    held, second = GroupLease(kafka, group), GroupLease(kafka, group)
    try:
        assert held.acquire(topic, lambda: False)
        wait_for_members(kafka, group, 1, held)
        with pytest.raises(GroupShared, match="one `streamgnn train`"):
            second.acquire(topic, lambda: False)
        held.poll()  # still the holder: nothing to leave
    finally:
        held.close()
        second.close()

    # Two that both passed the start's check (it saw the group empty): the assignment decides.
    async def empty_then(*_: object) -> bool:
        return True

    monkeypatch.setattr(group_module, "refuse_a_shared_group", empty_then)
    race = f"race-{uuid.uuid4().hex[:8]}.trainer"
    leases = [GroupLease(kafka, race) for _ in range(2)]
    assert all(lease.acquire(topic, lambda: False) for lease in leases)
    refused: list[GroupLease] = []
    try:
        deadline = time.monotonic() + 90
        while not refused and time.monotonic() < deadline:
            for lease in leases:
                try:
                    lease.poll()
                except GroupShared:
                    refused.append(lease)
            time.sleep(0.1)
        assert len(refused) == 1
        refused[0].close()
        (stayed,) = [lease for lease in leases if lease not in refused]
        members = wait_for_members(kafka, race, 1, stayed)
        assert members[0].client_id == "streamgnn-train"
    finally:
        for lease in leases:
            lease.close()


def wait_for_members(
    kafka: KafkaSettings, group: str, count: int, lease: GroupLease
) -> list[Member]:
    """The group's members once there are ``count`` (the lease polled meanwhile)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lease.poll()
        members = group_members(replace(kafka, group_id=group))
        if len(members) == count:
            return members
        time.sleep(0.2)
    raise AssertionError(f"group {group} never had {count} members")


@pytest.mark.integration
def test_a_stop_ends_the_wait_for_a_member_to_leave(
    kafka_broker: LocalKafkaBroker, topic_factory: TopicFactory
) -> None:
    topic = topic_factory("group-stop", partitions=1)
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, session_timeout_ms=6000)
    group = f"stop-{uuid.uuid4().hex[:8]}"
    holder = GroupLease(kafka, group)
    try:
        assert holder.acquire(topic, lambda: False)
        wait_for_members(kafka, group, 1, holder)
        start = time.monotonic()
        stopping = functools.partial(lambda at: time.monotonic() >= at, start + 1.0)
        waiting = group_module.refuse_a_shared_group(
            replace(kafka, group_id=group), "worker", stopping
        )
        assert asyncio.run(waiting) is False  # not refused: stopped while it waited
        assert time.monotonic() - start < 1.0 + 2 * group_module._RECHECK_S
    finally:
        holder.close()
