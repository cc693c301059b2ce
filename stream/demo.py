"""``make demo``: a local broker, a stream of events, the ingest loop, a summary.

Replays MovieLens 100K ratings from ../shared when present (never copied into the
repo), otherwise a small synthetic stream; a few hostile records show the DLQ path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from kafka import KafkaProducer

from stream.ingest import IngestTotals, IngestWorker
from stream.kafka_broker import LocalKafkaBroker
from stream.settings import KafkaSettings, Settings, StoreSettings
from stream.state.graph_store import DecayedGraphStore

MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data"


def _events() -> list[tuple[bytes, bytes]]:
    rows: list[dict[str, object]] = []
    if MOVIELENS.exists():
        for line in MOVIELENS.read_text().splitlines():
            user, item, rating, ts = line.split("\t")
            rows.append(
                {
                    "user_id": user,
                    "item_id": item,
                    "event_type": "rating",
                    "ts": int(ts) * 1000,
                    "weight": float(rating),
                }
            )
    else:
        rng = random.Random(7)
        for i in range(20_000):
            rows.append(
                {
                    "user_id": f"u{int(rng.paretovariate(1.2)) % 500}",
                    "item_id": f"i{rng.randrange(2000)}",
                    "event_type": rng.choice(["click", "favorite", "purchase"]),
                    "ts": 1_700_000_000_000 + i,
                }
            )
    rows.sort(key=lambda r: int(str(r["ts"])))
    out = [(str(r["user_id"]).encode(), json.dumps(r).encode()) for r in rows]
    out += [(b"x", b"{not json"), (b"u1", b'{"user_id": "u1"}'), (b"u1", b"[1, 2]")]
    return out


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("demo", help="local broker, MovieLens replay, ingest, summary")
    parser.set_defaults(run=lambda args: main())


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, LocalKafkaBroker(Path(tmp) / "kafka") as broker:
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
            store=StoreSettings(path=Path(tmp) / "graph"),
        )
        broker.create_topics({"interactions": 4, "interactions.dlq": 4})
        events = _events()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        for key, value in events:
            producer.send("interactions", key=key, value=value)
        producer.flush()
        print(f"produced {len(events)} events to interactions (4 partitions)")
        with DecayedGraphStore(
            settings.store.path, settings.events.behaviours, settings.store.epsilon
        ) as store:
            start = time.monotonic()
            totals = asyncio.run(_ingest(settings, store, len(events)))
            elapsed = time.monotonic() - start
            c = store.counts()
            print(
                f"\nin {elapsed:.1f} s: graph has {c.nodes} nodes, {c.edges} edges; "
                f"rejections by reason {totals.rejected}"
            )
    return 0


async def _ingest(settings: Settings, store: DecayedGraphStore, expected: int) -> IngestTotals:
    worker = IngestWorker(settings, store)
    await worker.start()
    try:
        while worker.totals.consumed < expected:
            await worker.step()
            t, rejected = worker.totals, sum(worker.totals.rejected.values())
            print(
                f"\rconsumed {t.consumed}  applied {t.applied}  rejected {rejected}",
                end="",
                flush=True,
            )
    finally:
        await worker.stop()
    return worker.totals


if __name__ == "__main__":
    raise SystemExit(main())
