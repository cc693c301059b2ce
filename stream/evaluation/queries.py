"""The queries of the protocol and how a method's scores are turned into metrics.

A query is a user in a chunk who has history (at least one earlier event of any type)
and who takes, in the chunk, items they did not have; those items are the targets. With
``target_types`` set (e.g. ``{"cart", "purchase"}``) only events of those types make
targets, while every event still counts as history. Every item seen so far is ranked,
the user's earlier items excluded (:mod:`stream.evaluation.metrics`).

The protocol (:mod:`stream.evaluation.prequential`) and the warm-up validation
(:mod:`stream.evaluation.validation`) both score through :func:`score_queries`, so a
window or an epoch budget is chosen on exactly the queries it is later judged on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from torch import Tensor

from stream.evaluation.metrics import K, QueryMetrics, TieBreak, query_metrics
from stream.events import Interaction

Scorer = Callable[[Sequence[str], Sequence[str]], Tensor]
"""``scorer(users, items)``: a ``[len(users), len(items)]`` score matrix."""

_BLOCK = 256  # users scored per call


@dataclass(frozen=True)
class Query:
    user: str
    targets: list[str]  # first-seen order
    prior_events: int  # the user's events before the chunk (cold: fewer than 5)


class History:
    """What the stream has shown so far: each user's items and events, every item in order."""

    def __init__(self, target_types: Collection[str] | None = None) -> None:
        self.users: dict[str, set[str]] = {}
        self.events: dict[str, int] = {}
        self.item_rows: dict[str, int] = {}
        self.target_types = None if target_types is None else frozenset(target_types)

    def add(self, events: Sequence[Interaction]) -> None:
        for event in events:
            self.users.setdefault(event.user_id, set()).add(event.item_id)
            self.events[event.user_id] = self.events.get(event.user_id, 0) + 1
            self.item_rows.setdefault(event.item_id, len(self.item_rows))

    def is_target(self, event: Interaction) -> bool:
        return self.target_types is None or event.event_type in self.target_types

    def queries(self, chunk: Sequence[Interaction]) -> list[Query]:
        """Users with history and the items they newly take in the chunk (first-seen order)."""
        targets: dict[str, dict[str, None]] = {}
        for event in chunk:
            had = self.users.get(event.user_id)
            if had is not None and event.item_id not in had and self.is_target(event):
                targets.setdefault(event.user_id, {})[event.item_id] = None
        return [Query(user, list(items), self.events[user]) for user, items in targets.items()]

    def unseen_targets(self, queries: Sequence[Query]) -> int:
        """Targets first seen in the chunk: no method can rank them."""
        return sum(t not in self.item_rows for q in queries for t in q.targets)


def score_queries(
    name: str, scorer: Scorer, queries: Sequence[Query], history: History, tie_break: TieBreak
) -> list[QueryMetrics]:
    """Each query's metrics under ``scorer``, over every item in ``history``."""
    if not queries:
        return []
    items = list(history.item_rows)  # every item seen so far; row = first-seen order
    priority = tie_break.priority(len(items))
    out: list[QueryMetrics] = []
    for begin in range(0, len(queries), _BLOCK):
        block = queries[begin : begin + _BLOCK]
        scores = scorer([q.user for q in block], items)
        if scores.shape != (len(block), len(items)):
            raise ValueError(
                f"method {name!r} returned scores of shape {tuple(scores.shape)}, "
                f"expected {(len(block), len(items))}"
            )
        for row, query in enumerate(block):
            target_rows = [history.item_rows.get(t, -1) for t in query.targets]
            seen = [history.item_rows[i] for i in history.users[query.user]]
            out.append(query_metrics(scores[row], target_rows, seen, K, priority))
    return out
