"""End-to-end freshness at a fixed offered load: producer send -> vector on the topic.

For each load a fresh topic and a fresh ``python -m stream.worker`` (ingest, store, train,
publish; every setting at its default but the topics and paths) run against a real local
broker; this process offers synthetic events at the load (``ts`` = send time, no late
events) for ``--duration-s`` and follows the ``user-embeddings`` topic. An event is
reflected by the first record of its user whose ``event_time_ms`` (the newest own event
the vector reflects) is >= the event's ``ts``; its freshness is that record's receive
time minus the event's send time. Events never reflected within ``--drain-s`` after the
load ends are counted, not hidden. Each figure is split at the record's timestamp (the
worker's publish time): ``*_to_publish`` (send -> publish, the worker) and
``*_publish_to_receive`` (produce, ack and this process's fetch); ``worker_*_append_to_ack``
is the worker's own histogram (``streamgnn_freshness_seconds``) over the load, append ->
ack, with no reader in it. The load starts once the worker owns its partitions
(``streamgnn_assigned_partitions``): before, events wait for its group join, a start-up
cost, not freshness. ``--warmup-s`` can leave the first seconds out of p50/p90/p99 (none
by default); ``p99_by_10s_window`` shows whether the figure holds over the run, and
``trainer_every_5s`` where a slow window's time went (the worker's learn calls and their
seconds so far, its consumer lag and its trainer's backlog, scraped every 5 s, and its CPU
seconds in the kernel so far: a fresh worker faulting its heap in spent seconds there; and
the broker's CPU seconds so far, on the cores the worker shares).

The broker is started once and warmed first by a throwaway load (``--broker-warmup-s``,
default 60 s): the first load's plan on topics of its own, with a worker of its own, its
figures discarded. A freshly started JVM runs Kafka's request paths in the interpreter
until its JIT has compiled them: on this 2-core machine the broker took 0.88 and 0.73 of a
core in the first two 5 s of 2,000 events/s and ~0.2 from 40 s on (2026-12-06; events
alone as warm-up did not do: the next load's first 10 s took 0.75 and 0.70 again), on the
cores the worker shares, which a deployed broker does not. ``broker_cpu_cores_every_5s``
shows it settle. The worker under test still starts fresh: its own start-up stays in the
figures.

Seeding (``--seed-edges LOAD:EDGES``; default ``10000:250000``): before that load is
offered, the worker is fed events of another synthetic stream (same id space, another
seed) as fast as it ingests them until its graph holds EDGES edges, and the load starts
once the consumer lag and the trainer's backlog are back at 0. The 10,000 events/s load
adds about 0.99 M edges in 120 s (freshness.json of 2026-12-01: 993,250), so with the
seed the graph ends above 1 M edges (``graph_edges_start``, ``graph_edges_end``).

Soak (``--soak-s 600 --rate 10000``): one load for that long, ids capped at the worker's
defaults, the worker's RSS sampled every 0.5 s; reports ``rss_slope_mb_per_min`` over the
last half of the load (least squares), ``rss_median_slope_mb_per_min_last_half`` (Theil-Sen:
the trend of what is kept, which a learn call's transient peaks do not move) and the
thinned series, into
``freshness-soak.json``. Freshness there is measured on every 10th event. With every default
half-life (days) nothing decays away in 10 minutes, so the graph, and with it the RSS, grows
all run: the graph's edges are sampled beside the RSS and ``rss_mb_per_m_edges_last_half``
(least squares of RSS on edges) says what each million edges costs. ``--soak-half-life-ms``
sets every behaviour's half-life (weights kept) so that edges are pruned within the run and
the graph reaches a steady state: there the RSS slope says whether memory is bounded.
Ids still grow then (1 % of the synthetic events come from a brand-new user, who keeps
their rows until evicted), so ``--soak-new-user-share 0`` closes the population too: with
edges and ids both flat, an RSS slope is memory the worker does not give back.

    make bench-freshness                                     # 2,000 and 10,000 events/s
    .venv/bin/python -m bench.freshness --loads 2000 --duration-s 30
    .venv/bin/python -m bench.freshness --soak-s 600 --rate 10000
    .venv/bin/python -m bench.freshness --soak-s 600 --rate 10000 --soak-half-life-ms 10000
    .venv/bin/python -m bench.freshness --soak-s 600 --rate 10000 --soak-half-life-ms 10000 \
        --soak-new-user-share 0

Split (``--deployment split``, ``make bench-freshness-split``): the same loads offered to
one ``streamgnn ingest`` and one ``streamgnn train`` process instead of the all-in-one
worker (:mod:`bench.deployments`): the trainer no longer shares the ingest threads' GIL,
and each event takes one more Kafka hop (the changelog transaction, read_committed);
metrics and RSS are the two processes' sums, and ``worker_*_append_to_ack`` is absent
(the trainer's histogram is not fed from the changelog).

Writes bench/results/freshness.json: one entry per load under ``loads`` with
``offered_per_s``, ``sustained_per_s`` (events the worker applied per second during the
load), ``p50``/``p90``/``p99`` (seconds), ``lag_end`` (records not yet in the store when
the load ended), ``peak_rss_mb`` (the worker's, during the load), and more.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from bench.deployments import DEPLOYMENTS, Deployment
from bench.rss import RssSeries, Series, cpu_seconds, kernel_seconds
from stream.behaviours import DEFAULT_BEHAVIOURS, SOCIAL_EVENT_TYPES
from stream.kafka.clients import confluent_consumer, fetch_available
from stream.local_broker.broker import LocalKafkaBroker, free_ports
from stream.metrics import histogram_quantile, total
from stream.produce.producer import InteractionProducer, produce
from stream.produce.synthetic import SyntheticConfig, SyntheticStream, wall_clock_ms
from stream.settings import KafkaSettings, PublishSettings
from stream.settings.options import OPTIONS
from stream.settings.training import TrainerSettings
from tests.harness.worker_process import training_env, worker_env

RESULTS = Path(__file__).resolve().parent / "results" / "freshness.json"


class EmbeddingFollower(threading.Thread):
    """Reads a user-embeddings topic from the start; keeps, per id and record, the newest
    event time reflected, the receive time and the record's timestamp (the worker's publish
    time), which splits freshness into the worker's part and the delivery's.

    librdkafka (confluent-kafka), not kafka-python: the pure-Python client decoded the
    worker's ~8,000 records/s too slowly in this busy process (the producer loop shares
    its interpreter) and added seconds between a record's ack and its receive time."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, tuple[list[int], list[int], list[int]]] = defaultdict(
            lambda: ([], [], [])
        )
        self.records = 0
        self._halt = threading.Event()
        self._consumer = confluent_consumer(
            KafkaSettings(bootstrap),
            {
                "group.id": f"freshness-follower-{os.getpid()}",  # assigned, never committed
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,  # what is there now, not a fuller fetch later
            },
        )
        partitions: list[int] = []
        for _ in range(100):  # the worker created the topic; metadata may lag a moment
            found = self._consumer.list_topics(topic, timeout=5).topics.get(topic)
            partitions = sorted(found.partitions) if found is not None else []
            if partitions:
                break
            time.sleep(0.1)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def run(self) -> None:
        while not self._halt.is_set():
            messages = fetch_available(self._consumer, 10_000, 0.1)
            now = wall_clock_ms()
            for message in messages:
                if message.error() is not None:
                    continue
                value = orjson.loads(message.value())  # both encodings are JSON objects
                times, received, published = self.seen[value["id"]]
                times.append(max(value["event_time_ms"], times[-1] if times else 0))
                received.append(now)
                published.append(message.timestamp()[1])
                self.records += 1
        self._consumer.close()

    def reflected_at(self, user_id: str, ts: int) -> int | None:
        """Receive time of the first record of ``user_id`` reflecting event time ``ts``."""
        first = self.first_reflecting(user_id, ts)
        return first[0] if first is not None else None

    def first_reflecting(self, user_id: str, ts: int) -> tuple[int, int] | None:
        """(receive time, publish time) of the first record of ``user_id`` reflecting ``ts``."""
        times, received, published = self.seen.get(user_id, ([], [], []))
        at = bisect.bisect_left(times, ts)
        return (received[at], published[at]) if at < len(times) else None

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


