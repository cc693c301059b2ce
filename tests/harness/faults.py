"""Crash scenarios against a real broker, shared by the fault tests and the benchmarks.

A scenario produces a stream whose every event lands on its own edge (so an edge's weight
counts how often its event was applied), runs ``python -m stream.worker`` as a child
process, kills things mid-stream, restarts them, waits until the store holds every
partition's end offset, and reports sent / applied / lost / duplicated plus the recovery
time of each kill. The reference is a run with no crash over the same topic, compared by
store digest.

Kinds of fault: a worker SIGKILL from outside (lands anywhere), a worker SIGKILL right
after a store write (:mod:`tests.harness.crashing_worker`), a broker SIGKILL + restart,
and a network cut between the worker and the broker (:func:`run_proxy_cut_scenario`).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from kafka import KafkaProducer

from stream.behaviours import DEFAULT_BEHAVIOURS
from stream.local_broker.broker import LocalKafkaBroker
from stream.state.graph_store import DecayedGraphStore
from tests.harness.embedding_log import PublishWatch
from tests.harness.progress import GroupProgress, MetricsProgress, Progress, StoreCompletion
from tests.harness.proxy import TcpProxy
from tests.harness.worker_process import WorkerProcess, wait_for, worker_env

EVENT_TYPES = ("click", "favorite", "purchase")
_PRIMES = (997, 1009)  # (seq % 997, seq % 1009) is unique for seq < 997 * 1009
BASE_TS = 1_700_000_000_000  # event seq's ts is BASE_TS + seq


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
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset stored
    kills_ms: list[int] = field(default_factory=list)  # wall clock of each kill
    restarts_ms: list[int] = field(default_factory=list)  # wall clock of each worker restart
    idle_restarts: list[int] = field(default_factory=list)  # restarts with nothing to publish
    details: dict[str, object] = field(default_factory=dict)  # scenario-specific figures

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "sent": self.sent,
            "applied": self.applied,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "recovery_s": [round(r, 3) for r in self.recovery_s],
            **self.details,
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
        "ts": BASE_TS + seq,
    }
    return user.encode(), json.dumps(body).encode()


def event_seq(user_id: str, item_id: str) -> int:
    """The ``seq`` whose :func:`event` has this edge (the Chinese remainder of its user and
    item numbers).

    >>> body = json.loads(event(123_456)[1])
    >>> event_seq(body["user_id"], body["item_id"])
    123456
    """
    u, i = int(user_id[1:]), int(item_id[1:])
    k = (i - u) * pow(_PRIMES[0], -1, _PRIMES[1]) % _PRIMES[1]
    return u + _PRIMES[0] * k


def produce(
    bootstrap: str,
    topic: str,
    count: int,
    rate: float | None = None,
    first: int = 0,
    partition: int | None = None,
) -> None:
    """``count`` events of the stream from event ``first`` on into ``topic`` (into
    ``partition``; None: by key), at ``rate`` events/s (None: as fast as the producer goes)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    start = time.monotonic()
    for n, seq in enumerate(range(first, first + count)):
        ahead = 0.0 if rate is None else n / rate - (time.monotonic() - start)
        if ahead > 0.01:
            time.sleep(ahead)
        key, value = event(seq)
        producer.send(topic, key=key, value=value, partition=partition)
    producer.flush()
    producer.close()


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
    store_write_kills: int = 0,
    env: Mapping[str, str] | None = None,
    published_topics: Sequence[str] = (),
    idle: Callable[[], bool] | None = None,
    wipe_store: bool = False,
) -> CrashReport:
    """Stream ``topic`` (``events`` events) through a worker SIGKILLed ``worker_kills`` times
    at random points and ``store_write_kills`` times right after a store write, and a
    broker SIGKILLed ``broker_kills`` times; report what the store holds. With no kills
    this is the reference run.

    Store-write kills come first; each is armed by stored position (see
    :mod:`tests.harness.crashing_worker`), so it always lands mid-stream.

    ``env`` overrides the worker's environment (e.g. training on). With
    ``published_topics``, each restarted worker must publish on them before the next
    kill; the seconds from each kill to its first record are ``first_publish_s``. ``idle``,
    asked before each worker restart, says that worker will have nothing to publish (all
    the stream trained and checkpointed): no publish is awaited from it, and its index in
    ``restarts_ms`` is listed in ``idle_restarts``. ``wipe_store`` deletes the store
    directory before each worker restart (a worker with ``--changelog`` restores it).
    """
    rng = random.Random(seed)
    tag = f"{name}-{seed}-{time.time_ns() % 10**12}"
    group = f"group-{tag}"
    store_path = workdir / f"store-{tag}"
    trigger = workdir / f"kill-after-write-{tag}"
    worker = WorkerProcess(
        worker_env(broker.bootstrap_servers, topic, group, store_path, max_batch_records)
        | dict(env or {}),
        workdir / f"worker-{tag}.log",
        kill_trigger=trigger if store_write_kills else None,
    )
    progress = GroupProgress(broker.bootstrap_servers, group, topic)
    complete = StoreCompletion(store_path, topic, events)
    watch = PublishWatch(broker.bootstrap_servers, published_topics) if published_topics else None
    report = CrashReport(name=name, sent=events)
    first_publish_s: list[float] = []
    # Store-write kills take the earliest points: each is armed before its worker starts.
    others = ["worker"] * worker_kills + ["broker"] * broker_kills
    rng.shuffle(others)
    kinds = ["store-write"] * store_write_kills + others
    thresholds = sorted(rng.uniform(0.1, 0.8) * events for _ in kinds)
    plan = list(zip(kinds, thresholds, strict=True))
    try:
        _arm(trigger, plan)
        worker.start()
        for done, (kind, threshold) in enumerate(plan, start=1):
            if kind == "store-write":
                _await_store_write_kill(worker, complete, timeout_s, workdir)
            else:
                wait_for(partial(_reached, progress, threshold), timeout_s, "progress")
                time.sleep(rng.uniform(0.0, 0.2))  # land anywhere within a batch
            at_kill = progress.committed()  # read again below once the worker is dead
            killed_at = time.monotonic()
            report.kills_ms.append(time.time_ns() // 1_000_000)
            if kind == "broker":
                broker.kill()
                broker.start()
            else:
                worker.kill()  # a no-op when it killed itself
                at_kill = max(at_kill, progress.committed())  # a commit it sent while dying
                _arm(trigger, plan[done:])
                if wipe_store:
                    shutil.rmtree(store_path, ignore_errors=True)
                if idle is not None and idle():
                    report.idle_restarts.append(len(report.restarts_ms))
                report.restarts_ms.append(time.time_ns() // 1_000_000)
                worker.start()
            wait_for(partial(_resumed, progress, at_kill, complete), timeout_s, "recovery")
            report.recovery_s.append(time.monotonic() - killed_at)  # restart included
            restarted = len(report.restarts_ms) - 1
            if kind != "broker" and restarted in report.idle_restarts:
                wait_for(worker.consuming, timeout_s, "the idle worker to consume")
            elif watch is not None and kind != "broker":
                since = report.restarts_ms[-1]
                wait_for(partial(watch.published_since, since), timeout_s, "a publish")
                first_publish_s.append(time.monotonic() - killed_at)
        # The store can hold the whole stream before the last restart is up (a kill near
        # the end): a SIGTERM then would land before its handlers exist, or before its
        # changelog restore rewound a partition to the committed position.
        wait_for(worker.consuming, timeout_s, "the worker to consume")
        wait_for(worker.owns_partitions, timeout_s, "the worker to own its partitions")
        wait_for(complete, timeout_s, "the end of the stream")
        status = worker.terminate()
        if status != 0:
            raise RuntimeError(f"worker exited {status} on SIGTERM; see its log in {workdir}")
    finally:
        if worker.exit_status() is None:
            worker.kill()
        progress.close()
        if watch is not None:
            watch.close()
    if watch is not None:
        report.details["first_publish_s"] = [round(s, 3) for s in first_publish_s]
        report.details["idle_restarts"] = report.idle_restarts
    count_applications(store_path, topic, report)
    return report


def _arm(trigger: Path, plan: Sequence[tuple[str, float]]) -> None:
    """Before a worker starts: arm its self-kill if the next kill is a store-write one."""
    trigger.unlink(missing_ok=True)
    if plan and plan[0][0] == "store-write":
        trigger.write_text(str(int(plan[0][1])))


def _await_store_write_kill(
    worker: WorkerProcess, complete: StoreCompletion, timeout_s: float, workdir: Path
) -> None:
    """Wait until the armed worker killed itself; fail if it exited otherwise or the stream
    ended first (the kill would never come)."""
    wait_for(
        lambda: worker.exit_status() is not None or complete(),
        timeout_s,
        "the worker to die after a store write",
    )
    status = worker.exit_status()
    if status is None:
        raise RuntimeError("the stream ended before the armed store-write kill")
    if status != -signal.SIGKILL:
        raise RuntimeError(f"worker exited {status} instead of its SIGKILL; see {workdir}")


def run_proxy_cut_scenario(
    broker: LocalKafkaBroker,
    proxy: TcpProxy,
    topic: str,
    events: int,
    workdir: Path,
    name: str = "proxy-cut",
    cut_s: float = 30.0,
    seed: int = 0,
    max_batch_records: int = 2_000,
    timeout_s: float = 300.0,
) -> CrashReport:
    """Stream ``topic`` through a worker whose every connection to ``broker`` runs through
    ``proxy`` (bootstrap included), cut the proxy for ``cut_s`` mid-stream, restore it.

    The worker must stay up through the cut. ``recovery_s`` is restore to the next applied
    event; ``cut_to_progress_s`` is the same from the start of the cut. Progress is read
    from the worker's metrics, not from Kafka, so the reading itself is not cut.
    Raises ``RuntimeError`` when the cut did not stall the stream (it ended, or the
    worker was still applying prefetched records when the cut ended): the figures would
    say nothing then.
    """
    rng = random.Random(seed)
    tag = f"{name}-{seed}-{time.time_ns() % 10**12}"
    store_path = workdir / f"store-{tag}"
    env = worker_env(proxy.address, topic, f"group-{tag}", store_path, max_batch_records)
    worker = WorkerProcess(env, workdir / f"worker-{tag}.log")
    progress = MetricsProgress(env["STREAMGNN_METRICS_ADDRESS"])
    report = CrashReport(name=name, sent=events)
    try:
        worker.start()
        threshold = rng.uniform(0.1, 0.4) * events
        wait_for(partial(_reached, progress, threshold), timeout_s, "progress")
        at_cut = progress.committed()
        cut_at = time.monotonic()
        report.kills_ms.append(time.time_ns() // 1_000_000)
        proxy.cut()
        last_change = _hold_cut(worker, progress, cut_at + cut_s, workdir)
        at_restore = progress.committed()
        if at_restore >= events or time.monotonic() - last_change < _STALL_S:
            raise RuntimeError(
                f"the cut did not stall the stream ({at_restore} of {events} applied, last "
                f"progress {time.monotonic() - last_change:.1f} s before the restore): "
                "send more events"
            )
        proxy.restore()
        restored_at = time.monotonic()
        wait_for(lambda: progress.committed() > at_restore, timeout_s, "recovery")
        report.recovery_s.append(time.monotonic() - restored_at)
        report.details.update(
            cut_s=cut_s,
            cut_to_progress_s=[round(time.monotonic() - cut_at, 3)],
            applied_during_cut=at_restore - at_cut,
            connections_refused_during_cut=proxy.refused,
        )
        wait_for(lambda: progress.committed() >= events, timeout_s, "the end of the stream")
        status = worker.terminate()
        if status != 0:
            raise RuntimeError(f"worker exited {status} on SIGTERM; see its log in {workdir}")
    finally:
        proxy.restore()
        if worker.exit_status() is None:
            worker.kill()
    count_applications(store_path, topic, report)
    return report


_STALL_S = 3.0  # no progress for this long before the restore: the cut has bitten


def _hold_cut(worker: WorkerProcess, progress: Progress, until: float, workdir: Path) -> float:
    """Wait out the cut, checking the worker stays up; returns when progress last moved."""
    last, last_change = progress.committed(), time.monotonic()
    while time.monotonic() < until:
        status = worker.exit_status()
        if status is not None:
            raise RuntimeError(f"worker exited {status} during the network cut; see {workdir}")
        now = progress.committed()
        if now != last:
            last, last_change = now, time.monotonic()
        time.sleep(0.2)
    return last_change


def _resumed(progress: Progress, at_kill: int, complete: Callable[[], bool]) -> bool:
    """Progress past the kill point (or the whole stream was stored when it died)."""
    return progress.committed() > at_kill or complete()


def _reached(progress: Progress, threshold: float) -> bool:
    return progress.committed() >= threshold


def count_applications(store_path: Path, topic: str, report: CrashReport) -> None:
    """Each event owns an edge, so ``w_ref / beta`` is how often it was applied."""
    seen = 0
    with DecayedGraphStore(store_path, DEFAULT_BEHAVIOURS, read_only=True) as store:
        for edge in store.edges():
            times = round(edge.state[0] / DEFAULT_BEHAVIOURS[edge.relation].beta)
            seen += 1
            report.applied += times
            report.duplicated += max(times - 1, 0)
        report.digest = store.digest()
        report.positions = {
            partition: offset
            for (stored_topic, partition), (offset, _) in store.positions().items()
            if stored_topic == topic
        }
    report.lost = report.sent - seen
