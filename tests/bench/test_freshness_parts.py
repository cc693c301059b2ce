"""bench/freshness.py's pieces that need no broker: the RSS trend and the seeding option."""

from __future__ import annotations

import os
import time

import pytest

from bench.freshness import (
    FRESHNESS,
    _delta,
    _rss_per,
    _seed_edges,
    cores,
    environment_settings,
    main,
)
from bench.rss import RssSeries, Series, cpu_seconds, kernel_seconds
from stream.metrics import histogram_quantile


def test_the_rss_slope_is_the_least_squares_trend_of_the_window() -> None:
    rss = RssSeries(pid=os.getpid())
    # 600 MB flat for a minute, then +30 MB a minute with noise that cancels out.
    rss.samples = [(t, 600 * 2**20) for t in range(0, 60, 2)]
    rss.samples += [
        (t, int((600 + (t - 60) / 2 + (3 if t % 4 else -3)) * 2**20)) for t in range(60, 180, 2)
    ]
    assert rss.slope_mb_per_min(since_s=60.0) == pytest.approx(30.0, abs=0.5)
    assert rss.slope_mb_per_min(since_s=0.0, until_s=58.0) == 0.0
    assert rss.slope_mb_per_min(since_s=500.0) is None  # too few samples to say
    assert rss.peak_mb == pytest.approx(600 + 59 + 3, abs=1)


def test_the_median_slope_follows_what_is_kept_not_the_peaks() -> None:
    """RSS kept grows 2 MB a minute; a learn call's temporaries lift it by 300 MB for a
    sample now and then, more often late in the window: least squares reads the peaks'
    timing as growth, the median of pairwise slopes does not."""
    rss = RssSeries(pid=os.getpid())
    kept = [(t / 2, (1_000 + 2 * (t / 2) / 60) * 2**20) for t in range(1_200)]  # 10 min
    rss.samples = [
        (t, mb + (300 * 2**20 if (i % 20 == 0 or (t > 450 and i % 7 == 0)) else 0))
        for i, (t, mb) in enumerate(kept)
    ]
    assert rss.median_slope_mb_per_min(since_s=300.0) == pytest.approx(2.0, abs=0.2)
    least_squares = rss.slope_mb_per_min(since_s=300.0)
    assert least_squares is not None and least_squares > 10.0
    assert rss.median_slope_mb_per_min(since_s=599.0) is None  # two samples: too few


def test_rss_per_count_is_the_memory_each_counted_thing_holds() -> None:
    # ids grow 100 a second, each holding 2 KiB (RSS sampled every 0.5 s, ids every 10 s)
    rss, ids = RssSeries(pid=os.getpid()), Series(lambda: 0.0, 10.0)
    rss.samples = [(t / 2, 500 * 2**20 + 100 * (t / 2) * 2048) for t in range(0, 240)]
    ids.samples = [(float(t), 10_000 + 100.0 * t) for t in range(0, 120, 10)]
    per_k_ids = 1_000 * 2048 / 2**20
    assert _rss_per(rss, ids, 1e3, 0.0, 120.0) == pytest.approx(per_k_ids, abs=0.1)
    flat = Series(lambda: 0.0, 10.0)
    flat.samples = [(float(t), 10_000.0) for t in range(0, 120, 10)]
    assert _rss_per(rss, flat, 1e3, 0.0, 120.0) is None  # the count did not move


def test_a_live_process_is_sampled() -> None:
    rss = RssSeries(pid=os.getpid(), interval_s=0.01)
    rss.start()
    while len(rss.samples) < 3:
        time.sleep(0.01)
    rss.stop()
    assert rss.peak_mb > 0 and [t for t, _ in rss.samples] == sorted(t for t, _ in rss.samples)


def test_kernel_seconds_of_a_live_process_only_grow() -> None:
    series = kernel_seconds([os.getpid()], interval_s=0.01)
    series.start()
    while len(series.samples) < 5:
        os.stat(".")  # a syscall or two
    series.stop()
    values = [v for _, v in series.samples]
    assert values == sorted(values) and values[0] >= 0.0
    assert values[-1] <= time.process_time()  # part of this process's CPU time


def test_seed_edges_are_given_per_load() -> None:
    assert _seed_edges("10000:250000") == (10_000, 250_000)
    with pytest.raises(ValueError):
        _seed_edges("10000")
    with pytest.raises(SystemExit):
        main(["--seed-edges", "x:1", "--loads", "1"])


def test_the_worker_quantile_is_over_the_load_window_only() -> None:
    """Seeding put 1,000 slow events in the histogram before the load; the load's own 100
    took under 0.5 s, so its p99 comes from the grown buckets alone."""

    def histogram(counts: tuple[float, float, float]) -> dict[str, float]:
        bounds = ("0.5", "5.0", "+Inf")
        return {f'{FRESHNESS}_bucket{{le="{b}"}}': c for b, c in zip(bounds, counts, strict=True)}

    before, after = histogram((0.0, 1000.0, 1000.0)), histogram((100.0, 1100.0, 1100.0))
    after["streamgnn_graph_edges"] = 7.0  # another metric is left out
    window = _delta(before, after, FRESHNESS)
    assert set(window) == set(before)
    assert histogram_quantile(0.99, window, FRESHNESS) == pytest.approx(0.495)
    assert histogram_quantile(0.99, after, FRESHNESS) > 4.0  # the whole run's, seeding in it


def test_the_report_names_the_worker_options_the_environment_sets_but_no_secret() -> None:
    environ = {
        "STREAMGNN_STEP_SCOPE": "local",
        "STREAMGNN_NUM_NEGATIVES": "1024",
        "STREAMGNN_KAFKA_SASL_PASSWORD": "hunter2",
        "PATH": "/usr/bin",
    }
    assert environment_settings(environ) == {
        "STREAMGNN_STEP_SCOPE": "local",
        "STREAMGNN_NUM_NEGATIVES": "1024",
    }
    assert environment_settings({"HOME": "/root"}) == {}


def test_cpu_seconds_start_at_zero_seconds_and_count_user_time() -> None:
    series = cpu_seconds([os.getpid()], interval_s=0.4)
    series.start()
    while len(series.samples) < 3:
        sum(range(10_000))  # user time, no syscall
    series.stop()
    times, values = zip(*series.samples, strict=True)
    assert times[0] < 0.2 and list(times) == sorted(times)  # read once as it started
    assert list(values) == sorted(values) and values[-1] > values[0]
    assert values[-1] <= time.process_time()


def test_cores_are_the_cpu_seconds_between_samples_over_their_time() -> None:
    used = [(0.0, 10.0), (5.0, 12.0), (10.0, 14.5), (20.0, 15.5)]
    assert cores(used) == [(5.0, 0.4), (10.0, 0.5), (20.0, 0.1)]
    assert cores(used[:1]) == []
