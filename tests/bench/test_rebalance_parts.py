"""The rebalance benchmark's reading of a scraped trace (bench/rebalance.py)."""

from __future__ import annotations

import pytest

from bench.rebalance import Trace


def _trace(*rows: tuple[float, float, float]) -> Trace:
    return Trace(rows=list(rows))


def test_the_longest_stop_is_between_successive_increases_inside_the_window() -> None:
    trace = _trace((0, 0, 4), (1, 5, 4), (2, 5, 2), (3, 5, 2), (4, 9, 4), (5, 12, 4))
    assert trace.longest_gap(0.5, 4.5) == pytest.approx((3.0, 1.0))  # 1 -> 4, nothing between
    assert trace.longest_gap(0.5, 1.2) == pytest.approx((0.5, 0.5))  # the window's edges count
    assert trace.fewest_partitions(0.5, 4.5) == 2
    assert trace.fewest_partitions(4.5, 6) == 4


def test_a_stop_running_past_the_window_counts_to_its_end() -> None:
    trace = _trace((0, 0, 4), (1, 5, 0), (9, 5, 0))
    assert trace.longest_gap(0.5, 6.0) == pytest.approx((5.0, 1.0))
    assert trace.fewest_partitions(0.5, 6.0) == 0
