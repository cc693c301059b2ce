"""Microseconds per event of the graph store's write path, by graph size, with and without
the table files' bloom filters.

No Kafka and no trainer: :meth:`DecayedGraphStore.apply` alone, the work the ingest loop
does under the GIL for every event (and, in RocksDB, without releasing it). The synthetic
stream of the freshness benchmark (its shape and seed: most events are a user-item pair's
first, so most edge reads miss) is applied in ``--batch`` events per call until the graph
holds each of ``--sizes`` edges; there the next ``--calls`` calls are timed and their
median reported, per bloom setting. The two stores (filters on and off) are filled with
the same batches in step and their timed calls alternate, so a busy moment of the machine
lands on both.

    .venv/bin/python -m bench.store_apply                       # 100k and 1M edges
    .venv/bin/python -m bench.store_apply --sizes 100000 --calls 3

Writes bench/results/store_apply.json (``--json``): the command, date, machine and, per
size and setting, ``us_per_event`` (median), ``us_per_event_all`` and ``edges`` (when the
timed calls began), plus ``bloom_speedup`` per size (without over with; keyed by ``edges``).
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
from stream.state.graph_store import BLOOM_BITS_PER_KEY, DecayedGraphStore, PartitionBatch

RESULTS = Path(__file__).resolve().parent / "results" / "store_apply.json"
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
    """Fill a store with filters and one without, in step, to each size in turn; there time
    ``calls`` applies on each, alternating (the same batches; background load hits both)."""
    settings = (BLOOM_BITS_PER_KEY, 0)
    out: list[dict[str, Any]] = []
    events = stream_events(seed=1)
    offset = 0
    with tempfile.TemporaryDirectory() as tmp:
        stores = [
            DecayedGraphStore(Path(tmp) / str(bits), DEFAULT_BEHAVIOURS, bloom_bits_per_key=bits)
            for bits in settings
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
                    order = range(len(stores)) if call % 2 == 0 else reversed(range(len(stores)))
                    for k in order:
                        start = time.perf_counter()
                        stores[k].apply("bench", [PartitionBatch(0, offset, part)])
                        seconds[k].append(time.perf_counter() - start)
                for bits, timed in zip(settings, seconds, strict=True):
                    per_event = [s / batch * 1e6 for s in timed]
                    out.append(
                        {
                            "edges": edges,
                            "bloom_bits_per_key": bits,
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
    parser.add_argument("--calls", type=int, default=9, help="timed calls per size")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = measure(sorted(args.sizes), args.batch, args.calls)
    by = {(r["bloom_bits_per_key"], r["edges"]): r["us_per_event"] for r in results}
    edges = sorted({r["edges"] for r in results})
    result: dict[str, Any] = {
        "benchmark": "graph store apply, microseconds per event, by graph size and bloom filter",
        "command": " ".join([Path(sys.executable).name, "-m", "bench.store_apply", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "rocksdict": importlib.metadata.version("rocksdict"),
        "batch_events": args.batch,
        "calls": args.calls,
        "results": results,
        "bloom_speedup": {
            str(e): round(by[(0, e)] / by[(BLOOM_BITS_PER_KEY, e)], 2) for e in edges
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
