"""Neighbourhood baselines on the binary user x item history (every event type).

- ``itemknn``: cosine similarity between items' user sets,
  ``sim(i, j) = |U_i ∩ U_j| / sqrt(|U_i| |U_j|)``; each candidate item ``j`` keeps its
  :data:`NEIGHBOURS` most similar items, and a user's score for ``j`` is the sum of
  ``sim(i, j)`` over the user's items ``i`` among them.
- ``cooccur-recent``: a user's score for ``j`` is the number of users whose history holds
  both ``j`` and ``i``, summed over the user's last :data:`RECENT` distinct items ``i``.

Both rebuild their item x item matrix from the whole history before each chunk (a sparse
product, well under a second on 100,000 events) and score a block of users with one
sparse x dense product. Items with no neighbour score 0; ties go to the protocol's fixed
order.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from stream.evaluation.prequential import Method, empty_scores
from stream.events import Interaction
from stream.state.graph_store import DecayedGraphStore

NEIGHBOURS = 100
RECENT = 5


class _BinaryHistory(Method):
    """Keeps every user's distinct items, most recent last, with fixed user/item rows."""

    def __init__(self) -> None:
        self._user_items: dict[str, dict[int, None]] = {}  # insertion order = recency
        self._item_rows: dict[str, int] = {}
        self._matrix: Tensor | None = None  # items x items (sparse), transposed for scoring

    def warmup(self, events: Sequence[Interaction]) -> None:
        self._add(events)

    def start(self, store: DecayedGraphStore) -> None:
        self.prepare(store)

    def learn(self, store: DecayedGraphStore, batch: Sequence[Interaction]) -> None:
        self._add(batch)

    def _add(self, events: Sequence[Interaction]) -> None:
        for event in events:
            row = self._item_rows.setdefault(event.item_id, len(self._item_rows))
            items = self._user_items.setdefault(event.user_id, {})
            items.pop(row, None)
            items[row] = None

    def cooccurrence(self) -> Tensor:
        """``C[i, j]``: users whose history holds both items (sparse, coalesced)."""
        users: list[int] = []
        items: list[int] = []
        for u, rows in enumerate(self._user_items.values()):
            users.extend([u] * len(rows))
            items.extend(rows)
        n = len(self._item_rows)
        x = torch.sparse_coo_tensor(
            torch.tensor([users, items], dtype=torch.long),
            torch.ones(len(items)),
            (len(self._user_items), n),
            check_invariants=False,  # built from valid rows above
        ).coalesce()
        with warnings.catch_warnings():  # torch goes through CSR, which it calls "beta"
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            product: Tensor = torch.sparse.mm(x.t().coalesce(), x)
        return product.coalesce()

    def _profile(self, user: str) -> list[int]:
        """The item rows a user's score sums over."""
        return list(self._user_items.get(user, ()))

    def scores(self, users: Sequence[str], items: Sequence[str]) -> Tensor:
        if self._matrix is None:
            return empty_scores(len(users), len(items))
        n = len(self._item_rows)
        profile = torch.zeros(n, len(users))
        for column, user in enumerate(users):
            profile[self._profile(user), column] = 1.0
        by_row: Tensor = torch.sparse.mm(self._matrix, profile).T  # [users, my item rows]
        rows = torch.tensor([self._item_rows.get(i, -1) for i in items], dtype=torch.long)
        out = by_row[:, rows.clamp(min=0)]
        return out.masked_fill((rows < 0)[None, :], -torch.inf)


class ItemKNN(_BinaryHistory):
    """Cosine item-item neighbours; see the module docstring."""

    name = "itemknn"

    def __init__(self, neighbours: int = NEIGHBOURS) -> None:
        super().__init__()
        self.neighbours = neighbours

    def prepare(self, store: DecayedGraphStore) -> None:
        self._matrix = cosine_neighbours(self.cooccurrence(), self.neighbours)

    def describe(self) -> dict[str, Any]:
        return {"neighbours": self.neighbours, "similarity": "cosine, binary history"}


class CooccurRecent(_BinaryHistory):
    """Co-occurrence with the user's last few items; see the module docstring."""

    name = "cooccur-recent"

    def __init__(self, recent: int = RECENT) -> None:
        super().__init__()
        self.recent = recent

    def prepare(self, store: DecayedGraphStore) -> None:
        c = self.cooccurrence()
        i, j = c.indices()
        off = i != j
        self._matrix = torch.sparse_coo_tensor(
            c.indices()[:, off], c.values()[off], c.shape, check_invariants=False
        )

    def _profile(self, user: str) -> list[int]:
        return list(self._user_items.get(user, ()))[-self.recent :]

    def describe(self) -> dict[str, Any]:
        return {"recent_items": self.recent}


def cosine_neighbours(cooccurrence: Tensor, k: int) -> Tensor:
    """``W[i, j] = sim(i, j)`` where ``i`` is among ``j``'s ``k`` most similar items.

    Laid out so that ``W @ profile`` (``profile[i, u] = 1`` for user ``u``'s items) is
    the users' scores. ``cooccurrence`` is coalesced; its diagonal holds each item's
    user count.
    """
    i, j = cooccurrence.indices()
    counts = cooccurrence.values()
    degree = torch.zeros(cooccurrence.shape[0])
    diagonal = i == j
    degree[i[diagonal]] = counts[diagonal]
    off = ~diagonal
    i, j, sim = i[off], j[off], counts[off] / (degree[i[off]] * degree[j[off]]).sqrt()
    # group by candidate j, most similar first; keep each group's first k
    order = torch.argsort(sim, descending=True, stable=True)
    order = order[torch.argsort(j[order], stable=True)]
    j_sorted = j[order]
    starts = torch.cumsum(torch.bincount(j_sorted, minlength=cooccurrence.shape[1]), 0)
    starts = starts - torch.bincount(j_sorted, minlength=cooccurrence.shape[1])
    rank = torch.arange(order.numel()) - starts[j_sorted]
    keep = order[rank < k]
    # scores[u, j] = sum_i profile[i, u] * sim(i, j): the matrix is indexed [j, i]
    return torch.sparse_coo_tensor(
        torch.stack([j[keep], i[keep]]), sim[keep], cooccurrence.shape, check_invariants=False
    ).coalesce()
