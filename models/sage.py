"""GraphSAGE and PinSAGE over the decayed, relation-typed user-item graph.

GraphSAGE: Hamilton et al., 2017, https://arxiv.org/abs/1706.02216. PinSAGE: Ying et al.,
2018, https://arxiv.org/abs/1806.01973.

Both are inductive: a node's vector comes from its own features ``x_v`` (a learnt id
embedding; a fresh row is a small random vector that carries no information) and the
vectors of a neighbourhood ``N(v)``, so a node first seen after training gets a useful
vector from its first interactions, without a retrain. Users and items share one node
space (items offset by the user capacity)::

    h_v^0     = x_v
    h_v^(l+1) = W_root h_v^l + W_nbr sum_{u in N(v)} a_uv g(h_u^l),   sum_u a_uv = 1
    hidden layers then ReLU and L2 normalisation; z_v = h_v^L / ||h_v^L||

- ``sage``: ``N(v)`` is up to ``num_neighbors`` neighbours drawn without replacement with
  probability proportional to the decayed edge weight (Efraimidis-Spirakis keys
  ``-log(u) / w``, the vectorised form of per-node ``torch.multinomial``);
  ``a_uv ~ w_uv * exp(rho_r)`` with a learnt scale per relation; ``g`` is the identity.
- ``pinsage``: ``N(v)`` is the top ``num_neighbors`` nodes by visit count of
  ``num_walks`` random walks of ``walk_length`` steps from ``v`` (each step follows an edge
  with probability proportional to its decayed weight); ``a_uv`` is the normalised visit
  count (importance pooling); ``g(h) = ReLU(Q h + q)``.

Sampling draws no state: its randomness is a hash of ``(seed, edge or walk ids)``, so a
node's neighbourhood depends on the graph and the seed only, never on which other rows
were asked for, and ``embed`` is deterministic and side-effect free. In training mode the
seed is mixed with ``graph.now`` so successive steps see fresh samples.

The module-level helpers (row-space edges, per-group top-k, hop expansion, table growth)
are shared with :mod:`models.tgn` and :mod:`models.mbgat`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GraphConv  # type: ignore[import-untyped, unused-ignore]
from torch_geometric.nn.inits import reset  # type: ignore[import-untyped, unused-ignore]

from models.base import BipartiteGraph, Encoder, grown_size
from stream.errors import ConfigError

# --- shared helpers ------------------------------------------------------------------------

_U64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # as signed int64
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


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


def node_key(nodes: Tensor, num_users: int) -> Tensor:
    """Node ids that do not move when the user capacity grows (hash keys): ``2 row + is_item``."""
    is_item = nodes >= num_users
    return torch.where(is_item, (nodes - num_users) * 2 + 1, nodes * 2)


def hashed_uniform(seed: int, *keys: Tensor | int) -> Tensor:
    """Float64 in (0, 1), a stateless hash (splitmix64) of ``seed`` and the integer keys."""
    first = next(k for k in keys if isinstance(k, Tensor))
    state = torch.full_like(first, mix_seed(seed), dtype=torch.int64)
    for key in keys:
        step = _signed((key * _GOLDEN) & _U64) if isinstance(key, int) else key.long() * _GOLDEN
        state = _mix64(state + step)
    mantissa = (state >> 11) & ((1 << 53) - 1)
    return (mantissa.double() + 0.5) * 2.0**-53


def mix_seed(seed: int, *values: int) -> int:
    """Signed 64-bit hash of integers (splitmix64 in Python ints)."""
    state = seed & _U64
    for value in values:
        state = (state + 0x9E3779B97F4A7C15 + (value & _U64)) & _U64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _U64
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _U64
        state ^= state >> 31
    return _signed(state)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _mix64(x: Tensor) -> Tensor:
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def grown_parameter(param: torch.nn.Parameter, rows: int, std: float) -> torch.nn.Parameter:
    """``param`` with rows appended up to ``rows``, the new ones ``N(0, std^2)``."""
    extra = torch.empty(rows - param.shape[0], *param.shape[1:], device=param.device)
    torch.nn.init.normal_(extra, std=std)
    return torch.nn.Parameter(torch.cat([param.detach(), extra.to(param.dtype)]))


def grown_buffer(buffer: Tensor, rows: int, fill: float) -> Tensor:
    """``buffer`` with rows appended up to ``rows``, the new ones ``fill``."""
    extra = buffer.new_full((rows - buffer.shape[0], *buffer.shape[1:]), fill)
    return torch.cat([buffer, extra])


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ConfigError(f"{name} must be > 0, got {value!r}")


def check_reset_rows(encoder: Encoder, users: Tensor, items: Tensor) -> None:
    for name, rows, size in (
        ("user", users, encoder.num_users),
        ("item", items, encoder.num_items),
    ):
        bad = rows[(rows < 0) | (rows >= size)]
        if bad.numel():
            raise ValueError(f"cannot reset {name} row {int(bad[0])}: outside 0..{size - 1}")


# --- encoders ------------------------------------------------------------------------------


class IdTableEncoder(Encoder):
    """An encoder with learnt user and item id tables (``N(0, init_std^2)``), grown in chunks."""

    def __init__(self, num_relations: int, dim: int, *, init_std: float) -> None:
        super().__init__(num_relations, dim)
        if not init_std > 0:
            raise ConfigError(f"init_std must be > 0, got {init_std!r}")
        self.init_std = init_std
        self.user_emb = torch.nn.Parameter(torch.empty(0, dim))
        self.item_emb = torch.nn.Parameter(torch.empty(0, dim))

    @property
    def num_users(self) -> int:
        return int(self.user_emb.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_emb.shape[0])

    def grow(self, num_users: int, num_items: int) -> None:
        users, items = grown_size(num_users, self.num_users), grown_size(num_items, self.num_items)
        if users > self.num_users:
            self.user_emb = grown_parameter(self.user_emb, users, self.init_std)
        if items > self.num_items:
            self.item_emb = grown_parameter(self.item_emb, items, self.init_std)

    def reset_rows(self, users: Tensor, items: Tensor) -> None:
        check_reset_rows(self, users, items)
        with torch.no_grad():
            for table, rows in ((self.user_emb, users), (self.item_emb, items)):
                fresh = torch.empty(rows.numel(), self.dim, device=table.device)
                table[rows.to(table.device)] = torch.nn.init.normal_(fresh, std=self.init_std)

    def reset_tables(self) -> None:
        torch.nn.init.normal_(self.user_emb, std=self.init_std)
        torch.nn.init.normal_(self.item_emb, std=self.init_std)


class _InductiveEncoder(IdTableEncoder):
    """GraphSAGE-style stack; subclasses choose the neighbourhood and ``g``."""

    def __init__(
        self,
        num_relations: int,
        dim: int,
        *,
        num_layers: int,
        num_neighbors: int,
        init_std: float,
        seed: int,
    ) -> None:
        super().__init__(num_relations, dim, init_std=init_std)
        check_positive(num_layers=num_layers, num_neighbors=num_neighbors)
        self.num_layers = num_layers
        self.num_neighbors = num_neighbors
        self.seed = seed
        self.convs = torch.nn.ModuleList(GraphConv(dim, dim, aggr="add") for _ in range(num_layers))

    def reset_parameters(self) -> None:
        self.reset_tables()
        reset(self.convs)

    def forward(self, graph: BipartiteGraph, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        device = self.user_emb.device
        graph, users, items = graph.to(device), users.to(device), items.to(device)
        check_rows(graph, users, items, self)
        offset, num_nodes = self.num_users, self.num_users + self.num_items
        edges = row_edges(graph, offset)
        seed = mix_seed(self.seed, graph.now) if self.training else self.seed
        targets = torch.cat([users, items + offset])
        src, dst, weight = expand_hops(
            targets, num_nodes, self.num_layers, lambda nodes: self._sample(edges, nodes, seed)
        )
        nodes = torch.unique(torch.cat([targets, src, dst]))
        edge_index = torch.stack([torch.searchsorted(nodes, src), torch.searchsorted(nodes, dst)])
        total = torch.zeros(nodes.numel(), device=device, dtype=weight.dtype)
        alpha = weight / total.index_add(0, edge_index[1], weight)[edge_index[1]]
        h = node_rows(nodes, offset, self.user_emb, self.item_emb)
        for layer, conv in enumerate(self.convs):
            h = conv((self._transform(layer, h), h), edge_index, alpha)
            if layer < self.num_layers - 1:
                h = F.normalize(F.relu(h), dim=-1)
        out = F.normalize(h, dim=-1)[torch.searchsorted(nodes, targets)]
        return out[: users.numel()], out[users.numel() :]

    def _transform(self, layer: int, h: Tensor) -> Tensor:
        """``g`` applied to neighbour vectors before pooling; the identity here."""
        del layer
        return h

    def _sample(self, edges: RowEdges, nodes: Tensor, seed: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(src, dst, importance)`` of the neighbourhoods of ``nodes`` (the ``dst``)."""
        raise NotImplementedError


