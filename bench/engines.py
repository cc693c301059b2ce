"""Stream engines side by side: exactly-once under SIGKILLs and a rebalance, and their rate.

Candidates for issue 14's partition state, each counting the same stream the fault
scenarios use (:func:`tests.harness.faults.event`: 100,000 events over 4 partitions, keyed
by user, every event its own key in the engine's state):

- ``streamgnn``: ``python -m stream.worker``, ingest only: events and offsets in one
  RocksDB write per batch, the store's offsets the truth; each instance has its own store
  (no changelog yet), so applications are counted over every instance's store;
- ``quix``: Quix Streams 3.28.1, ``processing_guarantee="exactly-once"`` (not its default),
  a changelog-backed RocksDB state (:mod:`bench.engine_apps.quix_count`);
- ``faust``: faust-streaming 0.15.3, ``processing_guarantee="exactly_once"``, a table on
  rocksdict (:mod:`bench.engine_apps.faust_count`).

Quix and Faust run in their own virtual environments (``var/engines/<name>``, made by
``make bench-engines``): Quix pins confluent-kafka < 2.13, older than streamgnn's.

Scenarios, per engine, each on a fresh topic and group:

- ``clean``: one instance reads a backlog of the whole stream, no fault; ``events_per_s``
  from its start (process start-up included) to the end;
- ``kills``: the stream is produced live (``--rate``, 2,000 events/s), one instance is
  SIGKILLed ``--kills`` times at random progress points (10-80 % of the stream, read from
  the group's committed offsets) and restarted at once;
- ``rebalance``: live as well; a second instance starts at 20 %, and once the group is
  stable with both (``join_s``) and another 20 % is committed, it leaves (SIGTERM).

An instance that exits unasked counts as a crash and is restarted (as a supervisor
would). The end of a stream is the group's committed offsets reaching the topic's end
(streamgnn: its stores' positions, since its group commit is informational). Counting
folds each engine's state after the run: Quix's and Faust's changelog topics read
``read_committed`` (last value per key, the event's counter), streamgnn's stores (an
event's edge weight over its behaviour's weight): ``lost`` events have no application,
``duplicated`` counts applications past the first.

    .venv/bin/python -m bench.engines                 # every engine, 100,000 events
    .venv/bin/python -m bench.engines --engines quix --events 20000

Writes bench/results/engines.json (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from kafka import KafkaAdminClient

from stream.behaviours import DEFAULT_BEHAVIOURS
from stream.local_broker.broker import LocalKafkaBroker, free_ports
from stream.local_broker.jars import KAFKA_VERSION
from stream.state import keys
from stream.state.graph_store import DecayedGraphStore
from tests.harness.changelog_state import fold_changelog
from tests.harness.faults import BASE_TS, event_seq, produce
from tests.harness.progress import GroupProgress
from tests.harness.worker_process import WorkerProcess, worker_env

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "engines.json"
APPS = Path(__file__).parent / "engine_apps"
SESSION_TIMEOUT_MS = 6_000  # every engine's group session timeout here (streamgnn's harness)
_TS_IN_KEY = re.compile(rb"1700\d{9}")
MAX_CRASHES = 10
STOP_S = 30.0  # a SIGTERMed instance not gone by then is SIGKILLed


# -- engines ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One scenario's broker, topic, group and scratch folder."""

    broker: LocalKafkaBroker
    topic: str
    group: str
    workdir: Path
    events: int
    partitions: int


@dataclass(frozen=True)
class Engine:
    name: str
    version: str
    guarantee: str
    command: Callable[[], list[str]]
    env: Callable[[Run, int], dict[str, str]]
    count: Callable[[Run], Counter[int]]  # event seq -> applications
    done: Callable[[Run, GroupProgress], bool]


def _venv_python(name: str) -> Path:
    return ROOT / "var" / "engines" / name / "bin" / "python"


def _app_env(run: Run, instance: int, guarantee: str) -> dict[str, str]:
    state = run.workdir / f"state-{instance}"
    state.mkdir(parents=True, exist_ok=True)
    return {
        "BOOTSTRAP": run.broker.bootstrap_servers,
        "GROUP": run.group,
        "TOPIC": run.topic,
        "PARTITIONS": str(run.partitions),
        "STATE_DIR": str(state),
        "GUARANTEE": guarantee,
        "SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "WEB_PORT": str(free_ports(1)[0]),
    }


