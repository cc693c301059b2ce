"""What the trainer's heap options cost while its heap grows: a worker's first learn calls.

A worker starting on a live stream meets new ids in every batch: its tables, optimiser
moments and a step's temporaries grow, so most of its memory is touched for the first
time. ``--huge-pages`` and ``--keep-freed-memory`` (``stream/allocator.py``) were measured
on a trainer whose memory was already touched (``bench.step_cost``); this measures them
while it is not. Each option set runs in a process of its own (torch reads the huge-page
advice once, at its first allocation), twice, the sets alternating:

- ``learn_seconds``: one trainer with the default settings fed the freshness benchmark's
  synthetic stream from empty in batches the size a worker's first calls took at 2,000
  events/s (scratch log, 2026-12-05), each call timed;
- ``first_touch_gb_per_s``: a fresh tensor of each size written once, then a copy of it
  (``torch.cat``), the way a grown table or a step's temporary first meets its pages.

    .venv/bin/python -m bench.heap_growth            # writes bench/results/heap_growth.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "heap_growth.json"
ROOT = Path(__file__).resolve().parent.parent
OPTION_SETS = {  # name -> (huge pages, keep freed memory)
    "default": (True, True),
    "keep_freed_memory_only": (False, True),
    "huge_pages_only": (True, False),
    "neither": (False, False),
}
BATCHES = [48, 113, 61, 401, 1166, 2249, 4302, 2705, 935, 269, 200, 200, 200, 200]
TOUCH_MB = [32, 64, 128, 256]
THP = Path("/sys/kernel/mm/transparent_hugepage")


def child(huge: bool, keep: bool) -> dict[str, Any]:
    """One option set in this (fresh) process; run as a script, outside the bench package,
    whose import requests huge pages for every benchmark."""
    from stream.allocator import huge_pages, keep_freed_memory

    taken = {"huge_pages": huge and huge_pages(), "keep_freed_memory": keep and keep_freed_memory()}
    import torch

    from stream.behaviours import DEFAULT_BEHAVIOURS
    from stream.learn.trainer import IncrementalTrainer
    from stream.settings.training import TrainerSettings

    torch.set_num_threads(1)
    trainer = IncrementalTrainer(TrainerSettings(), DEFAULT_BEHAVIOURS, 1e-3)
    # Only now: importing the bench package requests huge pages, which torch has read (and
    # kept) at the trainer's first tensor.
    from bench.store_apply import stream_events

    stream = stream_events(seed=2000)
    learn = []
    for size in BATCHES:
        batch = list(itertools.islice(stream, size))
        start = time.perf_counter()
        trainer.learn(batch)
        learn.append(round(time.perf_counter() - start, 4))
    touch, kept = {}, []  # kept alive, so each size meets pages no tensor had before
    for mb in TOUCH_MB:
        start = time.perf_counter()
        fresh = torch.empty(mb << 18).fill_(1.0)
        written = time.perf_counter() - start
        start = time.perf_counter()
        kept += [fresh, torch.cat([fresh, fresh])]
        copied = time.perf_counter() - start
        touch[str(mb)] = {
            "write": round(mb / 1024 / written, 3),
            "cat": round(2 * mb / 1024 / copied, 3),
        }
    return {
        "taken": taken,
        "learn_seconds": learn,
        "learn_total_s": round(sum(learn), 3),
        "first_touch_gb_per_s": touch,
    }


def run_set(name: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    done = subprocess.run(
        [sys.executable, __file__, "--child", name],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    from stream.allocator import read_kernel_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=sorted(OPTION_SETS), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*OPTION_SETS[args.child])))
        return 0
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in OPTION_SETS}
    for round_ in range(args.rounds):
        for name in OPTION_SETS:
            runs[name].append(run_set(name))
            print(f"round {round_} {name}: {runs[name][-1]['learn_total_s']} s", flush=True)
    report = {
        "benchmark": "heap_growth",
        "command": "python -m bench.heap_growth "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "thp_enabled": read_kernel_file(THP / "enabled").strip() or None,
            "thp_defrag": read_kernel_file(THP / "defrag").strip() or None,
            "load_average_1_5_15_min": list(os.getloadavg()),
        },
        "batches": BATCHES,
        "option_sets": {
            name: dict(zip(("huge_pages", "keep_freed_memory"), on, strict=True))
            for name, on in OPTION_SETS.items()
        },
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):  # run as a script (a child): the repository on the path
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
