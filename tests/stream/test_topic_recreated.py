"""The interactions topic deleted and created again under a running worker, and a log that
ends before the store's offsets (truncated).

By hand on 2026-12-06, before: after the topic was created again the worker logged "beyond
the log end" twice a second for ever and read nothing (each partition's reset re-placed the
others at their stored offsets, out of the new log again), its lag gauges said 0; had it
resumed, every event below the old offsets would have been skipped as applied. Now the
store keeps the topic's id (Kafka's topic id) with its offsets: a new id moves them back to
0, and a log that ends before them (same id) resumes at its end, stored, once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka.admin import NewTopic

from stream.behaviours import DEFAULT_BEHAVIOURS
from stream.errors import StoreError
from stream.local_broker.broker import LocalKafkaBroker
from stream.state.graph_store import DecayedGraphStore, PartitionBatch
from tests.harness.embedding_topics import delete_topic
from tests.harness.faults import CrashReport, count_applications, prepare_topic, produce
from tests.harness.worker_process import WorkerProcess, wait_for, worker_env

pytestmark = pytest.mark.integration

FIRST, SECOND = 1_000, 600  # the second life of the topic ends below the first's offsets


def _edges(store_path: Path) -> int:
    """Edges in the worker's store, read beside it (0 while it is still being created)."""
    try:
        with DecayedGraphStore(store_path, DEFAULT_BEHAVIOURS, read_only=True) as store:
            return store.counts().edges
    except StoreError:  # the directory made, its first files not written yet
        return 0


def test_a_topic_created_again_is_read_from_its_beginning(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = prepare_topic(kafka_broker, FIRST, partitions=2)
    store = tmp_path / "graph"
    log = tmp_path / "worker.log"
    worker = WorkerProcess(worker_env(bootstrap, topic, f"g-{topic}", store, 250), log)
    worker.start()
    try:
        wait_for(lambda: _edges(store) >= FIRST, 120, "the first life")
        delete_topic(bootstrap, topic, create_again=NewTopic(topic, 2, 1))
        produce(bootstrap, topic, SECOND, first=FIRST)
        wait_for(lambda: _edges(store) >= FIRST + SECOND, 90, f"the second life ({log})")
        assert worker.terminate(60) == 0
    finally:
        if worker.exit_status() is None:
            worker.kill()
    report = CrashReport("recreated", sent=FIRST + SECOND)
    count_applications(store, topic, report)
    assert (report.lost, report.duplicated, report.applied) == (0, 0, FIRST + SECOND)
    assert sum(report.positions.values()) == SECOND  # offsets of the second life
    text = log.read_text()
    assert text.count("was deleted and created again") == 1
    assert "beyond the log end" not in text


def test_a_log_that_ends_before_the_stored_offset_resumes_at_its_end_once(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = prepare_topic(kafka_broker, FIRST, partitions=1)
    store = tmp_path / "graph"
    env = worker_env(bootstrap, topic, f"g-{topic}", store, 250)
    first = WorkerProcess(env, tmp_path / "first.log")
    first.start()
    try:
        wait_for(lambda: _edges(store) >= FIRST, 120, "the stream")
        assert first.terminate(60) == 0
    finally:
        if first.exit_status() is None:
            first.kill()
    # As if the log had held 4,000 more records that a truncation took away.
    with DecayedGraphStore(store, DEFAULT_BEHAVIOURS) as graph:
        graph.apply(topic, [PartitionBatch(0, FIRST + 4_000, ())])
    log = tmp_path / "second.log"
    second = WorkerProcess(env, log)
    second.start()
    try:
        # What a truncated log gains before the worker sees it is not read (it resumes at
        # the end it finds): the new records come after that.
        wait_for(lambda: "beyond the log end" in log.read_text(), 120, f"the reset ({log})")
        produce(bootstrap, topic, SECOND, first=FIRST)
        wait_for(lambda: _edges(store) >= FIRST + SECOND, 90, f"the records after ({log})")
        assert second.terminate(60) == 0
    finally:
        if second.exit_status() is None:
            second.kill()
    report = CrashReport("truncated", sent=FIRST + SECOND)
    count_applications(store, topic, report)
    assert (report.lost, report.duplicated) == (0, 0)
    assert report.positions == {0: FIRST + SECOND}
    assert log.read_text().count("beyond the log end") == 1
