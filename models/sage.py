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
    hidden layers then ReLU and L2 normalisation; z_v = n(h_v^L),   n(h) = h / ||h||
    or, with combine_layers:                       z_v = n(sum_{l=0..L} n(h_v^l))

  ``combine_layers`` sums every layer's direction, the node's own id embedding (``l = 0``)
  included, as LightGCN's mean of layers and JK-Net's layer aggregation do (Xu et al.,
  2018, https://arxiv.org/abs/1806.03536): a node keeps a direct path from its own row to
  its vector, not only through ``W_root`` of each layer. Chosen per encoder on the first
  half of ML-100K over three seeds (``bench/results/eval-ml100k-encoders-validation.json``):
  on for ``pinsage``, off for ``sage`` (which it did not help).

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

The row-space helpers (edges, per-group top-k, hop expansion) live in
:mod:`models.row_space` and the id tables in :mod:`models.id_tables`, shared with
:mod:`models.tgn` and :mod:`models.mbgat`; the stateless hash below is this module's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GraphConv  # type: ignore[import-untyped, unused-ignore]
from torch_geometric.nn.inits import reset  # type: ignore[import-untyped, unused-ignore]

from models.base import BipartiteGraph
from models.errors import check_positive
from models.id_tables import IdTableEncoder
from models.row_space import (
    RowEdges,
    check_rows,
    expand_hops,
    node_rows,
    row_edges,
    smallest_k_per_group,
)

# splitmix64 constants, as signed int64 where tensors hold them

_U64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # as signed int64
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


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


class _InductiveEncoder(IdTableEncoder):
    """GraphSAGE-style stack; subclasses choose the neighbourhood and ``g``."""

    def __init__(
        self,
        num_relations: int,
        dim: int,
        *,
        num_layers: int,
        num_neighbors: int,
        combine_layers: bool,
        init_std: float,
        seed: int,
    ) -> None:
        super().__init__(num_relations, dim, init_std=init_std, seed=seed)
        check_positive(num_layers=num_layers, num_neighbors=num_neighbors)
        self.num_layers = num_layers
        self.num_neighbors = num_neighbors
        self.combine_layers = combine_layers
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
        layers = [F.normalize(h, dim=-1)] if self.combine_layers else []
        for layer, conv in enumerate(self.convs):
            h = conv((self._transform(layer, h), h), edge_index, alpha)
            if layer < self.num_layers - 1:
                h = F.relu(h)
            h = F.normalize(h, dim=-1)
            if self.combine_layers:
                layers.append(h)
        combined = sum(layers[1:], layers[0]) if self.combine_layers else h
        out = F.normalize(combined, dim=-1)[torch.searchsorted(nodes, targets)]
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
        combine_layers: the vector sums every layer's direction (module docstring).
        init_std: standard deviation of fresh id-embedding rows.
        seed: seed of the id rows and of the stateless neighbour sampling.
    """

    name = "sage"

    def __init__(
        self,
        num_relations: int,
        dim: int = 64,
        *,
        num_layers: int = 2,
        num_neighbors: int = 10,
        combine_layers: bool = False,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            num_relations,
            dim,
            num_layers=num_layers,
            num_neighbors=num_neighbors,
            combine_layers=combine_layers,
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
        num_neighbors: top-T visited nodes kept as a node's neighbourhood (20: chosen on
            ML-100K validation over 10, bench/results/eval-ml100k-encoders-validation.json).
        combine_layers: the vector sums every layer's direction (module docstring).
        num_walks: random walks started from each node.
        walk_length: steps per walk (2 reaches co-interacting nodes of the same type).
        init_std: standard deviation of fresh id-embedding rows.
        seed: seed of the id rows and of the stateless random walks.
    """

    name = "pinsage"
    revision = 2  # 1: before combine_layers, whose default is on here

    def __init__(
        self,
        num_relations: int,
        dim: int = 64,
        *,
        num_layers: int = 2,
        num_neighbors: int = 20,
        num_walks: int = 16,
        walk_length: int = 3,
        combine_layers: bool = True,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            num_relations,
            dim,
            num_layers=num_layers,
            num_neighbors=num_neighbors,
            combine_layers=combine_layers,
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
