"""Decayed popularity: the baseline every learnt method has to beat.

An item's score is the sum of the decayed weights of its edges, read from the same
:class:`~stream.state.graph_store.DecayedGraphStore` the models learn from, at the store's
watermark. It is the same for every user (the protocol excludes what each user had).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from stream.behaviours import Behaviour
from stream.evaluation.prequential import Method
from stream.state.decay import weight_at
from stream.state.graph_store import DecayedGraphStore
from stream.state.keys import ITEM, USER


class DecayedPopularity(Method):
    """Items ranked by their total decayed weight in the store (same for every user)."""

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
        row = torch.tensor([self._weight.get(i, 0.0) for i in items], dtype=torch.float64)
        return row.expand(len(users), len(items))
