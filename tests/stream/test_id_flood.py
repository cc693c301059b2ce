"""A flood of new user ids through a training worker: refused by policy past the cap,
counted in the metrics, and every event still applied to the store exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.local_broker.broker import LocalKafkaBroker
from tests.harness.id_flood import run_id_flood

pytestmark = pytest.mark.integration


def test_new_ids_past_the_cap_are_refused_and_counted(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    ids, cap = 30_000, 2_000
    report = run_id_flood(kafka_broker, tmp_path, ids=ids, max_users=cap, timeout_s=300)
    assert (report.lost, report.duplicated, report.applied) == (0, 0, ids)
    # No flood id expires within the flood (ms apart, TTL of days): nothing is evicted,
    # the first `cap` ids take the rows and every later one is refused, once.
    assert report.details["users_evicted"] == 0
    assert report.details["users_refused"] == ids - cap
    assert float(str(report.details["peak_rss_mb"])) > 0
