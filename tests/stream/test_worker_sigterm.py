"""The worker process where it used to hang: a dead-letter topic that will not take
a letter, and brokers that went away. SIGTERM ends it within 10 s, exit 0, with the store
untouched by the batch it could not finish; a DLQ that stays unwritable stops it with
exit status 1 and a clear message instead of a retry loop; the lag gauge tells the truth
all along."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from stream.kafka_broker import LocalKafkaBroker
from stream.metrics import owns_partitions, scrape_metrics
from stream.testing.faults import training_env, wait_for
from stream.testing.hostile import SIGTERM_LIMIT_S, HostileRun
from stream.testing.proxy import proxied_broker
from stream.testing.raw_records import RawRecord, send_records

pytestmark = pytest.mark.integration

GOOD = 40


def _records(count: int, bad_at: int | None = None) -> list[RawRecord]:
    now = int(time.time() * 1000)
    out = []
    for n in range(count):
        body = {"user_id": f"u{n}", "item_id": f"i{n}", "event_type": "click", "ts": now - n}
        out.append(RawRecord(f"u{n}".encode(), json.dumps(body).encode()))
    if bad_at is not None:
        out.insert(bad_at, RawRecord(b"u", b"{not json"))
    return out


def _lag(run: HostileRun) -> float:
    samples = scrape_metrics(run.metrics_address)
    return sum(v for k, v in samples.items() if k.startswith("streamgnn_consumer_lag{"))


def _stored(run: HostileRun) -> int:
    return sum(run.positions().values())


def _training_run(broker: LocalKafkaBroker, tmp_path: Path, **kwargs: object) -> HostileRun:
    env = {**training_env(tmp_path, "sigterm"), **kwargs.pop("env", {})}  # type: ignore[dict-item]
    return HostileRun(broker, tmp_path, partitions=1, env=env, **kwargs)  # type: ignore[arg-type]


def _delete_dlq_under(run: HostileRun) -> None:
    """Once the worker runs (its start-up DLQ check passed), delete the DLQ: with topic
    auto-creation off, librdkafka retries every letter until the dlq timeout."""
    wait_for(lambda: owns_partitions(run.metrics_address), 90, "the worker to join")
    admin = AdminClient({"bootstrap.servers": run.bootstrap})
    admin.delete_topics([run.dlq])[run.dlq].result(30)


def test_sigterm_ends_a_worker_stuck_on_a_dead_letter_and_the_lag_stays_true(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    run = HostileRun(kafka_broker, tmp_path, partitions=1)  # the ingest half; dlq timeout 60 s
    run.start()
    try:
        _delete_dlq_under(run)
        records = _records(GOOD, bad_at=GOOD // 2)
        send_records(run.bootstrap, run.topic, records)
        time.sleep(5)  # stuck on the letter's batch
        assert run.worker.exit_status() is None
        stored = _stored(run)
        assert stored < len(records), "the batch holding the letter must not be applied"
        wait_for(lambda: _lag(run) == len(records) - stored, 10, "a true lag while stuck")
        start = time.monotonic()
        status = run.worker.terminate(30)
        elapsed = time.monotonic() - start
    finally:
        run.close()
    assert elapsed <= SIGTERM_LIMIT_S
    assert status == 0
    assert _stored(run) == stored  # nothing half-applied; the batch is read again on restart


def test_a_dlq_that_stays_unwritable_stops_the_worker_with_status_1(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    run = _training_run(kafka_broker, tmp_path, env={"STREAMGNN_DLQ_TIMEOUT_S": "3"})
    run.start()
    try:
        _delete_dlq_under(run)
        send_records(run.bootstrap, run.topic, _records(GOOD, bad_at=3))
        wait_for(lambda: run.worker.exit_status() is not None, 60, "the worker to stop")
    finally:
        run.close()
    assert run.worker.exit_status() == 1
    log = run.log_path.read_text()
    assert "cannot write the dead letter" in log and run.dlq in log
    assert "Traceback" not in log  # a clear message, not a crash
    assert list((tmp_path / "checkpoints-sigterm").glob("*")), "checkpointed before exiting"


def test_sigterm_ends_the_worker_within_10_s_while_the_brokers_are_away(tmp_path: Path) -> None:
    with proxied_broker(tmp_path / "kafka") as (broker, proxy):
        run = _training_run(broker, tmp_path, env={"STREAMGNN_BOOTSTRAP_SERVERS": proxy.address})
        run.start()
        try:
            send_records(run.bootstrap, run.topic, _records(GOOD))
            wait_for(lambda: _stored(run) == GOOD, 90, "the stream in the store")
            send_records(run.bootstrap, run.topic, _records(10 * GOOD))
            proxy.cut()  # while that is being consumed, trained on and published
            time.sleep(2)
            start = time.monotonic()
            status = run.worker.terminate(30)
            elapsed = time.monotonic() - start
        finally:
            run.close()
    assert elapsed <= SIGTERM_LIMIT_S
    assert status == 0
