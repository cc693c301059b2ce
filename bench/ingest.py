"""Ingest benchmark: bare kafka-python consume rate vs validate+apply rate, same topic.

Then the crash scenarios of the fault tests (tests/harness/faults.py): 100,000 events over
4 partitions with the worker SIGKILLed 3 times, and a broker SIGKILL + restart mid-stream;
events sent / applied / lost / duplicated and the recovery time of each kill.
Writes bench/results/ingest.json. Run: make bench-ingest (.venv/bin/python -m bench.ingest)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import platform
import random
import resource
import tempfile
import time
from pathlib import Path

import psutil
from kafka import KafkaConsumer, KafkaProducer

from stream.ingest import IngestWorker
from stream.local_broker.broker import LocalKafkaBroker
from stream.settings import KafkaSettings, Settings, StoreSettings
from stream.state.graph_store import DecayedGraphStore
from tests.harness.faults import prepare_topic, run_crash_scenario

RESULTS = Path(__file__).parent / "results" / "ingest.json"


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def _pipeline_rate(settings: Settings, store: DecayedGraphStore, events: int) -> float:
    worker = IngestWorker(settings, store)
    await worker.start()
    try:
        start = time.perf_counter()
        while worker.totals.consumed < events:
            await worker.step(timeout_ms=1000)
        return worker.totals.applied / (time.perf_counter() - start)
    finally:
        await worker.stop()


def produce_shop_stream(bootstrap: str, topic: str, events: int) -> None:
    """``events`` synthetic shop events (power-law users, uniform items, seed 1) into
    ``topic``, keyed by user; the same stream every run."""
    rng = random.Random(1)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i in range(events):
        user = f"u{int(rng.paretovariate(1.1)) % 20_000}"
        body = {
            "user_id": user,
            "item_id": f"i{rng.randrange(50_000)}",
            "event_type": rng.choice(["click", "view", "purchase"]),
            "ts": 1_700_000_000_000 + i * 10,
        }
        producer.send(topic, key=user.encode(), value=json.dumps(body).encode())
    producer.flush()
    producer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalKafkaBroker(Path(tmp) / "kafka") as broker:
        broker.create_topics({"interactions": 4, "interactions.dlq": 4})
        produce_shop_stream(broker.bootstrap_servers, "interactions", args.events)

        consumer = KafkaConsumer(
            "interactions",
            bootstrap_servers=broker.bootstrap_servers,
            auto_offset_reset="earliest",
            group_id=None,
        )
        start, seen = time.perf_counter(), 0
        while seen < args.events:
            for records in consumer.poll(timeout_ms=1000, max_records=5000).values():
                seen += len(records)
        raw_rate = seen / (time.perf_counter() - start)
        consumer.close()

        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
            store=StoreSettings(path=Path(tmp) / "graph"),
        )
        store = DecayedGraphStore(settings.store.path, settings.events.behaviours)
        applied_rate = asyncio.run(_pipeline_rate(settings, store, args.events))
        edges = store.counts().edges
        store.close()
        peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        crash_topic = prepare_topic(broker, 100_000, partitions=4)
        workdir = Path(tmp)
        worker_kills = run_crash_scenario(
            broker, crash_topic, 100_000, workdir, "worker-sigkill-x3", 3, seed=11
        )
        no_crash = run_crash_scenario(broker, crash_topic, 100_000, workdir, "no-crash", 0)
        broker_topic = prepare_topic(broker, 20_000, partitions=4)
        broker_kill = run_crash_scenario(
            broker, broker_topic, 20_000, workdir, "broker-sigkill", 0, 1, max_batch_records=100
        )
        result = {
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, "
            f"{psutil.virtual_memory().total // 2**30} GiB, Python {platform.python_version()}",
            "events": args.events,
            "raw_consume_per_s": round(raw_rate),
            "applied_per_s": round(applied_rate),
            "ratio": round(applied_rate / raw_rate, 3),
            "bytes_per_edge": round(_dir_bytes(settings.store.path) / edges, 1),
            "live_edges": edges,
            "peak_rss_mb": peak_rss_mb,
            "crash_sent": worker_kills.sent + broker_kill.sent,
            "crash_applied": worker_kills.applied + broker_kill.applied,
            "crash_lost": worker_kills.lost + broker_kill.lost,
            "crash_duplicated": worker_kills.duplicated + broker_kill.duplicated,
            "crash_digest_equals_no_crash_run": worker_kills.digest == no_crash.digest,
            "crash_runs": [worker_kills.as_json(), broker_kill.as_json()],
            "notes": "bytes_per_edge is the RocksDB dir (WAL and memtable not yet compacted) "
            "over live edges; peak_rss_mb is the benchmark process (consumer + in-process "
            "worker); recovery_s is SIGKILL to the first new informational group commit",
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:>20}  {value}")


if __name__ == "__main__":
    main()
