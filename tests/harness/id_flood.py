"""A flood of new user ids through a training worker: memory plateaus, ids are refused.

Every event of the flood comes from a user never seen before. The id registry holds at
most ``max_users`` user rows; none of the flood's ids expires within the flood (their
event times are milliseconds apart, the TTL is days), so past the cap every new id is
refused by policy and counted in ``streamgnn_ids_refused_total{kind="user"}``. The store
still applies every event (it is on disk and prunes by decay, not by count).

What the scenario checks and reports: sent / applied / lost / duplicated from the store
(each event owns one edge), the registry's refusals and evictions from the worker's
metrics, and the worker's resident memory sampled through the flood: its peak, and its
growth over the second half of the flood, when the tables are already full.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from stream.local_broker.broker import LocalKafkaBroker, free_ports
from stream.metrics import scrape_metrics, serves_metrics, total
from stream.produce.producer import InteractionProducer, produce
from stream.settings import KafkaSettings
from tests.harness.faults import CrashReport, count_applications
from tests.harness.worker_process import WorkerProcess, training_env, wait_for, worker_env

FLOOD_ITEMS = 1_000


def flood_events(count: int, start_ts: int = 1_700_000_000_000) -> Iterator[dict[str, object]]:
    """``count`` events, each from a new user ``flood-<n>``, on a small set of items."""
    return (
        {
            "user_id": f"flood-{n}",
            "item_id": f"i{n % FLOOD_ITEMS}",
            "event_type": "click",
            "ts": start_ts + n,
        }
        for n in range(count)
    )


def run_id_flood(
    broker: LocalKafkaBroker,
    workdir: Path,
    ids: int = 1_000_000,
    max_users: int = 20_000,
    memory_cap_mb: float = 2_048.0,
    timeout_s: float = 1_800.0,
) -> CrashReport:
    """Flood a fresh training worker with ``ids`` new user ids; see the module docstring."""
    tag = f"flood-{time.time_ns() % 10**9}"
    topic = f"{tag}-interactions"
    broker.create_topics({topic: 2, f"{topic}.dlq": 1})
    with InteractionProducer(
        KafkaSettings(broker.bootstrap_servers), topic, linger_ms=20
    ) as producer:
        produce(flood_events(ids), producer)
    address = f"127.0.0.1:{free_ports(1)[0]}"
    store = workdir / f"store-{tag}"
    env = {
        **worker_env(broker.bootstrap_servers, topic, f"g-{tag}", store, 5_000),
        **training_env(workdir, tag),
        "STREAMGNN_METRICS_ADDRESS": address,
        "STREAMGNN_MAX_USERS": str(max_users),
        "STREAMGNN_VECTOR_ENCODING": "f32le-base64",
    }
    report = CrashReport(name="id-flood", sent=ids)  # recovery_s stays empty: no fault
    worker = WorkerProcess(env, workdir / f"worker-{tag}.log")
    start = time.monotonic()
    worker.start()
    samples: list[tuple[float, float]] = []  # (applied, rss MB)
    try:
        wait_for(lambda: serves_metrics(address), 120, "the worker's metrics endpoint")
        process = psutil.Process(worker.pid)

        def trained() -> float:
            """Flood events the trainer took: reflected in a published vector (freshness
            observations) or refused with their id (one event per id here)."""
            totals = scrape_metrics(address)
            rss = process.memory_info().rss / 2**20
            samples.append((total(totals, "streamgnn_events_applied_total"), rss))
            refused = totals.get('streamgnn_ids_refused_total{kind="user"}', 0.0)
            return total(totals, "streamgnn_freshness_seconds_count") + refused

        wait_for(lambda: trained() >= ids, timeout_s, "the flood to be trained on")
        totals = scrape_metrics(address)
        refused = int(totals['streamgnn_ids_refused_total{kind="user"}'])
        evicted = int(totals['streamgnn_ids_evicted_total{kind="user"}'])
        seconds = time.monotonic() - start
        status = worker.terminate(timeout_s=300)
        if status != 0:
            raise RuntimeError(f"worker exited {status} on SIGTERM; see its log in {workdir}")
    finally:
        if worker.exit_status() is None:
            worker.kill()
    count_applications(store, topic, report)  # each flood event owns one edge
    report.details = {
        "max_users": max_users,
        "users_refused": refused,
        "users_evicted": evicted,
        "users_live": min(max_users, ids - refused),
        "peak_rss_mb": round(max(rss for _, rss in samples), 1),
        "rss_mid_mb": round(next(rss for applied, rss in samples if applied >= ids / 2), 1),
        "rss_end_mb": round(samples[-1][1], 1),
        "memory_cap_mb": memory_cap_mb,
        "seconds": round(seconds, 1),
    }
    return report
