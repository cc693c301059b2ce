"""Changelog benchmark: ingest events/s with and without ``--changelog``, and the seconds a
restore of each partition from the changelog takes, on one local broker.

Each rate is one in-process worker (ingest only) reading the same topic from the start in
its own group with an empty store, timed from its first applied batch to the last event
(the runs alternate off/on, ``--repeats`` times). The restore is
:func:`stream.ingest.changelog.validate_or_restore` into an empty store for each partition
of the last changelog run: the read (read_committed, beginning to end) and the store write.
Writes bench/results/changelog.json. Run: make bench-changelog
(.venv/bin/python -m bench.changelog)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.ingest import produce_shop_stream
from stream.ingest import IngestWorker
from stream.ingest.changelog import Changelog
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.settings import KafkaSettings, Settings, StoreSettings
from stream.state.graph_store import DecayedGraphStore
from stream.state.partition_state import restore_partition

RESULTS = Path(__file__).parent / "results" / "changelog.json"
TOPIC = "interactions"
PARTITIONS = 4


def _settings(bootstrap: str, store: Path, group: str, changelog: bool) -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, group_id=group, instance_id="bench-1"),
        store=StoreSettings(path=store, changelog=changelog),
    )


async def _rate(settings: Settings, events: int) -> float:
    """Events applied per second from the first applied batch to the last event."""
    with DecayedGraphStore(
        settings.store.path, settings.events.behaviours, log_changes=settings.store.changelog
    ) as store:
        worker = IngestWorker(settings, store)
        await worker.start()
        try:
            while worker.totals.consumed == 0:
                await worker.step(timeout_ms=1000)
            start, first = time.perf_counter(), worker.totals.applied
            while worker.totals.consumed < events:
                await worker.step(timeout_ms=1000)
            return (worker.totals.applied - first) / (time.perf_counter() - start)
        finally:
            await worker.stop()


def _restore(settings: Settings) -> list[dict[str, object]]:
    metrics = PipelineMetrics()
    changelog = Changelog(settings.kafka, metrics)
    changelog.start()
    out: list[dict[str, object]] = []
    with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
        for partition in range(PARTITIONS):
            start = time.perf_counter()
            folded = changelog.read_partitions([partition])[partition]
            read_s = time.perf_counter() - start
            restore_partition(store, TOPIC, partition, folded)
            total_s = time.perf_counter() - start
            read = metrics.restore_records.labels(partition=str(partition))._value.get()
            out.append(
                {
                    "partition": partition,
                    "records_read": int(read),
                    "live_records": len(folded),
                    "read_s": round(read_s, 3),
                    "restore_s": round(total_s, 3),
                }
            )
        out.append({"edges_after_restore": store.counts().edges})
    changelog.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rates: dict[str, list[int]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp, LocalKafkaBroker(Path(tmp) / "kafka") as broker:
        bootstrap = broker.bootstrap_servers
        broker.create_topics({TOPIC: PARTITIONS, "interactions.dlq": 1})
        produce_shop_stream(bootstrap, TOPIC, args.events)
        last_on: Settings | None = None
        for run in range(args.repeats):
            for mode in ("off", "on"):
                settings = _settings(
                    bootstrap, Path(tmp) / f"store-{mode}-{run}", f"g-{mode}-{run}", mode == "on"
                )
                rates[mode].append(round(asyncio.run(_rate(settings, args.events))))
                if mode == "on":
                    last_on = settings
        assert last_on is not None
        restore_settings = _settings(
            bootstrap, Path(tmp) / "restored", last_on.kafka.group_id, True
        )
        restore = _restore(restore_settings)
    result = {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.changelog", *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total // 2**30} GiB, Python {platform.python_version()}; "
        "one local Kafka 3.9.1 node on the same machine",
        "events": args.events,
        "partitions": PARTITIONS,
        "ingest_per_s_changelog_off": rates["off"],
        "ingest_per_s_changelog_on": rates["on"],
        "restore": restore,
        "notes": "in-process ingest only (no trainer), default batch size; each rate run has "
        "its own group and empty store; restore reads the last changelog run's topic into an "
        "empty store, partition by partition",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
