"""Hostile records through the real broker: the worker lives, every bad record is
dead-lettered exactly once, and every good one reaches the store.

Hypothesis draws 40 streams of 250 records (10,000 in all) mixing good events with
malformed JSON, non-objects, wrong types, booleans posing as numbers, NaN/Infinity,
absurd timestamps, bad ids and Unicode, deep nesting and null keys; a separate stream
carries multi-megabyte payloads between good events. The validator is the oracle for
good vs bad (its own contract is property-tested in test_events.py); this test checks
that the pipeline keeps it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from stream.events import EventValidator, Interaction
from stream.ingest import IngestWorker
from stream.local_broker.broker import LocalKafkaBroker
from stream.settings import EventSettings, KafkaSettings, Settings, StoreSettings
from stream.state.graph_store import DecayedGraphStore

pytestmark = pytest.mark.integration

RECORDS_PER_STREAM = 250
MB = 1024 * 1024
T0 = 1_700_000_000_000

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
hostile_fields = st.fixed_dictionaries(
    {},
    optional={
        "user_id": json_values,
        "item_id": json_values,
        "event_type": st.sampled_from(["click", "purchase", "teleport", ""]) | json_values,
        "ts": st.integers(-(10**20), 10**20) | st.booleans() | json_values,
        "weight": st.floats(allow_nan=True, allow_infinity=True) | st.booleans(),
        "event_id": json_values,
    },
).map(lambda d: json.dumps(d, allow_nan=True).encode())
raw_hostile = st.sampled_from(
    [
        b"{not json",
        b"[1, 2]",
        b'"just a string"',
        b"[" * 5_000 + b"]" * 5_000,
        b'{"user_id": "\\ud800", "item_id": "i", "event_type": "click", "ts": 1}',
        b'{"user_id": "\xff\xfe", "item_id": "i"}',
        b'{"user_id": "u", "item_id": "i", "event_type": "click", "ts": true}',
        b'{"user_id": "u", "item_id": "i", "event_type": "click", "ts": 1, "weight": NaN}',
        b"",
    ]
)
hostile = st.tuples(st.none() | st.binary(max_size=40), hostile_fields | raw_hostile)


@st.composite
def good_events(draw: st.DrawFn) -> tuple[bytes | None, bytes]:
    user = draw(st.integers(0, 300))
    body = {
        "user_id": f"u{user}",
        "item_id": f"i{draw(st.integers(0, 2_000))}",
        "event_type": draw(st.sampled_from(["click", "favorite", "purchase"])),
        "ts": 1_700_000_000_000 + draw(st.integers(0, 60_000)),
    }
    return f"u{user}".encode(), json.dumps(body).encode()


streams = st.lists(
    good_events() | hostile, min_size=RECORDS_PER_STREAM, max_size=RECORDS_PER_STREAM
)


def _multi_megabyte() -> list[tuple[bytes | None, bytes]]:
    big_id = json.dumps({"user_id": "x" * (3 * MB), "item_id": "i"}).encode()
    return [(b"u1", b"{" + b" " * (2 * MB)), (b"u2", big_id), (None, b"z" * (6 * MB))]


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(records=streams)
def test_hostile_stream_dead_letters_each_bad_record_once_and_loses_no_good_one(
    kafka_broker: LocalKafkaBroker, tmp_path: Path, records: list[tuple[bytes | None, bytes]]
) -> None:
    _check_stream(kafka_broker, tmp_path, records)


def test_multi_megabyte_records_are_dead_lettered_whole(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    good = [
        (
            b"u1",
            json.dumps(
                {"user_id": "u1", "item_id": f"i{i}", "event_type": "click", "ts": T0 + i}
            ).encode(),
        )
        for i in range(1, 5)
    ]
    _check_stream(kafka_broker, tmp_path, good[:2] + _multi_megabyte() + good[2:])


def _check_stream(
    kafka_broker: LocalKafkaBroker, tmp_path: Path, records: list[tuple[bytes | None, bytes]]
) -> None:
    tag = uuid.uuid4().hex[:12]
    source, dlq = f"fuzz-{tag}", f"fuzz-{tag}.dlq"
    kafka_broker.create_topics({source: 3, dlq: 1})
    settings_ = Settings(
        kafka=KafkaSettings(
            bootstrap_servers=kafka_broker.bootstrap_servers,
            interactions_topic=source,
            dlq_topic=dlq,
            group_id=f"g-{tag}",
            max_batch_records=500,
        ),
        store=StoreSettings(path=tmp_path / tag),
    )
    validator = EventValidator(EventSettings())
    # Every record carries the same Kafka timestamp, so the oracle knows the clock the
    # worker checks event times against.
    clock_ms = int(time.time() * 1000)
    expected_good: list[Interaction] = []
    expected_bad: set[int] = set()
    producer = KafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap_servers, acks="all", max_request_size=8 * MB
    )
    for seq, (key, value) in enumerate(records):
        parsed = validator.parse(key, value, clock_ms)
        if isinstance(parsed, Interaction):
            expected_good.append(parsed)
        else:
            expected_bad.add(seq)
        producer.send(
            source,
            key=key,
            value=value,
            headers=[("fuzz.seq", str(seq).encode())],
            timestamp_ms=clock_ms,
        )
    producer.flush()
    producer.close()

    with DecayedGraphStore(settings_.store.path, settings_.events.behaviours) as store:
        totals = asyncio.run(_ingest_all(settings_, store, len(records)))
        assert totals.consumed == len(records)
        # An accepted event of weight 0 changes nothing: counted as ignored, not applied.
        weighty = [e for e in expected_good if e.weight > 0]
        assert totals.applied == len(weighty)
        assert totals.ignored.get("zero_weight", 0) == len(expected_good) - len(weighty)
        assert sum(totals.rejected.values()) == len(expected_bad)
        _assert_every_good_event_applied(store, weighty)

    letters = _read_all(kafka_broker.bootstrap_servers, dlq)
    seqs = [int(dict(r.headers)["fuzz.seq"]) for r in letters]
    assert sorted(seqs) == sorted(expected_bad), "each bad record dead-lettered exactly once"
    for r in letters:
        original = records[int(dict(r.headers)["fuzz.seq"])]
        assert (r.key, r.value) == original, "the DLQ keeps the original bytes"


async def _ingest_all(settings_: Settings, store: DecayedGraphStore, expected: int):  # type: ignore[no-untyped-def]
    worker = IngestWorker(settings_, store)
    await worker.start()
    try:
        idle = 0
        while worker.totals.consumed < expected and idle < 60:
            idle = 0 if await worker.step(timeout_ms=500) else idle + 1
    finally:
        await worker.stop()
    return worker.totals


def _assert_every_good_event_applied(store: DecayedGraphStore, good: list[Interaction]) -> None:
    """Sum of event weights per edge, decayed to the last event, equals the stored weight."""
    by_edge: dict[tuple[str, str, str], list[Interaction]] = {}
    for event in good:
        by_edge.setdefault((event.user_id, event.item_id, event.event_type), []).append(event)
    behaviours = EventSettings().behaviours
    for (user, item, event_type), events in by_edge.items():
        now = max(e.ts for e in events)
        half_life = behaviours[event_type].half_life_ms
        beta = behaviours[event_type].beta
        expected = sum(beta * e.weight * 0.5 ** ((now - e.ts) / half_life) for e in events)
        got = store.edge_weight(user, item, event_type, now)
        assert got == pytest.approx(expected, rel=1e-9), (user, item, event_type)
    assert store.counts().edges == len(by_edge)


def _read_all(bootstrap: str, topic: str) -> list:  # type: ignore[type-arg]
    """Every record in ``topic``, read up to the end offsets taken now."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_bytes=64 * MB,
        max_partition_fetch_bytes=16 * MB,
    )
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    ends = consumer.end_offsets(partitions)
    letters = []
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        for records in consumer.poll(timeout_ms=1_000).values():
            letters.extend(records)
    consumer.close()
    return letters
