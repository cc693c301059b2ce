"""The ingest loop against the real broker: bad records dead-lettered, exactly-once resume."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from stream.ingest import IngestWorker
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.settings import KafkaSettings, Settings, StoreSettings
from stream.state.graph_store import DecayedGraphStore

pytestmark = pytest.mark.integration


T0 = 1_700_000_000_000  # epoch ms (a ts below 1e11 reads as seconds and is refused)


def _event(user: int, item: int, ts: int) -> tuple[bytes, bytes]:
    body = {"user_id": f"u{user}", "item_id": f"i{item}", "event_type": "click", "ts": T0 + ts}
    return f"u{user}".encode(), json.dumps(body).encode()


def _settings(
    broker: LocalKafkaBroker, source: str, dlq: str, tmp_path: Path, max_batch_records: int
) -> Settings:
    kafka = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        interactions_topic=source,
        dlq_topic=dlq,
        group_id=f"g-{source}",
        max_batch_records=max_batch_records,
    )
    return Settings(kafka=kafka, store=StoreSettings(path=tmp_path / "g"))


async def _ingest(settings: Settings, limit_steps: int | None, metrics: PipelineMetrics) -> None:
    """Step a worker until idle (or ``limit_steps`` fetches), then stop it."""
    with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
        worker = IngestWorker(settings, store, metrics)
        await worker.start()
        try:
            steps = idle = 0
            while idle < 6 and (limit_steps is None or steps < limit_steps):
                consumed = await worker.step(timeout_ms=500)
                steps += consumed > 0
                idle = 0 if consumed else idle + 1
        finally:
            await worker.stop()


def test_bad_records_go_to_dlq_and_a_restart_applies_nothing_twice(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source = topic_factory("interactions", partitions=2)
    dlq = topic_factory("dlq", partitions=1)
    settings = _settings(kafka_broker, source, dlq, tmp_path, max_batch_records=50)
    good = [_event(u, i, 1_000 + u * 10 + i) for u in range(20) for i in range(10)]
    bad = [(b"u1", b"{oops"), (None, b"{}"), (b"u2", b'{"user_id":"u2","item_id":1}')]
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    for key, value in good[:100] + bad + good[100:]:
        producer.send(source, key=key, value=value)
    producer.flush()

    metrics = PipelineMetrics()
    asyncio.run(_ingest(settings, 2, metrics))  # stop part way, resume from the store
    asyncio.run(_ingest(settings, None, metrics))
    sample = metrics.registry.get_sample_value
    assert sample("streamgnn_events_applied_total") == len(good)
    assert sample("streamgnn_events_consumed_total") == len(good) + len(bad)
    rejected = [s for m in metrics.registry.collect() for s in m.samples]
    assert sum(s.value for s in rejected if s.name == "streamgnn_events_rejected_total") == len(bad)
    assert sample("streamgnn_graph_edges") == len(good)
    restarted = PipelineMetrics()  # nothing left to read: the gauges still tell the graph
    asyncio.run(_ingest(settings, None, restarted))
    assert restarted.registry.get_sample_value("streamgnn_graph_edges") == len(good)
    with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
        assert store.counts().edges == len(good)
        now = store.watermark()
        assert now is not None
        for _, value in good:
            e = json.loads(value)
            w = store.edge_weight(e["user_id"], e["item_id"], "click", e["ts"])
            assert w == pytest.approx(1.0), f"{e} applied {w} times"
    consumer = KafkaConsumer(
        dlq,
        bootstrap_servers=kafka_broker.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3_000,  # after the letters: nothing more comes
    )
    letters = []
    deadline = time.monotonic() + 60  # a loaded machine may take longer to the first fetch
    while len(letters) < len(bad) and time.monotonic() < deadline:
        letters.extend(consumer)
    consumer.close()
    assert sorted(r.value for r in letters) == sorted(v for _, v in bad)
    for r in letters:
        headers = dict(r.headers)
        assert headers["dlq.source.topic"] == source.encode()
        assert headers["dlq.reason"] in {b"bad_json", b"null_key", b"missing_field"}


def test_a_fetch_applies_the_records_there_are_without_waiting_for_a_full_batch(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    # 30 records, batches of up to 5,000 and a 60 s fetch timeout: the records waiting are
    # applied by the first fetch that sees them, not once 5,000 came or the minute passed
    source = topic_factory("interactions", partitions=1)
    dlq = topic_factory("dlq", partitions=1)
    settings = _settings(kafka_broker, source, dlq, tmp_path, max_batch_records=5_000)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    for k in range(30):
        key, value = _event(k, k, 1_000 + k)
        producer.send(source, key=key, value=value)
    producer.flush()
    timeout_s = 60.0

    async def fetch_all() -> tuple[int, float]:
        with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
            worker = IngestWorker(settings, store, PipelineMetrics())
            await worker.start()
            try:
                applied, began = 0, time.monotonic()
                while applied < 30 and time.monotonic() - began < 3 * timeout_s:
                    applied += await worker.step(timeout_ms=int(timeout_s * 1000))
                return applied, time.monotonic() - began
            finally:
                await worker.stop()

    applied, seconds = asyncio.run(fetch_all())
    assert applied == 30
    # the group join comes first (seconds); waiting out one timeout would take 60
    assert seconds < timeout_s / 2