def _streamgnn_env(run: Run, instance: int) -> dict[str, str]:
    env = worker_env(
        run.broker.bootstrap_servers, run.topic, run.group, _store(run, instance), 2_000
    )
    env["STREAMGNN_INSTANCE_ID"] = f"worker-{instance}"  # static members must differ
    return env


def _store(run: Run, instance: int) -> Path:
    return run.workdir / f"store-{instance}"


def _stores(run: Run) -> list[Path]:
    return sorted(p for p in run.workdir.glob("store-*") if p.is_dir())


def _streamgnn_count(run: Run) -> Counter[int]:
    """Applications per event over every instance's store (an event owns one edge)."""
    applied: Counter[int] = Counter()
    for path in _stores(run):
        with DecayedGraphStore(path, DEFAULT_BEHAVIOURS, read_only=True) as store:
            for edge in store.edges():
                applied[event_seq(edge.src_id, edge.dst_id)] += round(
                    edge.state[0] / DEFAULT_BEHAVIOURS[edge.relation].beta
                )
    return applied


def _streamgnn_changelog_env(run: Run, instance: int) -> dict[str, str]:
    return _streamgnn_env(run, instance) | {"STREAMGNN_CHANGELOG": "true"}


def _streamgnn_changelog_count(run: Run) -> Counter[int]:
    """Applications per event from the folded graph changelog (its edge records: an event
    owns one edge, whose weight over its behaviour's weight counts its applications)."""
    relations = sorted(DEFAULT_BEHAVIOURS)
    applied: Counter[int] = Counter()
    for topic in _changelog_topics(run):
        for key, value in _folded(run, topic).items():
            if key[:1] != keys.EDGE:
                continue
            (_, user), relation, (_, item) = keys.split_edge_suffix(key[1:])
            w_ref = keys.EDGE_VALUE.unpack(value)[0]
            beta = DEFAULT_BEHAVIOURS[relations[relation]].beta
            applied[event_seq(user, item)] += round(w_ref / beta)
    return applied


def _streamgnn_done(run: Run, progress: GroupProgress) -> bool:
    """Every partition's end is in some instance's store (its group commit is only a
    report: a kill right after a store write leaves it behind for good)."""
    reached: dict[int, int] = {}
    for path in _stores(run):
        try:
            with DecayedGraphStore(path, DEFAULT_BEHAVIOURS, read_only=True) as store:
                positions = store.positions()
        except Exception:  # created but not written yet
            continue
        for (topic, partition), (offset, _) in positions.items():
            if topic == run.topic:
                reached[partition] = max(reached.get(partition, 0), offset)
    return sum(reached.values()) >= run.events


def _group_done(run: Run, progress: GroupProgress) -> bool:
    return progress.committed() >= run.events


def _changelog_count(run: Run) -> Counter[int]:
    """Fold the group's changelog topics read_committed: each event's last counter."""
    latest: dict[bytes, bytes | None] = {}
    for topic in _changelog_topics(run):
        latest.update(_folded(run, topic))
    return fold_counters(latest)


def _folded(run: Run, topic: str) -> dict[bytes, bytes]:
    """``topic`` read_committed and folded by key (tombstones remove), all partitions."""
    by_partition, _, _ = fold_changelog(run.broker.bootstrap_servers, topic, run.partitions)
    return {key: value for part in by_partition.values() for key, value in part.items()}


def _changelog_topics(run: Run) -> list[str]:
    admin = KafkaAdminClient(bootstrap_servers=run.broker.bootstrap_servers)
    try:
        topics = [t for t in admin.list_topics() if run.group in t and "changelog" in t]
    finally:
        admin.close()
    if not topics:
        raise RuntimeError(f"no changelog topic of group {run.group}")
    return topics


def fold_counters(latest: Mapping[bytes, bytes | None]) -> Counter[int]:
    """Event seq -> applications from a folded changelog: keys holding an event's ``ts``,
    values its JSON counter (tombstones and other keys ignored).

    >>> fold_counters({b'u1|"1700000000007"': b"2", b"__offset__": b"9", b'"1700000000003"': None})
    Counter({7: 2})
    """
    applied: Counter[int] = Counter()
    for key, value in latest.items():
        found = _TS_IN_KEY.search(key)
        if found is None or value is None:
            continue
        applied[int(found.group()) - BASE_TS] += int(json.loads(value))
    return applied


