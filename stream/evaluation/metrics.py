"""Ranking metrics over all items: Recall@K, NDCG@K and MRR.

One *query* is a user in a chunk: ``targets`` are the items the user interacted with in
the chunk and did not have before; ``scores`` rank every item the system knows, with
the items the user already had excluded. Items a method has no score for (an item first
seen in this chunk) sit at the bottom and are never hits.

- ``Recall@K = |top K ∩ targets| / min(|targets|, K)`` (so a perfect ranking scores 1.0
  even with more than K targets);
- ``NDCG@K = DCG@K / ideal DCG@K`` with gain ``1 / log2(rank + 1)``;
- ``MRR = 1 / rank`` of the best-ranked target over the whole list (0 if none is ranked).

Ties are broken by one fixed random order of the items (:class:`TieBreak`), the same for
every method, so a method that gives many items the same score gains nothing from it.

>>> q = query_metrics(torch.tensor([0.9, 0.1, 0.5, 0.3]), targets=[2], exclude=[0], k=20)
>>> q.recall, q.ndcg, q.mrr     # item 0 excluded, so item 2 ranks first
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

K = 20
METRICS = ("recall@20", "ndcg@20", "mrr")
_BLOCK = 1024


@dataclass(frozen=True)
class QueryMetrics:
    recall: float
    ndcg: float
    mrr: float


class TieBreak:
    """A fixed random priority per item row; ties in score go to the higher priority."""

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._priority = torch.empty(0, dtype=torch.float64)

    def priority(self, n: int) -> Tensor:
        """Priorities in ``[0, 1)`` for rows ``0..n-1``; a row's value never changes."""
        blocks = [self._priority]
        have = self._priority.numel()
        while have < n:  # fixed-size blocks, each from its own seed: stable as n grows
            generator = torch.Generator().manual_seed(self._seed * 1_000_003 + have)
            blocks.append(torch.rand(_BLOCK, generator=generator, dtype=torch.float64))
            have += _BLOCK
        self._priority = torch.cat(blocks)
        return self._priority[:n]


def ranks(
    scores: Tensor,
    targets: Sequence[int],
    exclude: Iterable[int] = (),
    tie_break: Tensor | None = None,
) -> list[int]:
    """1-based rank of each target among the non-excluded items (0: not ranked).

    A target is unranked when its score is not finite (the method has no vector for it).
    An excluded target is unranked too: the user already had it, so it is no prediction.
    """
    n = scores.numel()
    scores = scores.detach().to("cpu", torch.float64)
    keep = torch.isfinite(scores)
    excluded = torch.tensor(sorted(set(exclude)), dtype=torch.long)
    if excluded.numel():
        keep[excluded[(excluded >= 0) & (excluded < n)]] = False
    priority = tie_break if tie_break is not None else torch.zeros(n, dtype=torch.float64)
    priority = priority[:n].to("cpu", torch.float64)
    wanted = torch.tensor(list(targets), dtype=torch.long)
    valid = (wanted >= 0) & (wanted < n)
    rows = wanted.clamp(0, max(n - 1, 0))
    if n == 0:
        return [0] * len(wanted)
    valid &= keep[rows]
    s, p = scores[rows, None], priority[rows, None]
    above = keep & ((scores > s) | ((scores == s) & (priority > p)))
    rank = above.sum(dim=1) + 1
    return torch.where(valid, rank, torch.zeros_like(rank)).tolist()


def metrics_from_ranks(target_ranks: Sequence[int], k: int = K) -> QueryMetrics:
    """Recall@k, NDCG@k and MRR of one query from its targets' ranks (0 = unranked).

    >>> metrics_from_ranks([3])
    QueryMetrics(recall=1.0, ndcg=0.5, mrr=0.3333333333333333)
    >>> metrics_from_ranks([1, 0]).recall, metrics_from_ranks([21]).recall
    (0.5, 0.0)
    """
    if not target_ranks:
        raise ValueError("a query needs at least one target")
    ranked = sorted(r for r in target_ranks if r > 0)
    hits = [r for r in ranked if r <= k]
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(target_ranks), k)))
    dcg = sum(1.0 / math.log2(r + 1) for r in hits)
    return QueryMetrics(
        recall=len(hits) / min(len(target_ranks), k),
        ndcg=dcg / ideal,
        mrr=1.0 / ranked[0] if ranked else 0.0,
    )


def query_metrics(
    scores: Tensor,
    targets: Sequence[int],
    exclude: Iterable[int] = (),
    k: int = K,
    tie_break: Tensor | None = None,
) -> QueryMetrics:
    """Metrics of one user's targets against a score for every item row."""
    return metrics_from_ranks(ranks(scores, targets, exclude, tie_break), k)


@dataclass
class MetricTotals:
    """Running sums over queries; :meth:`means` gives the averages."""

    queries: int = 0
    recall: float = 0.0
    ndcg: float = 0.0
    mrr: float = 0.0

    def add(self, q: QueryMetrics) -> None:
        self.queries += 1
        self.recall += q.recall
        self.ndcg += q.ndcg
        self.mrr += q.mrr

    def merge(self, other: MetricTotals) -> None:
        self.queries += other.queries
        self.recall += other.recall
        self.ndcg += other.ndcg
        self.mrr += other.mrr

    def means(self) -> dict[str, float]:
        n = max(self.queries, 1)
        return {"recall@20": self.recall / n, "ndcg@20": self.ndcg / n, "mrr": self.mrr / n}
