"""Popularity baselines: the lists every learnt method has to beat. Same for every user
(the protocol excludes what each user had), ties broken by the protocol's fixed order.

- ``popularity``: an item's score is the sum of its edges' decayed weights, read from the
  same :class:`~stream.state.graph_store.DecayedGraphStore` the models learn from, at the
  store's watermark.
- ``popularity-all``: how many events each item has had, over all history.
- ``popularity-recent``: how many events each item has had among the last ``window``
  events before the chunk (a trending list). The window is chosen on the warm-up only
  (:mod:`stream.evaluation.validation`) from :data:`WINDOW_FRACTIONS` of the warm-up's
  event count; counting events rather than time keeps the window meaningful when the
  event rate swings (MovieLens users rate in bursts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from stream.behaviours import Behaviour
from stream.evaluation.prequential import Method
from stream.evaluation.queries import Scorer
from stream.evaluation.validation import choose, split_warmup
from stream.events import Interaction
from stream.settings.commands import WINDOW_FRACTIONS
from stream.state.decay import weight_at
from stream.state.graph_store import DecayedGraphStore
from stream.state.keys import ITEM, USER


def _ranked(weight: Mapping[str, float], users: int, items: Sequence[str]) -> Tensor:
    row = torch.tensor([weight.get(i, 0.0) for i in items], dtype=torch.float64)
    return row.expand(users, len(items))


def _counts(events: Sequence[Interaction]) -> dict[str, float]:
    return {item: float(n) for item, n in Counter(e.item_id for e in events).items()}


def _scorer(weight: Mapping[str, float]) -> Scorer:
    return lambda users, items: _ranked(weight, len(users), items)


class DecayedPopularity(Method):
    """Items ranked by their total decayed weight in the store."""

    name = "popularity"

    def __init__(self, behaviours: Mapping[str, Behaviour]) -> None:
        self._half_life = {name: b.half_life_ms for name, b in behaviours.items()}
        self._weight: dict[str, float] = {}

    def start(self, store: DecayedGraphStore) -> None:
        self.prepare(store)

    def prepare(self, store: DecayedGraphStore) -> None:
        now = store.watermark() or 0
        weight: dict[str, float] = {}
        for edge in store.edges():
            if edge.src_kind == USER and edge.dst_kind == ITEM:
                w = weight_at(edge.state, now, self._half_life[edge.relation])
                weight[edge.dst_id] = weight.get(edge.dst_id, 0.0) + w
        self._weight = weight

    def scores(self, users: Sequence[str], items: Sequence[str]) -> Tensor:
        return _ranked(self._weight, len(users), items)


class AllTimePopularity(Method):
    """Items ranked by their number of events over all history."""

    name = "popularity-all"

    def __init__(self) -> None:
        self._count: Counter[str] = Counter()

    def warmup(self, events: Sequence[Interaction]) -> None:
        self._count.update(e.item_id for e in events)

    def start(self, store: DecayedGraphStore) -> None:
        """Nothing to do: the counts came with :meth:`warmup`."""

    def learn(self, store: DecayedGraphStore, batch: Sequence[Interaction]) -> None:
        self._count.update(e.item_id for e in batch)

    def scores(self, users: Sequence[str], items: Sequence[str]) -> Tensor:
        row = torch.tensor([self._count[i] for i in items], dtype=torch.float64)
        return row.expand(len(users), len(items))


class RecentPopularity(Method):
    """Items ranked by their number of events among the last ``window`` events.

    Args:
        window: events counted; None chooses it on the warm-up (see the module docstring).
        target_types, seed: the protocol's, so the validation queries are its queries.
        fractions: the windows to choose from, as fractions of the warm-up's events.
    """

    name = "popularity-recent"

    def __init__(
        self,
        window: int | None = None,
        target_types: Collection[str] | None = None,
        seed: int = 0,
        fractions: Sequence[float] = WINDOW_FRACTIONS,
    ) -> None:
        self.window = window
        self._fractions = tuple(fractions)
        self._target_types = target_types
        self._seed = seed
        self._events: list[Interaction] = []
        self._weight: dict[str, float] = {}
        self._tuning: dict[str, Any] = {}

    def warmup(self, events: Sequence[Interaction]) -> None:
        self._events.extend(events)
        if self.window is None:
            self.window, self._tuning = choose_window(
                events, self._target_types, self._seed, self._fractions
            )

    def start(self, store: DecayedGraphStore) -> None:
        self.prepare(store)

    def prepare(self, store: DecayedGraphStore) -> None:
        if self.window is None:
            raise RuntimeError("popularity-recent has no window: warmup() was not called")
        self._weight = _counts(self._events[-self.window :])

    def learn(self, store: DecayedGraphStore, batch: Sequence[Interaction]) -> None:
        self._events.extend(batch)

    def scores(self, users: Sequence[str], items: Sequence[str]) -> Tensor:
        return _ranked(self._weight, len(users), items)

    def describe(self) -> dict[str, Any]:
        return {"window_events": self.window, **self._tuning}


def choose_window(
    warmup: Sequence[Interaction],
    target_types: Collection[str] | None = None,
    seed: int = 0,
    fractions: Sequence[float] = WINDOW_FRACTIONS,
) -> tuple[int, dict[str, Any]]:
    """The window (in events) with the best Recall@20 on the warm-up's held-out chunks."""
    validation = split_warmup(warmup, target_types, seed)
    windows = sorted({max(1, round(f * len(warmup))) for f in fractions})

    def recall(window: int) -> float:
        return validation.recall(lambda _, seen: _scorer(_counts(seen[-window:])))

    window, record = choose(windows, recall)
    record["window_fractions"] = list(fractions)
    record["validation_queries"] = validation.queries()
    return window, record
