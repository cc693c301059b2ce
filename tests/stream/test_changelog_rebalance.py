"""Partitions move between two live ``--changelog`` workers with their state: a second worker
joins mid-stream (restores what it is given from the changelog), then leaves mid-stream (the
first takes its partitions back, drops its stale copy and restores). The folded changelog
applies every event exactly once and equals a single uninterrupted run's state."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from stream.behaviours import DEFAULT_BEHAVIOURS
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import owns_partitions
from stream.settings import KafkaSettings, Settings, StoreSettings, changelog_topic
from stream.state import keys as k
from tests.harness.changelog_state import end_offsets, fold_changelog, ingest_to_end, logged_state
from tests.harness.progress import GroupProgress
from tests.harness.raw_records import RawRecord, send_records
from tests.harness.worker_process import WorkerProcess, wait_for, worker_env

pytestmark = pytest.mark.integration

PARTITIONS = 4
PHASE = 8_000
T0 = int(time.time() * 1000) - 3_600_000
USERS, ITEMS = 101, 103  # coprime: seq -> (user, item) repeats every 10,403 events


def _pair(seq: int) -> tuple[str, str]:
    return f"u{seq % USERS}", f"i{seq % ITEMS}"


def _records(seqs: range) -> list[RawRecord]:
    """Click events, all at one event time, so an edge's ``w_ref / beta`` counts exactly
    how often its events were applied; edges repeat, so a double application shows."""
    out = []
    for seq in seqs:
        user, item = _pair(seq)
        body = {"user_id": user, "item_id": item, "event_type": "click", "ts": T0}
        out.append(RawRecord(user.encode(), json.dumps(body).encode()))
    return out


def _send(bootstrap: str, topic: str, seqs: range) -> None:
    assert not any(s.refused for s in send_records(bootstrap, topic, _records(seqs)))


def test_partitions_move_between_two_live_workers_with_their_state(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = f"rebalance-{uuid.uuid4().hex[:10]}"
    kafka_broker.create_topics({topic: PARTITIONS, f"{topic}.dlq": 1})
    group = f"g-{topic}"

    envs = {
        name: worker_env(bootstrap, topic, group, tmp_path / f"store-{name}", 200)
        | {"STREAMGNN_INSTANCE_ID": name, "STREAMGNN_CHANGELOG": "true"}
        for name in ("a", "b")
    }
    first, second = (WorkerProcess(envs[n], tmp_path / f"{n}.log") for n in ("a", "b"))
    second_metrics = envs["b"]["STREAMGNN_METRICS_ADDRESS"]
    progress = GroupProgress(bootstrap, group, topic)
    try:
        first.start()
        _send(bootstrap, topic, range(0, PHASE))
        wait_for(partial(progress.reached, PHASE), 120, "the first phase")
        second.start()  # joins while the second phase streams in
        _send(bootstrap, topic, range(PHASE, 2 * PHASE))
        wait_for(partial(owns_partitions, second_metrics), 120, "the second worker's share")
        wait_for(partial(progress.reached, 2 * PHASE), 120, "the second phase")
        _send(bootstrap, topic, range(2 * PHASE, 3 * PHASE))
        assert second.terminate() == 0  # leaves while the third phase is being read
        wait_for(partial(progress.reached, 3 * PHASE), 120, "the third phase")
        assert first.terminate() == 0
    finally:
        for process in (first, second):
            if process.exit_status() is None:
                process.kill()
        progress.close()
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in ("a", "b")}
    assert "restoring from" in logs["b"]  # it was given partitions with state
    assert "restoring from" in logs["a"]  # it took them back, its own copy stale

    folded, _, _ = fold_changelog(bootstrap, changelog_topic(topic, group), PARTITIONS)
    beta = DEFAULT_BEHAVIOURS["click"].beta
    applied = Counter[tuple[str, str]]()
    for state in folded.values():
        for key, value in state.items():
            if key[:1] == k.EDGE:
                (_, user), _, (_, item) = k.split_edge_suffix(key[1:])
                applied[(user, item)] = round(k.EDGE_VALUE.unpack(value)[0] / beta)
    assert applied == Counter(_pair(seq) for seq in range(3 * PHASE))

    reference = Settings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            interactions_topic=topic,
            dlq_topic=f"{topic}.dlq",
            group_id=f"ref-{topic}",
        ),
        store=StoreSettings(path=tmp_path / "reference"),
    )
    ingest_to_end(reference, end_offsets(bootstrap, topic, PARTITIONS))
    assert folded == logged_state(reference.store.path, topic, PARTITIONS)