def engines() -> dict[str, Engine]:
    quix_python, faust_python = _venv_python("quix"), _venv_python("faust")
    return {
        "streamgnn": Engine(
            "streamgnn",
            "this repository",
            "exactly once into the store (its offsets in the same RocksDB write)",
            lambda: [sys.executable, "-m", "stream.worker"],
            lambda run, i: _streamgnn_env(run, i),
            _streamgnn_count,
            _streamgnn_done,
        ),
        "streamgnn-changelog": Engine(
            "streamgnn-changelog",
            "this repository, --changelog",
            "exactly once: changelog records and group offsets in one Kafka transaction",
            lambda: [sys.executable, "-m", "stream.worker"],
            lambda run, i: _streamgnn_changelog_env(run, i),
            _streamgnn_changelog_count,
            _group_done,
        ),
        "quix": Engine(
            "quix",
            "quixstreams 3.28.1",
            "exactly-once",
            lambda: [str(quix_python), str(APPS / "quix_count.py")],
            lambda run, i: _app_env(run, i, "exactly-once"),
            _changelog_count,
            _group_done,
        ),
        "faust": Engine(
            "faust",
            "faust-streaming 0.15.3",
            "exactly_once",
            lambda: [str(faust_python), str(APPS / "faust_count.py")],
            lambda run, i: _app_env(run, i, "exactly_once"),
            _changelog_count,
            _group_done,
        ),
    }


# -- the stream -----------------------------------------------------------------------


def live_stream(bootstrap: str, topic: str, events: int, rate: float) -> threading.Thread:
    """The scenario stream produced at ``rate`` events/s by a thread (started), so every
    fault lands mid-stream whatever the engine's speed."""
    thread = threading.Thread(target=produce, args=(bootstrap, topic, events, rate), daemon=True)
    thread.start()
    return thread


def group_members(bootstrap: str, group: str) -> int:
    """Members of a stable group (0 while it rebalances or is empty)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_groups([group])
    finally:
        admin.close()
    info = described[group]
    state, members = info.get("group_state"), info.get("members") or []
    return len(members) if state == "Stable" else 0


# -- processes ------------------------------------------------------------------------


class Instance:
    """One engine process; an exit nobody asked for is a crash (restarted by ``check``)."""

    def __init__(self, engine: Engine, run: Run, index: int) -> None:
        self._process = WorkerProcess(
            engine.env(run, index),
            run.workdir / f"{engine.name}-{index}.log",
            command=engine.command(),
        )
        self.crashes: list[int] = []  # exit statuses of unasked exits

    def start(self) -> None:
        self._process.start()

    def check(self) -> None:
        """Restart after an unasked exit, as a supervisor would, at most :data:`MAX_CRASHES`
        times (a crash loop is a result, not something to wait out)."""
        status = self._process.exit_status()
        if status is not None and len(self.crashes) < MAX_CRASHES:
            self.crashes.append(status)
            time.sleep(1.0)  # a supervisor's restart delay
            self.start()

    def kill(self) -> None:
        if self._process.exit_status() is None:
            self._process.kill()

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after :data:`STOP_S`; the exit status of the SIGTERM."""
        if self._process.exit_status() is not None:
            return None
        try:
            return self._process.terminate(STOP_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


# -- scenarios ------------------------------------------------------------------------


@dataclass
class Outcome:
    scenario: str
    events: int
    applied: int = 0
    lost: int = 0
    duplicated: int = 0
    crashes: list[int] = field(default_factory=list)
    finished: bool = True
    seconds: float = 0.0
    kills_at: list[int] = field(default_factory=list)
    stop_statuses: list[int | None] = field(default_factory=list)
    join_s: float | None = None  # rebalance: second instance started -> group stable with 2

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.__dict__)
        out["seconds"] = round(self.seconds, 2)
        if self.scenario == "clean" and self.finished:
            out["events_per_s"] = round(self.events / self.seconds)
        return out


