"""The graph changelog (``--changelog``) against the real broker: it folds to the store's
partition state, an empty store restores from it exactly once, and read_committed readers
never see an aborted transaction."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from kafka.admin import NewTopic

from stream.behaviours import Behaviour
from stream.errors import ChangelogError, ChangelogFenced, ChangelogTopicLost, RebalanceError
from stream.ingest import IngestWorker
from stream.ingest import source as source_module
from stream.ingest.changelog import Changelog, ChangelogInterrupted
from stream.ingest.changelog_repair import write_missing_state
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.settings import (
    EventSettings,
    KafkaSettings,
    Settings,
    StoreSettings,
    changelog_topic,
)
from stream.state import keys as k
from stream.state.graph_store import DecayedGraphStore
from tests.harness import importable_env
from tests.harness.changelog_state import (
    end_offsets,
    fold_changelog,
    ingest_to_end,
    logged_state,
    whole_store,
)
from tests.harness.embedding_topics import delete_topic
from tests.harness.faults import (
    CrashReport,
    count_applications,
    event,
    prepare_topic,
    produce,
    run_crash_scenario,
)
from tests.harness.proxy import proxied_broker
from tests.harness.raw_records import RawRecord, send_records
from tests.harness.training_faults import run_training_crash_scenario

pytestmark = pytest.mark.integration

PARTITIONS = 3
T0 = int(time.time() * 1000) - 3_600_000  # an hour ago: in the past whatever the clocks say


def _settings(
    broker: LocalKafkaBroker,
    store: Path,
    source: str,
    group: str,
    changelog: bool = True,
    events: EventSettings | None = None,
) -> Settings:
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            interactions_topic=source,
            dlq_topic=f"{source}.dlq",
            group_id=group,
            instance_id="w1",
            max_batch_records=300,
            session_timeout_ms=6_000,
        ),
        store=StoreSettings(path=store, changelog=changelog),
        events=events or EventSettings(),
    )


def _decaying_stream(count: int) -> list[RawRecord]:
    """Events over 60 s of stream time on a 1 s half-life, with event ids and copies: edges
    die and are pruned, filter entries expire, copies are dropped."""
    records = []
    for n in range(count):
        seq = n - 1 if n % 7 == 6 else n  # every 7th is a copy of the one before
        user = f"u{seq % 11}"
        body = {
            "user_id": user,
            "item_id": f"i{seq % 13}",
            "event_type": "click",
            "ts": T0 + seq * 60_000 // count,
            "event_id": f"e{seq}",
        }
        records.append(RawRecord(user.encode(), json.dumps(body).encode()))
    return records


DECAYING = EventSettings(
    behaviours={"click": Behaviour(beta=1.0, half_life_ms=1_000)}, dedup_window_ms=5_000
)


def test_the_changelog_folds_to_the_stores_partition_state(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source = topic_factory("changelog-fold", partitions=PARTITIONS)
    bootstrap = kafka_broker.bootstrap_servers
    records = _decaying_stream(3_000)
    assert not any(s.refused for s in send_records(bootstrap, source, records))
    settings = _settings(kafka_broker, tmp_path / "store", source, f"g-{source}", events=DECAYING)
    worker = ingest_to_end(settings, end_offsets(bootstrap, source, PARTITIONS))
    assert worker.totals.duplicates > 0
    folded, read, tombstones = fold_changelog(
        bootstrap, changelog_topic(source, f"g-{source}"), PARTITIONS
    )
    stored = logged_state(settings.store.path, source, PARTITIONS)
    assert tombstones > 0  # pruned edges and expired filter entries were deleted
    assert read > sum(len(state) for state in folded.values())
    assert all(stored[p] for p in range(PARTITIONS))
    assert folded == stored
    with_sources, _, _ = fold_changelog(
        bootstrap, changelog_topic(source, f"g-{source}"), PARTITIONS, sources=True
    )
    changelog = Changelog(settings.kafka, PipelineMetrics())
    changelog.start()
    try:  # its one reader, twice: what the first read paused at the end is read again
        assert changelog.read_partitions(list(range(PARTITIONS))) == with_sources
        assert changelog.read_partitions(list(range(PARTITIONS))) == with_sources
        # whether a partition holds state is one record each, never its end
        reads = list(changelog.to_ends(list(range(PARTITIONS)), "checking", first_only=True))
        firsts = sorted(record.partition() for records, _ in reads for record in records)
        assert firsts == list(range(PARTITIONS))
        assert not [p for _, ended in reads for p in ended]
    finally:
        changelog.close()


def test_an_empty_store_restores_from_the_changelog_and_applies_each_event_once(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source = topic_factory("changelog-restore", partitions=PARTITIONS)
    kafka_broker.create_topics({f"{source}.dlq": 1})
    bootstrap = kafka_broker.bootstrap_servers
    group = f"g-{source}"
    produce(bootstrap, source, 4_000)
    first = _settings(kafka_broker, tmp_path / "first", source, group)
    ingest_to_end(first, end_offsets(bootstrap, source, PARTITIONS))
    # More events, then a worker with an empty store directory in the same group.
    _send(bootstrap, source, range(4_000, 6_000))
    ends = end_offsets(bootstrap, source, PARTITIONS)
    metrics = PipelineMetrics()
    second = _settings(kafka_broker, tmp_path / "second", source, group)
    worker = ingest_to_end(second, ends, metrics)
    reference = _settings(kafka_broker, tmp_path / "ref", source, f"ref-{source}", changelog=False)
    ingest_to_end(reference, ends)
    assert whole_store(second.store.path) == whole_store(reference.store.path)
    report = CrashReport("restored", sent=6_000)
    count_applications(second.store.path, source, report)
    assert (report.applied, report.lost, report.duplicated) == (6_000, 0, 0)
    assert worker.totals.consumed == 2_000  # only what the first worker had not applied
    restored = {
        s.labels["partition"]: s.value
        for family in metrics.registry.collect()
        if family.name == "streamgnn_restore_records"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert set(restored) == {str(p) for p in range(PARTITIONS)}
    assert all(v > 0 for v in restored.values())


_DIE_MID_TRANSACTION = """
import os, signal, sys
from stream.ingest.changelog import Changelog
from stream.metrics import PipelineMetrics
from stream.settings import KafkaSettings
kafka = KafkaSettings(bootstrap_servers=sys.argv[1], interactions_topic=sys.argv[2],
                      group_id=sys.argv[3], instance_id="w1")
