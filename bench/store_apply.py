"""Microseconds per event of the graph store's write path, by graph size: the store as
the worker opens it, without the table files' bloom filters, and with RocksDB's default
64 MiB memtables.

No Kafka and no trainer: :meth:`DecayedGraphStore.apply` alone, the work the ingest loop
does for every event, all of it under the GIL but the batch's one list get of what it reads
(rocksdict releases the GIL there; its single gets and its writes hold it). The synthetic
stream of the freshness benchmark (its shape and seed: most events are a user-item pair's
first, so most edge reads miss) is applied in ``--batch`` events per call until the graph
holds each of ``--sizes`` edges; there the next ``--calls`` calls are timed and their
median reported, per variant (:data:`VARIANTS`). The stores are filled with the same
batches in step and their timed calls take turns, so a busy moment of the machine lands on
each; the default 24 calls write more than a 64 MiB memtable holds, so every variant's
figure spans a memtable's filling.

    .venv/bin/python -m bench.store_apply                       # 100k and 1M edges
    .venv/bin/python -m bench.store_apply --sizes 100000 --calls 3

Writes bench/results/store_apply.json (``--json``): the command, date, machine and, per
size and variant, ``us_per_event`` (median), ``us_per_event_all``, the variant's
``bloom_bits_per_key`` and ``write_buffer_bytes`` and ``edges`` (when the timed calls
began), plus per size (keyed by ``edges``) ``bloom_speedup`` (without filters over the
default) and ``memtable_speedup`` (64 MiB memtables over the default).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream.behaviours import DEFAULT_BEHAVIOURS
from stream.events import Interaction
from stream.produce.synthetic import SyntheticConfig, SyntheticStream
from stream.state.graph_store import (
    BLOOM_BITS_PER_KEY,
    WRITE_BUFFER_BYTES,
    DecayedGraphStore,
    PartitionBatch,
)

RESULTS = Path(__file__).resolve().parent / "results" / "store_apply.json"
# name -> (bloom bits per key, memtable bytes)
VARIANTS = {
    "default": (BLOOM_BITS_PER_KEY, WRITE_BUFFER_BYTES),
    "no_bloom": (0, WRITE_BUFFER_BYTES),
    "memtable_64mib": (BLOOM_BITS_PER_KEY, 64 << 20),
}
START_MS = 1_700_000_000_000


def stream_events(seed: int) -> Iterator[Interaction]:
    """The freshness benchmark's synthetic stream (no late events), 1 ms apart."""
    clock = itertools.count(START_MS)
    config = SyntheticConfig(late_share=0.0, seed=seed)
    for event in SyntheticStream(config).events(lambda: next(clock)):
        yield Interaction(
            str(event["user_id"]),
            str(event["item_id"]),
            str(event["event_type"]),
            int(event["ts"]),
            float(event.get("weight", 1.0)),
        )


def measure(sizes: list[int], batch: int, calls: int) -> list[dict[str, Any]]:
    """Fill one store per variant, in step, to each size in turn; there time ``calls``
    applies on each, taking turns (the same batches; background load hits all)."""
    out: list[dict[str, Any]] = []
    events = stream_events(seed=1)
    offset = 0
    with tempfile.TemporaryDirectory() as tmp:
        stores = [
            DecayedGraphStore(
                Path(tmp) / name,
                DEFAULT_BEHAVIOURS,
                bloom_bits_per_key=bits,
                write_buffer_bytes=buffer,
            )
            for name, (bits, buffer) in VARIANTS.items()
        ]
        try:
            for size in sizes:
                while stores[0].counts().edges < size:
                    part = list(itertools.islice(events, batch))
                    offset += len(part)
                    for store in stores:
                        store.apply("bench", [PartitionBatch(0, offset, part)])
                edges = stores[0].counts().edges
                seconds: list[list[float]] = [[] for _ in stores]
                for call in range(calls):
                    part = list(itertools.islice(events, batch))
                    offset += len(part)
                    turn = call % len(stores)
                    for k in [*range(turn, len(stores)), *range(turn)]:
                        start = time.perf_counter()
                        stores[k].apply("bench", [PartitionBatch(0, offset, part)])
                        seconds[k].append(time.perf_counter() - start)
                for (name, (bits, buffer)), timed in zip(VARIANTS.items(), seconds, strict=True):
                    per_event = [s / batch * 1e6 for s in timed]
                    out.append(
                        {
                            "edges": edges,
                            "variant": name,
                            "bloom_bits_per_key": bits,
                            "write_buffer_bytes": buffer,
                            "us_per_event": round(statistics.median(per_event), 2),
                            "us_per_event_all": [round(x, 2) for x in per_event],
                        }
                    )
                    print(json.dumps(out[-1]), flush=True)
        finally:
            for store in stores:
                store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=5_000, help="events per apply call")
    parser.add_argument("--calls", type=int, default=24, help="timed calls per size")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = measure(sorted(args.sizes), args.batch, args.calls)
    by = {(r["variant"], r["edges"]): r["us_per_event"] for r in results}
    edges = sorted({r["edges"] for r in results})
    result: dict[str, Any] = {
        "benchmark": "graph store apply, microseconds per event, by graph size and store options",
        "command": " ".join([Path(sys.executable).name, "-m", "bench.store_apply", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "rocksdict": importlib.metadata.version("rocksdict"),
        "batch_events": args.batch,
        "calls": args.calls,
        "results": results,
        **{
            f"{variant}_speedup": {
                str(e): round(by[(name, e)] / by[("default", e)], 2) for e in edges
            }
            for variant, name in (("bloom", "no_bloom"), ("memtable", "memtable_64mib"))
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
