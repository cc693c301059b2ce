"""The whole worker against the real broker: ingest, store, train, publish, checkpoint.

Invariants: every applied event is reflected in exactly one publish (one freshness
observation each); every user and item of the stream ends with a unit vector whose
``event_time_ms`` is the newest event time of its own events; versions never go back per
key; a restart resumes from the checkpoint above every published version.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from stream.learn.checkpoint import CheckpointStore
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.publish.schema import EmbeddingRecord, decode_record
from stream.settings import Settings
from stream.worker import run_worker
from tests.harness.embedding_topics import read_topic
from tests.harness.worker_settings import worker_settings

pytestmark = pytest.mark.integration

USERS, ITEMS = 60, 25


def _events(count: int, start_ts: int) -> list[dict[str, object]]:
    kinds = ("click", "favorite", "purchase")
    return [
        {
            "user_id": f"u{(7 * n) % USERS}",
            "item_id": f"i{(n * n + 3 * n) % ITEMS}",
            "event_type": kinds[n % 3],
            "ts": start_ts + n,
        }
        for n in range(count)
    ]


def _send(bootstrap: str, topic: str, events: list[dict[str, object]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for e in events:
        producer.send(topic, key=str(e["user_id"]).encode(), value=json.dumps(e).encode())
    producer.flush()
    producer.close()


async def _run_until_published(settings: Settings, metrics: PipelineMetrics, events: int) -> None:
    """Run the worker until ``events`` more freshness observations, then SIGTERM-like stop."""
    stop = asyncio.Event()

    def observed() -> float:
        return metrics.registry.get_sample_value("streamgnn_freshness_seconds_count") or 0.0

    target = observed() + events
    task = asyncio.create_task(run_worker(settings, stop, metrics))
    deadline = time.monotonic() + 120
    while observed() < target and not task.done():
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    stop.set()
    await task


def test_worker_trains_publishes_and_resumes_from_its_checkpoint(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    source = topic_factory("interactions", partitions=2)
    settings = worker_settings(
        bootstrap,
        source,
        topic_factory("dlq"),
        tmp_path,
        dim=16,
        kafka={"max_batch_records": 300},
    )
    first = _events(1_500, start_ts=1_700_000_000_000)
    _send(bootstrap, source, first)
    metrics = PipelineMetrics()
    asyncio.run(_run_until_published(settings, metrics, len(first)))
    sample = metrics.registry.get_sample_value
    assert sample("streamgnn_events_applied_total") == len(first)
    assert sample("streamgnn_freshness_seconds_count") == len(first)  # each event once
    assert (sample("streamgnn_train_steps_total") or 0) > 0
    for kind, id_key in (("user", "user_id"), ("item", "item_id")):  # far below the caps
        held = sample("streamgnn_ids_live", {"kind": kind})
        assert held == len({str(e[id_key]) for e in first}), kind

    checkpoint = CheckpointStore(settings.worker.checkpoint_dir).load_latest()
    assert checkpoint is not None
    first_version = int(checkpoint["trainer"]["model_version"])
    assert sample("streamgnn_model_version") == first_version

    second = _events(600, start_ts=1_700_000_100_000)  # later events, same ids
    _send(bootstrap, source, second)
    metrics = PipelineMetrics()  # a new process
    asyncio.run(_run_until_published(settings, metrics, len(second)))
    assert (metrics.registry.get_sample_value("streamgnn_model_version") or 0) > first_version

    stream = first + second
    for kind, topic, id_key in (
        ("user", settings.publish.user_topic, "user_id"),
        ("item", settings.publish.item_topic, "item_id"),
    ):
        newest: dict[str, int] = defaultdict(int)
        for e in stream:
            node = str(e[id_key])
            newest[node] = max(newest[node], int(str(e["ts"])))
        latest: dict[str, EmbeddingRecord] = {}
        versions: dict[str, int] = {}
        for record in read_topic(bootstrap, topic):
            decoded = decode_record(record.value)
            node = decoded.id
            assert decoded.kind == kind
            assert decoded.model_version >= versions.get(node, -1), f"{kind} {node} went back"
            versions[node] = decoded.model_version
            latest[node] = decoded
        assert set(latest) == set(newest), f"every {kind} of the stream has a vector"
        for node, decoded in latest.items():
            assert decoded.event_time_ms == newest[node]
            # the embedding is unit length; the last component is the score prior's
            assert decoded.dim == settings.training.out_dim
            norm = float(np.linalg.norm(decoded.vector[:-1]))
            assert norm == pytest.approx(1.0, abs=1e-4)
            if kind == "user":
                assert decoded.vector[-1] == 1.0