log = Changelog(kafka, PipelineMetrics())
log.start()
producer = log._require()
producer.begin_transaction()
for n in range(50):
    producer.produce(log.topic, key=b"k%d" % n, value=b"uncommitted", partition=0)
producer.flush(30)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_read_committed_reader_never_sees_a_killed_transaction(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source = topic_factory("changelog-abort", partitions=1)
    bootstrap = kafka_broker.bootstrap_servers
    group = f"g-{source}"
    died = subprocess.run(
        [sys.executable, "-c", _DIE_MID_TRANSACTION, bootstrap, source, group],
        env=importable_env(dict(os.environ)),
        capture_output=True,
        timeout=120,
    )
    assert died.returncode == -9, died.stderr.decode()[-2000:]
    topic = changelog_topic(source, group)
    uncommitted, _, _ = fold_changelog(bootstrap, topic, 1, committed=False)
    assert len(uncommitted[0]) == 50  # the records are in the log
    # Its successor (same transactional.id) aborts what it left open on start.
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap, interactions_topic=source, group_id=group, instance_id="w1"
    )
    successor = Changelog(kafka, PipelineMetrics())
    successor.start()
    committed, _, _ = fold_changelog(bootstrap, topic, 1)
    assert committed == {0: {}}
    assert successor.read_partitions([0]) == {0: {}}
    # the 50 records in the log are not state: the first read is the partition's end
    reads = list(successor.to_ends([0], "checking", first_only=True))
    assert [r for records, _ in reads for r in records] == []
    assert [p for _, ended in reads for p in ended] == [0]
    del successor