def run_scenario(
    engine: Engine, run: Run, scenario: str, kills: int, seed: int, rate: float, timeout_s: float
) -> Outcome:
    """``clean`` reads a backlog of the whole stream; ``kills`` and ``rebalance`` read it
    as it is produced at ``rate`` events/s."""
    rng = random.Random(seed)
    bootstrap = run.broker.bootstrap_servers
    if scenario == "clean":
        produce(bootstrap, run.topic, run.events)
    progress = GroupProgress(bootstrap, run.group, run.topic)
    outcome = Outcome(scenario, run.events)
    instances = [Instance(engine, run, 0)]
    stream: threading.Thread | None = None
    start = time.monotonic()
    deadline = start + timeout_s

    def watch(condition: Callable[[], bool]) -> bool:
        while not condition():
            for instance in instances:
                instance.check()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def reached(count: float) -> Callable[[], bool]:
        return lambda: progress.committed() >= count

    try:
        instances[0].start()
        if scenario != "clean":
            stream = live_stream(bootstrap, run.topic, run.events, rate)
        if scenario == "kills":
            for share in sorted(rng.uniform(0.1, 0.8) for _ in range(kills)):
                if not watch(reached(share * run.events)):
                    break
                time.sleep(rng.uniform(0.0, 0.2))  # anywhere within a batch or a commit
                outcome.kills_at.append(progress.committed())
                instances[0].kill()
                instances[0].start()
        elif scenario == "rebalance" and watch(reached(0.2 * run.events)):
            instances.append(Instance(engine, run, 1))
            instances[1].start()
            joined = time.monotonic()
            if watch(lambda: group_members(bootstrap, run.group) == 2):
                outcome.join_s = round(time.monotonic() - joined, 2)
                leave_at = min(progress.committed() + 0.2 * run.events, 0.9 * run.events)
                if watch(reached(leave_at)):
                    outcome.stop_statuses.append(instances.pop().stop())
        outcome.finished = watch(lambda: engine.done(run, progress))
        outcome.seconds = time.monotonic() - start
    finally:
        for instance in instances:
            outcome.stop_statuses.append(instance.stop())
            instance.kill()
            outcome.crashes += instance.crashes
        progress.close()
        if stream is not None:
            stream.join()
    applied = engine.count(run)
    outcome.applied = sum(applied.values())
    outcome.lost = sum(1 for seq in range(run.events) if applied[seq] == 0)
    outcome.duplicated = sum(max(n - 1, 0) for n in applied.values())
    return outcome


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engines", nargs="+", default=["streamgnn", "streamgnn-changelog", "quix", "faust"]
    )
    parser.add_argument("--scenarios", nargs="+", default=["clean", "kills", "rebalance"])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--rate", type=float, default=2_000.0, help="events/s of the live stream")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--workdir", type=Path, help="keep logs and state here (default: a temp dir)"
    )
    args = parser.parse_args(None if argv is None else list(argv))
    # SIGTERM unwinds like Ctrl-C: the engines' processes and the broker are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    known = engines()
    results: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        tmp = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        broker = stack.enter_context(LocalKafkaBroker(tmp / "kafka"))
        for name in args.engines:
            engine = known[name]
            scenarios: dict[str, object] = {}
            for k, scenario in enumerate(args.scenarios):
                tag = f"{name}-{scenario}-{time.time_ns() % 10**9}"
                run = Run(broker, f"ev-{tag}", f"g-{tag}", tmp / tag, args.events, args.partitions)
                run.workdir.mkdir()
                broker.create_topics({run.topic: run.partitions, f"{run.topic}.dlq": 1})
                outcome = run_scenario(
                    engine, run, scenario, args.kills, args.seed + k, args.rate, args.timeout_s
                )
                scenarios[scenario] = outcome.as_json()
                print(name, json.dumps(scenarios[scenario]), flush=True)
            results[name] = {
                "version": engine.version,
                "guarantee": engine.guarantee,
                "scenarios": scenarios,
            }
            write_results(args, results)  # after each engine: a later failure keeps it


def write_results(args: argparse.Namespace, results: dict[str, object]) -> None:
    """Write the engines run so far, keeping the entries of engines not run this time."""
    if args.out.exists():
        kept = json.loads(args.out.read_text()).get("engines", {})
        results = {**{k: v for k, v in kept.items() if k not in results}, **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join(["python -m bench.engines", *sys.argv[1:]]),  # the latest run
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, "
                f"{psutil.virtual_memory().total // 2**30} GiB, Python "
                f"{platform.python_version()}; broker, producer and engines share it",
                "kafka": KAFKA_VERSION,
                "events": args.events,
                "partitions": args.partitions,
                "session_timeout_ms": SESSION_TIMEOUT_MS,
                "engines": results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
