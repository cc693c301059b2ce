"""The worker process where it used to hang: a dead-letter topic that will not take a
letter, and brokers that went away, with and without the changelog's transactions
(tests/harness/hostile_scenarios.py). SIGTERM ends it within 10 s, exit 0, with the store
untouched by the batch it could not finish (or, with the changelog, restored past it on
the next start, which then stores the rest); a DLQ that
stays unwritable stops it with exit status 1 and a clear message, after a checkpoint,
instead of a retry loop; the lag gauge tells the truth all along."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.local_broker.broker import LocalKafkaBroker
from tests.harness.hostile import SIGTERM_LIMIT_S
from tests.harness.hostile_scenarios import brokers_away, stuck_on_dead_letter, unwritable_dlq

pytestmark = pytest.mark.integration


def test_sigterm_ends_a_worker_stuck_on_a_dead_letter_and_the_lag_stays_true(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    report = stuck_on_dead_letter(kafka_broker, tmp_path)
    d = report.details
    assert d["alive_while_stuck"]
    assert isinstance(d["stored_at_sigterm"], int) and isinstance(d["records"], int)
    assert d["stored_at_sigterm"] < d["records"], "the batch holding the letter is not applied"
    assert d["lag_while_stuck"] == d["records"] - d["stored_at_sigterm"] > 0
    assert d["dlq_unwritable_gauge_while_stuck"] == 1  # alertable before anything stops
    assert report.seconds is not None and report.seconds <= SIGTERM_LIMIT_S
    assert report.exit_status == 0
    assert d["stored_after"] == d["stored_at_sigterm"]  # read again on the next start


def test_a_dlq_that_stays_unwritable_stops_the_worker_with_status_1(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    report = unwritable_dlq(kafka_broker, tmp_path, timeout_s=3)
    assert report.exit_status == 1
    assert report.details["message_names_the_dlq"]
    assert not report.details["traceback_in_log"]  # a clear message, not a crash
    assert report.details["checkpoints"], "it checkpointed what it had applied"


def test_sigterm_ends_the_worker_within_10_s_while_the_brokers_are_away(tmp_path: Path) -> None:
    report = brokers_away(tmp_path)
    assert report.seconds is not None and report.seconds <= SIGTERM_LIMIT_S
    assert report.exit_status == 0


def test_sigterm_ends_a_changelog_worker_within_10_s_while_the_brokers_are_away(
    tmp_path: Path,
) -> None:
    """A transaction left waiting on the cut network does not hold the stop (it waited out
    librdkafka's timeouts, ~55 s, before); the next start loses nothing of the stream."""
    report = brokers_away(tmp_path, changelog=True)
    assert report.seconds is not None and report.seconds <= SIGTERM_LIMIT_S
    assert report.exit_status == 0
    d = report.details
    assert d["stored_after_restart"] == d["sent"]
    assert d["restart_exit_status"] == 0
