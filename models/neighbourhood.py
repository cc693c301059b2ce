"""Sampled L-hop neighbourhoods, so a training step costs what its batch touches.

Users and items share one node space: users ``0..U-1``, items ``U..U+I-1`` (``U`` the
encoder's user capacity, as in :mod:`models.row_space`). A :class:`NeighbourSource` gives
a node's incident edges and its weighted degree, the sum of its decayed edge weights over
the *whole* graph: an encoder normalising by degree (LightGCN's ``D^-1/2 A D^-1/2``) gets
the same coefficients on a neighbourhood as on the full graph. :class:`GraphIndex` is one
built from a :class:`~models.base.BipartiteGraph` (a CSR in both directions); the trainer's
graph mirror keeps another incrementally (:mod:`stream.learn.graph_view`).

:func:`sample_neighbourhood` expands seeds hop by hop (each node's in-edges taken once) into
a message-flow graph: an edge ``src -> dst`` carries ``src``'s value into ``dst`` at every
layer. A node with more incident edges than ``fanout`` gets ``fanout`` of them: a window of
consecutive CSR positions starting at a uniform offset, wrapping around, so every edge is in
with probability ``fanout / count`` at O(fanout) cost and none twice; each is scaled by
``count / fanout``, so the sampled sum is an unbiased estimate of the full one. With
``fanout`` 0 (or at least every degree) the neighbourhood holds every edge within ``hops``
of the seeds, and an ``hops``-layer propagation over it gives the seeds exactly their
full-graph values.

>>> import torch
>>> from models.base import BipartiteGraph
>>> g = BipartiteGraph(2, 2, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]),
...                    torch.zeros(3, dtype=torch.long), torch.tensor([1.0, 2.0, 3.0]),
...                    torch.zeros(3, dtype=torch.long), 0)
>>> index = GraphIndex.build(g, num_users=2)
>>> index.degree.tolist()              # users 0, 1; items 0, 1 (nodes 2, 3)
[3.0, 3.0, 1.0, 5.0]
>>> hood = sample_neighbourhood(index, torch.tensor([0]), hops=1, fanout=0)
>>> assert hood is not None
>>> hood.nodes.tolist(), hood.nodes[hood.src].tolist(), hood.nodes[hood.dst].tolist()
([0, 2, 3], [2, 3], [0, 0])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from models.base import BipartiteGraph


@dataclass(frozen=True)
class Draw:
    """Incident edges drawn for some nodes: edge ``k`` joins ``owner[k]`` to
    ``neighbour[k]`` (node ids) with ``weight[k]`` (times its sampling scale)."""

    owner: Tensor
    neighbour: Tensor
    weight: Tensor  # float32
    relation: Tensor


class NeighbourSource(ABC):
    """What :func:`sample_neighbourhood` reads: incident edges and full weighted degrees."""

    num_users: int  # user capacity: item ``i`` is node ``num_users + i``

    @property
    @abstractmethod
    def num_nodes(self) -> int: ...

    @abstractmethod
    def node_degree(self, nodes: Tensor) -> Tensor:
        """float32 sum of each node's edge weights over the whole graph."""

    @abstractmethod
    def counts(self, nodes: Tensor, fanout: int) -> Tensor:
        """At least how many edges :meth:`draw` returns per node (an upper bound)."""

    @abstractmethod
    def draw(self, nodes: Tensor, fanout: int, generator: torch.Generator | None) -> Draw:
        """Each node's incident edges: all of them (``fanout`` 0 or at least the node's
        count), or ``fanout`` of them scaled so the weighted sum stays unbiased."""

    def mask(self, nodes: Tensor) -> Tensor:
        """``[N]`` bool, true at ``nodes``."""
        return _flags(nodes, self.num_nodes)

    def within(self, seeds: Tensor, hops: int, limit: int | None = None) -> Tensor | None:
        """Sorted nodes at most ``hops`` edges away from ``seeds`` (every edge, no cap);
        None once more than ``limit`` nodes are reached."""
        seen = self.mask(seeds)
        frontier = seen.nonzero().flatten()
        for _ in range(hops):
            # give up before gathering a hop that may pass the limit (its edges bound what it
            # reaches): the caller's way past the limit gives the same result, cheaper
            if limit is not None and int(seen.sum()) + int(self.counts(frontier, 0).sum()) > limit:
                return None
            reached = self.mask(self.draw(frontier, 0, None).neighbour)
            frontier = (reached & ~seen).nonzero().flatten()
            seen |= reached
        nodes = seen.nonzero().flatten()
        return None if limit is not None and nodes.numel() > limit else nodes