@dataclass(frozen=True)
class LoadPlan:
    """One offered load: the rate, how long, and how the worker is set up for it."""

    offered: int
    duration_s: float
    drain_s: float
    warmup_s: float = 0.0
    seed_edges: int = 0
    keep_every: int = 1  # measure freshness on every n-th user-item event
    encoding: str | None = None  # None: the worker's default
    device: str | None = None  # None: the worker's default ("auto")
    half_life_ms: int | None = None  # every behaviour's; None: the worker's defaults
    new_user_share: float | None = None  # of the offered events; None: the stream's default
    deployment: str = "worker"  # bench.deployments: one all-in-one worker, or split


def seed_graph(
    broker: LocalKafkaBroker,
    topic: str,
    scrape: Callable[[], dict[str, float]],
    edges: int,
    seed: int,
) -> dict[str, float]:
    """Feed events until the graph holds ``edges`` edges, then wait until the lag (and a
    split trainer's changelog lag) and the trainer's backlog are 0. Each event adds at most
    one edge, so each round sends what is missing; what the rounds took is reported."""
    start = time.monotonic()
    events = SyntheticStream(SyntheticConfig(late_share=0.0, seed=seed)).events(wall_clock_ms)
    sent = 0

    def settled() -> bool:
        m = scrape()
        lags = ("streamgnn_consumer_lag", "streamgnn_changelog_lag")
        return all(total(m, name) == 0 for name in (*lags, "streamgnn_train_backlog_events"))

    with InteractionProducer(KafkaSettings(broker.bootstrap_servers), topic) as producer:
        while (have := total(scrape(), "streamgnn_graph_edges")) < edges:
            sent += produce(events, producer, count=max(int(edges - have), 1_000)).sent
            time.sleep(2.0)  # the lag gauge follows the consumer's fetches
            _poll(lambda: total(scrape(), "streamgnn_consumer_lag") == 0)
    _poll(settled)
    return {"seed_events": sent, "seed_s": round(time.monotonic() - start, 1)}


