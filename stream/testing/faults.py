"""Crash scenarios against a real broker, shared by the fault tests and the benchmarks.

A scenario produces a stream whose every event lands on its own edge (so an edge's weight
counts how often its event was applied), runs ``python -m stream.worker`` as a child
process, kills things mid-stream, restarts them, waits until the store holds every
partition's end offset, and reports sent / applied / lost / duplicated plus the recovery
time of each kill. The reference is a run with no crash over the same topic, compared by
store digest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from stream.kafka_broker import LocalKafkaBroker, free_ports
from stream.settings import DEFAULT_BEHAVIOURS
from stream.state.graph_store import DecayedGraphStore

EVENT_TYPES = ("click", "favorite", "purchase")
_PRIMES = (997, 1009)  # (seq % 997, seq % 1009) is unique for seq < 997 * 1009


@dataclass
class CrashReport:
    """What one scenario sent, what the store holds, and how long each recovery took."""

    name: str
    sent: int
    applied: int = 0
    lost: int = 0
    duplicated: int = 0
    recovery_s: list[float] = field(default_factory=list)
    digest: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "sent": self.sent,
            "applied": self.applied,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "recovery_s": [round(r, 3) for r in self.recovery_s],
        }


def event(seq: int) -> tuple[bytes, bytes]:
    """The ``seq``-th event of the scenario stream: its own (user, item, type) edge."""
    if not 0 <= seq < _PRIMES[0] * _PRIMES[1]:
        raise ValueError(f"seq must be in [0, {_PRIMES[0] * _PRIMES[1]}), got {seq}")
    user = f"u{seq % _PRIMES[0]}"
    body = {
        "user_id": user,
        "item_id": f"i{seq % _PRIMES[1]}",
        "event_type": EVENT_TYPES[seq % len(EVENT_TYPES)],
        "ts": 1_700_000_000_000 + seq,
    }
    return user.encode(), json.dumps(body).encode()


def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    for seq in range(count):
        key, value = event(seq)
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


class WorkerProcess:
    """``python -m stream.worker`` as a child process, configured by environment."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._env = {**os.environ, **env}
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "stream.worker"],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (drain and exit); returns the exit status."""
        if self._process is None:
            raise RuntimeError("worker was never started")
        self._process.send_signal(signal.SIGTERM)
        return self._process.wait(timeout=timeout_s)

    def exit_status(self) -> int | None:
        return None if self._process is None else self._process.poll()


class GroupProgress:
    """Events the worker has stored, read from its informational group commits."""

    def __init__(self, bootstrap: str, group_id: str, topic: str) -> None:
        # A consumer that never subscribes only reads the group's commits; it never joins.
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
        )
        partitions = self._consumer.partitions_for_topic(topic) or set()
        self._partitions = [TopicPartition(topic, p) for p in sorted(partitions)]

    def committed(self) -> int:
        try:
            offsets = [self._consumer.committed(tp) for tp in self._partitions]
        except KafkaError:  # broker restarting: no progress to report yet
            return -1
        return sum(offset or 0 for offset in offsets)

    def close(self) -> None:
        self._consumer.close()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` every 50 ms; returns the seconds it took, raises on timeout."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def prepare_topic(broker: LocalKafkaBroker, events: int, partitions: int = 4) -> str:
    """A fresh topic (and its DLQ) holding the scenario stream of ``events`` events."""
    topic = f"crash-{time.time_ns() % 10**12}"
    broker.create_topics({topic: partitions, f"{topic}.dlq": 1})
    produce(broker.bootstrap_servers, topic, events)
    return topic


def run_crash_scenario(
    broker: LocalKafkaBroker,
    topic: str,
    events: int,
    workdir: Path,
    name: str,
    worker_kills: int = 3,
    broker_kills: int = 0,
    seed: int = 0,
    max_batch_records: int = 2_000,
    timeout_s: float = 300.0,
) -> CrashReport:
    """Stream ``topic`` (``events`` events) through a worker SIGKILLed ``worker_kills`` times
    and a broker SIGKILLed ``broker_kills`` times at random points; report what the store
    holds. With no kills this is the reference run.
    """
    rng = random.Random(seed)
    tag = f"{name}-{seed}-{time.time_ns() % 10**12}"
    group = f"group-{tag}"
    store_path = workdir / f"store-{tag}"
    env = {
        "STREAMGNN_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "STREAMGNN_INTERACTIONS_TOPIC": topic,
        "STREAMGNN_DLQ_TOPIC": f"{topic}.dlq",
        "STREAMGNN_GROUP_ID": group,
        "STREAMGNN_INSTANCE_ID": "worker-1",
        "STREAMGNN_SESSION_TIMEOUT_MS": "6000",
        "STREAMGNN_MAX_BATCH_RECORDS": str(max_batch_records),
        "STREAMGNN_STORE_PATH": str(store_path),
        "STREAMGNN_TRAIN": "false",  # the ingest half: exactly-once into the store
        "STREAMGNN_METRICS_ADDRESS": f"127.0.0.1:{free_ports(1)[0]}",
    }
    worker = WorkerProcess(env, workdir / f"worker-{tag}.log")
    progress = GroupProgress(broker.bootstrap_servers, group, topic)
    report = CrashReport(name=name, sent=events)
    kinds = ["worker"] * worker_kills + ["broker"] * broker_kills
    rng.shuffle(kinds)
    thresholds = sorted(rng.uniform(0.1, 0.8) * events for _ in kinds)
    try:
        worker.start()
        for kind, threshold in zip(kinds, thresholds, strict=True):
            wait_for(partial(_reached, progress, threshold), timeout_s, "progress")
            time.sleep(rng.uniform(0.0, 0.2))  # land anywhere within a batch
            at_kill = progress.committed()
            killed_at = time.monotonic()
            if kind == "worker":
                worker.kill()
                worker.start()
            else:
                broker.kill()
                broker.start()
            wait_for(partial(_resumed, progress, at_kill, events), timeout_s, "recovery")
            report.recovery_s.append(time.monotonic() - killed_at)  # restart included
        wait_for(lambda: progress.committed() >= events, timeout_s, "the end of the stream")
        status = worker.terminate()
        if status != 0:
            raise RuntimeError(f"worker exited {status} on SIGTERM; see its log in {workdir}")
    finally:
        if worker.exit_status() is None:
            worker.kill()
        progress.close()
    _count_applications(store_path, report)
    return report


def _resumed(progress: GroupProgress, at_kill: int, events: int) -> bool:
    """Progress past the kill point (or the stream was already done when it died)."""
    committed = progress.committed()
    return committed > at_kill or committed >= events


def _reached(progress: GroupProgress, threshold: float) -> bool:
    return progress.committed() >= threshold


def _count_applications(store_path: Path, report: CrashReport) -> None:
    """Each event owns an edge, so ``w_ref / beta`` is how often it was applied."""
    seen = 0
    with DecayedGraphStore(store_path, DEFAULT_BEHAVIOURS, read_only=True) as store:
        for edge in store.edges():
            times = round(edge.state[0] / DEFAULT_BEHAVIOURS[edge.relation].beta)
            seen += 1
            report.applied += times
            report.duplicated += max(times - 1, 0)
        report.digest = store.digest()
    report.lost = report.sent - seen
