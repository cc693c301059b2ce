"""Only what a published vector reflects is counted: the whole worker (ingest, store, train,
publish) against the real broker.

The hand-tried attack: one event_id sent 50 times was applied once but trained, observed
and counted in the freshness histogram 50 times. Invariants: the freshness histogram holds
one observation per applied event that a published vector reflects: a duplicate counts
once, a weight-0 event (ignored, not applied) and a ``follow`` event (applied to the store,
but not part of the user-item graph the vectors come from) not at all.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.worker import run_worker
from tests.harness.raw_records import RawRecord, send_records
from tests.harness.worker_settings import worker_settings

pytestmark = pytest.mark.integration


def _record(user: str, item: str, event_type: str = "click", **extra: object) -> RawRecord:
    ts = int(time.time() * 1000) - 60_000
    body = {"user_id": user, "item_id": item, "event_type": event_type, "ts": ts, **extra}
    return RawRecord(user.encode(), json.dumps(body).encode())


def test_freshness_counts_each_reflected_event_once(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source = topic_factory("reflect", partitions=2)
    settings = worker_settings(
        kafka_broker.bootstrap_servers, source, topic_factory("dlq"), tmp_path, dim=8
    )
    duplicate = _record("u0", "i0", event_id="the-same-event")
    clicks = [_record(f"u{n}", f"i{n}") for n in range(1, 10)]
    follow = _record("u1", "u2", "follow")
    zero = _record("u3", "i99", weight=0)
    send_records(kafka_broker.bootstrap_servers, source, [duplicate] * 50 + clicks + [follow, zero])
    metrics = PipelineMetrics()
    sample = metrics.registry.get_sample_value

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(settings, stop, metrics))
        deadline = time.monotonic() + 120
        while (sample("streamgnn_events_applied_total") or 0) < 11 and not task.done():
            assert time.monotonic() < deadline, "the events were not applied in time"
            await asyncio.sleep(0.1)
        stop.set()  # the stop trains on and publishes everything still queued
        await task

    asyncio.run(go())
    assert sample("streamgnn_events_applied_total") == 1 + len(clicks) + 1
    assert sample("streamgnn_events_duplicate_total") == 49
    assert sample("streamgnn_events_ignored_total", {"reason": "zero_weight"}) == 1
    assert sample("streamgnn_freshness_seconds_count") == 1 + len(clicks)
