"""A learn call beside a busy Python thread, by the interpreter's GIL switch interval.

The worker runs its trainer thread beside the ingest threads in one interpreter. Every
torch op releases the GIL and takes it back; when another thread is running Python at that
moment, taking it back waits until that thread is made to drop it, which CPython does
only after the switch interval (``sys.setswitchinterval``, 5 ms by default). A learn call
issues hundreds of ops, so beside a busy ingest thread it can take several times longer
than alone. This bench measures that: learn calls of ``--events`` synthetic events on a
trainer holding a ``--edges`` edge graph (bench.step_cost's loading), alone and beside a
thread running a pure Python loop (the worst case of an ingest thread: never waiting on
I/O), at each ``--intervals-ms``; the loop's iterations per second say what the busy
thread keeps of its own speed.

    .venv/bin/python -m bench.gil_switch
    .venv/bin/python -m bench.gil_switch --edges 100000 --events 2000 --calls 1

Writes bench/results/gil_switch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from bench.propagation import synthetic_graph
from bench.step_cost import batch_events, loaded_trainer
from stream.allocator import worker_heap
from stream.settings.sections import WorkerSettings
from stream.settings.training import TrainerSettings
from stream.training import switch_interval_s

RESULTS = Path(__file__).resolve().parent / "results" / "gil_switch.json"


class BusyThread:
    """A thread counting in a pure Python loop until stopped (holds the GIL when it can)."""

    def __init__(self) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        stop, count = self._stop.is_set, 0
        while not stop():
            count += 1
        self.count = count

    def __enter__(self) -> BusyThread:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.per_s = self.count / (time.perf_counter() - self._started)


def spins_alone(seconds: float = 1.0) -> float:
    """The busy loop's iterations per second with nothing beside it."""
    with BusyThread() as busy:
        time.sleep(seconds)
    return busy.per_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=20_000, help="events per learn call")
    parser.add_argument("--calls", type=int, default=2, help="timed learn calls per case")
    parser.add_argument("--intervals-ms", type=float, nargs="+", default=[5.0, 1.0, 0.5, 0.2])
    parser.add_argument("--device", default="cpu", help="the trainer's device (cuda on a GPU)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    worker_heap(WorkerSettings())
    torch.set_num_threads(1)
    graph = synthetic_graph(args.edges, "cpu")
    settings = TrainerSettings(max_users=4_000_000, max_items=4_000_000, device=args.device)
    trainer = loaded_trainer(graph, settings)
    step = 0

    def learn_calls() -> list[float]:
        nonlocal step
        seconds = []
        for _ in range(args.calls):
            step += 1
            events = batch_events(graph, args.events, step)
            start = time.perf_counter()
            trainer.learn(events)
            seconds.append(round(time.perf_counter() - start, 3))
        return seconds

    learn_calls()  # the first call embeds every row
    default_interval = sys.getswitchinterval()
    cases: list[dict[str, Any]] = []
    try:
        for interval_ms in args.intervals_ms:
            sys.setswitchinterval(interval_ms / 1000)
            alone_spins = spins_alone()
            alone = learn_calls()
            with BusyThread() as busy:
                beside = learn_calls()
            case = {
                "interval_ms": interval_ms,
                "learn_s_alone": alone,
                "learn_s_beside_busy_thread": beside,
                "slowdown": round(sum(beside) / sum(alone), 2),
                "busy_loop_per_s_alone": round(alone_spins),
                "busy_loop_per_s_beside_learn": round(busy.per_s),
            }
            cases.append(case)
            print(json.dumps(case), flush=True)
    finally:
        sys.setswitchinterval(default_interval)
    report = {
        "benchmark": "learn call beside a busy Python thread, by GIL switch interval",
        "command": " ".join(["python -m bench.gil_switch", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}, 1 torch thread",
        "device": args.device,
        "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()],
        "edges": args.edges,
        "events_per_call": args.events,
        "worker_default_interval_ms": 1000
        * switch_interval_s(WorkerSettings().gil_switch_interval_ms, torch.device(args.device)),
        "cases": cases,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
