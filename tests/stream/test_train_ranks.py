"""``streamgnn train`` as two gloo ranks under ``torchrun`` against the real broker: both
ranks fold the whole changelog into the same graph, and the two embedding topics hold
every node once per version, in one increasing version sequence per key."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from collections import defaultdict
from functools import partial
from pathlib import Path

import pytest
from kafka import KafkaProducer

from stream.ingest.changelog import changelog_topic
from stream.local_broker.broker import LocalKafkaBroker, free_ports
from tests.harness.changelog_state import fold_changelog
from tests.harness.embedding_log import read_published
from tests.harness.faults import event, produce
from tests.harness.progress import GroupProgress
from tests.harness.worker_process import WorkerProcess, training_env, wait_for, worker_env

pytestmark = pytest.mark.integration

COLD = 2_000  # events in the changelog before the trainer starts
EVENTS = 3_000
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


def _logged_twice(path: Path, line: str) -> bool:
    return path.exists() and path.read_text(errors="replace").count(line) >= 2


def _has_folded(address: str, records: int) -> bool:
    return _folded(address) == records


def _folded(address: str) -> float:
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1.0
    found = re.search(r"^streamgnn_changelog_records_folded_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else -1.0


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
        command=[sys.executable, "-m", "stream.ingest.command"],
    )
    progress = GroupProgress(bootstrap, group, topic)

    published = training_env(tmp_path, f"ranks-{topic}")
    port = free_ports(1)[0]
    addresses = [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]  # port + LOCAL_RANK
    trainer = WorkerProcess(
        {
            "STREAMGNN_BOOTSTRAP_SERVERS": bootstrap,
            "STREAMGNN_INTERACTIONS_TOPIC": topic,
            "STREAMGNN_GROUP_ID": group,
            "STREAMGNN_METRICS_ADDRESS": addresses[0],
            **{key: v for key, v in published.items() if key != "STREAMGNN_TRAIN"},
        },
        tmp_path / "trainer.log",
        command=[
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_ports(1)[0]),
            "-m",
            "stream.train",
        ],
    )
    log_path = tmp_path / "trainer.log"
    try:
        ingest.start()
        wait_for(lambda: progress.committed() >= COLD, TIMEOUT_S, "the first events ingested")
        trainer.start()  # a cold start on what the changelog holds, then the live stream
        wait_for(partial(_logged_twice, log_path, "cold start done"), TIMEOUT_S, "a cold start")
        produce_range(bootstrap, topic, COLD, EVENTS)
        wait_for(lambda: progress.committed() >= EVENTS, TIMEOUT_S, "the stream ingested")
        assert ingest.terminate() == 0
        _, records, _ = fold_changelog(bootstrap, changelog_topic(topic, group), PARTITIONS)
        for address in addresses:
            wait_for(partial(_has_folded, address, records), TIMEOUT_S, f"{address} to fold")
        trainer.terminate()  # torchrun exits 1 on SIGTERM (its SignalException) ...
    finally:
        progress.close()
        for process in (ingest, trainer):
            if process.exit_status() is None:
                process.kill()

    log = log_path.read_text()
    assert len(re.findall(r"stopped: TrainTotals", log)) == 2  # ... once both ranks stopped
    graphs = re.findall(r"trainer graph: (\d+) edges, digest (\w+)", log)
    assert len(graphs) == 2 and graphs[0] == graphs[1]  # both ranks hold the whole graph
    assert int(graphs[0][0]) == EVENTS  # each event sets its own edge

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