class SAGEEncoder(_InductiveEncoder):
    """GraphSAGE, neighbours sampled by decayed weight, weighted-mean aggregation.

    Args:
        num_relations: number of relation (event) types.
        dim: embedding dimension.
        num_layers: message-passing layers (hops).
        num_neighbors: neighbours sampled per node and layer.
        init_std: standard deviation of fresh id-embedding rows.
        seed: seed of the stateless neighbour sampling.
    """

    name = "sage"

    def __init__(
        self,
        num_relations: int,
        dim: int = 64,
        *,
        num_layers: int = 2,
        num_neighbors: int = 10,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            num_relations,
            dim,
            num_layers=num_layers,
            num_neighbors=num_neighbors,
            init_std=init_std,
            seed=seed,
        )
        self.relation_log_scale = torch.nn.Parameter(torch.zeros(num_relations))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        torch.nn.init.zeros_(self.relation_log_scale)

    def _sample(self, edges: RowEdges, nodes: Tensor, seed: int) -> tuple[Tensor, Tensor, Tensor]:
        wanted = torch.zeros(self.num_users + self.num_items, dtype=torch.bool, device=nodes.device)
        wanted[nodes] = True
        candidates = (wanted[edges.dst] & (edges.weights > 0)).nonzero().squeeze(1)
        src, dst = edges.src[candidates], edges.dst[candidates]
        relations, weights = edges.relations[candidates], edges.weights[candidates]
        offset = self.num_users
        uniform = hashed_uniform(seed, node_key(src, offset), node_key(dst, offset), relations)
        keys = -torch.log(uniform) / weights.double()  # Efraimidis-Spirakis: k smallest win
        kept = smallest_k_per_group(dst, keys, self.num_neighbors)
        scale = self.relation_log_scale.exp()[relations[kept]]
        return src[kept], dst[kept], weights[kept] * scale


