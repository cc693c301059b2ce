"""The network between the worker and the broker cut for 30 s mid-stream: the worker stays
up, reconnects on its own, and the store still holds every event exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.faults import prepare_topic, run_proxy_cut_scenario
from tests.harness.proxy import proxied_broker

pytestmark = pytest.mark.integration

EVENTS = 60_000
CUT_S = 30.0


def test_worker_rides_out_a_network_cut_and_loses_nothing(tmp_path: Path) -> None:
    with proxied_broker(tmp_path / "kafka") as (broker, proxy):
        topic = prepare_topic(broker, EVENTS, partitions=2)
        report = run_proxy_cut_scenario(broker, proxy, topic, EVENTS, tmp_path, cut_s=CUT_S)

    assert len(report.recovery_s) == 1  # the worker stayed up and made progress again
    assert report.details["connections_refused_during_cut"] > 0  # it really was cut off
    assert (report.lost, report.duplicated, report.applied) == (0, 0, EVENTS)
