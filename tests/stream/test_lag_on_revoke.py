"""A second worker joins the group: the first stops exporting lag for the partition it gave
up (issue 14: it used to keep exporting lag for partitions it no longer owned)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from stream.ingest import IngestWorker
from stream.ingest.worker import LAG_INTERVAL_S
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.settings import KafkaSettings, Settings, StoreSettings
from stream.state.graph_store import DecayedGraphStore
from tests.harness.faults import produce

pytestmark = pytest.mark.integration


def _lag_partitions(metrics: PipelineMetrics) -> set[str]:
    return {
        s.labels["partition"]
        for family in metrics.registry.collect()
        if family.name == "streamgnn_consumer_lag"
        for s in family.samples
    }


def _assigned(metrics: PipelineMetrics) -> float:
    return metrics.assigned_partitions._value.get()  # type: ignore[attr-defined, no-any-return]


@contextmanager
def _two_stores(
    broker: LocalKafkaBroker, source: str, folder: Path
) -> Iterator[list[tuple[Settings, DecayedGraphStore]]]:
    """Two workers' settings (one group on ``source``) and their open stores."""
    with ExitStack() as stack:
        pairs = []
        for name in ("a", "b"):
            settings = Settings(
                kafka=KafkaSettings(
                    bootstrap_servers=broker.bootstrap_servers,
                    interactions_topic=source,
                    dlq_topic=f"{source}.dlq",
                    group_id=f"g-{source}",
                    max_batch_records=50,
                    session_timeout_ms=6_000,
                ),
                store=StoreSettings(path=folder / name),
            )
            store = DecayedGraphStore(settings.store.path, settings.events.behaviours)
            pairs.append((settings, stack.enter_context(store)))
        yield pairs


async def _until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def test_a_worker_drops_the_lag_gauge_of_a_partition_another_worker_took(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    source = topic_factory("revoke", partitions=2)
    kafka_broker.create_topics({f"{source}.dlq": 1})
    produce(kafka_broker.bootstrap_servers, source, 2_000)

    first, second = PipelineMetrics(), PipelineMetrics()

    async def go() -> None:
        with _two_stores(kafka_broker, source, tmp_path) as (
            (a_settings, a_store),
            (b_settings, b_store),
        ):
            a = IngestWorker(a_settings, a_store, first, has_room=lambda: False)  # holds lag
            b = IngestWorker(b_settings, b_store, second, has_room=lambda: False)
            stop = asyncio.Event()
            await a.start()
            runs = [asyncio.create_task(a.run(stop))]
            try:
                await _until(lambda: _lag_partitions(first) == {"0", "1"}, 60, "both gauges")
                await b.start()
                runs.append(asyncio.create_task(b.run(stop)))
                await _until(
                    lambda: _assigned(first) == 1 and _assigned(second) == 1, 60, "the rebalance"
                )
                await asyncio.sleep(3 * LAG_INTERVAL_S)  # lag refreshes after the revocation
                assert len(_lag_partitions(first)) == 1
                assert len(_lag_partitions(second)) == 1
                assert _lag_partitions(first) | _lag_partitions(second) == {"0", "1"}
            finally:
                stop.set()
                await asyncio.gather(*runs, return_exceptions=True)
                await asyncio.gather(a.stop(), b.stop())

    asyncio.run(go())


def _edges(metrics: PipelineMetrics) -> float:
    return metrics.graph_edges._value.get()  # type: ignore[attr-defined, no-any-return]


def test_a_worker_counts_the_edges_of_the_partitions_it_owns_not_those_it_gave_up(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    """Its store keeps the partition it gave up (a cache for its return), but the edges gauge
    drops it, so the sum over the group's workers is the graph's edges (it used to count
    both partitions in the first worker, and that one again in the second)."""
    source = topic_factory("edges", partitions=2)
    kafka_broker.create_topics({f"{source}.dlq": 1})
    produce(kafka_broker.bootstrap_servers, source, 1_000)

    first, second = PipelineMetrics(), PipelineMetrics()

    async def go() -> None:
        with _two_stores(kafka_broker, source, tmp_path) as (
            (a_settings, a_store),
            (b_settings, b_store),
        ):
            a = IngestWorker(a_settings, a_store, first)
            b = IngestWorker(b_settings, b_store, second)
            stop = asyncio.Event()
            await a.start()
            runs = [asyncio.create_task(a.run(stop))]
            try:
                await _until(lambda: a._source.assigned == {0, 1}, 60, "both partitions")
                ends = {p: a._source.offsets(p)[1] for p in (0, 1)}

                def read(store: DecayedGraphStore) -> dict[int, int]:
                    return {p: (store.position(source, p) or (0,))[0] for p in ends}

                await _until(lambda: read(a_store) == ends, 60, "the first worker's reading")
                total = a_store.counts().edges
                assert total > 0 and _edges(first) == total
                await b.start()
                runs.append(asyncio.create_task(b.run(stop)))
                await _until(
                    lambda: _assigned(first) == 1 and _assigned(second) == 1, 60, "the rebalance"
                )
                (given_up,) = set(ends) - a._source.assigned
                await _until(
                    lambda: read(b_store)[given_up] == ends[given_up], 60, "the second's reading"
                )
                assert a_store.counts().edges == total  # the cache is kept
                kept = a_store.partition_edges(a._source.assigned)
                assert 0 < kept < total and _edges(first) == kept
                await _until(lambda: _edges(second) == total - kept, 10, "the second's gauge")
                assert b_store.counts().edges == total - kept
            finally:
                stop.set()
                await asyncio.gather(*runs, return_exceptions=True)
                await asyncio.gather(a.stop(), b.stop())

    asyncio.run(go())
