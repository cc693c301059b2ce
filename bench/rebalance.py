"""Rebalance benchmark: how long a worker already reading stops when the group changes.

A live stream at ``--rate`` events/s over ``--partitions`` partitions, read by
``python -m stream.worker --train false`` processes with distinct instance ids, once
without and once with ``--changelog`` (the deployment), in two scenarios:

- ``join-leave``: worker A reads alone; B joins at ``--join-at-s`` and leaves (SIGTERM)
  at ``--leave-at-s``;
- ``paused``: A and B read from the start; at ``--join-at-s`` B is stopped (SIGSTOP: a
  GC pause, a batch stuck on a broker, a starved VM) and C started; B goes on
  ``--pause-s`` after C has subscribed (its join under way), within B's session timeout
  (``PAUSED_SESSION_TIMEOUT_MS`` in this scenario).

The workers' ``streamgnn_events_consumed_total`` and ``streamgnn_assigned_partitions``
are scraped every ``SCRAPE_S``; the figures are A's longest stretch without a record read
in the ``WINDOW_S`` after the join (and the leave), when it began, and the fewest
partitions A owned meanwhile (0: it had stopped reading everything), against A's longest
such stretch in the quiet seconds before the join (the stream's own cadence); and how long
the joining worker took to read its first record. Every figure shares this 2-core machine
with the broker and the producer.

Writes bench/results/rebalance.json. Run: make bench-rebalance
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import itertools
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import scrape_metrics, total
from tests.harness.faults import produce
from tests.harness.worker_process import WorkerProcess, wait_for, worker_env

RESULTS = Path(__file__).parent / "results" / "rebalance.json"
SCRAPE_S = 0.02
WINDOW_S = 15.0
PAUSED_SESSION_TIMEOUT_MS = 20_000


@dataclass
class Trace:
    """One worker's scraped counters: ``(seconds since the stream began, consumed,
    assigned partitions)``, a row per scrape that answered."""

    rows: list[tuple[float, float, float]] = field(default_factory=list)

    def longest_gap(self, start: float, end: float) -> tuple[float, float]:
        """The longest time between two successive increases of the consumed count inside
        ``[start, end]``, and when it began (the window's edges count as increases: a stop
        that began before the window and lasts into it counts from the window's start)."""
        times = [start]
        last = None
        for t, consumed, _ in self.rows:
            if last is not None and consumed > last and start <= t <= end:
                times.append(t)
            last = consumed
        times.append(end)
        return max((b - a, a) for a, b in itertools.pairwise(times))

    def fewest_partitions(self, start: float, end: float) -> int:
        return int(min((p for t, _, p in self.rows if start <= t <= end), default=0))


def scrape(address: str, trace: Trace, began: float, done: threading.Event) -> None:
    while not done.is_set():
        try:
            samples = scrape_metrics(address)
        except (OSError, http.client.HTTPException):  # a worker stopping mid-answer
            samples = None
        if samples is not None:
            trace.rows.append(
                (
                    time.monotonic() - began,
                    total(samples, "streamgnn_events_consumed_total"),
                    total(samples, "streamgnn_assigned_partitions"),
                )
            )
        time.sleep(SCRAPE_S)


def run(
    broker: LocalKafkaBroker, args: argparse.Namespace, changelog: bool, paused: bool
) -> dict[str, Any]:
    """One scenario: ``paused`` False, A alone, B joins and leaves; True, A and B from the
    start, C joins while B is stopped (SIGSTOP) from C's start to ``--pause-s`` after C
    subscribed."""
    name = f"{'changelog' if changelog else 'store'}-{'paused' if paused else 'join-leave'}"
    topic = group = f"rebalance-{name}"
    broker.create_topics({topic: args.partitions, f"{topic}.dlq": 1})
    events = int(args.rate * args.duration_s)
    logs = args.logs
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rebalance-") as tmp:
        workers, traces, addresses = [], [], []
        for n in range(3 if paused else 2):
            env = worker_env(broker.bootstrap_servers, topic, group, Path(tmp) / f"s{n}", 2_000)
            env |= {"STREAMGNN_INSTANCE_ID": f"w{n}", "STREAMGNN_CHANGELOG": str(changelog)}
            if paused:  # B stays a member through its pause (C's start-up included)
                env["STREAMGNN_SESSION_TIMEOUT_MS"] = str(PAUSED_SESSION_TIMEOUT_MS)
            workers.append(WorkerProcess(env, (logs or Path(tmp)) / f"{name}-w{n}.log"))
            addresses.append(env["STREAMGNN_METRICS_ADDRESS"])
            traces.append(Trace())
        b, *rest = workers[1:]
        for worker in workers[: 2 if paused else 1]:
            worker.start()
            wait_for(worker.consuming, 120, "a worker consuming")
        if paused:
            wait_for(b.owns_partitions, 120, "B owning partitions")
        began = time.monotonic()
        stream = threading.Thread(
            target=produce, args=(broker.bootstrap_servers, topic, events, args.rate)
        )
        done = threading.Event()
        scrapers = [
            threading.Thread(target=scrape, args=(address, trace, began, done), daemon=True)
            for address, trace in zip(addresses, traces, strict=True)
        ]
        left = paused_s = None
        try:
            stream.start()
            for s in scrapers:
                s.start()
            time.sleep(max(args.join_at_s - (time.monotonic() - began), 0))
            joined = time.monotonic() - began
            if paused:
                os.kill(b.pid, signal.SIGSTOP)
                rest[0].start()
                wait_for(rest[0].consuming, 120, "C joining")  # its join is under way
                time.sleep(args.pause_s)
                os.kill(b.pid, signal.SIGCONT)
                paused_s = time.monotonic() - began - joined
            else:
                b.start()
                time.sleep(max(args.leave_at_s - (time.monotonic() - began), 0))
                left = time.monotonic() - began
                b.terminate()
            stream.join()
            time.sleep(2)
        finally:
            done.set()
            for w in workers:
                if w.exit_status() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(w.pid, signal.SIGCONT)
                    w.terminate()
        joiner = traces[-1]
        first_read = next((t for t, c, _ in joiner.rows if c > 0), None)
        return {
            "joined_at_s": round(joined, 2),
            "a_longest_stop_quiet_s": round(traces[0].longest_gap(2.0, joined - 1.0)[0], 2),
            **_window("join", traces[0], joined),
            **({} if left is None else _window("leave", traces[0], left)),
            "b_paused_s": None if paused_s is None else round(paused_s, 2),
            "joiner_first_record_after_join_s": None
            if first_read is None
            else round(first_read - joined, 2),
            "scrapes": [len(t.rows) for t in traces],
        }


def _window(event: str, trace: Trace, at: float) -> dict[str, float]:
    """Worker A in the window after ``event``: its longest stop, how long after the event
    that stop began, and the fewest partitions it owned."""
    gap, began = trace.longest_gap(at, at + WINDOW_S)
    return {
        f"a_longest_stop_after_{event}_s": round(gap, 2),
        f"a_longest_stop_after_{event}_began_s": round(began - at, 2),
        f"a_fewest_partitions_after_{event}": trace.fewest_partitions(at, at + WINDOW_S),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--deployments", nargs="+", default=["store", "changelog"], choices=["store", "changelog"]
    )
    parser.add_argument("--duration-s", type=float, default=50)
    parser.add_argument("--join-at-s", type=float, default=12)
    parser.add_argument("--leave-at-s", type=float, default=30)
    parser.add_argument(
        "--scenarios", nargs="+", default=["join-leave", "paused"], choices=["join-leave", "paused"]
    )
    parser.add_argument("--pause-s", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--logs", type=Path, help="keep the workers' logs in this folder")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.rebalance", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, Python "
        f"{platform.python_version()}; one local Kafka node on the same machine "
        f"(load average at start {os.getloadavg()[0]:.1f})",
        "settings": vars(args)
        | {
            "out": str(args.out),
            "logs": args.logs and str(args.logs),
            "scrape_s": SCRAPE_S,
            "window_s": WINDOW_S,
        },
    }
    with tempfile.TemporaryDirectory() as tmp, LocalKafkaBroker(Path(tmp) / "kafka") as broker:
        result["scenarios"] = {
            f"{deployment}-{scenario}": run(
                broker, args, deployment == "changelog", scenario == "paused"
            )
            for deployment in args.deployments
            for scenario in args.scenarios
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
