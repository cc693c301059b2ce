"""Records, dead-letter topics and offsets that used to stop or stall ingestion, each against
the real broker: the worker dead-letters or counts what it cannot use and goes on, or stops
cleanly with the store untouched; it never loops, crashes or stalls silently."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as RdTopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from kafka import KafkaConsumer

from stream.errors import DeadLetterError
from stream.ingest import AppliedBatch, IngestWorker
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.settings import KafkaSettings, Settings, StoreSettings
from stream.state.graph_store import DecayedGraphStore
from tests.harness import importable_env
from tests.harness.raw_records import RawRecord, send_records

pytestmark = pytest.mark.integration

MB = 1024 * 1024
NOW = int(time.time() * 1000)
T0 = NOW - 3_600_000  # an hour ago: in the past whatever the clocks say


def _body(n: int, user: str = "u", **extra: object) -> dict[str, object]:
    return {"user_id": user, "item_id": f"i{n}", "event_type": "click", "ts": T0 + n, **extra}


def _good(n: int, user: str = "u", **extra: object) -> RawRecord:
    return RawRecord(user.encode(), json.dumps(_body(n, user, **extra)).encode())


def _settings(broker: LocalKafkaBroker, tmp_path: Path, source: str, dlq: str) -> Settings:
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            interactions_topic=source,
            dlq_topic=dlq,
            group_id=f"g-{source}",
            max_batch_records=200,
            session_timeout_ms=3_000,
            dlq_timeout_s=5.0,
        ),
        store=StoreSettings(path=tmp_path / f"store-{source}"),
    )


def _run(
    settings: Settings,
    until: Callable[[IngestWorker], bool],
    metrics: PipelineMetrics | None = None,
    on_applied: Callable[[AppliedBatch], None] | None = None,
    timeout_s: float = 60.0,
) -> IngestWorker:
    """Step a fresh worker until ``until(worker)`` (or the timeout), then stop it."""

    async def go() -> IngestWorker:
        with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
            worker = IngestWorker(settings, store, metrics, on_applied)
            await worker.start()
            try:
                deadline = time.monotonic() + timeout_s
                while not until(worker) and time.monotonic() < deadline:
                    await worker.step(timeout_ms=200)
            finally:
                await worker.stop()
            return worker

    return asyncio.run(go())


def _letters(bootstrap: str, topic: str) -> list:  # type: ignore[type-arg]
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3_000,
        fetch_max_bytes=64 * MB,
        max_partition_fetch_bytes=16 * MB,
    )
    letters = list(consumer)
    consumer.close()
    return letters


def test_a_record_the_client_cannot_decode_is_dead_lettered_and_the_stream_goes_on(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source, dlq = topic_factory("undecodable"), topic_factory("dlq")
    bad = RawRecord(b"u", _good(1).value, headers=[(b"\xff\xfe bad key", b"v")])
    records = [_good(0), bad, *(_good(n) for n in range(2, 6))]
    # Every codec: aiokafka could read none of snappy, lz4, zstd here.
    records += [
        RawRecord(r.key, r.value, codec=codec)
        for r, codec in zip(
            (_good(n) for n in range(6, 10)), ("gzip", "snappy", "lz4", "zstd"), strict=True
        )
    ]
    sent = send_records(kafka_broker.bootstrap_servers, source, records)
    assert not any(s.refused for s in sent)
    settings = _settings(kafka_broker, tmp_path, source, dlq)
    worker = _run(settings, lambda w: w.totals.consumed >= len(records))
    assert worker.totals.consumed == len(records)
    assert worker.totals.applied == len(records) - 1
    assert worker.totals.rejected == {"undecodable": 1}
    (letter,) = _letters(kafka_broker.bootstrap_servers, dlq)
    headers = dict(letter.headers)
    assert (letter.key, letter.value) == (bad.key, bad.value)  # what could be read is kept
    assert headers["dlq.reason"] == b"undecodable"
    assert headers["dlq.headers"] == b"undecodable"
    assert headers["dlq.source.offset"] == str(sent[1].offset).encode()


@pytest.mark.parametrize("policy", ["compact", "compact,delete", "delete"])
def test_an_interactions_topic_that_compacts_is_read_with_one_warning(
    kafka_broker: LocalKafkaBroker,
    topic_factory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    policy: str,
) -> None:
    """Compaction keeps each user's latest event only: a rebuild from such a topic lacks
    the rest, with no gap in the offsets to count. Said once at start; read all the same."""
    source = topic_factory("compacted", configs={"cleanup.policy": policy})
    dlq = topic_factory("dlq")
    records = [_good(n, user=f"u{n % 2}") for n in range(4)]
    send_records(kafka_broker.bootstrap_servers, source, records)
    with caplog.at_level(logging.WARNING, logger="streamgnn.ingest"):
        worker = _run(
            _settings(kafka_broker, tmp_path, source, dlq),
            lambda w: w.totals.consumed >= len(records),
        )
    assert worker.totals.applied == len(records)
    said = [r.getMessage() for r in caplog.records if "cleanup.policy" in r.getMessage()]
    if "compact" in policy:
        (warning,) = said
        assert source in warning and f"cleanup.policy={policy}" in warning
    else:
        assert said == []


READ_IN_A_CHILD = """
import sys, time
from confluent_kafka import Consumer
from stream.ingest.source import read_record
bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic,
                     "auto.offset.reset": "earliest"})