def gauge_series(
    scrape: Callable[[], dict[str, float]], name: str, interval_s: float = 10.0
) -> Series:
    """The sum of the deployment's gauge ``name`` every ``interval_s`` (a slow scrape is
    skipped)."""
    return Series(lambda: total(scrape(), name), interval_s, (OSError,))


# Where a slow window's time went, every 5 s: learn calls and their seconds so far (the
# trainer), records not yet applied (ingest) and applied but not yet trained (and, beside
# them, the worker's kernel seconds so far).
TRAINER_SERIES = {
    "learn_calls": "streamgnn_train_step_seconds_count",
    "learn_seconds": "streamgnn_train_step_seconds_sum",
    "consumer_lag": "streamgnn_consumer_lag",
    "train_backlog": "streamgnn_train_backlog_events",
}


def _round_int(value: float | None) -> int | None:
    return None if value is None else round(value)


def _rss_per(
    rss: RssSeries, counts: Series, per: float, since_s: float, until_s: float
) -> float | None:
    """MB of RSS per ``per`` of ``counts`` (graph edges, ids held) over the window: least
    squares of RSS on the count, each count sample paired with the RSS sample nearest in
    time; None when the count moved by less than a hundredth of ``per``."""
    pairs = []
    for t, n in counts.samples:
        if since_s <= t <= until_s and rss.samples:
            nearest = min(rss.samples, key=lambda s: abs(s[0] - t))
            pairs.append((n / per, nearest[1] / 2**20))
    if len(pairs) < 3 or max(n for n, _ in pairs) - min(n for n, _ in pairs) < 0.01:
        return None
    return round(float(np.polyfit(*zip(*pairs, strict=True), 1)[0]), 1)


