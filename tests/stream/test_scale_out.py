"""Scale-out against the real broker: two ``streamgnn ingest`` workers and one
``streamgnn train`` over one stream. One ingest worker is SIGKILLed three times at random
points and restarted, a third joins and leaves mid-stream, and the trainer is stopped and
restarted from its checkpoint. Then every event is applied exactly once in the folded
changelog, which equals a single worker's state; no key's version goes back on either
embedding topic; and the trainer's graph is the folded changelog."""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path

import pytest
from kafka import KafkaProducer

from stream.behaviours import DEFAULT_BEHAVIOURS
from stream.learn.changelog_fold import edge_digest
from stream.local_broker.broker import LocalKafkaBroker, free_ports
from stream.settings import KafkaSettings, Settings, StoreSettings, changelog_topic
from tests.harness.changelog_state import (
    changelog_edges,
    end_offsets,
    fold_changelog,
    ingest_to_end,
    logged_state,
)
from tests.harness.embedding_log import read_published, version_regressions
from tests.harness.faults import event, event_seq
from tests.harness.progress import GroupProgress, metric_value
from tests.harness.worker_process import (
    INGEST_COMMAND,
    TRAIN_COMMAND,
    WorkerProcess,
    training_env,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration

EVENTS = 100_000
PARTITIONS = 4
RATE = 3_000.0  # events/s offered
AHEAD = 2_000  # events the producer may send past an action's point before it is done
TIMEOUT_S = 300.0


def _produce(bootstrap: str, topic: str, gates: list[tuple[float, threading.Event]]) -> None:
    """The stream at ``RATE``, never more than ``AHEAD`` events past a gate's point before
    the gate opens: every action lands mid-stream, with events still to come."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    start = time.monotonic()
    for seq in range(EVENTS):
        for point, gate in gates:
            if seq >= point + AHEAD and not gate.is_set():
                producer.flush()
                gate.wait(TIMEOUT_S)
                start = time.monotonic() - seq / RATE
        ahead = seq / RATE - (time.monotonic() - start)
        if ahead > 0.01:
            time.sleep(ahead)
        key, value = event(seq)
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def test_two_ingest_workers_and_one_trainer_survive_kills_and_rebalances(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = f"scale-{time.time_ns() % 10**12}"
    kafka_broker.create_topics({topic: PARTITIONS, f"{topic}.dlq": 1})
    group = f"g-{topic}"
    ingest = {
        name: WorkerProcess(
            worker_env(bootstrap, topic, group, tmp_path / f"store-{name}", 2_000)
            | {"STREAMGNN_INSTANCE_ID": name},
            tmp_path / f"ingest-{name}.log",
            command=INGEST_COMMAND,
        )
        for name in ("a", "b", "c")
    }
    published = training_env(tmp_path, f"scale-{topic}")
    trainer_metrics = f"127.0.0.1:{free_ports(1)[0]}"
    trainer = WorkerProcess(
        {
            "STREAMGNN_BOOTSTRAP_SERVERS": bootstrap,
            "STREAMGNN_INTERACTIONS_TOPIC": topic,
            "STREAMGNN_GROUP_ID": group,
            "STREAMGNN_METRICS_ADDRESS": trainer_metrics,
            "STREAMGNN_CHECKPOINT_INTERVAL_S": "2",
            **{key: v for key, v in published.items() if key != "STREAMGNN_TRAIN"},
        },
        tmp_path / "trainer.log",
        command=TRAIN_COMMAND,
    )
    rng = random.Random(14)
    plan = sorted(
        [(rng.uniform(0.1, 0.8) * EVENTS, "kill a") for _ in range(3)]
        + [(0.3 * EVENTS, "join c"), (0.6 * EVENTS, "leave c"), (0.45 * EVENTS, "restart trainer")]
    )
    gates = [(point, threading.Event()) for point, _ in plan]
    producer = threading.Thread(target=_produce, args=(bootstrap, topic, gates), daemon=True)
    progress = GroupProgress(bootstrap, group, topic)
    try:
        trainer.start()
        ingest["a"].start()
        ingest["b"].start()
        producer.start()
        for (threshold, action), (_, gate) in zip(plan, gates, strict=True):
            wait_for(partial(progress.reached, threshold), TIMEOUT_S, action)
            time.sleep(rng.uniform(0.0, 0.2))  # land anywhere within a batch
            if action == "kill a":
                ingest["a"].kill()
                ingest["a"].start()
                wait_for(ingest["a"].consuming, TIMEOUT_S, "the killed worker to restart")
            elif action == "join c":
                ingest["c"].start()
                wait_for(ingest["c"].consuming, TIMEOUT_S, "the third worker to join")
            elif action == "leave c":
                assert ingest["c"].terminate() == 0
            else:
                assert trainer.terminate() == 0
                trainer.start()
            gate.set()
        producer.join()
        wait_for(partial(progress.reached, EVENTS), TIMEOUT_S, "the whole stream")
        for name in ("a", "b"):
            wait_for(ingest[name].consuming, TIMEOUT_S, f"worker {name} to consume")
            assert ingest[name].terminate() == 0
        folded, records, _ = fold_changelog(bootstrap, changelog_topic(topic, group), PARTITIONS)
        folded_all = partial(
            metric_value, trainer_metrics, "streamgnn_changelog_records_folded_total"
        )
        wait_for(lambda: folded_all() == records, TIMEOUT_S, "the trainer to fold the changelog")
        assert trainer.terminate() == 0
    finally:
        for process in (*ingest.values(), trainer):
            if process.exit_status() is None:
                process.kill()
        progress.close()

    # Every event applied exactly once: each owns an edge whose w_ref / beta counts it.
    applied = Counter[int]()
    edges = changelog_edges(folded)
    for user, item, relation, w_ref, _ in edges:
        name = sorted(DEFAULT_BEHAVIOURS)[relation]
        applied[event_seq(user, item)] += round(w_ref / DEFAULT_BEHAVIOURS[name].beta)
    assert applied == Counter(range(EVENTS))

    reference = Settings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            interactions_topic=topic,
            dlq_topic=f"{topic}.dlq",
            group_id=f"ref-{topic}",
        ),
        store=StoreSettings(path=tmp_path / "reference"),
    )
    ingest_to_end(reference, end_offsets(bootstrap, topic, PARTITIONS), timeout_s=TIMEOUT_S)
    assert folded == logged_state(reference.store.path, topic, PARTITIONS)

    log = (tmp_path / "trainer.log").read_text()
    assert "cold start done" in log and "checkpoint loaded" in log  # both starts ran
    last = re.findall(r"trainer graph: (\d+) edges, digest (\w+)", log)[-1]
    assert (int(last[0]), last[1]) == (len(edges), edge_digest(edges))
    # Each event sets its own edge once in the changelog, so the edge updates the two
    # trainer runs trained on add up to the events: the restart neither retrained nor skipped.
    runs = [int(n) for n in re.findall(r"stopped: TrainTotals\(.*trained_edges=(\d+)", log)]
    assert len(runs) == 2 and sum(runs) == EVENTS

    vectors = read_published(
        bootstrap,
        [
            published["STREAMGNN_USER_EMBEDDINGS_TOPIC"],
            published["STREAMGNN_ITEM_EMBEDDINGS_TOPIC"],
        ],
    )
    assert {v.topic for v in vectors} == {
        published["STREAMGNN_USER_EMBEDDINGS_TOPIC"],
        published["STREAMGNN_ITEM_EMBEDDINGS_TOPIC"],
    }
    assert version_regressions(vectors) == []
