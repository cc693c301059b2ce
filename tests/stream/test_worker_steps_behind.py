"""A worker that reflects before it steps, against the real broker: the users of each
batch are published from their own edges while the learner thread steps behind.

Invariants: each applied event counts once in the freshness histogram; per key the
model version never goes back; every user and item ends with a unit vector whose event
time is its newest event's; there are more published versions than steps (the reflects
publish between them); the checkpoint on stop covers every offset.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from stream.learn.checkpoint import CheckpointStore
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.publish.schema import decode_record
from stream.worker import run_worker
from tests.harness.embedding_topics import read_topic
from tests.harness.worker_settings import worker_settings
from tests.stream.test_worker_pipeline import _events, _send

pytestmark = pytest.mark.integration

ROUNDS = 4


def test_reflects_publish_between_steps_and_every_event_counts_once(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    source = topic_factory("behind", partitions=2)
    settings = worker_settings(
        bootstrap,
        source,
        topic_factory("dlq"),
        tmp_path,
        dim=16,
        kafka={"max_batch_records": 200},
        worker={"reflect_before_step": True},
    )
    rounds = [_events(400, start_ts=1_700_000_000_000 + 10_000 * r) for r in range(ROUNDS)]
    metrics = PipelineMetrics()
    sample = metrics.registry.get_sample_value

    def observed() -> float:
        return sample("streamgnn_freshness_seconds_count") or 0.0

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(settings, stop, metrics))
        deadline = time.monotonic() + 120
        for number, events in enumerate(rounds, start=1):
            await asyncio.to_thread(_send, bootstrap, source, events)
            while observed() < number * len(events) and not task.done():
                assert time.monotonic() < deadline, f"round {number} not published in time"
                await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(go())
    stream = [e for events in rounds for e in events]
    assert sample("streamgnn_events_applied_total") == len(stream)
    assert observed() == len(stream)  # each event once
    steps = sample("streamgnn_train_step_seconds_count") or 0
    versions: set[int] = set()
    for kind, topic, id_key in (
        ("user", settings.publish.user_topic, "user_id"),
        ("item", settings.publish.item_topic, "item_id"),
    ):
        newest: dict[str, int] = defaultdict(int)
        for e in stream:
            newest[str(e[id_key])] = max(newest[str(e[id_key])], int(str(e["ts"])))
        last: dict[str, tuple[int, int, float]] = {}
        for record in read_topic(bootstrap, topic):
            decoded = decode_record(record.value)
            before = last.get(decoded.id, (-1, 0, 0.0))[0]
            assert decoded.model_version >= before, f"{kind} {decoded.id} went back"
            norm = float(np.linalg.norm(decoded.vector[:-1]))
            last[decoded.id] = (decoded.model_version, decoded.event_time_ms, norm)
            versions.add(decoded.model_version)
        assert set(last) == set(newest), f"every {kind} of the stream has a vector"
        for node, (_, event_ms, norm) in last.items():
            assert event_ms == newest[node]
            assert norm == pytest.approx(1.0, abs=1e-4)
    assert len(versions) > steps > 0
    checkpoint = CheckpointStore(settings.worker.checkpoint_dir).load_latest()
    assert checkpoint is not None
    assert sum(checkpoint["offsets"].values()) == len(stream)