def _poll(condition: Callable[[], bool], timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker did not settle within {timeout_s:.0f} s")
        time.sleep(0.5)


FRESHNESS = "streamgnn_freshness_seconds"


def _delta(before: dict[str, float], after: dict[str, float], name: str) -> dict[str, float]:
    """``name``'s samples grown between two scrapes (a histogram over that window)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if k.startswith(name)}


def run_load(broker: LocalKafkaBroker, plan: LoadPlan, workdir: Path) -> dict[str, Any]:
    offered = plan.offered
    tag = f"{offered}-{time.time_ns() % 10**9}"
    topic = f"fresh-{tag}"
    broker.create_topics({topic: 2, f"{topic}.dlq": 1})
    metrics_address = f"127.0.0.1:{free_ports(1)[0]}"
    store = workdir / f"store-{tag}"
    env = {  # the worker's defaults but the topics and paths
        **worker_env(broker.bootstrap_servers, topic, f"g-{tag}", store, 5_000),
        **training_env(workdir, tag, dim=TrainerSettings().dim),
        "STREAMGNN_SESSION_TIMEOUT_MS": "10000",
        "STREAMGNN_METRICS_ADDRESS": metrics_address,
    }
    if plan.encoding is not None:
        env["STREAMGNN_VECTOR_ENCODING"] = plan.encoding
    if plan.device is not None:
        env["STREAMGNN_DEVICE"] = plan.device
    if plan.half_life_ms is not None:
        env["STREAMGNN_BEHAVIOURS"] = json.dumps(
            {
                n: {"beta": b.beta, "half_life_ms": plan.half_life_ms}
                for n, b in DEFAULT_BEHAVIOURS.items()
            }
        )
    under_test = Deployment(plan.deployment, env, workdir, tag)
    under_test.start()
    scrape = under_test.scrape
    follower = EmbeddingFollower(broker.bootstrap_servers, env["STREAMGNN_USER_EMBEDDINGS_TOPIC"])
    follower.start()
    seeded = {"seed_events": 0, "seed_s": 0.0}
    if plan.seed_edges:
        seeded = seed_graph(broker, topic, scrape, plan.seed_edges, offered + 1)
    rss = RssSeries(under_test.pids)
    rss.start()
    edges = gauge_series(scrape, "streamgnn_graph_edges")
    ids = gauge_series(scrape, "streamgnn_ids_live")  # both kinds
    edges.start()
    ids.start()
    trainer = {key: gauge_series(scrape, name, 5.0) for key, name in TRAINER_SERIES.items()}
    trainer["kernel_seconds"] = kernel_seconds(under_test.pids)
    if broker.pid is not None:
        trainer["broker_cpu_seconds"] = cpu_seconds([broker.pid])
    for series in trainer.values():
        series.start()
    sent: list[tuple[str, int, int]] = []  # (user, ts, send ms)
    shape = SyntheticConfig(late_share=0.0, seed=offered)
    if plan.new_user_share is not None:
        shape = replace(shape, new_user_share=plan.new_user_share)
    stream = SyntheticStream(shape)
    sample = random.Random(offered)
    before = scrape()
    with InteractionProducer(KafkaSettings(broker.bootstrap_servers), topic) as producer:
        report = produce(
            stream.events(wall_clock_ms),
            producer,
            rate=offered,
            duration_s=plan.duration_s,
            on_send=lambda e, ms: _record(sent, e, ms, plan.keep_every, sample),
        )
    after = scrape()
    window = report.seconds
    deadline = time.monotonic() + plan.drain_s
    while time.monotonic() < deadline:
        last_user, last_ts, _ = sent[-1]
        if follower.reflected_at(last_user, last_ts) is not None:
            break
        time.sleep(0.2)
    end = scrape()
    rss.stop()
    edges.stop()
    ids.stop()
    for series in trainer.values():
        series.stop()
    status = under_test.terminate(timeout_s=300)
    follower.stop()
    freshness: list[float] = []
    warmup: list[float] = []
    missing = 0
    windows: dict[int, list[float]] = defaultdict(list)  # 10 s windows of send time
    first_send = sent[0][2] if sent else 0
    parts: dict[str, list[float]] = {"to_publish": [], "publish_to_receive": []}
    for user, ts, send_ms in sent:
        first = follower.first_reflecting(user, ts)
        if first is None:
            missing += 1
            continue
        at, published = first
        seconds = max(at - send_ms, 0) / 1000.0
        parts["to_publish"].append(max(published - send_ms, 0) / 1000.0)
        parts["publish_to_receive"].append(max(at - published, 0) / 1000.0)
        windows[(send_ms - first_send) // 10_000].append(seconds)
        (warmup if send_ms - first_send < plan.warmup_s * 1000 else freshness).append(seconds)
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
        "deployment": plan.deployment,
        "vector_encoding": plan.encoding or PublishSettings().vector_encoding,
        "achieved_offer_per_s": round(report.rate, 1),
        "duration_s": round(window, 1),
        "sent": report.sent,
        "measured": len(sent),  # user-item events (every keep_every-th); follows: no vector
        "measured_every": plan.keep_every,
        "sustained_per_s": round(applied / window, 1),
        "trained_per_s": round(trained / window, 1),
        "p50": _round(q[0]),
        "p90": _round(q[1]),
        "p99": _round(q[2]),
        "max": _round(max(freshness) if freshness else None),
        "warmup_s": plan.warmup_s,
        "p99_with_warmup": _round(p99_with_warmup),
        "p99_by_10s_window": p99_by_10s,
        **{  # where the time goes: the worker (send -> publish), delivery (-> receive)
            f"{q_name}_{part}": _round(float(np.quantile(values, quantile)))
            for part, values in parts.items()
            if values
            for q_name, quantile in (("p50", 0.5), ("p99", 0.99))
        },
        # the worker's own figure, append -> ack, from its histogram over the load: what the
        # events measured here spent before the follower (this process) read them
        **{
            f"worker_{q_name}_append_to_ack": _round(
                histogram_quantile(quantile, _delta(before, end, FRESHNESS), FRESHNESS)
            )
            for q_name, quantile in (("p50", 0.5), ("p99", 0.99))
        },
        "reflected": len(freshness) + len(warmup),
        "not_reflected_after_drain": missing,
        "drain_s": plan.drain_s,
        "lag_end": int(total(after, "streamgnn_consumer_lag")),
        "train_backlog_end": int(total(after, "streamgnn_train_backlog_events")),
        "peak_rss_mb": rss.peak_mb,
        "rss_slope_mb_per_min_last_half": rss.slope_mb_per_min(since_s=window / 2, until_s=window),
        "rss_median_slope_mb_per_min_last_half": rss.median_slope_mb_per_min(window / 2, window),
        "rss_mb_every_10s": rss.every(10.0) if plan.keep_every > 1 else None,
        "half_life_ms": plan.half_life_ms,
        "new_user_share": stream.config.new_user_share,
        "graph_edges_every_10s": [(round(t, 1), int(n)) for t, n in edges.samples]
        if plan.keep_every > 1
        else None,
        "graph_edges_slope_per_min_last_half": _round_int(edges.slope_per_min(window / 2, window)),
        "rss_mb_per_m_edges_last_half": _rss_per(rss, edges, 1e6, window / 2, window),
        # what still grows with a flat graph: ids (SyntheticConfig.new_user_share of events
        # come from a new user), each holding its rows until evicted (30 days unseen, or
        # the caps)
        "ids_live_end": int(total(end, "streamgnn_ids_live")),
        "ids_slope_per_min_last_half": _round_int(ids.slope_per_min(window / 2, window)),
        "rss_mb_per_k_ids_last_half": _rss_per(rss, ids, 1e3, window / 2, window),
        "train_steps": int(total(end, "streamgnn_train_steps_total")),
        "model_version_end": int(total(end, "streamgnn_model_version")),
        "user_records_published": follower.records,
        "vectors_published_per_s": round(grew("streamgnn_vectors_published_total") / window, 1),
        **seeded,
        "graph_edges_start": int(total(before, "streamgnn_graph_edges")),
        "graph_edges_end": int(total(end, "streamgnn_graph_edges")),
        "exit_status": status,
        "trainer_every_5s": {
            key: [(round(t, 1), round(v, 3)) for t, v in series.samples]
            for key, series in trainer.items()
        },
    }


def _record(
    sent: list[tuple[str, int, int]],
    event: Mapping[str, object],
    send_ms: int,
    every: int,
    sample: random.Random,
) -> None:
    """Keep user-item events (one in ``every``, at random): a ``follow`` is a social edge
    no user vector reflects."""
    if event["event_type"] not in SOCIAL_EVENT_TYPES and sample.randrange(every) == 0:
        sent.append((str(event["user_id"]), int(str(event["ts"])), send_ms))


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def environment_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The worker options set in this run's environment, which the worker inherits (a run
    with ``STREAMGNN_STEP_SCOPE=local`` is not a run of the defaults); secrets left out."""
    return {o.env: environ[o.env] for o in OPTIONS if o.kind != "secret" and o.env in environ}


def warm_broker(
    broker: LocalKafkaBroker, plan: LoadPlan, seconds: float, workdir: Path
) -> dict[str, Any]:
    """Offer ``plan``'s load for ``seconds`` to a worker and topics of its own (see the
    module docstring); the broker's CPU (cores) every 5 s of it."""
    if seconds <= 0:
        return {"broker_warmup_s": 0.0, "broker_cpu_cores_every_5s": []}
    print(f"broker warm-up: {plan.offered} events/s for {seconds:.0f} s ...", flush=True)
    warm = replace(plan, duration_s=seconds, drain_s=5.0, seed_edges=0, keep_every=100)
    used = run_load(broker, warm, workdir)["trainer_every_5s"].get("broker_cpu_seconds", [])
    return {"broker_warmup_s": seconds, "broker_cpu_cores_every_5s": cores(used)}


def cores(cpu_seconds: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``(seconds, cores)`` per interval of a series of CPU seconds so far."""
    return [
        (t, round((used - before) / (t - at), 3))
        for (at, before), (t, used) in itertools.pairwise(cpu_seconds)
    ]


def _seed_edges(text: str) -> tuple[int, int]:
    load, _, edges = text.partition(":")
    return int(load), int(edges)


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
    parser.add_argument(
        "--seed-edges",
        type=_seed_edges,
        nargs="*",
        default=[(10_000, 250_000)],
        metavar="LOAD:EDGES",
        help="grow the graph to EDGES edges before offering LOAD (default 10000:250000)",
    )
    parser.add_argument(
        "--broker-warmup-s",
        type=float,
        default=60.0,
        help="a throwaway load (the first load's plan, on topics of its own) first, so the "
        "fresh broker's JVM is warm; 0: none",
    )
    parser.add_argument("--soak-s", type=float, default=0.0, help="one long load: RSS slope")
    parser.add_argument("--rate", type=int, default=10_000, help="the soak's offered load")
    parser.add_argument(
        "--soak-half-life-ms",
        type=int,
        default=None,
        help="the soak worker's half-life for every behaviour (edges pruned within the run: a "
        "steady-state graph); default: the worker's own half-lives",
    )
    parser.add_argument(
        "--soak-new-user-share",
        type=float,
        default=None,
        help="share of the soak's events from a brand-new user (0: a closed population, ids "
        "flat); default: the synthetic stream's",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--encoding",
        default=None,
        choices=["json", "f32le-base64"],
        help="the worker's vector encoding (default: the worker's default)",
    )
    parser.add_argument("--device", default=None, help="the trainer's device (default: auto)")
    parser.add_argument(
        "--deployment",
        default="worker",
        choices=DEPLOYMENTS,
        help="one all-in-one worker, or split: one streamgnn ingest plus one streamgnn train",
    )
    args = parser.parse_args(argv)
    seeds = dict(args.seed_edges)
    plans = [
        LoadPlan(
            offered=rate,
            duration_s=args.soak_s or args.duration_s,
            drain_s=args.drain_s,
            warmup_s=args.warmup_s,
            seed_edges=0 if args.soak_s else seeds.get(rate, 0),
            keep_every=10 if args.soak_s else 1,
            encoding=args.encoding,
            device=args.device,
            half_life_ms=args.soak_half_life_ms if args.soak_s else None,
            new_user_share=args.soak_new_user_share if args.soak_s else None,
            deployment=args.deployment,
        )
        for rate in ([args.rate] if args.soak_s else args.loads)
    ]
    out = args.json or RESULTS.with_name("freshness-soak.json" if args.soak_s else RESULTS.name)
    loads = []
    load_before = os.getloadavg()  # other jobs on the machine slow every figure
    with tempfile.TemporaryDirectory(prefix="streamgnn-freshness-") as tmp:
        workdir = Path(tmp)
        with LocalKafkaBroker(workdir / "kafka") as broker:
            warmup = warm_broker(broker, plans[0], args.broker_warmup_s, workdir)
            for plan in plans:
                print(f"load {plan.offered} events/s for {plan.duration_s:.0f} s ...", flush=True)
                entry = run_load(broker, plan, workdir)
                print(json.dumps(entry), flush=True)
                loads.append(entry)
    result = {
        "benchmark": "end-to-end freshness (producer send -> user vector on the topic)",
        "command": " ".join([Path(sys.executable).name, "-m", "bench.freshness", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "deployment": args.deployment,
        "environment": environment_settings(os.environ),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_1_5_15_min": {
            "start": [round(x, 2) for x in load_before],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "goal": "p99 < 1 s at 2,000 and 10,000 events/s (>= 1 M edges by the end of the "
        "10,000 load), default settings and encoding; soak: RSS slope ~ 0 over the last half",
        **warmup,
        "loads": loads,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