@dataclass(frozen=True)
class GraphIndex(NeighbourSource):
    """Both-direction CSR of a graph in node space, with full weighted degrees."""

    graph: BipartiteGraph
    num_users: int  # user capacity: item ``i`` is node ``num_users + i``
    crow: Tensor  # int64 [N + 1]: node ``v``'s incident edges are ``crow[v]:crow[v + 1]``
    neighbour: Tensor  # int64 [2E]: the other end of each incident edge
    edge: Tensor  # int64 [2E]: the edge's position in ``graph``
    degree: Tensor  # float32 [N]: sum of the node's edge weights

    @property
    def num_nodes(self) -> int:
        return int(self.crow.numel()) - 1

    @classmethod
    def build(
        cls, graph: BipartiteGraph, num_users: int, num_items: int | None = None
    ) -> GraphIndex:
        """Index ``graph`` over ``num_users`` + ``num_items`` nodes (default: the graph's)."""
        items_cap = graph.num_items if num_items is None else num_items
        num_nodes = num_users + items_cap
        users, items = graph.users, graph.items
        # user ends first, then item ends: each side sorted on its own is the whole order
        # (a snapshot comes sorted by user already)
        edges = torch.arange(graph.num_edges, device=users.device)
        by_user = edges if _ascending(users) else torch.argsort(users, stable=True)
        by_item = torch.argsort(items, stable=True)
        crow = torch.zeros(num_nodes + 1, dtype=torch.long, device=users.device)
        crow[1:] = torch.cat(
            [torch.bincount(users, minlength=num_users), torch.bincount(items, minlength=items_cap)]
        ).cumsum(0)
        weights = graph.weights.float()
        degree = torch.cat(
            [
                weights.new_zeros(num_users).index_add(0, users, weights),
                weights.new_zeros(items_cap).index_add(0, items, weights),
            ]
        )
        neighbour = torch.cat([items[by_user] + num_users, users[by_item]])
        return cls(graph, num_users, crow, neighbour, torch.cat([by_user, by_item]), degree)

    def node_degree(self, nodes: Tensor) -> Tensor:
        return self.degree[nodes]

    def counts(self, nodes: Tensor, fanout: int) -> Tensor:
        count = self.crow[nodes + 1] - self.crow[nodes]
        return count if fanout <= 0 else count.clamp(max=fanout)

    def draw(self, nodes: Tensor, fanout: int, generator: torch.Generator | None) -> Draw:
        start = self.crow[nodes]
        owner, position, scale = window_draw(
            nodes, start, self.crow[nodes + 1] - start, fanout, generator
        )
        edge = self.edge[position]
        return Draw(
            owner,
            self.neighbour[position],
            self.graph.weights[edge].float() * scale,
            self.graph.relations[edge],
        )


@dataclass(frozen=True)
class Neighbourhood:
    """A sampled message-flow graph around seed nodes, relabelled to local positions.

    ``nodes[k]`` is local node ``k`` (sorted node ids: users first, then items); an edge
    ``src[e] -> dst[e]`` has the decayed ``weight[e]`` (times its sampling scale) and ends
    with full-graph weighted degrees ``degree[src[e]]``, ``degree[dst[e]]``. Edges come in
    hop order: ``hop_ends[h]`` edges were drawn within ``h + 1`` hops of the seeds (the
    last layer of a propagation reads the seeds' own edges only, the first hop's).
    """

    num_users: int  # user capacity of the node space
    nodes: Tensor
    src: Tensor
    dst: Tensor
    weight: Tensor
    relation: Tensor
    degree: Tensor
    hop_ends: tuple[int, ...] = ()

    @property
    def num_edges(self) -> int:
        return int(self.src.numel())

    def within_hops(self, hops: int) -> int:
        """Edges drawn within ``hops`` hops of the seeds (a prefix of the edges)."""
        if hops <= 0:
            return 0
        return self.hop_ends[hops - 1] if hops <= len(self.hop_ends) else self.num_edges

    def to(self, device: torch.device) -> Neighbourhood:
        """The same neighbourhood on ``device``."""
        moved = {
            name: getattr(self, name).to(device)
            for name in ("nodes", "src", "dst", "weight", "relation", "degree")
        }
        return Neighbourhood(num_users=self.num_users, hop_ends=self.hop_ends, **moved)

    def local(self, nodes: Tensor) -> Tensor:
        """Local positions of these node ids (each must be in the neighbourhood)."""
        position = torch.searchsorted(self.nodes, nodes)
        if position.numel() and not bool(
            (self.nodes[position.clamp(max=self.nodes.numel() - 1)] == nodes).all()
        ):
            raise ValueError("a node asked for is not in the neighbourhood")
        return position

    def rows(self) -> tuple[Tensor, Tensor]:
        """``(user rows, item rows)`` of the neighbourhood's nodes, in local order."""
        split = int((self.nodes < self.num_users).sum())
        return self.nodes[:split], self.nodes[split:] - self.num_users


