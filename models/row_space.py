"""Row-space graph helpers every message-passing encoder shares.

Users and items share one node space here: users ``0..U-1``, items ``U..U+I-1`` (``U``
the user capacity). These helpers turn a :class:`~models.base.BipartiteGraph` into
directed edges of that space, check rows against an encoder's tables, expand
neighbourhoods hop by hop and pick the top-k per group, all as vectorised tensor work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from models.base import BipartiteGraph, Encoder


class RowEdges(NamedTuple):
    """Directed edges in one node space: users ``0..U-1``, items ``U..U+I-1``, both ways."""

    src: Tensor
    dst: Tensor
    relations: Tensor
    weights: Tensor
    times: Tensor


def check_rows(graph: BipartiteGraph, users: Tensor, items: Tensor, encoder: Encoder) -> None:
    """Raise ``ValueError`` naming the first row or graph size outside the tables."""
    if graph.num_users > encoder.num_users or graph.num_items > encoder.num_items:
        raise ValueError(
            f"graph has {graph.num_users} users / {graph.num_items} items but the encoder "
            f"holds {encoder.num_users} / {encoder.num_items} rows; call grow() first"
        )
    for name, rows, size in (
        ("user", users, encoder.num_users),
        ("item", items, encoder.num_items),
        ("graph user", graph.users, encoder.num_users),
        ("graph item", graph.items, encoder.num_items),
    ):
        if rows.dtype != torch.int64 or rows.dim() != 1:
            raise ValueError(
                f"{name} rows must be a 1-D int64 tensor, got {rows.dtype} {rows.dim()}-D"
            )
        bad = rows[(rows < 0) | (rows >= size)]
        if bad.numel():
            raise ValueError(f"{name} row {int(bad[0])} is outside 0..{size - 1}")
    bad_rel = graph.relations[(graph.relations < 0) | (graph.relations >= encoder.num_relations)]
    if bad_rel.numel():
        raise ValueError(f"relation {int(bad_rel[0])} is outside 0..{encoder.num_relations - 1}")


def row_edges(graph: BipartiteGraph, num_users: int) -> RowEdges:
    """The graph's edges in both directions, items offset by ``num_users`` (capacity)."""
    users, items = graph.users, graph.items + num_users
    return RowEdges(
        torch.cat([users, items]),
        torch.cat([items, users]),
        graph.relations.repeat(2),
        graph.weights.float().repeat(2),
        graph.times.repeat(2),
    )


def smallest_k_per_group(group: Tensor, score: Tensor, k: int) -> Tensor:
    """Positions of the ``k`` smallest scores within each group (ties: earlier position).

    >>> smallest_k_per_group(torch.tensor([0, 1, 0, 0]), torch.tensor([3.0, 1.0, 1.0, 2.0]), 2)
    tensor([2, 3, 1])
    """
    order = torch.argsort(score, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    _, counts = torch.unique_consecutive(group[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=order.device) - starts.repeat_interleave(counts)
    return order[rank < k]


def expand_hops(
    targets: Tensor, num_nodes: int, hops: int, select: Callable[[Tensor], tuple[Tensor, ...]]
) -> tuple[Tensor, ...]:
    """Union of ``select(nodes)`` over ``hops`` rounds, each node's neighbourhood taken once.

    ``select`` gets the sorted node ids whose in-edges are needed and returns edge columns,
    source ids first; round ``h + 1`` asks for the sources found in round ``h``. ``hops``
    rounds are what an ``hops``-layer network needs for the targets' outputs.
    """
    done = torch.zeros(num_nodes, dtype=torch.bool, device=targets.device)
    frontier = torch.unique(targets)
    parts = []
    for _ in range(hops):
        frontier = frontier[~done[frontier]]
        done[frontier] = True
        part = select(frontier)
        parts.append(part)
        frontier = torch.unique(part[0])
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def node_rows(nodes: Tensor, num_users: int, users: Tensor, items: Tensor) -> Tensor:
    """Rows of ``users``/``items`` for sorted node ids (users first, then items)."""
    split = int((nodes < num_users).sum())
    return torch.cat([users[nodes[:split]], items[nodes[split:] - num_users]])
