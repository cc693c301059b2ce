"""Where the worker used to hang, as scenarios with figures: shared by
tests/stream/test_worker_sigterm.py (which asserts on them) and bench/hostile.py (which
records them), like :mod:`tests.harness.faults` is for crashes.

- :func:`stuck_on_dead_letter`: the DLQ is deleted under a running worker and cannot be
  created again (a topic whose name collides with it takes its place; topic
  auto-creation is off), so a rejected record's letter waits until the dlq timeout;
  SIGTERM meanwhile.
- :func:`unwritable_dlq`: the same with a short dlq timeout: the worker must stop itself.
- :func:`dlq_deleted`: the DLQ is deleted under a running worker, and nothing stops its
  creation: the worker creates it again and the letters in flight go to it.
- :func:`brokers_away`: the network to the brokers is cut while a training worker
  consumes, trains and publishes; SIGTERM meanwhile. With ``changelog``, the worker writes
  its store's changelog in transactions, one of which the cut leaves waiting; the network
  then comes back and the worker is started again.
- :func:`random_batch`: a seeded batch of every class, for long runs.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported

from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import owns_partitions, scrape_metrics
from tests.harness.changelog_state import end_offsets
from tests.harness.hostile import CLASSES, MB, HostileRecord, HostileRun, build
from tests.harness.proxy import proxied_broker
from tests.harness.raw_records import CODECS, RawRecord, send_records
from tests.harness.worker_process import training_env, wait_for

EVERYDAY = tuple(c for c in CLASSES if c != "past_broker_limit")
EVERYDAY_SIZES = (300, 2_000, 70_000, 120_000)  # oversize keys and values, in bytes
HUGE = (("oversize_key", 7 * MB), ("oversize_value", 7 * MB), ("past_broker_limit", MB))
GOOD = 40


@dataclass
class ScenarioReport:
    name: str
    exit_status: int | None = None
    seconds: float | None = None  # SIGTERM to exit, or (unwritable) first send to exit
    details: dict[str, object] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        seconds = None if self.seconds is None else round(self.seconds, 2)
        return {"exit_status": self.exit_status, "seconds": seconds, **self.details}


def good_records(count: int, bad_at: int | None = None) -> list[RawRecord]:
    """``count`` good events on their own edges, one bad record at ``bad_at``."""
    now = int(time.time() * 1000)
    out = []
    for n in range(count):
        body = {"user_id": f"u{n}", "item_id": f"i{n}", "event_type": "click", "ts": now - n}
        out.append(RawRecord(f"u{n}".encode(), json.dumps(body).encode()))
    if bad_at is not None:
        out.insert(bad_at, RawRecord(b"u", b"{not json"))
    return out


def consumer_lag(run: HostileRun) -> float:
    samples = scrape_metrics(run.metrics_address)
    return sum(v for k, v in samples.items() if k.startswith("streamgnn_consumer_lag{"))


def _dlq_gauge(run: HostileRun) -> float | None:
    return scrape_metrics(run.metrics_address).get("streamgnn_dlq_unwritable")


def dlq_gone_for_good(run: HostileRun) -> None:
    """Once the worker runs (its start-up DLQ check passed), delete its DLQ and create a
    topic whose name collides with it (Kafka tells ``.`` from ``_`` in no topic name), so
    the worker can neither write a letter nor create the DLQ again."""
    wait_for(lambda: owns_partitions(run.metrics_address), 90, "the worker to join")
    admin = AdminClient({"bootstrap.servers": run.bootstrap})
    admin.delete_topics([run.dlq])[run.dlq].result(30)
    blocker = run.dlq.replace(".", "_")
    assert blocker != run.dlq
    deadline = time.monotonic() + 30
    while True:  # the deletion may still be settling
        try:
            admin.create_topics([NewTopic(blocker, 1, 1)])[blocker].result(30)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stuck_on_dead_letter(broker: LocalKafkaBroker, workdir: Path) -> ScenarioReport:
    """SIGTERM an ingest worker stuck on a letter (the default 60 s dlq timeout)."""
    run = HostileRun(broker, workdir, partitions=1)
    run.start()
    try:
        dlq_gone_for_good(run)
        records = good_records(GOOD, bad_at=GOOD // 2)
        send_records(run.bootstrap, run.topic, records)
        time.sleep(5)
        stored = sum(run.positions().values())
        expected_lag = len(records) - stored
        wait_for(lambda: consumer_lag(run) == expected_lag, 15, "a true lag while stuck")
        held_up = wait_for(lambda: _dlq_gauge(run) == 1, 20, "streamgnn_dlq_unwritable 1")
        gauge = _dlq_gauge(run)
        alive = run.worker.exit_status() is None
        start = time.monotonic()
        status = run.worker.terminate(60)
        elapsed = time.monotonic() - start
    finally:
        run.close()
    details: dict[str, object] = {
        "alive_while_stuck": alive,
        "records": len(records),
        "stored_at_sigterm": stored,
        "stored_after": sum(run.positions().values()),
        "lag_while_stuck": expected_lag,
        "dlq_unwritable_gauge_while_stuck": gauge,
        "dlq_unwritable_after_s": round(held_up + 5, 1),  # from the send (5 s sleep)
    }
    return ScenarioReport("sigterm-stuck-on-dead-letter", status, elapsed, details)


def unwritable_dlq(broker: LocalKafkaBroker, workdir: Path, timeout_s: int = 3) -> ScenarioReport:
    """A training worker whose DLQ stays unwritable for ``timeout_s`` must stop itself."""
    env = {**training_env(workdir, "unwritable"), "STREAMGNN_DLQ_TIMEOUT_S": str(timeout_s)}
    run = HostileRun(broker, workdir, partitions=1, env=env)
    run.start()
    try:
        dlq_gone_for_good(run)
        start = time.monotonic()
        send_records(run.bootstrap, run.topic, good_records(GOOD, bad_at=3))
        wait_for(lambda: run.worker.exit_status() is not None, 90, "the worker to stop")
        elapsed = time.monotonic() - start
    finally:
        run.close()
    log = run.log_path.read_text()
    details: dict[str, object] = {
        "dlq_timeout_s": timeout_s,
        "message_names_the_dlq": "cannot write the dead letter" in log and run.dlq in log,
        "traceback_in_log": "Traceback" in log,
        "checkpoints": len(list((workdir / "checkpoints-unwritable").glob("*"))),
    }
    return ScenarioReport("dlq-unwritable", run.worker.exit_status(), elapsed, details)


def dlq_deleted(broker: LocalKafkaBroker, workdir: Path) -> ScenarioReport:
    """Delete the DLQ under an ingest worker, then send a batch holding a bad record: the
    seconds from the send until the store holds the batch (its letter acked)."""
    run = HostileRun(broker, workdir, partitions=1)
    run.start()
    try:
        wait_for(lambda: owns_partitions(run.metrics_address), 90, "the worker to join")
        admin = AdminClient({"bootstrap.servers": run.bootstrap})
        admin.delete_topics([run.dlq])[run.dlq].result(30)
        records = good_records(GOOD, bad_at=GOOD // 2)
        start = time.monotonic()
        stored = run.wait(send_records(run.bootstrap, run.topic, records))
        elapsed = time.monotonic() - start if stored else None
        lost = scrape_metrics(run.metrics_address).get("streamgnn_dlq_topic_lost_total")
        alive = run.worker.exit_status() is None
    finally:
        run.close()
    details: dict[str, object] = {
        "alive": alive,
        "records": len(records),
        "stored": sum(run.positions().values()),
        # a topic created again starts its log at offset 0: its end is its letter count
        "letters_on_the_new_dlq": end_offsets(run.bootstrap, run.dlq, 1)[0],
        "dlq_topic_lost_total": lost,
    }
    return ScenarioReport("dlq-deleted", run.exit_codes[-1], elapsed, details)


def brokers_away(workdir: Path, changelog: bool = False) -> ScenarioReport:
    """SIGTERM a training worker while the network to its broker (its own) is cut; with
    ``changelog``, restore the network, start it again and count what its store holds."""
    with proxied_broker(workdir / "kafka") as (broker, proxy):
        env = {**training_env(workdir, "away"), "STREAMGNN_BOOTSTRAP_SERVERS": proxy.address}
        if changelog:
            env["STREAMGNN_CHANGELOG"] = "true"
        run = HostileRun(broker, workdir, partitions=1, env=env)
        run.start()
        sent = 11 * GOOD  # GOOD, then 10 * GOOD
        details: dict[str, object] = {"sent": sent}
        try:
            send_records(run.bootstrap, run.topic, good_records(GOOD))
            wait_for(lambda: sum(run.positions().values()) == GOOD, 90, "the stream stored")
            send_records(run.bootstrap, run.topic, good_records(10 * GOOD))
            proxy.cut()  # while that is being consumed, trained on and published
            time.sleep(2)
            start = time.monotonic()
            status = run.worker.terminate(90)
            elapsed = time.monotonic() - start
            details["stored_at_sigterm"] = sum(run.positions().values())
            if changelog:
                proxy.restore()
                run.start()
                # the store may hold every record already (written ahead of the changelog):
                # a SIGTERM before the start set its handlers would end it by the signal
                wait_for(run.worker.consuming, 120, "the restarted worker consuming")
                wait_for(lambda: sum(run.positions().values()) == sent, 120, "the rest stored")
                details["stored_after_restart"] = sum(run.positions().values())
                details["restart_exit_status"] = run.worker.terminate(60)
        finally:
            run.close()
    name = "sigterm-brokers-away" + ("-changelog" if changelog else "")
    return ScenarioReport(name, status, elapsed, details)


def random_batch(
    rng: random.Random, first_seq: int, now_ms: int, records: int, huge_share: float = 0.3
) -> list[HostileRecord]:
    """``records`` draws of the everyday classes (ids from ``first_seq`` on), and with
    probability ``huge_share`` one multi-megabyte record."""
    batch: list[HostileRecord] = []
    for seq in range(first_seq, first_seq + records):
        batch += build(
            rng.choice(EVERYDAY),
            seq,
            now_ms,
            size=rng.choice(EVERYDAY_SIZES),
            codec=rng.choice(CODECS),
            raw=rng.randbytes(rng.randint(1, 12)),
            copies=rng.randint(2, 50),
        )
    if rng.random() < huge_share:
        cls, size = rng.choice(HUGE)
        batch += build(cls, first_seq + records, now_ms, size=size)
    return batch
