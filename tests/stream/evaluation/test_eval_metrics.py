"""Ranking metrics: hand-derivable values and invariants."""

from __future__ import annotations

import math

import pytest
import torch

from stream.evaluation.metrics import (
    MetricTotals,
    TieBreak,
    metrics_from_ranks,
    query_metrics,
    ranks,
)


def test_perfect_ranking_scores_one_even_with_more_targets_than_k() -> None:
    scores = torch.arange(100, 0, -1, dtype=torch.float32)  # item 0 best
    for targets in ([0], [0, 1, 2], list(range(25))):
        q = query_metrics(scores, targets)
        assert (q.recall, q.ndcg, q.mrr) == (1.0, pytest.approx(1.0), 1.0)


@pytest.mark.parametrize("r", [1, 2, 5, 20, 21, 60])
def test_single_hit_at_rank_r(r: int) -> None:
    scores = torch.arange(100, 0, -1, dtype=torch.float32)
    q = query_metrics(scores, [r - 1])
    assert q.mrr == pytest.approx(1 / r)
    assert q.recall == (1.0 if r <= 20 else 0.0)
    assert q.ndcg == pytest.approx(1 / math.log2(r + 1) if r <= 20 else 0.0)


def test_excluded_items_do_not_take_ranks() -> None:
    scores = torch.arange(100, 0, -1, dtype=torch.float32)
    assert ranks(scores, [30], exclude=range(10)) == [21]
    assert query_metrics(scores, [30], exclude=range(11)).recall == 1.0
    assert ranks(scores, [3], exclude=[3]) == [0]  # the user already had it


def test_unscored_and_unknown_items_are_never_hits() -> None:
    scores = torch.tensor([1.0, float("-inf"), 0.5])
    assert ranks(scores, [1, 7, 2]) == [0, 0, 2]
    q = query_metrics(scores, [1])
    assert (q.recall, q.ndcg, q.mrr) == (0.0, 0.0, 0.0)


def test_two_targets_ideal_dcg_and_partial_recall() -> None:
    q = metrics_from_ranks([1, 3])
    assert q.recall == 1.0 and q.mrr == 1.0
    assert q.ndcg == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert metrics_from_ranks([2, 0]).recall == 0.5


def test_ties_are_broken_by_a_fixed_order_not_in_the_targets_favour() -> None:
    n = 1000
    flat = torch.zeros(n)  # a method that scores every item the same
    priority = TieBreak(seed=3).priority(n)
    got = ranks(flat, list(range(n)), tie_break=priority)
    assert sorted(got) == list(range(1, n + 1))  # a permutation: no shared first place
    assert TieBreak(seed=3).priority(n // 2).equal(priority[: n // 2])  # stable as n grows
    mean_recall = sum(query_metrics(flat, [t], tie_break=priority).recall for t in range(n)) / n
    assert mean_recall == pytest.approx(20 / n)


def test_metric_range_and_order_invariance() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        scores = torch.rand(50, generator=gen)
        targets = torch.randperm(50, generator=gen)[:5].tolist()
        q = query_metrics(scores, targets)
        assert 0.0 <= q.ndcg <= 1.0 and 0.0 <= q.recall <= 1.0 and 0.0 < q.mrr <= 1.0
        assert query_metrics(scores, targets[::-1]) == q
        # a monotone transform of the scores changes nothing
        assert query_metrics(scores * 3 + 1, targets) == q


def test_totals_average_queries() -> None:
    totals = MetricTotals()
    totals.add(metrics_from_ranks([1]))
    totals.add(metrics_from_ranks([0]))
    assert totals.means() == {"recall@20": 0.5, "ndcg@20": 0.5, "mrr": 0.5}
    with pytest.raises(ValueError, match="at least one target"):
        metrics_from_ranks([])