def test_a_stop_cuts_short_a_restore_waiting_on_brokers_that_are_away(tmp_path: Path) -> None:
    """A restore runs inside the rebalance callback: with the brokers away it would wait
    RESTORE_STALL_S (60 s) before failing, and a SIGTERM with it (found by hand)."""
    with proxied_broker(tmp_path / "kafka") as (broker, proxy):
        source = "restore-away"
        broker.create_topics({source: 1})
        kafka = KafkaSettings(
            bootstrap_servers=proxy.address,
            interactions_topic=source,
            group_id=f"g-{source}",
            instance_id="w1",
        )
        changelog = Changelog(kafka, PipelineMetrics())
        changelog.start()
        try:
            assert changelog.read_partitions([0]) == {0: {}}  # its reader, connected
            proxy.cut()
            stopping = threading.Event()
            threading.Timer(1.0, stopping.set).start()
            began = time.monotonic()
            with pytest.raises(ChangelogInterrupted, match=r"restoring .*\[0\]"):
                changelog.read_partitions([0], stopping)
            assert time.monotonic() - began < 5.0
        finally:
            proxy.restore()
            changelog.close()


def test_partitions_whose_restore_a_stop_cut_short_are_held_back_unread(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop that cuts a restore short (its event set, as 2 s after a SIGTERM) leaves the
    partition assigned but paused: nothing of it is read into the store, which the next
    start restores whole."""
    source, first = _one_partition(kafka_broker, topic_factory, tmp_path, "changelog-cut")
    _send(kafka_broker.bootstrap_servers, source, range(50))
    ingest_to_end(first, {0: 50})
    empty = _settings(kafka_broker, tmp_path / "empty", source, first.kafka.group_id)

    async def go() -> None:
        async with _running(empty) as (worker, store):
            worker._interrupted.set()  # what the stop's relay sets: the restore's stop
            deadline = time.monotonic() + 60
            while "a restore was cut short" not in caplog.text:
                assert time.monotonic() < deadline, "no assignment in 60 s"
                assert await worker.step(timeout_ms=200) == 0
            for _ in range(10):
                assert await worker.step(timeout_ms=200) == 0
            assert worker.totals.consumed == 0
            assert store.position(source, 0) is None

    with caplog.at_level(logging.WARNING, logger="streamgnn.ingest"):
        asyncio.run(go())
    again = ingest_to_end(empty, {0: 50})
    assert again.totals.consumed == 0  # restored from the changelog, not read again
    assert whole_store(empty.store.path) == whole_store(first.store.path)


def test_a_fenced_changelog_writer_stops_with_a_clear_error(
    kafka_broker: LocalKafkaBroker, topic_factory
) -> None:
    source = topic_factory("changelog-fence", partitions=1)
    kafka = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        interactions_topic=source,
        group_id=f"g-{source}",
        instance_id="w1",
    )
    old, new = Changelog(kafka, PipelineMetrics()), Changelog(kafka, PipelineMetrics())
    old.start()
    new.start()  # takes the id: the old one is a zombie now
    with pytest.raises(ChangelogFenced, match="instance-id"):
        old.commit([(0, b"k", b"v")], {}, lambda: None)
    new.commit([(0, b"k", b"v")], {}, lambda: None)
    assert fold_changelog(kafka.bootstrap_servers, new.topic, 1)[0] == {0: {b"k": b"v"}}


CRASH_EVENTS = 12_000
CHANGELOG_ON = {"STREAMGNN_CHANGELOG": "true"}


@pytest.mark.parametrize("wipe_store", [False, True], ids=["store-kept", "store-wiped"])
def test_sigkilled_worker_with_the_changelog_ends_as_an_uninterrupted_run(
    kafka_broker: LocalKafkaBroker, tmp_path: Path, wipe_store: bool
) -> None:
    topic = prepare_topic(kafka_broker, CRASH_EVENTS, partitions=4)
    crashed = run_crash_scenario(
        kafka_broker,
        topic,
        CRASH_EVENTS,
        tmp_path,
        "changelog-kill",
        worker_kills=2,
        store_write_kills=1,  # between the store write and the transaction's commit
        seed=3,
        env=CHANGELOG_ON,
        wipe_store=wipe_store,
    )
    reference = run_crash_scenario(kafka_broker, topic, CRASH_EVENTS, tmp_path, "no-crash", 0)
    assert len(crashed.recovery_s) == 3
    assert (crashed.lost, crashed.duplicated, crashed.applied) == (0, 0, CRASH_EVENTS)
    assert crashed.positions == reference.positions
    assert crashed.digest == reference.digest


def test_a_changelog_lacking_the_groups_state_is_refused_when_no_store_holds_it(
    kafka_broker: LocalKafkaBroker, topic_factory
) -> None:
    source = topic_factory("changelog-late", partitions=2)
    group = f"g-{source}"
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": group})
    consumer.commit(offsets=[TopicPartition(source, 1, 7)], asynchronous=False)
    consumer.close()
    kafka = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        interactions_topic=source,
        group_id=group,
        instance_id="w1",
    )
    for _ in range(2):  # refused again: the topic the first start created holds nothing
        changelog = Changelog(kafka, PipelineMetrics())
        changelog.start()
        with pytest.raises(ChangelogError, match=r"partitions 1 \(committed 7\).*new group"):
            write_missing_state(changelog, None)


def test_a_deleted_changelog_is_written_again_from_the_store_that_holds_it(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source = topic_factory("changelog-deleted", partitions=PARTITIONS)
    bootstrap = kafka_broker.bootstrap_servers
    group = f"g-{source}"
    assert not any(s.refused for s in send_records(bootstrap, source, _decaying_stream(3_000)))
    ends = end_offsets(bootstrap, source, PARTITIONS)
    first = _settings(kafka_broker, tmp_path / "first", source, group, events=DECAYING)
    ingest_to_end(first, ends)
    topic = changelog_topic(source, group)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic])[topic].result(30)
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, "the changelog was not deleted"
        time.sleep(0.2)
    # partition 0's last batch stored, its transaction never committed (the commit that
    # found the topic gone)
    _commit(bootstrap, group, TopicPartition(source, 0, ends[0] - 100))
    ingest_to_end(first, ends)  # its start writes the changelog again
    folded, _, _ = fold_changelog(bootstrap, topic, PARTITIONS)
    assert folded == logged_state(first.store.path, source, PARTITIONS)
    assert all(folded[p] for p in range(PARTITIONS))
    assert _committed(bootstrap, group, source) == ends  # moved to the store's positions
    second = _settings(kafka_broker, tmp_path / "second", source, group, events=DECAYING)
    worker = ingest_to_end(second, ends)  # an empty store restores from what was written
    assert worker.totals.consumed == 0
    assert whole_store(second.store.path) == whole_store(first.store.path)


def test_a_changelog_deleted_under_the_worker_stops_it_saying_so(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source, settings = _one_partition(kafka_broker, topic_factory, tmp_path, "changelog-lost")
    bootstrap = kafka_broker.bootstrap_servers
    topic = changelog_topic(source, settings.kafka.group_id)
    admin = AdminClient({"bootstrap.servers": bootstrap})

    async def go() -> float:
        async with _running(settings) as (worker, store):
            _send(bootstrap, source, range(100))
            while (store.position(source, 0) or (0, 0))[0] < 100:
                await worker.step(timeout_ms=200)
            admin.delete_topics([topic])[topic].result(30)
            _send(bootstrap, source, range(100, 200))
            start = time.monotonic()
            with pytest.raises(ChangelogTopicLost, match="deleted under the worker"):
                while time.monotonic() - start < 60:
                    await worker.step(timeout_ms=200)
            return time.monotonic() - start

    assert asyncio.run(go()) < 30  # found by its id, before the commit's own timeout


def test_committed_offsets_not_read_in_an_assignment_stop_the_worker_saying_so(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The assignment callback reads the group's committed offsets to check the store's
    state against; a coordinator that does not answer in time (here: no time given) raises
    a RebalanceError from the step (exit 1). The client's own error, raised through the
    callback, reached the step as a bare KafkaError, no exception: the thread polling died
    and the step never returned."""
    source, settings = _one_partition(kafka_broker, topic_factory, tmp_path, "changelog-asked")
    _send(kafka_broker.bootstrap_servers, source, range(10))
    monkeypatch.setattr(source_module, "COMMITTED_TIMEOUT_S", 0.0)

    async def go() -> None:
        async with _running(settings) as (worker, store):
            with pytest.raises(RebalanceError, match=rf"taking {source}\[0\]: .*committed"):
                for _ in range(150):
                    await asyncio.wait_for(worker.step(timeout_ms=200), 30)
            assert store.position(source, 0) is None  # nothing read before the check

    asyncio.run(go())


def test_a_group_whose_offsets_expired_resumes_where_the_changelog_of_the_same_topic_ends(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source, settings = _one_partition(kafka_broker, topic_factory, tmp_path, "changelog-gone")
    bootstrap, group = kafka_broker.bootstrap_servers, settings.kafka.group_id
    _send(bootstrap, source, range(50))
    ingest_to_end(settings, {0: 50})
    _delete_group(bootstrap, group)  # as offsets.retention.minutes would
    _send(bootstrap, source, range(50, 60))
    worker = ingest_to_end(settings, {0: 60})
    assert worker.totals.consumed == 10  # resumed where the changelog's state ends
    assert _committed(bootstrap, group, source)[0] == 60
    # Without the topic's id in the changelog (written before it kept one) it cannot tell
    # expired offsets from a topic created again: refused, naming the offset to commit.
    _tombstone(bootstrap, changelog_topic(source, group), k.source_key(source, 0))
    _delete_group(bootstrap, group)
    _send(bootstrap, source, range(60, 65))
    with pytest.raises(ChangelogError, match=r"no committed offset.*--to-offset 60 --execute"):
        ingest_to_end(settings, {0: 65})
    _commit(bootstrap, group, TopicPartition(source, 0, 60))  # as the message says
    assert ingest_to_end(settings, {0: 65}).totals.consumed == 5
    # An idle partition is told its topic's id on assignment, not only by its next batch.
    _tombstone(bootstrap, changelog_topic(source, group), k.source_key(source, 0))
    _assign_once(settings)
    ids, _, _ = fold_changelog(bootstrap, changelog_topic(source, group), 1, sources=True)
    assert ids[0][k.source_key(source, 0)] == _topic_id(bootstrap, source)


def _assign_once(settings: Settings) -> None:
    """Run a worker until it owns a partition, then stop it."""

    async def go() -> None:
        metrics = PipelineMetrics()
        async with _running(settings, metrics) as (worker, _):
            deadline = time.monotonic() + 30
            while metrics.assigned_partitions._value.get() == 0:
                assert time.monotonic() < deadline, "no partition assigned in 30 s"
                await worker.step(timeout_ms=200)

    asyncio.run(go())


@contextlib.asynccontextmanager
async def _running(
    settings: Settings, metrics: PipelineMetrics | None = None
) -> AsyncIterator[tuple[IngestWorker, DecayedGraphStore]]:
    """An in-process changelog worker on its store, started; stopped on the way out."""
    with DecayedGraphStore(
        settings.store.path, settings.events.behaviours, log_changes=True
    ) as store:
        worker = IngestWorker(settings, store, metrics)
        await worker.start()
        try:
            yield worker, store
        finally:
            await worker.stop()


def test_a_topic_created_again_while_no_worker_ran_is_read_from_its_beginning_into_the_graph(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    """Kafka drops a deleted topic's group offsets: the changelog's topic id tells this from
    offsets that expired. The graph is kept, the new topic read whole, once."""
    source = topic_factory("changelog-recreated", partitions=2)
    kafka_broker.create_topics({f"{source}.dlq": 1})
    bootstrap, group = kafka_broker.bootstrap_servers, f"g-{source}"
    first = _settings(kafka_broker, tmp_path / "first", source, group)
    _send(bootstrap, source, range(40))
    ingest_to_end(first, end_offsets(bootstrap, source, 2))
    old_edges = _edge_keys(logged_state(first.store.path, source, 2))
    delete_topic(bootstrap, source, create_again=NewTopic(source, 2, 1))
    new_id = _topic_id(bootstrap, source)
    _send(bootstrap, source, range(1_000, 1_100))  # more than the old topic held
    ends = end_offsets(bootstrap, source, 2)
    worker = ingest_to_end(first, ends)
    assert worker.totals.consumed == 100  # every record of the new topic, from its start
    stored = logged_state(first.store.path, source, 2)
    assert old_edges < _edge_keys(stored)  # the graph kept what the old topic built
    with DecayedGraphStore(first.store.path, first.events.behaviours) as store:
        assert {p: store.position(source, p)[0] for p in range(2)} == ends  # type: ignore[index]
    topic = changelog_topic(source, group)
    folded, _, _ = fold_changelog(bootstrap, topic, 2)
    assert folded == stored
    ids, _, _ = fold_changelog(bootstrap, topic, 2, sources=True)
    assert {p: ids[p][k.source_key(source, p)] for p in range(2)} == {0: new_id, 1: new_id}
    assert _committed(bootstrap, group, source, 2) == ends
    # A worker with an empty store in the group restores the same state, applying nothing.
    second = _settings(kafka_broker, tmp_path / "second", source, group)
    assert ingest_to_end(second, ends).totals.consumed == 0
    assert whole_store(second.store.path) == whole_store(first.store.path)


def test_a_topic_created_again_under_the_worker_is_read_from_its_beginning(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source = topic_factory("changelog-recreated-live", partitions=2)
    kafka_broker.create_topics({f"{source}.dlq": 1})
    bootstrap = kafka_broker.bootstrap_servers
    settings = _settings(kafka_broker, tmp_path / "store", source, f"g-{source}")

    async def go() -> IngestWorker:
        async with _running(settings) as (worker, store):
            _send(bootstrap, source, range(60))
            while sum(p for p, _ in store.positions().values()) < 60:
                await worker.step(timeout_ms=200)
            delete_topic(bootstrap, source, create_again=NewTopic(source, 2, 1))
            _send(bootstrap, source, range(1_000, 1_040))  # before the worker notices
            deadline = time.monotonic() + 60
            while worker.totals.consumed < 100:
                assert time.monotonic() < deadline, f"{worker.totals} after a minute"
                await worker.step(timeout_ms=200)
        return worker

    assert asyncio.run(go()).totals.consumed == 100  # nothing of the new topic skipped
    ends = end_offsets(bootstrap, source, 2)
    assert sum(ends.values()) == 40
    restarted = ingest_to_end(settings, ends)  # the changelog and offsets agree: nothing again
    assert restarted.totals.consumed == 0
    folded, _, _ = fold_changelog(bootstrap, changelog_topic(source, f"g-{source}"), 2)
    assert folded == logged_state(settings.store.path, source, 2)


def test_a_stop_while_the_start_waits_for_its_group_ends_the_start(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source, settings = _one_partition(kafka_broker, topic_factory, tmp_path, "changelog-stop")
    bootstrap, group = kafka_broker.bootstrap_servers, settings.kafka.group_id
    _send(bootstrap, source, range(50))
    ingest_to_end(settings, {0: 50})
    delete_topic(bootstrap, changelog_topic(source, group))
    # Behind the store: writing the changelog again moves the offset, which waits for an
    # empty group, and this worker's previous run (its static id) is still in it.
    _commit(bootstrap, group, TopicPartition(source, 0, 40))
    previous = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.instance.id": settings.kafka.instance_id,
            "session.timeout.ms": settings.kafka.session_timeout_ms,
            "enable.auto.commit": False,
        }
    )
    previous.subscribe([source])
    deadline = time.monotonic() + 30
    while not previous.assignment():
        assert time.monotonic() < deadline, "the stand-in previous run never joined"
        previous.poll(0.2)

    async def go() -> tuple[bool, float]:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(3.0, stop.set)
        with DecayedGraphStore(
            settings.store.path, settings.events.behaviours, log_changes=True
        ) as store:
            worker = IngestWorker(settings, store)
            began = time.monotonic()
            try:
                return await worker.start(stop), time.monotonic() - began
            finally:
                await worker.stop()

    try:
        started, took = asyncio.run(go())
    finally:
        previous.close()
    # The wait would last a session timeout and 3 s (9 s) before it gave up.
    assert not started and took < 5.0
    ingest_to_end(settings, {0: 50})  # the next start writes the changelog again
    assert _committed(bootstrap, group, source, 1) == {0: 50}


def _delete_group(bootstrap: str, group: str) -> None:
    """Delete the group's offsets, once the worker's static membership has expired."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 30
    while True:
        try:
            admin.delete_consumer_groups([group])[group].result(10)
            return
        except KafkaException:
            assert time.monotonic() < deadline, "the group kept its member for 30 s"
            time.sleep(0.5)


def _tombstone(bootstrap: str, topic: str, key: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=key, value=None, partition=0)
    assert producer.flush(10) == 0


def _topic_id(bootstrap: str, topic: str) -> bytes:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    found = admin.describe_topics(TopicCollection([topic]))[topic].result(10)
    return str(found.topic_id).encode()


def _edge_keys(state: dict[int, dict[bytes, bytes]]) -> set[bytes]:
    return {key for records in state.values() for key in records if key[:1] == k.EDGE}


def _one_partition(
    broker: LocalKafkaBroker, topic_factory, tmp_path: Path, name: str
) -> tuple[str, Settings]:
    """A one-partition source with its DLQ, and a changelog worker's settings for it."""
    source = topic_factory(name, partitions=1)
    broker.create_topics({f"{source}.dlq": 1})
    return source, _settings(broker, tmp_path / "store", source, f"g-{source}")


def _commit(bootstrap: str, group: str, position: TopicPartition) -> None:
    """Commit from outside the group, once the worker's static membership has expired."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    deadline = time.monotonic() + 30
    while True:
        try:
            consumer.commit(offsets=[position], asynchronous=False)
            break
        except KafkaException:
            assert time.monotonic() < deadline, "the group kept its member for 30 s"
            time.sleep(0.5)
    consumer.close()


def _committed(
    bootstrap: str, group: str, source: str, partitions: int = PARTITIONS
) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    asked = [TopicPartition(source, p) for p in range(partitions)]
    found = {tp.partition: tp.offset for tp in consumer.committed(asked, timeout=10)}
    consumer.close()
    return found


def test_offsets_lost_to_retention_are_skipped_once_through_the_changelog(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source = topic_factory("changelog-retention", partitions=1)
    bootstrap = kafka_broker.bootstrap_servers
    first = _settings(kafka_broker, tmp_path / "first", source, f"g-{source}")
    _send(bootstrap, source, range(0, 4))
    ingest_to_end(first, {0: 4})
    _send(bootstrap, source, range(4, 10))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(source, 0, 7)]).values():
        future.result(30)  # offsets 4, 5 and 6 are gone before the worker read them
    skipping = ingest_to_end(first, {0: 10})
    assert (skipping.totals.offsets_skipped, skipping.totals.applied) == (3, 3)
    # An empty store in the same group restores the jump with the rest: nothing is skipped
    # or applied again.
    second = _settings(kafka_broker, tmp_path / "second", source, f"g-{source}")
    again = ingest_to_end(second, {0: 10})
    assert (again.totals.offsets_skipped, again.totals.consumed) == (0, 0)
    assert whole_store(second.store.path) == whole_store(first.store.path)


def _send(bootstrap: str, topic: str, seqs: range) -> None:
    records = [RawRecord(*event(seq)) for seq in seqs]
    assert not any(s.refused for s in send_records(bootstrap, topic, records))


TRAINING_EVENTS = 8_000


def test_a_training_worker_with_the_changelog_sigkilled_keeps_store_and_versions_intact(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    topic = prepare_topic(kafka_broker, TRAINING_EVENTS, partitions=4)
    report = run_training_crash_scenario(
        kafka_broker,
        topic,
        TRAINING_EVENTS,
        tmp_path,
        worker_kills=1,
        store_write_kills=1,
        seed=5,
        extra_env=CHANGELOG_ON,
    )
    reference = run_crash_scenario(kafka_broker, topic, TRAINING_EVENTS, tmp_path, "no-crash", 0)
    crashed = report.crash
    assert (crashed.lost, crashed.duplicated, crashed.applied) == (0, 0, TRAINING_EVENTS)
    assert crashed.digest == reference.digest
    assert report.records > 0
    assert report.regressions == []
