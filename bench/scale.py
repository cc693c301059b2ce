"""Scale benchmark (issue 14): ingest events/s with 1 and 2 worker processes, trainer
events/s with 1 and 2 gloo ranks, restore seconds of a 1M-edge partition.

- ingest: ``--ingest-events`` scenario events (tests/harness/faults.py, one edge each) over
  4 partitions, read as a backlog by N ``python -m stream.worker`` processes (``--train
  false --changelog``, one group, distinct instance ids); the rate counts from the group's
  first commit to its last (process start and the first join are left out, the
  rebalance when the second process joins is in);
- trainer: the first ``--train-events`` ML-100K ratings in time order, in batches of
  ``--train-batch``, learnt by 1 process or 2 gloo ranks (tests/harness/rank_job.py, the
  rank tests' machinery; ``streamgnn train`` is not wired yet); the rate is events over
  the slowest rank's seconds inside ``learn``, for the default step scope and ``local``;
- restore: one worker ingests ``--restore-edges`` distinct edges into a 1-partition topic
  with ``--changelog``; then the partition is restored from the changelog into an empty
  store (:meth:`Changelog.read_partitions` + :func:`restore_partition`, the path a worker
  takes on assignment), timed.

Every figure shares this 2-core machine with the broker (and, for ingest, the producer
already done). The engine comparison is bench/results/engines.json (``make bench-engines``).
Writes bench/results/scale.json. Run: make bench-scale (.venv/bin/python -m bench.scale)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from stream.behaviours import DEFAULT_BEHAVIOURS
from stream.ingest.changelog import Changelog
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.settings import KafkaSettings
from stream.state.graph_store import DecayedGraphStore
from stream.state.partition_state import restore_partition
from tests.harness.faults import produce
from tests.harness.progress import GroupProgress
from tests.harness.rank_job import run_job, train_stream
from tests.harness.worker_process import WorkerProcess, wait_for, worker_env

RESULTS = Path(__file__).parent / "results" / "scale.json"
ML_100K = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ml-100k" / "u.data"


def ingest_rate(
    broker: LocalKafkaBroker, topic: str, events: int, processes: int, group: str
) -> float:
    """Events/s ``processes`` changelog workers in one new group apply from a backlog."""
    bootstrap = broker.bootstrap_servers
    with tempfile.TemporaryDirectory(prefix="scale-ingest-") as tmp:
        workers = []
        for n in range(processes):
            env = worker_env(bootstrap, topic, group, Path(tmp) / f"store-{n}", 2_000)
            env |= {"STREAMGNN_INSTANCE_ID": f"worker-{n}", "STREAMGNN_CHANGELOG": "true"}
            workers.append(WorkerProcess(env, Path(tmp) / f"worker-{n}.log"))
        progress = GroupProgress(bootstrap, group, topic)
        try:
            for worker in workers:
                worker.start()
            wait_for(lambda: progress.committed() > 0, 300, "the group's first commit")
            first, start = progress.committed(), time.monotonic()
            wait_for(lambda: progress.committed() >= events, 1_800, "every event applied")
            return (events - first) / (time.monotonic() - start)
        finally:
            progress.close()
            for worker in workers:
                if worker.exit_status() is None:
                    worker.terminate()


def restore_seconds(broker: LocalKafkaBroker, edges: int) -> dict[str, Any]:
    """Ingest ``edges`` distinct edges into one partition with the changelog on, then
    restore that partition from the changelog into an empty store."""
    topic, group = "restore", "scale-restore"
    broker.create_topics({topic: 1, f"{topic}.dlq": 1})
    produce(broker.bootstrap_servers, topic, edges)
    ingest_s = edges / ingest_rate(broker, topic, edges, 1, group)  # writes the changelog
    kafka = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        group_id=group,
        instance_id="restorer",
        interactions_topic=topic,
    )
    metrics = PipelineMetrics()
    changelog = Changelog(kafka, metrics)
    changelog.start()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="scale-restore-") as tmp,
            DecayedGraphStore(Path(tmp) / "store", DEFAULT_BEHAVIOURS) as store,
        ):
            start = time.perf_counter()
            folded = changelog.read_partitions([0])[0]
            read_s = time.perf_counter() - start
            restore_partition(store, topic, 0, folded)
            total_s = time.perf_counter() - start
            restored = store.counts().edges
    finally:
        changelog.close()
    return {
        "edges_ingested": edges,
        "ingest_s": round(ingest_s, 1),
        "live_changelog_records": len(folded),
        "edges_after_restore": restored,
        "read_s": round(read_s, 2),
        "restore_s": round(total_s, 2),
    }


def ml100k_batches(events: int, batch: int) -> list[list[list[Any]]]:
    """The first ``events`` ML-100K ratings in time order as ``(user, item, click, ms)``."""
    ratings = sorted(
        (int(ts) * 1000, user, item)
        for user, item, _, ts in (line.split("\t") for line in ML_100K.read_text().splitlines())
    )
    rows: list[list[Any]] = [[f"u{u}", f"i{i}", "click", ms] for ms, u, i in ratings[:events]]
    return [rows[k : k + batch] for k in range(0, len(rows), batch)]


def trainer_rate(world: int, settings: dict[str, Any], batches: list[Any]) -> dict[str, Any]:
    """Events/s of ``world`` ranks (1: one process alone) learning ``batches``."""
    start = time.monotonic()
    results = run_job(world, train_stream, [settings, batches, False], timeout_s=3_600)
    wall = time.monotonic() - start
    slowest = max(r["seconds"] for r in results)
    events = results[0]["events"]
    return {
        "ranks": world,
        "events": events,
        "learn_s_slowest_rank": round(slowest, 2),
        "events_per_s": round(events / slowest),
        "wall_s_with_startup": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ingest-events", type=int, default=100_000)
    parser.add_argument("--train-events", type=int, default=100_000)
    parser.add_argument("--train-batch", type=int, default=1_000)
    parser.add_argument("--restore-edges", type=int, default=1_000_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["ingest", "train", "restore"])
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.scale", *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(),
        "machine": f"2-core machine: {platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total // 2**30} GiB, Python {platform.python_version()}; "
        "one local Kafka 3.9.1 node on the same machine, shared with other work "
        f"(load average at start {os.getloadavg()[0]:.1f})",
        "engines": "bench/results/engines.json (make bench-engines): streamgnn --changelog "
        "vs Quix Streams vs faust-streaming under SIGKILLs and a rebalance",
    }
    if "train" not in args.skip:
        batches = ml100k_batches(args.train_events, args.train_batch)
        result["trainer"] = {
            scope: [
                trainer_rate(world, {"device": "cpu", "step_scope": scope}, batches)
                for world in (1, 2)
            ]
            for scope in ("full", "local")
        }
        result["trainer_notes"] = (
            f"ML-100K first {args.train_events} ratings, batches of {args.train_batch}, "
            "default TrainerSettings but step_scope; every rank holds the whole graph and "
            "trains on its half of each step's positives; gradients all-reduced (gloo, "
            "row-sparse id tables under local)"
        )
    if "ingest" not in args.skip or "restore" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp, LocalKafkaBroker(Path(tmp) / "kafka") as broker:
            if "ingest" not in args.skip:
                topic = "interactions"
                broker.create_topics({topic: 4, f"{topic}.dlq": 1})
                produce(broker.bootstrap_servers, topic, args.ingest_events)
                result["ingest"] = [
                    {
                        "processes": n,
                        "events": args.ingest_events,
                        "events_per_s": round(
                            ingest_rate(broker, topic, args.ingest_events, n, f"scale-{n}")
                        ),
                    }
                    for n in (1, 2)
                ]
                result["ingest_notes"] = (
                    "python -m stream.worker --train false --changelog, 4 partitions, one "
                    "group; from the group's first commit to its last"
                )
            if "restore" not in args.skip:
                result["restore"] = restore_seconds(broker, args.restore_edges)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
