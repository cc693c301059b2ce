"""A training worker with the graph changelog whose store is lost: the partitions it
restores from the changelog on assignment reach the trainer's graph too (it built that
graph from the store before the partitions were checked)."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from stream.learn.changelog_fold import edge_digest
from stream.learn.checkpoint import CheckpointStore
from stream.local_broker.broker import LocalKafkaBroker
from stream.settings import changelog_topic
from tests.harness.changelog_state import changelog_edges, fold_changelog
from tests.harness.faults import prepare_topic
from tests.harness.progress import MetricsProgress
from tests.harness.worker_process import WorkerProcess, training_env, wait_for, worker_env

pytestmark = pytest.mark.integration

EVENTS = 3_000
PARTITIONS = 3
TIMEOUT_S = 180.0


def _trained_through(checkpoints: Path, topic: str) -> int:
    payload = CheckpointStore(checkpoints).load_latest()
    if payload is None:
        return 0
    return sum(o for key, o in payload["offsets"].items() if key.rpartition(":")[0] == topic)


def test_a_wiped_training_worker_folds_its_restored_partitions_into_the_trainer_graph(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    topic = prepare_topic(kafka_broker, EVENTS, partitions=PARTITIONS)
    group = f"wiped-{topic}"
    store = tmp_path / "store"
    env = {
        **worker_env(kafka_broker.bootstrap_servers, topic, group, store, 500),
        **training_env(tmp_path, f"wiped-{time.time_ns() % 10**9}"),
        "STREAMGNN_CHANGELOG": "true",
        "STREAMGNN_CHECKPOINT_INTERVAL_S": "1",
    }
    checkpoints = Path(env["STREAMGNN_CHECKPOINT_DIR"])
    log_path = tmp_path / "worker.log"
    worker = WorkerProcess(env, log_path)
    try:
        worker.start()
        applied = MetricsProgress(env["STREAMGNN_METRICS_ADDRESS"])
        wait_for(lambda: applied.committed() == EVENTS, TIMEOUT_S, "the stream to apply")
        assert worker.terminate() == 0  # trains what is queued and checkpoints it
        assert _trained_through(checkpoints, topic) == EVENTS
        shutil.rmtree(store)  # the cache is gone; the checkpoint and the changelog remain
        worker.start()
        restored = lambda: log_path.read_text().count("restored ") >= PARTITIONS  # noqa: E731
        wait_for(restored, TIMEOUT_S, "every partition to restore")
        wait_for(worker.consuming, TIMEOUT_S, "the restarted worker to consume")
        assert worker.terminate() == 0
    finally:
        if worker.exit_status() is None:
            worker.kill()

    folded, _, _ = fold_changelog(
        kafka_broker.bootstrap_servers, changelog_topic(topic, group), PARTITIONS
    )
    edges = changelog_edges(folded)
    assert len(edges) > 0
    # The restarted trainer's graph came from an empty store plus the restores alone.
    last = re.findall(r"trainer graph: (\d+) edges, digest (\w+)", log_path.read_text())[-1]
    assert (int(last[0]), last[1]) == (len(edges), edge_digest(edges))