consumer.subscribe([topic])
records, deadline = [], time.monotonic() + 60
while len(records) < count and time.monotonic() < deadline:
    records += [read_record(m, 0) for m in consumer.consume(count, 1.0) if m.error() is None]
consumer.close()
print(sum(r.undecodable is not None for r in records), len(records))
"""


def test_hundreds_of_undecodable_header_keys_in_a_row_are_each_read_as_undecodable(
    kafka_broker: LocalKafkaBroker, topic_factory: Callable[..., str]
) -> None:
    """Enough of them in a row for the interpreter to specialise the reading call site
    (stream/ingest/source.py says why that matters). Read in a child process, so a crash
    fails this test instead of ending the run. It did not crash without the fix either: the
    crash it guards against was seen only in the live worker (SIGSEGV in the hostile-record
    suite) and in a standalone loop calling ``message.headers()`` directly."""
    topic, count = topic_factory("bad-header-keys"), 300
    bad = RawRecord(b"u1", b"{}", [(b"k\xff", b"v")])
    send_records(kafka_broker.bootstrap_servers, topic, [bad] * count)
    child = subprocess.run(
        [sys.executable, "-c", READ_IN_A_CHILD, kafka_broker.bootstrap_servers, topic, str(count)],
        capture_output=True,
        timeout=120,
        env=importable_env(os.environ),
    )
    assert child.returncode == 0, child.stderr.decode(errors="replace")[-2_000:]
    assert child.stdout.split() == [str(count).encode()] * 2


def test_dead_letters_shrink_until_the_dlq_accepts_them(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    limit = 20_000
    source = topic_factory("oversize")
    dlq = topic_factory("dlq-small", configs={"max.message.bytes": str(limit)})
    big_key = RawRecord(b"k" * (7 * MB), b"{not json", headers=[(b"h", b"x" * 5_000)])
    big_value = RawRecord(b"u", b"v" * (7 * MB))  # too_large
    fits = RawRecord(b"u", b"[1]")
    sent = send_records(kafka_broker.bootstrap_servers, source, [big_key, big_value, fits])
    assert not any(s.refused for s in sent)
    metrics = PipelineMetrics()
    settings = _settings(kafka_broker, tmp_path, source, dlq)
    worker = _run(settings, lambda w: w.totals.consumed >= 3, metrics)
    assert sum(worker.totals.rejected.values()) == 3
    letters = {
        int(dict(r.headers)["dlq.source.offset"]): r
        for r in _letters(kafka_broker.bootstrap_servers, dlq)
    }
    assert sorted(letters) == [s.offset for s in sent]
    for original, s in zip((big_key, big_value), sent, strict=False):
        letter = letters[s.offset]
        headers = dict(letter.headers)
        assert len(letter.key or b"") + len(letter.value or b"") < limit
        assert int(headers["dlq.key.bytes"]) == len(original.key or b"")
        assert int(headers["dlq.value.bytes"]) == len(original.value or b"")
        assert (original.key or b"").startswith(letter.key or b"")  # a prefix is kept
        assert (original.value or b"").startswith(letter.value or b"")
    assert (letters[sent[2].offset].key, letters[sent[2].offset].value) == (fits.key, fits.value)
    assert metrics.registry.get_sample_value("streamgnn_dead_letters_shrunk_total") == 2


def test_a_missing_dlq_is_created_and_an_impossible_one_refuses_to_start(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source = topic_factory("dlq-check")
    missing = f"dlq-missing-{uuid.uuid4().hex[:8]}"
    _run(_settings(kafka_broker, tmp_path, source, missing), lambda w: True)
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    assert missing in admin.list_topics(timeout=10).topics

    impossible = _settings(kafka_broker, tmp_path, source, "no/such topic")
    with pytest.raises(DeadLetterError, match="no/such topic"):
        _run(impossible, lambda w: True)


def test_a_dlq_that_refuses_every_letter_stops_ingestion_with_the_batch_unapplied(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source = topic_factory("refused")
    dlq = topic_factory("dlq-tiny", configs={"max.message.bytes": "200"})  # not even headers
    send_records(kafka_broker.bootstrap_servers, source, [_good(0), RawRecord(b"u", b"{")])
    metrics = PipelineMetrics()
    settings = _settings(kafka_broker, tmp_path, source, dlq)
    with pytest.raises(DeadLetterError, match=dlq):
        _run(settings, lambda w: False, metrics)
    assert metrics.registry.get_sample_value("streamgnn_dlq_unwritable") == 1
    with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
        assert store.position(source, 0) is None  # the batch was not applied
        assert store.counts().edges == 0


def test_a_dlq_deleted_under_the_worker_is_created_again_and_gets_the_letters_after(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source, dlq = topic_factory("deleted"), topic_factory("dlq-deleted")
    settings = _settings(kafka_broker, tmp_path, source, dlq)
    # librdkafka would time the letters out before the writer's check at 5 s otherwise
    settings = replace(settings, kafka=replace(settings.kafka, dlq_timeout_s=30.0))
    bootstrap = kafka_broker.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metrics = PipelineMetrics()
    before = [RawRecord(b"u", b"{"), _good(0)]
    after = [RawRecord(b"u", b"[1"), _good(1), RawRecord(b"u", b"\xff")]

    async def go() -> IngestWorker:
        with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
            worker = IngestWorker(settings, store, metrics)
            await worker.start()
            try:
                send_records(bootstrap, source, before)
                await _step_until(worker, lambda: worker.totals.consumed == len(before))
                admin.delete_topics([dlq])[dlq].result(30)
                sent.extend(send_records(bootstrap, source, after))
                await _step_until(worker, lambda: worker.totals.consumed == 5)
            finally:
                await worker.stop()
            return worker

    sent: list = []  # type: ignore[type-arg]
    worker = asyncio.run(go())
    assert worker.totals.applied == 2
    offsets = sorted(int(dict(r.headers)["dlq.source.offset"]) for r in _letters(bootstrap, dlq))
    assert offsets == [sent[0].offset, sent[2].offset]  # the new topic: the letters after
    assert metrics.registry.get_sample_value("streamgnn_dlq_topic_lost_total") == 1
    assert metrics.registry.get_sample_value("streamgnn_dlq_unwritable") == 0


async def _step_until(worker: IngestWorker, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, "the worker did not read every record in 60 s"
        await worker.step(timeout_ms=200)


def _lag(metrics: PipelineMetrics) -> dict[str, float]:
    return {
        s.labels["partition"]: s.value
        for family in metrics.registry.collect()
        if family.name == "streamgnn_consumer_lag"
        for s in family.samples
    }


def test_the_lag_gauge_stays_true_while_ingestion_is_paused(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source, dlq = topic_factory("paused"), topic_factory("dlq")
    send_records(kafka_broker.bootstrap_servers, source, [_good(n) for n in range(30)])
    settings = _settings(kafka_broker, tmp_path, source, dlq)
    metrics = PipelineMetrics()
    room = {"open": False}
    seen: list[dict[str, float]] = []

    async def go() -> IngestWorker:
        with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
            worker = IngestWorker(settings, store, metrics, has_room=lambda: room["open"])
            await worker.start()
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            try:
                deadline = time.monotonic() + 30
                while _lag(metrics).get("0") != 30 and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                seen.append(_lag(metrics))
                room["open"] = True
                while _lag(metrics).get("0") != 0 and time.monotonic() < deadline + 30:
                    await asyncio.sleep(0.2)
                seen.append(_lag(metrics))
            finally:
                stop.set()
                await task
                await worker.stop()
            return worker

    worker = asyncio.run(go())
    assert seen[0] == {"0": 30}, "paused with nothing applied: the lag is the whole partition"
    assert seen[1] == {"0": 0}
    assert worker.totals.applied == 30


def test_gauges_of_revoked_partitions_are_removed(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source, dlq = topic_factory("revoked", partitions=2), topic_factory("dlq")
    first = _settings(kafka_broker, tmp_path / "a", source, dlq)
    second = _settings(kafka_broker, tmp_path / "b", source, dlq)
    metrics_a, metrics_b = PipelineMetrics(), PipelineMetrics()
    seen: dict[str, dict[str, float]] = {}

    async def go() -> None:
        with (
            DecayedGraphStore(first.store.path, first.events.behaviours) as store_a,
            DecayedGraphStore(second.store.path, second.events.behaviours) as store_b,
        ):
            a = IngestWorker(first, store_a, metrics_a)
            b = IngestWorker(second, store_b, metrics_b)
            stop_a, stop_b = asyncio.Event(), asyncio.Event()
            await a.start()
            run_a = asyncio.create_task(a.run(stop_a))
            try:
                await _wait_for(lambda: set(_lag(metrics_a)) == {"0", "1"})
                seen["alone"] = _lag(metrics_a)
                await b.start()
                run_b = asyncio.create_task(b.run(stop_b))
                await _wait_for(lambda: len(_lag(metrics_a)) == 1 and len(_lag(metrics_b)) == 1)
                seen["shared"] = {**_lag(metrics_a), **_lag(metrics_b)}
                seen["a"], seen["b"] = _lag(metrics_a), _lag(metrics_b)
                stop_b.set()
                await run_b
                await b.stop()
            finally:
                stop_a.set()
                await run_a
                await a.stop()

    asyncio.run(go())
    assert set(seen["alone"]) == {"0", "1"}
    assert set(seen["a"]).isdisjoint(seen["b"]), "each partition's gauge lives on its owner"
    assert set(seen["shared"]) == {"0", "1"}


async def _wait_for(condition: Callable[[], bool], timeout_s: float = 45.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


def _delete_before(bootstrap: str, topic: str, offset: int) -> None:
    """Partition 0's records below ``offset`` gone, as retention removes them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([RdTopicPartition(topic, 0, offset)]).values():
        future.result(30)


