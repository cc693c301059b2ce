"""bench/broker_warmup.py: the fresh broker's warm-up traffic, and the CPU series it reports."""

from __future__ import annotations

import os
import time

import pytest

import bench.broker_warmup as warmup
from bench.rss import Series, cpu_seconds
from stream.local_broker.broker import LocalKafkaBroker


def test_cpu_seconds_count_time_in_user_space_too() -> None:
    series = cpu_seconds([os.getpid()], interval_s=0.01)
    start = time.process_time()
    series.start()
    while len(series.samples) < 5:
        sum(range(10_000))  # user time, no syscall
    series.stop()
    values = [v for _, v in series.samples]
    assert values == sorted(values)
    assert values[-1] - values[0] > 0.0  # the busy loop's own seconds
    assert values[0] >= start - 0.05 and values[-1] <= time.process_time()


def test_cores_are_the_cpu_seconds_between_samples_over_their_time() -> None:
    series = Series(lambda: 0.0, 5.0)  # never started: samples set by hand
    series.samples = [(5.0, 12.0), (10.0, 14.5), (20.0, 15.5)]
    assert warmup._rates(series, before=10.0) == [[5.0, 0.4], [10.0, 0.5], [20.0, 0.1]]


def test_no_warmup_sends_nothing() -> None:
    class Down:
        pid = None  # never read: nothing to warm

    assert warmup.warm_broker(Down(), 1_000, 0) == {  # type: ignore[arg-type]
        "broker_warmup_s": 0.0,
        "broker_cpu_cores_every_5s": [],
    }


@pytest.mark.integration
def test_the_warmup_traffic_is_sent_read_and_its_broker_cpu_sampled(
    kafka_broker: LocalKafkaBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warmup, "INTERVAL_S", 0.5)
    report = warmup.warm_broker(kafka_broker, rate=400, seconds=3.0)
    assert report["broker_warmup_s"] == 3.0
    assert 1_000 <= report["broker_warmup_sent"] <= 1_300  # 400/s for 3 s, on schedule
    assert report["broker_warmup_read"] == report["broker_warmup_sent"]
    cores = report["broker_cpu_cores_every_5s"]
    assert len(cores) >= 4 and [t for t, _ in cores] == sorted(t for t, _ in cores)
    assert all(c >= 0 for _, c in cores) and sum(c for _, c in cores) > 0  # it served them
