"""Exactly once through crashes: SIGKILL the worker (and the broker) mid-stream, restart,
and the store equals a run that never crashed."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.local_broker.broker import LocalKafkaBroker
from tests.harness.faults import prepare_topic, run_crash_scenario

pytestmark = pytest.mark.integration

EVENTS = 100_000


def test_worker_sigkilled_three_times_loses_and_repeats_nothing(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    topic = prepare_topic(kafka_broker, EVENTS, partitions=4)
    crashed = run_crash_scenario(kafka_broker, topic, EVENTS, tmp_path, "worker-kill", 3, seed=1)
    reference = run_crash_scenario(kafka_broker, topic, EVENTS, tmp_path, "no-crash", 0)
    assert (reference.lost, reference.duplicated, reference.applied) == (0, 0, EVENTS)
    assert len(crashed.recovery_s) == 3
    assert (crashed.lost, crashed.duplicated, crashed.applied) == (0, 0, EVENTS)
    assert crashed.digest == reference.digest


def test_broker_sigkilled_and_restarted_mid_stream_loses_nothing(tmp_path: Path) -> None:
    with LocalKafkaBroker(tmp_path / "kafka") as broker:
        topic = prepare_topic(broker, 20_000, partitions=4)
        report = run_crash_scenario(
            broker,
            topic,
            20_000,
            tmp_path,
            "broker-kill",
            worker_kills=0,
            broker_kills=1,
            max_batch_records=100,
        )
    assert len(report.recovery_s) == 1
    assert (report.lost, report.duplicated, report.applied) == (0, 0, 20_000)