def _run_warned(
    settings: Settings, caplog: pytest.LogCaptureFixture, consumed: int
) -> tuple[IngestWorker, float | None]:
    """A worker run until it consumed ``consumed`` records, its WARNINGs captured; with its
    ``streamgnn_offsets_skipped_total``."""
    metrics = PipelineMetrics()
    with caplog.at_level(logging.WARNING, logger="streamgnn.ingest"):
        worker = _run(settings, lambda w: w.totals.consumed >= consumed, metrics)
    return worker, metrics.registry.get_sample_value("streamgnn_offsets_skipped_total")


def test_offsets_lost_to_retention_are_counted_once_and_warned(
    kafka_broker: LocalKafkaBroker,
    topic_factory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, dlq = topic_factory("retention"), topic_factory("dlq")
    settings = _settings(kafka_broker, tmp_path, source, dlq)
    bootstrap = kafka_broker.bootstrap_servers
    send_records(bootstrap, source, [_good(n) for n in range(4)])
    _run(settings, lambda w: w.totals.consumed >= 4)
    send_records(bootstrap, source, [_good(n) for n in range(4, 10)])
    _delete_before(bootstrap, source, 7)  # offsets 4, 5 and 6 are gone before the worker read them
    worker, skipped = _run_warned(settings, caplog, 3)
    assert worker.totals.offsets_skipped == skipped == 3
    assert worker.totals.applied == 3
    assert any("fell out of retention" in r.getMessage() for r in caplog.records)

    again = _run(settings, lambda w: False, timeout_s=5)
    assert again.totals.offsets_skipped == 0  # the jump is in the store: counted once
    with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
        assert store.position(source, 0) is not None
        assert store.counts().edges == 4 + 3


def test_event_time_attacks_are_dead_lettered_and_move_no_watermark(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source, dlq = topic_factory("time"), topic_factory("dlq")
    year_2999 = 32_472_144_000_000

    def event(ts: int, item: str) -> bytes:
        body = {"user_id": "u", "item_id": item, "event_type": "view", "ts": ts}
        return json.dumps(body).encode()

    base = [RawRecord(b"u", event(T0 + n, f"i{n}"), timestamp_ms=T0 + n) for n in range(20)]
    attacks = [
        RawRecord(b"u", event(year_2999, "future"), timestamp_ms=T0 + 20),
        RawRecord(b"u", event(year_2999, "stamped"), timestamp_ms=year_2999),  # lying record
        RawRecord(b"u", event((T0 + 20) // 1000, "seconds"), timestamp_ms=T0 + 20),
        RawRecord(b"u", event((T0 + 20) * 1000, "micros"), timestamp_ms=T0 + 20),
    ]
    ahead = RawRecord(b"u", event(T0 + 21 + 300_000, "ahead"), timestamp_ms=T0 + 21)
    negative = RawRecord(b"u", event(T0 + 22, "negative"), timestamp_ms=-5)
    records = [*base, *attacks, ahead, negative]
    send_records(kafka_broker.bootstrap_servers, source, records)
    settings = _settings(kafka_broker, tmp_path, source, dlq)
    worker = _run(settings, lambda w: w.totals.consumed >= len(records))
    assert worker.totals.rejected == {"ts_in_future": 2, "ts_unit": 2}
    assert worker.totals.applied == len(base) + 2
    with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
        position = store.position(source, 0)
        assert position is not None
        assert position[1] == T0 + 22  # 'ahead' moved it only to its record's clock
        assert store.counts().edges == len(base) + 2
        assert store.counts().pruned_total == 0


def test_records_stamped_past_the_skew_ahead_of_the_workers_clock_are_counted_and_said(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose clock is an hour slow (by hand: all 2,000 events of a fresh topic
    dead-lettered as ts_in_future with not a word in its log) sees what records whose
    producer's clock is an hour fast show: events and Kafka timestamps an hour ahead."""
    source, dlq = topic_factory("clock"), topic_factory("dlq")
    hour_on = int(time.time() * 1000) + 3_600_000
    ahead = [
        RawRecord(
            b"u", json.dumps({**_body(n), "ts": hour_on + n}).encode(), timestamp_ms=hour_on + n
        )
        for n in range(450)  # three batches of at most 200
    ]
    now = [_good(n) for n in range(450, 460)]  # stamped by the producer's (right) clock
    send_records(kafka_broker.bootstrap_servers, source, [*ahead, *now])
    metrics = PipelineMetrics()
    with caplog.at_level(logging.WARNING, logger="streamgnn.ingest"):
        worker = _run(
            _settings(kafka_broker, tmp_path, source, dlq),
            lambda w: w.totals.consumed >= len(ahead) + len(now),
            metrics,
        )
    assert worker.totals.rejected == {"ts_in_future": len(ahead)}
    assert worker.totals.applied == len(now)
    assert metrics.records_ahead_of_clock._value.get() == len(ahead)
    said = [r.getMessage() for r in caplog.records if "ahead of this worker's clock" in r.message]
    assert len(said) == 1, said  # once a minute, not once a batch
    assert "this worker's clock is slow" in said[0] and "ts_in_future" in said[0]


def test_a_log_append_time_topic_vouches_for_the_brokers_clock_past_a_slow_worker(
    kafka_broker: LocalKafkaBroker,
    topic_factory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same fresh events to a CreateTime topic and a LogAppendTime one, read by a
    worker whose clock is an hour slow: the producer-set timestamps cannot vouch past the
    worker's clock (dead-lettered, counted), the broker-set ones can (applied)."""
    created = topic_factory("create-time")
    appended = topic_factory("append-time", configs={"message.timestamp.type": "LogAppendTime"})
    now = int(time.time() * 1000)
    events = [
        RawRecord(b"u", json.dumps({**_body(n), "ts": now + n}).encode(), timestamp_ms=now + n)
        for n in range(20)
    ]
    for source in (created, appended):
        send_records(kafka_broker.bootstrap_servers, source, events)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # the worker's clock
    outcomes = {}
    for source in (created, appended):
        metrics = PipelineMetrics()
        settings = _settings(kafka_broker, tmp_path, source, topic_factory("dlq"))
        worker = _run(settings, lambda w: w.totals.consumed >= len(events), metrics)
        ahead = metrics.records_ahead_of_clock._value.get()
        outcomes[source] = (worker.totals.applied, worker.totals.rejected, ahead)
    assert outcomes[created] == (0, {"ts_in_future": len(events)}, len(events))
    assert outcomes[appended] == (len(events), {}, 0)


def test_a_duplicate_event_is_handed_to_the_trainer_once(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source, dlq = topic_factory("dups", partitions=2), topic_factory("dlq")
    dup = _good(0, event_id="same")
    others = [_good(n, user=f"v{n}") for n in range(1, 6)]
    send_records(kafka_broker.bootstrap_servers, source, [dup] * 50 + others)
    handed: list[AppliedBatch] = []
    metrics = PipelineMetrics()
    settings = _settings(kafka_broker, tmp_path, source, dlq)
    worker = _run(settings, lambda w: w.totals.consumed >= 55, metrics, handed.append)
    events = [e for batch in handed for e in batch.interactions]
    assert worker.totals.applied == len(events) == 6
    assert [e.event_id for e in events].count("same") == 1
    assert metrics.registry.get_sample_value("streamgnn_events_duplicate_total") == 49
    for batch in handed:
        assert len(batch.append_times_ms) == len(batch.partitions) == len(batch.interactions)


def test_a_store_lost_under_its_group_is_rebuilt_from_the_log_start_counting_the_gap(
    kafka_broker: LocalKafkaBroker,
    topic_factory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store deleted (a cleanup, a new volume) while its group's offsets stay: the
    worker reads the log again from its start, says so, and counts what retention removed
    meanwhile as skipped (alerted), once; it used to rebuild a partial graph in silence."""
    source, dlq = topic_factory("lost-store"), topic_factory("dlq")
    settings = _settings(kafka_broker, tmp_path, source, dlq)
    bootstrap = kafka_broker.bootstrap_servers
    send_records(bootstrap, source, [_good(n) for n in range(10)])
    _run(settings, lambda w: w.totals.consumed >= 10)
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": settings.kafka.group_id})
    try:  # the worker's informational commit is asynchronous: seen by the broker first
        deadline = time.monotonic() + 30
        while group.committed([RdTopicPartition(source, 0)], timeout=10)[0].offset != 10:
            assert time.monotonic() < deadline, "the group never committed offset 10"
            time.sleep(0.2)
    finally:
        group.close()
    _delete_before(bootstrap, source, 4)  # offsets 0..3 out of retention
    shutil.rmtree(settings.store.path)
    worker, skipped = _run_warned(settings, caplog, 6)
    assert worker.totals.offsets_skipped == skipped == 4
    assert worker.totals.applied == 6
    said = [r.getMessage() for r in caplog.records if "holds nothing of it" in r.getMessage()]
    assert len(said) == 1 and "committed offset 10" in said[0]
    assert "offsets 0..3 are out of retention" in said[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamgnn.ingest"):
        again = _run(settings, lambda w: False, timeout_s=5)
    assert again.totals.offsets_skipped == 0  # the jump is in the store: counted once
    assert not [r for r in caplog.records if "holds nothing of it" in r.getMessage()]
    with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
        assert store.counts().edges == 6
