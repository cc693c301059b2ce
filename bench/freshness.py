"""End-to-end freshness at a fixed offered load: producer send -> vector on the topic.

For each load a fresh topic and a fresh ``python -m stream.worker`` (ingest, store, train,
publish) run against a real local broker; this process offers synthetic events at the
load (``ts`` = send time, no late events) for ``--duration-s`` and follows the
``user-embeddings`` topic. An event is reflected by the first record of its user whose
``event_time_ms`` (the newest own event the vector reflects) is >= the event's ``ts``;
its freshness is that record's receive time minus the event's send time. Events never
reflected within ``--drain-s`` after the load ends are counted, not hidden. The load
starts once the worker owns its partitions (``streamgnn_assigned_partitions``): before,
events wait for its group join, a start-up cost, not freshness. ``--warmup-s`` can leave
the first seconds out of p50/p90/p99 (none by default); ``p99_by_10s_window`` shows
whether the figure holds over the run.

    .venv/bin/python -m bench.freshness                      # 2,000 and 10,000 events/s
    .venv/bin/python -m bench.freshness --loads 2000 --duration-s 30

Writes bench/results/freshness.json: one entry per load under ``loads`` with
``offered_per_s``, ``sustained_per_s`` (events the worker applied per second during the
load), ``p50``/``p90``/``p99`` (seconds), ``lag_end`` (records not yet in the store when
the load ended), ``peak_rss_mb`` (the worker's), and more.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import psutil
import torch
from kafka import KafkaConsumer, TopicPartition

from stream.behaviours import SOCIAL_EVENT_TYPES
from stream.local_broker.broker import LocalKafkaBroker, free_ports
from stream.metrics import owns_partitions, scrape_metrics, total
from stream.produce.producer import InteractionProducer, produce
from stream.produce.synthetic import SyntheticConfig, SyntheticStream, wall_clock_ms
from stream.settings import KafkaSettings
from tests.harness.worker_process import WorkerProcess, training_env, wait_for, worker_env

RESULTS = Path(__file__).resolve().parent / "results" / "freshness.json"


class EmbeddingFollower(threading.Thread):
    """Reads a user-embeddings topic from the start; keeps (event_time_ms, receive_ms) per id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        self.records = 0
        self._halt = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        partitions: set[int] = set()
        for _ in range(100):  # the worker created the topic; metadata may lag a moment
            partitions = self._consumer.partitions_for_topic(topic) or set()
            if partitions:
                break
            time.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        self._consumer.seek_to_beginning(*tps)

    def run(self) -> None:
        while not self._halt.is_set():
            for records in self._consumer.poll(timeout_ms=100).values():
                now = wall_clock_ms()
                for record in records:
                    value = json.loads(record.value)  # both encodings are JSON objects
                    times, received = self.seen[value["id"]]
                    times.append(max(value["event_time_ms"], times[-1] if times else 0))
                    received.append(now)
                    self.records += 1
        self._consumer.close()

    def reflected_at(self, user_id: str, ts: int) -> int | None:
        """Receive time of the first record of ``user_id`` reflecting event time ``ts``."""
        times, received = self.seen.get(user_id, ([], []))
        at = bisect.bisect_left(times, ts)
        return received[at] if at < len(times) else None

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self._process = psutil.Process(pid)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.25):
            try:
                self.peak = max(self.peak, self._process.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def run_load(
    broker: LocalKafkaBroker,
    offered: int,
    duration_s: float,
    drain_s: float,
    workdir: Path,
    encoding: str,
    warmup_s: float,
) -> dict[str, object]:
    tag = f"{offered}-{time.time_ns() % 10**9}"
    topic = f"fresh-{tag}"
    broker.create_topics({topic: 2, f"{topic}.dlq": 1})
    metrics_address = f"127.0.0.1:{free_ports(1)[0]}"
    store = workdir / f"store-{tag}"
    env = {  # the worker's defaults but the topics, paths and encoding (dim 64, 1 thread)
        **worker_env(broker.bootstrap_servers, topic, f"g-{tag}", store, 5_000),
        **training_env(workdir, tag, dim=64),
        "STREAMGNN_SESSION_TIMEOUT_MS": "10000",
        "STREAMGNN_METRICS_ADDRESS": metrics_address,
        "STREAMGNN_VECTOR_ENCODING": encoding,
    }
    worker = WorkerProcess(env, workdir / f"worker-{tag}.log")
    worker.start()
    wait_for(lambda: owns_partitions(metrics_address), 180, "the worker to own its partitions")
    follower = EmbeddingFollower(broker.bootstrap_servers, env["STREAMGNN_USER_EMBEDDINGS_TOPIC"])
    follower.start()
    rss = PeakRss(worker.pid)
    rss.start()
    sent: list[tuple[str, int, int]] = []  # (user, ts, send ms)
    stream = SyntheticStream(SyntheticConfig(late_share=0.0, seed=offered))
    before = scrape_metrics(metrics_address)
    with InteractionProducer(KafkaSettings(broker.bootstrap_servers), topic) as producer:
        report = produce(
            stream.events(wall_clock_ms),
            producer,
            rate=offered,
            duration_s=duration_s,
            on_send=lambda e, ms: _record(sent, e, ms),
        )
    after = scrape_metrics(metrics_address)
    window = report.seconds
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline:
        last_user, last_ts, _ = sent[-1]
        if follower.reflected_at(last_user, last_ts) is not None:
            break
        time.sleep(0.2)
    end = scrape_metrics(metrics_address)
    status = worker.terminate(timeout_s=300)
    follower.stop()
    rss.stop()
    freshness, missing, warmup = [], 0, []
    windows: dict[int, list[float]] = defaultdict(list)  # 10 s windows of send time
    first_send = sent[0][2] if sent else 0
    for user, ts, send_ms in sent:
        at = follower.reflected_at(user, ts)
        if at is None:
            missing += 1
            continue
        seconds = max(at - send_ms, 0) / 1000.0
        windows[(send_ms - first_send) // 10_000].append(seconds)
        (warmup if send_ms - first_send < warmup_s * 1000 else freshness).append(seconds)
    everything = np.array(warmup + freshness)
    p99_with_warmup = float(np.quantile(everything, 0.99)) if everything.size else None
    p99_by_10s = [_round(float(np.quantile(windows[w], 0.99))) for w in sorted(windows)]
    q = np.quantile(np.array(freshness), [0.5, 0.9, 0.99]) if freshness else [None] * 3

    def grew(name: str) -> float:
        return total(after, name) - total(before, name)

    applied = grew("streamgnn_events_applied_total")
    trained = grew("streamgnn_freshness_seconds_count")
    return {
        "offered_per_s": offered,
        "vector_encoding": encoding,
        "achieved_offer_per_s": round(report.rate, 1),
        "duration_s": round(window, 1),
        "sent": report.sent,
        "measured": len(sent),  # user-item events; follows are not in any user vector
        "sustained_per_s": round(applied / window, 1),
        "trained_per_s": round(trained / window, 1),
        "p50": _round(q[0]),
        "p90": _round(q[1]),
        "p99": _round(q[2]),
        "max": _round(max(freshness) if freshness else None),
        "warmup_s": warmup_s,
        "p99_with_warmup": _round(p99_with_warmup),
        "p99_by_10s_window": p99_by_10s,
        "reflected": len(freshness) + len(warmup),
        "not_reflected_after_drain": missing,
        "drain_s": drain_s,
        "lag_end": int(total(after, "streamgnn_consumer_lag")),
        "train_backlog_end": int(total(after, "streamgnn_train_backlog_events")),
        "peak_rss_mb": round(rss.peak / 2**20, 1),
        "train_steps": int(total(end, "streamgnn_train_steps_total")),
        "model_version_end": int(total(end, "streamgnn_model_version")),
        "user_records_published": follower.records,
        "vectors_published_per_s": round(grew("streamgnn_vectors_published_total") / window, 1),
        "graph_edges_end": int(total(end, "streamgnn_graph_edges")),
        "worker_exit_status": status,
    }


def _record(sent: list[tuple[str, int, int]], event: Mapping[str, object], send_ms: int) -> None:
    """Keep user-item events: a ``follow`` is a social edge no user vector reflects."""
    if event["event_type"] not in SOCIAL_EVENT_TYPES:
        sent.append((str(event["user_id"]), int(str(event["ts"])), send_ms))


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, nargs="+", default=[2_000, 10_000])
    parser.add_argument("--duration-s", type=float, default=120.0)
    parser.add_argument("--drain-s", type=float, default=30.0)
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=0.0,
        help="leave events sent in the first seconds out of p50/p90/p99 (still reported)",
    )
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument(
        "--encoding",
        default="f32le-base64",
        choices=["json", "f32le-base64"],
        help="the worker's vector encoding (default: the compact one)",
    )
    args = parser.parse_args(argv)
    loads = []
    with tempfile.TemporaryDirectory(prefix="streamgnn-freshness-") as tmp:
        workdir = Path(tmp)
        with LocalKafkaBroker(workdir / "kafka") as broker:
            for offered in args.loads:
                print(f"load {offered} events/s for {args.duration_s:.0f} s ...", flush=True)
                entry = run_load(
                    broker,
                    offered,
                    args.duration_s,
                    args.drain_s,
                    workdir,
                    args.encoding,
                    args.warmup_s,
                )
                print(json.dumps(entry), flush=True)
                loads.append(entry)
    result = {
        "benchmark": "end-to-end freshness (producer send -> user vector on the topic)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "goal": "p99 < 1 s at 2,000 events/s on the 2-core CPU machine",
        "loads": loads,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
