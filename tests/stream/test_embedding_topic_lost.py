"""An embedding topic deleted under a training worker, deleted and created again by someone
else, or deleted while the worker was down: it exists again and holds a vector for every id
published before, stamped with that id's newest event, its versions never going back.

By hand on 2026-12-06, before: with the user topic deleted under a training worker, the
worker logged "publish not acked (... Unknown topic); retrying" every second for ever and
published nothing more; a worker restarted after its topic was deleted created the topic
and put on it only the vectors that moved later, so a consumer reading the new topic from
its beginning found none of the others.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka.admin import NewTopic

from stream.local_broker.broker import LocalKafkaBroker
from stream.publish.schema import EmbeddingRecord, decode_record
from tests.harness.embedding_topics import delete_topic, end_offsets, read_topic
from tests.harness.faults import event, prepare_topic, produce
from tests.harness.progress import metric_value
from tests.harness.worker_process import WorkerProcess, training_env, wait_for, worker_env

pytestmark = pytest.mark.integration

# the scenario stream's first events: users u0..u996 and items i0..i1008, more of either
# than the 500 rows a step reports for drift alone (which could refill a topic by chance)
EVENTS = 2_000


def newest_event_ms(kind: str, count: int) -> dict[str, int]:
    """Each id's newest event time among the stream's first ``count`` events (their times
    rise with their number)."""
    bodies = (json.loads(event(seq)[1]) for seq in range(count))
    return {body[f"{kind}_id"]: body["ts"] for body in bodies}


def latest(bootstrap: str, topic: str) -> dict[str, EmbeddingRecord]:
    """Each id's last record on ``topic`` (none while it does not exist)."""
    try:
        if not end_offsets(bootstrap, topic):
            return {}
        return {
            r.id: r for r in map(decode_record, (raw.value for raw in read_topic(bootstrap, topic)))
        }
    except TypeError:  # not created again yet: no partitions to read
        return {}


def holds(bootstrap: str, topic: str, ids: set[str]) -> Callable[[], bool]:
    return lambda: ids <= latest(bootstrap, topic).keys()


def training_worker(
    broker: LocalKafkaBroker, workdir: Path, **extra: str
) -> tuple[str, dict[str, str]]:
    """A topic holding the first ``EVENTS`` events of the scenario stream, and the
    environment of a training worker reading it."""
    topic = prepare_topic(broker, EVENTS, partitions=2)
    env = worker_env(broker.bootstrap_servers, topic, f"g-{topic}", workdir / "graph", 500)
    return topic, env | training_env(workdir, topic) | extra


def start(env: dict[str, str], log: Path) -> WorkerProcess:
    worker = WorkerProcess(env, log)
    worker.start()
    return worker


def stop(worker: WorkerProcess) -> None:
    try:
        assert worker.terminate(60) == 0
    finally:
        if worker.exit_status() is None:
            worker.kill()


def test_a_topic_lost_under_a_running_worker_gets_every_vector_again(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic, env = training_worker(kafka_broker, tmp_path, STREAMGNN_CHECKPOINT_INTERVAL_S="1")
    users, items = env["STREAMGNN_USER_EMBEDDINGS_TOPIC"], env["STREAMGNN_ITEM_EMBEDDINGS_TOPIC"]
    log = tmp_path / "worker.log"
    worker = start(env, log)
    try:
        user_ids, item_ids = (
            set(newest_event_ms("user", EVENTS)),
            set(newest_event_ms("item", EVENTS)),
        )
        wait_for(holds(bootstrap, users, user_ids), 180, f"every user vector ({log})")
        wait_for(holds(bootstrap, items, item_ids), 60, f"every item vector ({log})")
        before = {**latest(bootstrap, users), **latest(bootstrap, items)}

        # Deleted: the next publish finds it gone and creates it again.
        delete_topic(bootstrap, users)
        produce(bootstrap, topic, 1, first=EVENTS)
        wait_for(holds(bootstrap, users, user_ids), 90, f"the user topic refilled ({log})")
        # Deleted and created again by someone else, no event after: the check of the
        # topics' ids (every checkpoint interval, idle or not) finds it.
        delete_topic(
            bootstrap,
            items,
            create_again=NewTopic(items, 1, 1, topic_configs={"cleanup.policy": "compact"}),
        )
        wait_for(holds(bootstrap, items, item_ids), 90, f"the item topic refilled ({log})")
        lost = metric_value(
            env["STREAMGNN_METRICS_ADDRESS"], "streamgnn_embedding_topics_lost_total"
        )
        stop(worker)
    finally:
        if worker.exit_status() is None:
            worker.kill()

    for kind, name in (("user", users), ("item", items)):
        records = latest(bootstrap, name)
        newest = newest_event_ms(kind, EVENTS + 1)
        assert {i: records[i].event_time_ms for i in newest} == newest
        assert all(records[i].model_version >= before[i].model_version for i in newest)
    assert lost == 2  # one user topic, one item topic
    text = log.read_text()
    assert text.count("published again at model version") == 2
    assert "Traceback" not in text


def test_a_topic_deleted_while_the_worker_was_down_gets_every_vector_at_start(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    _, env = training_worker(kafka_broker, tmp_path)
    users = env["STREAMGNN_USER_EMBEDDINGS_TOPIC"]
    user_ids = set(newest_event_ms("user", EVENTS))
    first = start(env, tmp_path / "first.log")
    try:
        wait_for(holds(bootstrap, users, user_ids), 180, "every user vector")
        before = latest(bootstrap, users)
    finally:
        stop(first)

    delete_topic(bootstrap, users)
    log = tmp_path / "second.log"
    restart_ms = time.time_ns() // 1_000_000
    second = start(env, log)
    try:  # no event sent: only the check at start can fill it
        wait_for(holds(bootstrap, users, user_ids), 120, f"the user topic refilled ({log})")
    finally:
        stop(second)
    records = latest(bootstrap, users)
    assert {i: r.event_time_ms for i, r in records.items()} == newest_event_ms("user", EVENTS)
    assert all(r.publish_time_ms >= restart_ms for r in records.values())
    assert min(r.model_version for r in records.values()) > max(
        r.model_version for r in before.values()
    )