def sample_neighbourhood(
    index: NeighbourSource,
    seeds: Tensor,
    hops: int,
    fanout: int,
    generator: torch.Generator | None = None,
    max_edges: int | None = None,
) -> Neighbourhood | None:
    """The ``hops``-hop message-flow graph of ``seeds`` (node ids), ``fanout`` edges per
    node at most (0: all); see the module docstring. None once it holds more than
    ``max_edges`` edges (the caller has a cheaper way then)."""
    device = seeds.device
    done = torch.zeros(index.num_nodes, dtype=torch.bool, device=device)
    frontier = torch.unique(seeds)
    reached = [frontier]
    parts: list[Draw] = []
    drawn = 0
    hop_ends: list[int] = []
    for hop in range(hops):
        frontier = frontier[~done[frontier]]
        done[frontier] = True
        if frontier.numel() == 0:
            break
        # what this hop will draw at most, known before drawing
        if max_edges is not None and drawn + int(index.counts(frontier, fanout).sum()) > max_edges:
            return None
        parts.append(index.draw(frontier, fanout, generator))
        drawn += int(parts[-1].owner.numel())
        hop_ends.append(drawn)
        reached.append(parts[-1].neighbour)
        if hop + 1 < hops:  # a frontier only where another hop draws from it
            frontier = node_set(parts[-1].neighbour, index.num_nodes)
    nodes = node_set(torch.cat(reached), index.num_nodes)
    # Only the nodes' own entries are written and read (every owner and neighbour is one
    # of them), so the node-space table is left unfilled: filling it was a pass over every
    # node (17 MB at 2.1M nodes) in each sample.
    local = torch.empty((index.num_nodes,), dtype=torch.long, device=device)
    local[nodes] = torch.arange(nodes.numel(), device=device)
    if parts:
        owner, neighbour, weight, relation = (
            torch.cat([getattr(part, name) for part in parts])
            for name in ("owner", "neighbour", "weight", "relation")
        )
    else:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        owner, neighbour, weight, relation = empty, empty, torch.zeros(0, device=device), empty
    return Neighbourhood(
        num_users=index.num_users,
        nodes=nodes,
        src=local.index_select(0, neighbour),  # advanced indexing's gather is ~4x slower
        dst=local.index_select(0, owner),
        weight=weight,
        relation=relation,
        degree=index.node_degree(nodes),
        hop_ends=tuple(hop_ends),
    )


def node_set(nodes: Tensor, num_nodes: int) -> Tensor:
    """The distinct ``nodes``, sorted: a scan of every node's flag while the node space is
    small beside them, else a sort of them (~1 ns a node against ~15 ns a candidate on the
    CPU: at 2M nodes and 40k candidates the scan costs 2.1 ms, the sort 0.6 ms)."""
    if num_nodes > _SCAN_PER_CANDIDATE * nodes.numel():
        distinct: Tensor = torch.unique(nodes)
        return distinct
    return _flags(nodes, num_nodes).nonzero().flatten()


def _flags(nodes: Tensor, num_nodes: int) -> Tensor:
    out = torch.zeros(num_nodes, dtype=torch.bool, device=nodes.device)
    out[nodes] = True
    return out


_SCAN_PER_CANDIDATE = 16  # node flags a scan reads for the cost of sorting one candidate


def _ascending(values: Tensor) -> bool:
    return values.numel() < 2 or bool((values[1:] >= values[:-1]).all())


def window_draw(
    nodes: Tensor, start: Tensor, count: Tensor, fanout: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(owner, position, scale)`` of the edges each node gets, node ``k``'s edges being the
    positions ``start[k] : start[k] + count[k]``: all of them, or a uniformly placed window
    of ``fanout`` (wrapping around) scaled by ``count / fanout``."""
    device = nodes.device
    if nodes.numel() == 0 or fanout <= 0 or int(count.max()) <= fanout:
        owner, position = incident(nodes, start, count)
        return owner, position, torch.ones(owner.numel(), device=device)
    small = count <= fanout
    owner, position = incident(nodes[small], start[small], count[small])
    big, big_start, big_count = nodes[~small], start[~small], count[~small]
    draws = torch.rand(big.numel(), generator=generator).to(device)
    first = (draws * big_count).long().clamp(max=big_count - 1)
    step = torch.arange(fanout, device=device)
    offset = (first[:, None] + step) % big_count[:, None]
    sampled = (big_start[:, None] + offset).flatten()
    big_owner = big.repeat_interleave(fanout)
    big_scale = (big_count.float() / fanout).repeat_interleave(fanout)
    return (
        torch.cat([owner, big_owner]),
        torch.cat([position, sampled]),
        torch.cat([torch.ones(owner.numel(), device=device), big_scale]),
    )


def incident(nodes: Tensor, start: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """``(owner, position)``: positions ``start[k] : start[k] + count[k]`` of each node."""
    owner = torch.repeat_interleave(nodes, count)
    first = torch.repeat_interleave(start - (count.cumsum(0) - count), count)
    return owner, first + torch.arange(owner.numel(), device=nodes.device)
