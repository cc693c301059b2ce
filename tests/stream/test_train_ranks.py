"""``streamgnn train`` as two gloo ranks under ``torchrun`` against the real broker, a cold
start, live batches, a stop and a restart from the ranks' checkpoints: both ranks fold the
whole changelog into the same graph and train each edge update once, and the two embedding
topics hold every node once per version, in one increasing version sequence per key."""

from __future__ import annotations

import json
import re
import sys
import time
from collections import defaultdict
from functools import partial
from pathlib import Path

import pytest
from kafka import KafkaProducer

from stream.local_broker.broker import LocalKafkaBroker, free_ports
from stream.settings import changelog_topic
from tests.harness.changelog_state import fold_changelog
from tests.harness.embedding_log import read_published
from tests.harness.faults import event, produce
from tests.harness.progress import GroupProgress, metric_value
from tests.harness.worker_process import (
    INGEST_COMMAND,
    WorkerProcess,
    training_env,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration

COLD = 2_000  # events in the changelog before the trainer starts
MIDDLE = 3_000  # the trainer restarts here
EVENTS = 4_000
PARTITIONS = 2
TIMEOUT_S = 300.0
_TOPICS = {"user": "STREAMGNN_USER_EMBEDDINGS_TOPIC", "item": "STREAMGNN_ITEM_EMBEDDINGS_TOPIC"}


def produce_range(bootstrap: str, topic: str, start: int, end: int) -> None:
    """Events ``start`` .. ``end - 1`` of the scenario stream (its own edge each)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    for seq in range(start, end):
        key, value = event(seq)
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def _torchrun() -> list[str]:
    """``streamgnn train`` as 2 ranks on this machine (a free rendezvous port)."""
    port = str(free_ports(1)[0])
    rendezvous = ["--master-addr", "127.0.0.1", "--master-port", port]
    ranks = ["-m", "torch.distributed.run", "--nproc-per-node", "2", *rendezvous]
    return [sys.executable, *ranks, "-m", "stream.train"]


def _logged_twice(path: Path, line: str) -> bool:
    return path.exists() and path.read_text(errors="replace").count(line) >= 2


def _has_folded(address: str, records: int) -> bool:
    return metric_value(address, "streamgnn_changelog_records_folded_total") == records


def test_two_trainer_ranks_publish_one_space(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = f"ranks-{time.time_ns() % 10**12}"
    group = f"g-{topic}"
    kafka_broker.create_topics({topic: PARTITIONS, f"{topic}.dlq": 1})
    produce(bootstrap, topic, COLD)
    ingest = WorkerProcess(
        worker_env(bootstrap, topic, group, tmp_path / "store", 200),
        tmp_path / "ingest.log",
        command=INGEST_COMMAND,
    )
    progress = GroupProgress(bootstrap, group, topic)

    published = training_env(tmp_path, f"ranks-{topic}")
    port = free_ports(1)[0]
    addresses = [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]  # port + LOCAL_RANK
    env = {
        "STREAMGNN_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMGNN_INTERACTIONS_TOPIC": topic,
        "STREAMGNN_GROUP_ID": group,
        "STREAMGNN_METRICS_ADDRESS": addresses[0],
        **{key: v for key, v in published.items() if key != "STREAMGNN_TRAIN"},
    }
    log_path = tmp_path / "trainer.log"
    runs = [WorkerProcess(env, log_path, command=_torchrun()) for _ in range(2)]
    try:
        ingest.start()
        wait_for(partial(progress.reached, COLD), TIMEOUT_S, "the first events ingested")
        runs[0].start()  # a cold start on what the changelog holds, then the live stream
        wait_for(partial(_logged_twice, log_path, "cold start done"), TIMEOUT_S, "a cold start")
        for run, (start, end) in zip(runs, ((COLD, MIDDLE), (MIDDLE, EVENTS)), strict=True):
            if run is runs[1]:  # a restart from the ranks' checkpoints
                run.start()
                wait_for(partial(_logged_twice, log_path, "checkpoint loaded"), TIMEOUT_S, "resume")
            produce_range(bootstrap, topic, start, end)
            wait_for(partial(progress.reached, end), TIMEOUT_S, "the stream ingested")
            _, records, _ = fold_changelog(bootstrap, changelog_topic(topic, group), PARTITIONS)
            for address in addresses:
                wait_for(partial(_has_folded, address, records), TIMEOUT_S, f"{address} to fold")
            run.terminate()  # torchrun exits 1 on SIGTERM (its SignalException) ...
        assert ingest.terminate() == 0
    finally:
        progress.close()
        for process in (ingest, *runs):
            if process.exit_status() is None:
                process.kill()

    log = log_path.read_text()
    trained = [int(n) for n in re.findall(r"stopped: TrainTotals\(.*trained_edges=(\d+)", log)]
    assert len(trained) == 4  # ... once both ranks stopped, in each run
    first, second = sorted(trained)[::2]
    assert sorted(trained) == [first, first, second, second]  # the ranks trained alike
    assert first + second == EVENTS  # each edge update once across the restart
    graphs = re.findall(r"trainer graph: (\d+) edges, digest (\w+)", log)
    assert len(graphs) == 4 and graphs[2] == graphs[3]  # both ranks hold the whole graph
    assert int(graphs[3][0]) == EVENTS  # each event sets its own edge

    vectors = read_published(
        bootstrap,
        [
            published["STREAMGNN_USER_EMBEDDINGS_TOPIC"],
            published["STREAMGNN_ITEM_EMBEDDINGS_TOPIC"],
        ],
    )
    versions: dict[tuple[str, bytes], list[int]] = defaultdict(list)
    for vector in vectors:
        versions[(vector.topic, vector.key)].append(vector.model_version)
    # one rank per key and version: strictly increasing, never a version twice
    assert all(v == sorted(set(v)) for v in versions.values())
    assert max(max(v) for v in versions.values()) > 1  # live batches after the cold start
    bodies = [json.loads(event(seq)[1]) for seq in range(EVENTS)]
    for kind in ("user", "item"):  # every node of the stream, from one of the two ranks
        on_topic = {key.decode() for (t, key) in versions if t == published[_TOPICS[kind]]}
        assert on_topic == {body[f"{kind}_id"] for body in bodies}
