"""What each live id costs the trainer, and so what the id caps bound its memory at.

The soaks (``make bench-soak-steady``) see the worker's RSS grow with a flat graph while ids
grow (1 % of the synthetic events come from a brand-new user, who keeps their rows until
evicted: 30 days unseen, or the caps). This measures the trainer's share alone, in this
process (no Kafka, no store): a trainer with the default settings and the worker's heap
options takes learn calls of ``--batch`` events, each from a user never seen before, on
``--items`` items, ``--call-interval-ms`` of event time apart, every half-life
``--half-life-ms`` (2 s against 10 s: a call's edges are under epsilon two calls later), so
the graph stays at about two calls' edges and only the ids grow. After every call: live
ids, edges, the process's RSS and the bytes of every CPU tensor alive (the id tables, the
optimiser's state, the published and latest vectors, the graph mirror). Least squares over
the last two thirds of the calls give the KB per id of each; ``bound_gb_at_default_caps``
is the RSS figure times the default caps (``max_users`` + ``max_items``; an item row holds
the same tables as a user row).

    .venv/bin/python -m bench.id_memory                  # 90 calls of 10,000 new users (~1.5 min)

Writes bench/results/id_memory.json (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import psutil
import torch

from stream.allocator import worker_heap
from stream.behaviours import DEFAULT_BEHAVIOURS, Behaviour
from stream.events import Interaction
from stream.learn.trainer import IncrementalTrainer
from stream.settings.sections import WorkerSettings
from stream.settings.training import TrainerSettings

RESULTS = Path(__file__).parent / "results" / "id_memory.json"
EPSILON = 1e-3
T0_MS = 1_700_000_000_000


def cpu_tensor_mb() -> float:
    """MB of every CPU tensor storage alive (each storage once, views included)."""
    seen: set[int] = set()
    total = 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.layout == torch.strided and not obj.is_cuda:
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total / 2**20


def kb_per_id(rows: list[dict[str, float]], field: str) -> float:
    """Least-squares slope of ``field`` (MB) on live ids, in KB per id."""
    fit = statistics.linear_regression([r["ids_live"] for r in rows], [r[field] for r in rows])
    return round(fit.slope * 1024, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=90)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--half-life-ms", type=int, default=2_000)
    parser.add_argument("--call-interval-ms", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    heap = worker_heap(WorkerSettings())
    torch.set_num_threads(1)  # the worker's default
    behaviours = {n: Behaviour(b.beta, args.half_life_ms) for n, b in DEFAULT_BEHAVIOURS.items()}
    settings = TrainerSettings()
    trainer = IncrementalTrainer(settings, behaviours, EPSILON)
    process = psutil.Process()
    rows: list[dict[str, float]] = []
    user = 0
    for call in range(args.calls):
        ts = T0_MS + args.call_interval_ms * call
        batch = []
        for k in range(args.batch):
            batch.append(Interaction(f"new{user}", f"i{k % args.items}", "click", ts))
            user += 1
        trainer.learn(batch)
        gc.collect()
        ids = trainer.registry.counts("user").live + trainer.registry.counts("item").live
        row = {
            "call": call,
            "ids_live": ids,
            "edges": trainer.mirror.num_edges,
            "rss_mb": round(process.memory_info().rss / 2**20, 1),
            "cpu_tensor_mb": round(cpu_tensor_mb(), 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    fitted = rows[len(rows) // 3 :]
    rss_kb = kb_per_id(fitted, "rss_mb")
    caps = settings.max_users + settings.max_items
    result: dict[str, Any] = {
        "benchmark": "trainer memory per live id (learn calls of new users, a flat graph)",
        "command": " ".join(["python", "-m", "bench.id_memory", *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            **heap,
        },
        "settings": {k: v for k, v in vars(args).items() if k != "out"}
        | {"encoder": settings.encoder},
        "edges_over_fitted_calls": [
            min(r["edges"] for r in fitted),
            max(r["edges"] for r in fitted),
        ],
        "rss_kb_per_id": rss_kb,
        "cpu_tensor_kb_per_id": kb_per_id(fitted, "cpu_tensor_mb"),
        "fitted_calls": [fitted[0]["call"], fitted[-1]["call"]],
        "default_caps": {"max_users": settings.max_users, "max_items": settings.max_items},
        "bound_gb_at_default_caps": round(rss_kb * caps / 2**20, 1),
        "calls": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "calls"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
