"""Who holds the all-in-one worker's GIL at a load: py-spy's ``--gil`` samples by thread.

The worker runs ingest (the event loop's thread parses records; the default executor's
threads poll the consumer and write the store) and training (its own thread) in one
interpreter. Torch ops, librdkafka's waits and RocksDB's list gets release the GIL; every
line of Python and RocksDB's single gets and writes hold it. When the threads together hold
it most of the time, a thread's learn call waits for it, and a cheaper step (less torch
work) buys little: what would help is less GIL time per event, wherever it is spent.

This bench runs ``bench.freshness`` at one load (``--rate``, default 10,000 events/s, its
defaults otherwise: the broker warmed, the graph seeded) and, ``--settle-s`` after the load
began, samples the load's worker with ``py-spy record --gil --nonblocking`` for
``--seconds`` at ``--hz``: a sample is taken only from the thread holding the GIL at that
moment. ``held_share`` is the samples over the ones possible (``hz x seconds``; py-spy's
errors are reported, not counted), and per thread role (``trainer``, ``ingest_executor``:
the executor's threads, ``event_loop``, ``other``) its share of the possible samples, this
project's functions it spent them in (inclusive: a function's samples include its
callees') and the innermost lines (a C call's caller among them), top ``--top`` each. The
freshness run's own figures are kept under ``freshness``.

    .venv/bin/python -m bench.gil_share                      # 10,000 events/s
    .venv/bin/python -m bench.gil_share --rate 2000 --seconds 20

Writes bench/results/gil_share.json (``--json``). Needs ``py-spy`` (the ``bench`` extra)
and permission to read the worker's memory (root, or ``ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results" / "gil_share.json"
ROLES = {"streamgnn-trainer": "trainer", "MainThread": "event_loop"}
EXECUTOR_PREFIX = "asyncio_"  # the event loop's default executor names its threads so
OURS = ("stream/", "models/")  # py-spy's paths of this project's modules
STACK_MARKERS = {  # a frame only that role's stacks hold
    "_worker (concurrent/futures/thread.py:": "ingest_executor",
    "TrainingLoop._run (": "trainer",
    "BaseEventLoop.run_forever (": "event_loop",
}


def role(thread_name: str, frames: Sequence[str] = ()) -> str:
    """``trainer``, ``ingest_executor``, ``event_loop`` or ``other``, by the thread's name,
    or by its stack where py-spy could not read the name."""
    if thread_name.startswith(EXECUTOR_PREFIX):
        return "ingest_executor"
    if thread_name in ROLES:
        return ROLES[thread_name]
    for marker, who in STACK_MARKERS.items():
        if any(marker in frame for frame in frames):
            return who
    return "other"


def parse_raw(text: str) -> tuple[Counter[str], dict[str, Counter[str]], dict[str, Counter[str]]]:
    """From py-spy's ``--format raw`` output (``thread (tid): name;frame;... count`` per
    line, a frame being ``function (path:line)``): samples per role; per role, inclusive
    samples of each function of this project (``stream/``, ``models/``; a function
    counted once per sample, however deep it recurs); per role, samples per innermost
    frame (``function (file:line)``: the line holding the GIL, a C call's caller)."""
    per_role: Counter[str] = Counter()
    functions: dict[str, Counter[str]] = defaultdict(Counter)
    leaves: dict[str, Counter[str]] = defaultdict(Counter)
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[1] if ": " in frames[0] else frames[0]
        who, n = role(thread, frames[1:]), int(count)
        per_role[who] += n
        parsed = [_split_frame(frame) for frame in frames[1:]]
        ours = {f"{name} ({file})" for name, path, file, _ in parsed if path.startswith(OURS)}
        for function in ours:  # once per sample, however deep it recurs
            functions[who][function] += n
        if parsed:
            name, _, file, line_no = parsed[-1]
            leaves[who][f"{name} ({file}:{line_no})"] += n
    return per_role, functions, leaves


def _split_frame(frame: str) -> tuple[str, str, str, str]:
    """``(function, path, file name, line)`` of a py-spy frame ``function (path:line)``."""
    name, _, place = frame.rpartition(" (")
    path, _, line_no = place.rstrip(")").rpartition(":")
    return name, path, path.rsplit("/", 1)[-1], line_no


def worker_pid(parent: psutil.Process) -> int | None:
    """The newest running ``stream.worker`` under ``parent`` (the broker warm-up's own worker
    has stopped by the time the load runs)."""
    found = []
    for child in parent.children(recursive=True):
        try:
            if "stream.worker" in " ".join(child.cmdline()) and child.is_running():
                found.append(child)
        except psutil.Error:  # ended meanwhile
            continue
    return max(found, key=lambda p: p.create_time()).pid if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=10_000, help="offered events/s")
    parser.add_argument("--duration-s", type=float, default=60.0, help="the load's length")
    parser.add_argument("--settle-s", type=float, default=35.0, help="after the load began")
    parser.add_argument("--seconds", type=float, default=20.0, help="sampled seconds")
    parser.add_argument("--hz", type=int, default=100, help="samples per second")
    parser.add_argument("--top", type=int, default=15, help="functions listed per role")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.settle_s + args.seconds > args.duration_s:
        parser.error("--settle-s + --seconds must fit in --duration-s")
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy not found: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory() as tmp:
        fresh_json, raw = Path(tmp) / "freshness.json", Path(tmp) / "gil.txt"
        command = [
            sys.executable, "-m", "bench.freshness", "--loads", str(args.rate),
            "--duration-s", str(args.duration_s), "--json", str(fresh_json),
        ]  # fmt: skip
        load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert load.stdout is not None
        began = False
        for line in load.stdout:  # the broker's warm-up first; then this load
            print(line, end="", flush=True)
            if line.startswith(f"load {args.rate} "):
                began = True
                break
        if not began:
            raise SystemExit(f"bench.freshness ended before its load (exit {load.wait()})")
        time.sleep(args.settle_s)
        pid = worker_pid(psutil.Process(load.pid))
        if pid is None:
            load.kill()
            raise SystemExit("no stream.worker process of the load found")
        sampled = subprocess.run(
            [spy, "record", "--pid", str(pid), "--gil", "--nonblocking", "--threads",
             "--rate", str(args.hz), "--duration", str(int(args.seconds)),
             "--format", "raw", "--output", str(raw)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        for line in load.stdout:
            print(line, end="", flush=True)
        if load.wait() != 0 or sampled.returncode != 0 or not raw.exists():
            raise SystemExit(f"failed: bench.freshness {load.returncode}, {sampled.stderr}")
        per_role, functions, leaves = parse_raw(raw.read_text())
        freshness = json.loads(fresh_json.read_text())["loads"][0]
    possible = args.hz * int(args.seconds)
    output = (sampled.stdout + sampled.stderr).splitlines()
    errors = [ln for ln in output if "Errors:" in ln]
    report: dict[str, Any] = {
        "benchmark": "the all-in-one worker's GIL, py-spy --gil samples by thread role",
        "command": " ".join([Path(sys.executable).name, "-m", "bench.gil_share", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "rate": args.rate,
        "sampled_s": int(args.seconds),
        "hz": args.hz,
        "py_spy_summary": errors[-1].strip() if errors else None,
        "held_share": round(sum(per_role.values()) / possible, 3),
        "roles": {
            who: {
                "held_share": round(count / possible, 3),
                "functions": {
                    f: round(n / possible, 3) for f, n in functions[who].most_common(args.top)
                },
                "lines": {f: round(n / possible, 3) for f, n in leaves[who].most_common(args.top)},
            }
            for who, count in per_role.most_common()
        },
        "freshness": {
            key: freshness.get(key)
            for key in ("p50", "p90", "p99", "sustained_per_s", "trained_per_s", "train_steps")
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"held {report['held_share']:.0%} of the time; wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
