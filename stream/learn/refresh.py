"""After a step: re-embed the rows that can have moved, and pick those to publish.

After a full step that is every live row: dense Adam's momentum moves rows that got no
gradient, and new edges and decay renormalise the adjacency everywhere. After a local step
(:mod:`stream.learn.local_step`) it is, with a fan-out cap, its seeds (positives' rows and
rows with new events) plus the next ``sweep_rows`` rows of each kind (round robin), and
uncapped the rows within ``layers`` hops of a row the step moved or of a new edge; in both
plus rows new since the last refresh or reset by eviction (even those with no edge). The
other rows keep their vectors. :class:`PublishPolicy` then picks,
among the re-embedded and the pending rows, the ``touched`` ones (new events) always and
the others once they moved past the threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from models.base import BipartiteGraph, PartialSums
from models.ids import KINDS
from stream.learn.local_step import LocalStep

if TYPE_CHECKING:
    from stream.learn.trainer import IncrementalTrainer


def refresh(
    trainer: IncrementalTrainer,
    graph: Callable[[], BipartiteGraph],
    touched: Mapping[str, Tensor] | None = None,
    local: LocalStep | None = None,
) -> dict[str, Tensor]:
    """Re-embed into the trainer's latest vectors; the rows to publish, by kind
    (``graph`` builds the whole graph view, called only for a whole-graph re-embedding)."""
    t = trainer
    candidates: dict[str, Tensor | None] = {k: None for k in KINDS}
    rows = None if local is None or t._latest is None else reembed(t, local, touched)
    if rows is None:
        t._latest, t._partial = embed_all(t, graph(), t.keep_partial_sums)
        latest = t._latest
    else:
        candidates = dict(rows)
        assert t._latest is not None
        latest = t._latest
        t._partial = None  # the rows the step moved pass on other sums now
    t.reembedded = dict(candidates)
    t._reset_rows = {k: [] for k in KINDS}
    return {
        kind: t.publish.select(
            kind, vectors, None if touched is None else touched[kind], candidates[kind]
        )
        for kind, vectors in latest.items()
    }


def embed_all(
    trainer: IncrementalTrainer, graph: BipartiteGraph, with_partial: bool = False
) -> tuple[dict[str, Tensor], PartialSums | None]:
    """Every live row's vector, by kind (one full propagation), and, ``with_partial``, its
    partial sums (None without, or when the encoder has no one-hop re-embedding; see
    :mod:`stream.learn.reflect`): two more tables, left out unless a reflect reads them."""
    t = trainer
    users = torch.arange(t.registry.live("user"), device=t.device)
    items = torch.arange(t.registry.live("item"), device=t.device)
    partial = None
    with t._amp.autocast():
        if with_partial:
            user_vec, item_vec, partial = t.encoder.embed_with_partial(graph, users, items)
        else:
            user_vec, item_vec = t.encoder.embed(graph, users, items)
    return dict(zip(KINDS, folded(t, user_vec, item_vec, items), strict=True)), partial


def folded(
    trainer: IncrementalTrainer, user_vec: Tensor, item_vec: Tensor, items: Tensor
) -> tuple[Tensor, Tensor]:
    """The vectors a ranker gets: the prior folded in, at the trend of now (computed for
    these items only: a local re-embedding's are a few of a large catalogue)."""
    prior = trainer.score_prior
    table = prior.table(trainer.encoder.num_items, items) if prior is not None else None
    at = torch.arange(items.numel(), device=items.device)  # row j of the table is items[j]
    with torch.no_grad():
        return trainer._objective.with_prior(
            user_vec.float(),
            item_vec.float(),
            at,
            None if table is None else (table, torch.zeros_like(items)),
        )


def reembed(
    trainer: IncrementalTrainer, local: LocalStep, touched: Mapping[str, Tensor] | None
) -> dict[str, Tensor] | None:
    """Re-embed, into the latest vectors, the rows a local step can have moved; returns
    them by kind (None: re-embed every row instead, see :meth:`LocalStep.to_reembed` and
    :meth:`LocalStep.embed`)."""
    t = trainer
    latest = t._latest
    assert latest is not None
    live = {k: t.registry.live(k) for k in KINDS}
    none = torch.zeros(0, dtype=torch.long)
    extra = {
        k: torch.cat(
            [
                torch.arange(latest[k].shape[0], live[k]),
                joined_rows(t._reset_rows[k]),
                touched[k].cpu() if touched is not None else none,
            ]
        ).to(t.device)
        for k in KINDS
    }
    if local.bounded:
        for kind in KINDS:
            extra[kind] = torch.cat([extra[kind], swept(t, kind, live[kind]).to(t.device)])
    nodes = local.to_reembed(extra["user"], extra["item"])
    if nodes is None:
        return None
    with t._amp.autocast():
        embedded = local.embed(t.encoder, nodes)
    if embedded is None:
        return None
    users, items, user_vec, item_vec = embedded
    rows = {"user": users, "item": items}
    write_rows(t, rows, folded(t, user_vec, item_vec, items))
    return rows


def joined_rows(parts: Sequence[Tensor]) -> Tensor:
    """Row lists kept one per call (reset rows, reflected users) as one tensor (empty for
    none)."""
    return torch.cat([torch.zeros(0, dtype=torch.long), *(rows.cpu() for rows in parts)])


def write_rows(
    trainer: IncrementalTrainer, rows: Mapping[str, Tensor], vectors: tuple[Tensor, Tensor]
) -> None:
    """Put these rows' new vectors (users', items') into the latest vectors, which grow to
    the live rows first."""
    t = trainer
    latest = t._latest
    assert latest is not None
    for kind, new in zip(KINDS, vectors, strict=True):
        table = latest[kind]
        live = t.registry.live(kind)
        if table.shape[0] < live:
            table = torch.cat([table, table.new_zeros(live - table.shape[0], table.shape[1])])
        table[rows[kind]] = new
        latest[kind] = table


def swept(trainer: IncrementalTrainer, kind: str, live: int) -> Tensor:
    """The next ``sweep_rows`` live rows of ``kind`` after the last call's, wrapping
    around: re-embedded by a bounded local step whatever it trained, so no cached vector
    is more than ``live / sweep_rows`` calls old."""
    count = min(trainer.settings.sweep_rows, live)
    start = trainer.sweep_cursor[kind] % live if live else 0
    trainer.sweep_cursor[kind] = (start + count) % live if live else 0
    return (start + torch.arange(count)) % max(live, 1)
