"""Reading the graph changelog and the store side by side, independently of the code under
test: the changelog folded by a kafka-python read_committed consumer, the store read key
by key from its RocksDB directory."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from rocksdict import AccessType, Options, Rdict

from stream.ingest import IngestWorker
from stream.metrics import PipelineMetrics
from stream.settings import Settings
from stream.state import keys as k
from stream.state.graph_store import DecayedGraphStore

PartitionState = dict[int, dict[bytes, bytes]]


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        return {
            p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
            for p in range(partitions)
        }
    finally:
        consumer.close()


def fold_changelog(
    bootstrap: str, topic: str, partitions: int, committed: bool = True, sources: bool = False
) -> tuple[PartitionState, int, int]:
    """Each partition folded by key; also the records and the tombstones read. The source
    topic's id (``S``, which the store keeps per topic, not per partition) only with
    ``sources``: otherwise a partition's state compares with :func:`logged_state`."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed" if committed else "read_uncommitted",
        enable_auto_commit=False,
        consumer_timeout_ms=3_000,
    )
    tps = [KafkaTopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    state: PartitionState = {p: {} for p in range(partitions)}
    records = tombstones = 0
    for message in consumer:
        records += 1
        if message.key[:1] == k.SOURCE and not sources:
            continue
        if message.value is None:
            tombstones += 1
            state[message.partition].pop(message.key, None)
        else:
            state[message.partition][message.key] = message.value
    consumer.close()
    return state, records, tombstones


def changelog_edges(folded: PartitionState) -> list[tuple[str, str, int, float, int]]:
    """The user -> item edges ``(user, item, relation code, w_ref, t_ref)`` of a folded
    changelog, as :func:`stream.learn.changelog_fold.edge_digest` takes them."""
    edges = []
    for state in folded.values():
        for key, value in state.items():
            if key[:1] == k.EDGE:
                (_, user), relation, (_, item) = k.split_edge_suffix(key[1:])
                w_ref, t_ref, _ = k.EDGE_VALUE.unpack(value)
                edges.append((user, item, relation, w_ref, t_ref))
    return edges


def _raw(path: Path) -> dict[bytes, bytes]:
    options = Options(raw_mode=True)
    db = Rdict(str(path), options, access_type=AccessType.read_only())
    try:
        return {bytes(key): bytes(value) for key, value in db.items()}  # type: ignore[arg-type]
    finally:
        db.close()


def logged_state(path: Path, topic: str, partitions: int) -> PartitionState:
    """The store's F, D and O records by the partition that owns them."""
    state: PartitionState = {p: {} for p in range(partitions)}
    for key, value in _raw(path).items():
        tag = key[:1]
        if tag == k.EDGE:
            state[k.EDGE_VALUE.unpack(value)[2]][key] = value
        elif tag == k.DEDUP:
            state[k.partition_of(key)][key] = value
        elif tag == k.OFFSET and k.split_offset_key(key)[0] == topic:
            state[k.split_offset_key(key)[1]][key] = value
    return state


def whole_store(path: Path) -> dict[bytes, bytes]:
    """Every key and value, derived ones included, but the pruned-edges counter and the
    topic ids (a worker with the changelog records none)."""
    raw = {key: v for key, v in _raw(path).items() if not key.startswith(k.INCARNATION)}
    counts = raw.pop(k.META + b"counts")
    nodes, edges, _ = k.COUNTS_VALUE.unpack(counts)
    raw[b"nodes-and-edges"] = k.COUNTS_VALUE.pack(nodes, edges, 0)
    return raw


def ingest_to_end(
    settings: Settings,
    ends: dict[int, int],
    metrics: PipelineMetrics | None = None,
    timeout_s: float = 60.0,
) -> IngestWorker:
    """Run an in-process worker until its store holds every partition's end offset."""
    topic = settings.kafka.interactions_topic

    async def go() -> IngestWorker:
        with DecayedGraphStore(
            settings.store.path,
            settings.events.behaviours,
            settings.store.epsilon,
            dedup_window_ms=settings.events.dedup_window_ms,
            log_changes=settings.store.changelog,
        ) as store:

            def done() -> bool:
                positions = store.positions()
                return all(positions.get((topic, p), (0, 0))[0] >= end for p, end in ends.items())

            worker = IngestWorker(settings, store, metrics)
            await worker.start()
            try:
                deadline = time.monotonic() + timeout_s
                while not done():
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"store did not reach {ends} in {timeout_s} s")
                    await worker.step(timeout_ms=200)
            finally:
                await worker.stop()
            return worker

    return asyncio.run(go())
