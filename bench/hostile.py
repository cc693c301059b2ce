"""Hostile-record benchmark: a live worker against a seeded stream of every attack class.

Main run: ``--batches`` batches of ``--records`` records drawn from every class of
tests/harness/hostile.py (bad JSON and types, times in the future, in seconds, in
microseconds or ancient, negative and far-future record timestamps, header keys that are
not UTF-8, arbitrary bytes, weight 0, duplicated event ids, oversize keys and values,
every compression codec, good events between them; a multi-megabyte record in some
batches, shrunk into its letter or refused by the broker). ``--sigterms`` of the batches
SIGTERM the worker at a random moment 0-1.5 s after sending (mid-batch) and start it
again. Then the scenarios of tests/harness/hostile_scenarios.py: SIGTERM while stuck on
a dead letter (the DLQ deleted and blocked from creation), a DLQ that stays unwritable, the
DLQ deleted under the worker (created again), SIGTERM with the brokers cut away (without and
with ``--changelog``; with it, the worker is started again once the network is back and
what its store then holds is counted).

Reports records tried per class; crashes (the worker exited unasked), stalls (a batch
not in the store within 120 s), silent drops, doubles and wrong outcomes (goal: 0 each);
SIGTERM-to-exit times. Writes bench/results/hostile.json.
Run: make bench-hostile (.venv/bin/python -m bench.hostile)
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from stream.local_broker.broker import LocalKafkaBroker
from tests.harness.hostile import CLEAN_EXITS, HostileRun
from tests.harness.hostile_scenarios import (
    brokers_away,
    dlq_deleted,
    random_batch,
    stuck_on_dead_letter,
    unwritable_dlq,
)

RESULTS = Path(__file__).parent / "results" / "hostile.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--records", type=int, default=500, help="drawn per batch")
    parser.add_argument("--sigterms", type=int, default=12, help="batches with a SIGTERM")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sigterm_batches = set(rng.sample(range(args.batches), min(args.sigterms, args.batches)))
    tried: Counter[str] = Counter()
    problems: dict[str, list[str]] = {"silent_drops": [], "doubles": [], "wrong": []}
    stalls = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, LocalKafkaBroker(Path(tmp) / "kafka") as broker:
        run = HostileRun(broker, Path(tmp) / "main")
        run.start()
        for batch in range(args.batches):
            now = int(time.time() * 1000)
            records = random_batch(rng, batch * (args.records + 1), now, args.records)
            run.alive()
            sent = run.send(records)
            if batch in sigterm_batches:
                time.sleep(rng.uniform(0, 1.5))
                run.sigterm()
            if not run.wait(sent):
                stalls += 1
            outcome = run.check(records, sent)
            tried.update(outcome.tried)
            problems["silent_drops"] += outcome.silent_drops
            problems["doubles"] += outcome.doubles
            problems["wrong"] += outcome.wrong
            print(f"batch {batch + 1}/{args.batches}: {len(records)} records", file=sys.stderr)
        run.close()
        main_s = time.monotonic() - started
        scenarios = [
            stuck_on_dead_letter(broker, Path(tmp) / "stuck"),
            unwritable_dlq(broker, Path(tmp) / "unwritable"),
            dlq_deleted(broker, Path(tmp) / "deleted"),
        ]
    for changelog in (False, True):  # the changelog's transaction is stuck too with it on
        with tempfile.TemporaryDirectory() as tmp:
            scenarios.append(brokers_away(Path(tmp), changelog=changelog))
    times = run.sigterm_s + [
        s.seconds for s in scenarios if s.name.startswith("sigterm") and s.seconds is not None
    ]
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total // 2**30} GiB, Python {platform.python_version()}",
        "command": "make bench-hostile (python -m bench.hostile "
        f"--batches {args.batches} --records {args.records} --sigterms {args.sigterms} "
        f"--seed {args.seed})",
        "records_tried": sum(tried.values()),
        "records_per_class": dict(sorted(tried.items())),
        "crashes": len(run.crashes),
        "crash_reports": run.crashes[:3],
        "stalls": stalls,
        "silent_drops": len(problems["silent_drops"]),
        "doubles": len(problems["doubles"]),
        "wrong_outcomes": len(problems["wrong"]),
        "examples": {k: v[:5] for k, v in problems.items() if v},
        "sigterm": {
            "count": len(times),
            "max_s": round(max(times), 2) if times else None,
            "median_s": round(statistics.median(times), 2) if times else None,
            "times_s": [round(t, 2) for t in times],
            "unclean_exits": [c for c in run.exit_codes if c not in CLEAN_EXITS],
        },
        "scenarios": {s.name: s.as_json() for s in scenarios},
        "main_run_s": round(main_s, 1),
        "notes": "Main run: SIGTERM 0-1.5 s after a batch was sent (mid-batch), then a "
        "restart; a SIGTERM that lands while Python still imports (before the worker opened "
        "anything) exits by the signal's default action (-15), counted clean. A record is a "
        "silent drop when it was neither applied, nor counted as a duplicate or ignored, nor "
        "dead-lettered; doubles are edges applied twice or records with two letters. "
        "Scenario seconds: SIGTERM to exit; for dlq-unwritable the first send to the exit; "
        "for dlq-deleted the send to the batch stored (its letter acked on the DLQ created "
        "again).",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))


if __name__ == "__main__":
    main()
