"""Start-up: rebuild the trainer's graph mirror from the store (one scan), and read back
what it holds as interactions (:func:`stored_interactions`, a restart's catch-up).

Ids the registry already holds (e.g. from a loaded checkpoint) keep their rows and last-seen
times; new ones are added oldest edge first. Latest vectors loaded from a checkpoint are kept
while no row is new (the next steps re-embed what the store holds beyond them); otherwise the
next step re-embeds every row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from models.ids import KINDS
from stream.events import Interaction
from stream.learn.graph_mirror import store_user_item_edges
from stream.state.graph_store import DecayedGraphStore

if TYPE_CHECKING:
    from stream.learn.trainer import IncrementalTrainer

_BOOTSTRAP_CHUNK = 8192


def rebuild_mirror(trainer: IncrementalTrainer, store: DecayedGraphStore) -> None:
    """Rebuild ``trainer``'s mirror from ``store``, registering unknown ids."""
    t = trainer
    t.mirror = t.new_mirror()
    # No trend yet (no checkpoint): each stored edge counts its weight at its time.
    prior = t.score_prior
    counting = prior is not None and prior.trend.is_empty()
    edges = sorted(store_user_item_edges(store), key=lambda e: e.state[1])
    for chunk in _chunks(edges, _BOOTSTRAP_CHUNK):
        now = chunk[-1].state[1]
        users = rows_or_assign(t, "user", [e.user_id for e in chunk], now)
        items = rows_or_assign(t, "item", [e.item_id for e in chunk], now)
        t._absorb_evictions()
        t.mirror.load_edges(chunk, users, items)
        times = torch.tensor([e.state[1] for e in chunk], dtype=torch.long)
        t._note_event_times(users, items, times)
        if counting and prior is not None:
            mass = torch.tensor([e.state[0] for e in chunk], dtype=torch.float64)
            prior.count(items, times, mass)
    if counting and prior is not None:
        prior.from_store = True
    for (_, partition), (_, watermark) in store.positions().items():
        if watermark >= 0:  # each partition's own stream time, never the newest one
            t.mirror.advance(watermark, [partition])
    t._grow()
    t._partial = None  # the rebuilt graph is not the one they were propagated on
    latest = t._latest
    if latest is not None and any(latest[k].shape[0] != t.registry.live(k) for k in KINDS):
        t._latest = None


def stored_interactions(
    trainer: IncrementalTrainer, newer_than_ms: int | None
) -> list[Interaction]:
    """The mirror's edges whose newest event is after ``newer_than_ms`` (all: ``None``),
    one interaction each at that event's time."""
    users, items, relations, times = trainer.mirror.edges_since(newer_than_ms)
    names = trainer.mirror.relation_names
    return [
        Interaction(user, item, names[r], t)
        for user, item, r, t in zip(
            trainer.registry.ids("user", users),
            trainer.registry.ids("item", items),
            relations.tolist(),
            times.tolist(),
            strict=True,
        )
    ]


def rows_or_assign(trainer: IncrementalTrainer, kind: str, ids: list[str], now: int) -> Tensor:
    rows = trainer.registry.rows(kind, ids)
    missing = (rows < 0).nonzero().flatten()
    if missing.numel():
        rows[missing] = trainer.registry.assign(kind, [ids[i] for i in missing.tolist()], now)
    return rows


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
