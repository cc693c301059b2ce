"""SIGKILL a worker that trains and publishes, three times (once right after a store write):
the store is still exactly-once and equal to a run without training or crashes, no key's
model version ever goes back on the embedding topics, every restarted worker with work
left publishes again, and the newest checkpoint loads and has trained through the whole
stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.local_broker.broker import LocalKafkaBroker
from tests.harness.faults import prepare_topic, run_crash_scenario
from tests.harness.training_faults import run_training_crash_scenario

pytestmark = pytest.mark.integration

EVENTS = 20_000  # small enough for the trainer to keep up on two cores


def test_training_worker_sigkilled_three_times_keeps_store_and_versions_intact(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    topic = prepare_topic(kafka_broker, EVENTS, partitions=4)
    report = run_training_crash_scenario(
        kafka_broker, topic, EVENTS, tmp_path, worker_kills=2, store_write_kills=1, seed=3
    )
    reference = run_crash_scenario(kafka_broker, topic, EVENTS, tmp_path, "no-crash", 0)

    crashed = report.crash
    assert len(crashed.recovery_s) == 3
    assert (crashed.lost, crashed.duplicated, crashed.applied) == (0, 0, EVENTS)
    assert crashed.digest == reference.digest  # training never changes what is stored
    assert report.records > 0
    assert report.regressions == []
    assert len(report.published_after_restart) == 3
    assert all(  # a worker restarted with everything trained has nothing to publish
        count > 0
        for k, count in enumerate(report.published_after_restart)
        if k not in report.idle_restarts
    )
    assert report.checkpoint_offsets == crashed.positions  # SIGTERM trains the rest, saves
