"""Fault benchmark: every crash scenario of the fault tests, with its figures.

Runs the scenarios of tests/harness/ against real Kafka brokers started here:

- worker SIGKILLed 3 times (twice at random, once right after a store write), ingest
  only, 100,000 events over 4 partitions; compared with a run without crashes;
- the same 3 kills with training and publishing on (20,000 events, dim 16, checkpoints
  every 2 s), compared with an ingest-only run without crashes;
- the broker SIGKILLed and restarted mid-stream (20,000 events);
- the network between worker and broker cut for 30 s through a loopback TCP proxy;
- 20 checkpoint writers SIGKILLed mid-save;
- a flood of 1,000,000 new user ids into a training worker capped at 20,000 user rows.

Writes bench/results/faults.json: {"device", "date", "command", "notes", "tests": [{name,
sent, applied, lost, duplicated, recovery_s: [...], ...scenario details}]}.
Run: make bench-faults (.venv/bin/python -m bench.faults); ``--only NAME ...`` re-runs
some scenarios and keeps the other entries of the existing file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from stream.local_broker.broker import LocalKafkaBroker
from tests.harness.checkpoint_faults import run_checkpoint_kill_scenario
from tests.harness.faults import (
    CrashReport,
    prepare_topic,
    run_crash_scenario,
    run_proxy_cut_scenario,
)
from tests.harness.id_flood import run_id_flood
from tests.harness.proxy import proxied_broker
from tests.harness.training_faults import run_training_crash_scenario

RESULTS = Path(__file__).parent / "results" / "faults.json"

NOTES = (
    "lost/duplicated are counted from the graph store (every event owns one edge, so its "
    "weight says how often it was applied). recovery_s per kill: SIGKILL (or the store-write "
    "self-kill) to the first informational group commit past the kill point, restart "
    "included; proxy-cut: restore to the next applied event (cut_to_progress_s from the start "
    "of the cut); checkpoint-sigkill: sent = saves interrupted, applied = rounds after which "
    "the newest checkpoint loaded and verified, lost = rounds after which it did not, "
    "duplicated = torn files that loaded, recovery_s = load_latest time after each kill. "
    "first_publish_s: kill to the first vector a restarted training worker published. "
    "id-flood: recovery_s is empty (no fault); users_refused/evicted from the worker's "
    "metrics, rss_mid_mb/rss_end_mb the worker's RSS at half and at the end of the flood."
)


@dataclass(frozen=True)
class Bench:
    """What every scenario gets: a shared broker and a scratch folder."""

    broker: LocalKafkaBroker
    workdir: Path


def worker_kill_ingest(bench: Bench) -> CrashReport:
    events = 100_000
    topic = prepare_topic(bench.broker, events, partitions=4)
    report = run_crash_scenario(
        bench.broker,
        topic,
        events,
        bench.workdir,
        "worker-sigkill-x3",
        worker_kills=2,
        store_write_kills=1,
        seed=11,
    )
    return _compared(bench, topic, events, report)


def worker_kill_training(bench: Bench) -> CrashReport:
    events = 20_000
    topic = prepare_topic(bench.broker, events, partitions=4)
    trained = run_training_crash_scenario(bench.broker, topic, events, bench.workdir, seed=12)
    report = _compared(bench, topic, events, trained.crash)
    report.details["checkpoint_trained_through_the_stream"] = (
        trained.checkpoint_offsets == report.positions
    )
    return report


def broker_kill(bench: Bench) -> CrashReport:
    events = 20_000
    topic = prepare_topic(bench.broker, events, partitions=4)
    return run_crash_scenario(
        bench.broker,
        topic,
        events,
        bench.workdir,
        "broker-sigkill",
        worker_kills=0,
        broker_kills=1,
        max_batch_records=100,
    )


def proxy_cut(bench: Bench) -> CrashReport:
    events = 60_000
    with proxied_broker(bench.workdir / "kafka-proxied") as (broker, proxy):
        topic = prepare_topic(broker, events, partitions=2)
        return run_proxy_cut_scenario(broker, proxy, topic, events, bench.workdir, cut_s=30.0)


def checkpoint_kill(bench: Bench) -> CrashReport:
    return run_checkpoint_kill_scenario(bench.workdir / "checkpoints", kills=20)


# One entry per scenario, in this order; add new scenarios (e.g. "id-flood") here.
def id_flood(bench: Bench) -> CrashReport:
    return run_id_flood(bench.broker, bench.workdir, ids=1_000_000, max_users=20_000)


SCENARIOS: list[Callable[[Bench], CrashReport]] = [
    worker_kill_ingest,
    worker_kill_training,
    broker_kill,
    proxy_cut,
    checkpoint_kill,
    id_flood,
]


def _compared(bench: Bench, topic: str, events: int, report: CrashReport) -> CrashReport:
    """Adds whether the crashed run's store equals an ingest-only run without crashes."""
    reference = run_crash_scenario(bench.broker, topic, events, bench.workdir, "no-crash", 0)
    report.details["digest_equals_no_crash_run"] = report.digest == reference.digest
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="function names to run")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if args.only is None or s.__name__ in args.only]
    kept = json.loads(RESULTS.read_text())["tests"] if args.only and RESULTS.exists() else []
    tests: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp, LocalKafkaBroker(Path(tmp) / "kafka") as broker:
        for scenario in chosen:
            report = scenario(Bench(broker, Path(tmp)))
            tests.append(report.as_json())
            print(json.dumps(tests[-1]), flush=True)
    names = {t["name"] for t in tests}
    tests = [t for t in kept if t["name"] not in names] + tests
    result = {
        "device": f"{platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total // 2**30} GiB, Python {platform.python_version()}",
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", *sys.argv]),
        "notes": NOTES,
        "tests": tests,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
