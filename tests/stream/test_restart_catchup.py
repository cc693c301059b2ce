"""After a restart the trainer trains on what the store holds beyond its checkpoint and
publishes every node those events touch, however many (real broker, worker processes).

1. A training worker stores and trains on the ``A`` events; SIGTERM checkpoints them.
2. The ``B`` events (2,000 new users, new items) reach the store but no checkpoint: an
   ingest-only worker, or a training worker that never reaches its checkpoint interval,
   is SIGKILLed once the store holds them all. In one case retention then deletes the
   whole topic, so the restart cannot read them back and must go by the store alone.
3. A training worker restarts; no event is sent. Every user and item ``B`` touched gets a
   vector published after the restart, stamped with its newest event's time, above the
   first checkpoint's model version (2,000 > the 500 a step re-publishes for drift alone),
   and the new checkpoint has trained (its Adam step count grew) through the store's
   offsets.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from stream.behaviours import DEFAULT_BEHAVIOURS
from stream.learn.checkpoint import CheckpointStore, Payload
from stream.local_broker.broker import LocalKafkaBroker
from stream.publish.schema import decode_record
from stream.state.graph_store import DecayedGraphStore
from tests.harness.embedding_topics import end_offsets, read_topic
from tests.harness.progress import StoreCompletion
from tests.harness.worker_process import WorkerProcess, training_env, wait_for, worker_env

pytestmark = pytest.mark.integration

NEW_USERS = 2_000
BASE_TS = int(time.time() * 1000) - 3_600_000  # an hour ago: inside any skew or age rule
TYPES = ("click", "purchase", "view")


def a_events() -> list[dict[str, Any]]:
    return [
        {
            "user_id": f"a{k % 100}",
            "item_id": f"i{k % 300}",
            "event_type": "click",
            "ts": BASE_TS + k,
        }
        for k in range(400)
    ]


def b_events() -> list[dict[str, Any]]:
    return [
        {
            "user_id": f"b{k % NEW_USERS}",
            "item_id": f"i{(7 * k) % 300}" if k % 5 else f"n{k % 100}",
            "event_type": TYPES[k % 3],
            "ts": BASE_TS + 10_000 + k,
        }
        for k in range(2 * NEW_USERS)
    ]


def send(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    for event in events:
        producer.send(topic, key=event["user_id"].encode(), value=json.dumps(event).encode())
    producer.flush()
    producer.close()


def newest_event_ms(events: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    newest: dict[tuple[str, str], int] = {}
    for e in events:
        for node in (("user", e["user_id"]), ("item", e["item_id"])):
            newest[node] = max(newest.get(node, 0), e["ts"])
    return newest


def published_since(bootstrap: str, topics: dict[str, str], since_ms: int) -> dict[Any, Any]:
    """(kind, id) -> the newest record published at or after ``since_ms``."""
    newest = {}
    for kind, topic in topics.items():
        if not end_offsets(bootstrap, topic):
            continue
        for raw in read_topic(bootstrap, topic):
            record = decode_record(raw.value)
            if record.publish_time_ms >= since_ms:
                newest[(kind, record.id)] = record  # log order: the last one is the newest
    return newest


def adam_steps(payload: Payload) -> int:
    return max(int(s["step"]) for s in payload["trainer"]["optimizer"]["state"].values())


def stored_offsets(store_path: Path, topic: str) -> dict[int, int]:
    with DecayedGraphStore(store_path, DEFAULT_BEHAVIOURS, read_only=True) as store:
        return {p: o for (t, p), (o, _) in store.positions().items() if t == topic}


@pytest.mark.parametrize(
    ("phase_two", "retention"),
    [("ingest-only", False), ("training", False), ("ingest-only", True)],
)
def test_a_restart_trains_on_stored_events_and_publishes_every_node_they_touch(
    kafka_broker: LocalKafkaBroker, tmp_path: Path, phase_two: str, retention: bool
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    tag = f"catchup-{phase_two}-{retention}-{time.time_ns() % 10**12}"
    topic = f"{tag}-interactions"
    kafka_broker.create_topics({topic: 2, f"{topic}.dlq": 1})
    store_path = tmp_path / "store"
    env = worker_env(bootstrap, topic, f"group-{tag}", store_path, 500)
    env |= training_env(tmp_path, tag) | {"STREAMGNN_CHECKPOINT_INTERVAL_S": "3600"}
    topics = {
        "user": env["STREAMGNN_USER_EMBEDDINGS_TOPIC"],
        "item": env["STREAMGNN_ITEM_EMBEDDINGS_TOPIC"],
    }
    checkpoints = CheckpointStore(Path(env["STREAMGNN_CHECKPOINT_DIR"]))
    a, b = a_events(), b_events()

    send(bootstrap, topic, a)
    run(env, tmp_path / "worker-1.log", StoreCompletion(store_path, topic, len(a)))
    first = checkpoints.load_latest()
    assert first is not None

    send(bootstrap, topic, b)
    ingest = env | {"STREAMGNN_TRAIN": "false" if phase_two == "ingest-only" else "true"}
    run(
        ingest, tmp_path / "worker-2.log", StoreCompletion(store_path, topic, len(a + b)), kill=True
    )
    assert _same(checkpoints.load_latest(), first)  # the store is ahead of the checkpoint
    if retention:
        delete_records(bootstrap, topic)

    restart_ms = time.time_ns() // 1_000_000
    touched = {node: t for node, t in newest_event_ms(a + b).items() if node in newest_event_ms(b)}
    worker = WorkerProcess(env, tmp_path / "worker-3.log")
    worker.start()
    try:
        _await_vectors(bootstrap, topics, restart_ms, touched.keys(), worker, tmp_path)
        assert worker.terminate() == 0
    finally:
        if worker.exit_status() is None:
            worker.kill()

    published = published_since(bootstrap, topics, restart_ms)
    assert {node: published[node].event_time_ms for node in touched} == touched
    assert (
        min(published[node].model_version for node in touched) > first["trainer"]["model_version"]
    )
    last = checkpoints.load_latest()
    assert last is not None
    assert adam_steps(last) > adam_steps(first)  # trained on them, not only re-embedded
    assert {int(k.rpartition(":")[2]): v for k, v in last["offsets"].items()} == stored_offsets(
        store_path, topic
    )


def run(env: dict[str, str], log: Path, done: StoreCompletion, kill: bool = False) -> None:
    """A worker until its store holds the stream, then SIGKILL or SIGTERM (exit 0)."""
    worker = WorkerProcess(env, log)
    worker.start()
    try:
        wait_for(partial(_done_or_dead, done, worker), 300, f"the store to fill (log: {log})")
        if kill:
            worker.kill()
        else:
            assert worker.terminate() == 0, f"see {log}"
    finally:
        if worker.exit_status() is None:
            worker.kill()


def _await_vectors(
    bootstrap: str,
    topics: dict[str, str],
    since_ms: int,
    nodes: Any,
    worker: WorkerProcess,
    logs: Path,
    timeout_s: float = 300.0,
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        missing = nodes - published_since(bootstrap, topics, since_ms).keys()
        if not missing:
            return
        if worker.exit_status() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"{len(missing)} of {len(nodes)} touched nodes got no vector after the restart "
                f"(worker exit {worker.exit_status()}; logs in {logs}), e.g. {sorted(missing)[:5]}"
            )
        time.sleep(2.0)


def _done_or_dead(done: StoreCompletion, worker: WorkerProcess) -> bool:
    if worker.exit_status() is not None:
        raise RuntimeError(f"worker exited {worker.exit_status()} early")
    return done()


def _same(x: Payload | None, y: Payload) -> bool:
    return x is not None and x["offsets"] == y["offsets"] and adam_steps(x) == adam_steps(y)


def delete_records(bootstrap: str, topic: str) -> None:
    """Retention, now: every record of ``topic`` goes."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        ends = end_offsets(bootstrap, topic)
        admin.delete_records({TopicPartition(topic, p): end for p, end in ends.items()})
    finally:
        admin.close()