class PinSAGEEncoder(_InductiveEncoder):
    """PinSAGE, random-walk importance neighbourhoods and importance pooling.

    Args:
        num_relations: number of relation (event) types.
        dim: embedding dimension.
        num_layers: convolution layers.
        num_neighbors: top-T visited nodes kept as a node's neighbourhood.
        num_walks: random walks started from each node.
        walk_length: steps per walk (2 reaches co-interacting nodes of the same type).
        init_std: standard deviation of fresh id-embedding rows.
        seed: seed of the stateless random walks.
    """

    name = "pinsage"

    def __init__(
        self,
        num_relations: int,
        dim: int = 64,
        *,
        num_layers: int = 2,
        num_neighbors: int = 10,
        num_walks: int = 16,
        walk_length: int = 3,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            num_relations,
            dim,
            num_layers=num_layers,
            num_neighbors=num_neighbors,
            init_std=init_std,
            seed=seed,
        )
        check_positive(num_walks=num_walks, walk_length=walk_length)
        self.num_walks = num_walks
        self.walk_length = walk_length
        self.pools = torch.nn.ModuleList(torch.nn.Linear(dim, dim) for _ in range(num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        reset(self.pools)

    def _transform(self, layer: int, h: Tensor) -> Tensor:
        return F.relu(self.pools[layer](h))

    def _sample(self, edges: RowEdges, nodes: Tensor, seed: int) -> tuple[Tensor, Tensor, Tensor]:
        num_nodes = self.num_users + self.num_items
        live = edges.weights > 0
        src, dst, weights = edges.src[live], edges.dst[live], edges.weights[live].double()
        empty = nodes.new_empty(0)
        if src.numel() == 0 or nodes.numel() == 0:
            return empty, empty, empty.float()
        # Edges sorted by (source, target), so walks do not depend on the snapshot's edge
        # order; a step from v picks out-edge j with probability w_j / sum_v w.
        order = torch.argsort(dst, stable=True)
        order = order[torch.argsort(src[order], stable=True)]
        targets, cumulative = dst[order], torch.cumsum(weights[order], 0)
        degree = torch.bincount(src, minlength=num_nodes)
        ends = torch.cumsum(degree, 0)
        starts = ends - degree
        padded = torch.cat([cumulative.new_zeros(1), cumulative])
        before, total = padded[starts], padded[ends] - padded[starts]

        start = nodes.repeat_interleave(self.num_walks)
        walk = torch.arange(self.num_walks, device=nodes.device).repeat(nodes.numel())
        start_key = node_key(start, self.num_users)
        current, alive = start.clone(), torch.ones_like(start, dtype=torch.bool)
        visited, valid = [], []
        for step in range(self.walk_length):
            alive = alive & (total[current] > 0)
            point = before[current] + hashed_uniform(seed, start_key, walk, step) * total[current]
            position = torch.searchsorted(cumulative, point, right=True)
            position = torch.minimum(torch.maximum(position, starts[current]), ends[current] - 1)
            current = torch.where(alive, targets[position.clamp(0, targets.numel() - 1)], current)
            visited.append(current)
            valid.append(alive & (current != start))
        hit = torch.cat(valid)
        pairs = start.repeat(self.walk_length)[hit] * num_nodes + torch.cat(visited)[hit]
        unique_pairs, counts = torch.unique(pairs, return_counts=True)
        owner, neighbour = unique_pairs // num_nodes, unique_pairs % num_nodes
        kept = smallest_k_per_group(owner, -counts, self.num_neighbors)
        return neighbour[kept], owner[kept], counts[kept].float()
