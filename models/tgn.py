"""TGN-style temporal memory encoder over the decayed, relation-typed user-item graph.

Temporal Graph Networks: Rossi et al., 2020, https://arxiv.org/abs/2006.10637.

Every user and item row has a memory ``s`` (zero when fresh) and a last-update time. An
event ``(u, i, r, w, t)`` is a message to both ends (``phi`` a cosine time encoding,
``e_r`` a relation embedding)::

    m_u = [s_u || s_i || e_r || log(1 + w) || phi(t - t_u)]     (and symmetrically m_i)
    s_u <- GRU(m_u, s_u),  t_u <- t                                 (last message per node)

and a node's vector is graph attention over its ``num_neighbors`` most recent neighbours
in the snapshot, the node input combining memory with a learnt id embedding::

    x_v = W_s s_v + e_v
    z_v = TransformerConv(x)_v with edge features [phi(now - t_uv) || e_r || log(1 + w_uv)]
    z_v <- z_v / ||z_v||

How gradients reach the GRU (TGN's own scheme): ``observe(batch)`` does not apply the
batch at once. It first commits the *pending* messages of the previous batch (no
gradient: memory is state, so no backprop through time), then stores the batch's raw
events as the new pending messages (the last one per node), all in registered buffers.
``forward`` computes each node's memory *after* its pending message with gradient, without
writing it, so the loss of the next training step trains the GRU, the message inputs and
the time encoding; ``embed`` sees the same up-to-date memory and moves nothing. Call
``observe`` after the gradient step on a batch, as TGN does, so a batch's positives never
leak into the memory used to score them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import TransformerConv  # type: ignore[import-untyped, unused-ignore]

from models.base import BipartiteGraph, EdgeBatch
from models.errors import check_positive
from models.id_tables import IdTableEncoder, grown_buffer
from models.row_space import check_rows, expand_hops, node_rows, row_edges, smallest_k_per_group


class CosineTimeEncoding(torch.nn.Module):
    """``phi(dt) = cos(omega * dt_seconds + b)`` with learnt frequencies.

    PyG's ``TimeEncoder`` starts from ``Linear(1, d)``'s default initialisation, which on
    gaps measured in seconds to months aliases at once; the frequencies here start
    log-spaced over periods of one second to about thirty years (as TGAT / GraphMixer).

    Args:
        dim: output dimension.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.frequency = torch.nn.Parameter(torch.empty(dim))
        self.phase = torch.nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            periods = torch.logspace(0, 9, self.frequency.numel())
            self.frequency.copy_(2 * math.pi / periods)
            self.phase.zero_()

    def forward(self, dt_ms: Tensor) -> Tensor:
        seconds = dt_ms.clamp(min=0).double().div(1000.0).float()
        return torch.cos(seconds.unsqueeze(-1) * self.frequency + self.phase)


class MemoryTable(torch.nn.Module):
    """Memory, last update and the pending (not yet applied) message of each row."""

    def __init__(self, memory_dim: int) -> None:
        super().__init__()
        self.register_buffer("memory", torch.zeros(0, memory_dim))
        self.register_buffer("last_update", torch.zeros(0, dtype=torch.long))  # -1: never
        self.register_buffer("pending_partner", torch.zeros(0, dtype=torch.long))  # -1: none
        self.register_buffer("pending_relation", torch.zeros(0, dtype=torch.long))
        self.register_buffer("pending_weight", torch.zeros(0))
        self.register_buffer("pending_time", torch.zeros(0, dtype=torch.long))

    memory: Tensor
    last_update: Tensor
    pending_partner: Tensor
    pending_relation: Tensor
    pending_weight: Tensor
    pending_time: Tensor

    _FRESH = (
        ("memory", 0.0),
        ("last_update", -1),
        ("pending_partner", -1),
        ("pending_relation", 0),
        ("pending_weight", 0.0),
        ("pending_time", 0),
    )

    def grow(self, rows: int) -> None:
        for name, fill in self._FRESH:
            setattr(self, name, grown_buffer(getattr(self, name), rows, fill))

    def reset_rows(self, rows: Tensor) -> None:
        for name, fill in self._FRESH:
            getattr(self, name)[rows] = fill

    def reset(self) -> None:
        for name, fill in self._FRESH:
            getattr(self, name).fill_(fill)


class TGNEncoder(IdTableEncoder):
    """TGN-style encoder: GRU node memory plus graph attention over recent neighbours.

    Args:
        num_relations: number of relation (event) types.
        dim: embedding dimension.
        memory_dim: memory size per node (``dim`` when ``None``).
        time_dim: size of the time encoding.
        relation_dim: size of the relation embedding.
        heads: attention heads (averaged).
        num_neighbors: most recent neighbours attended to per node (30: chosen on ML-100K
            validation over 10 and 50, bench/results/eval-ml100k-encoders-validation.json).
        init_std: standard deviation of fresh id-embedding rows.
        seed: seed of the id-embedding rows (:func:`models.id_tables.seeded_rows`).
    """

    name = "tgn"

    def __init__(
        self,
        num_relations: int,
        dim: int = 64,
        *,
        memory_dim: int | None = None,
        time_dim: int = 16,
        relation_dim: int = 16,
        heads: int = 2,
        num_neighbors: int = 30,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(num_relations, dim, init_std=init_std, seed=seed)
        memory_dim = dim if memory_dim is None else memory_dim
        check_positive(
            memory_dim=memory_dim,
            time_dim=time_dim,
            relation_dim=relation_dim,
            heads=heads,
            num_neighbors=num_neighbors,
        )
        self.num_neighbors = num_neighbors
        self.user_state = MemoryTable(memory_dim)
        self.item_state = MemoryTable(memory_dim)
        self.relation_emb = torch.nn.Embedding(num_relations, relation_dim)
        self.time_enc = CosineTimeEncoding(time_dim)
        self.gru = torch.nn.GRUCell(2 * memory_dim + relation_dim + 1 + time_dim, memory_dim)
        self.memory_proj = torch.nn.Linear(memory_dim, dim)
        self.attention = TransformerConv(
            dim, dim, heads=heads, concat=False, edge_dim=time_dim + relation_dim + 1
        )
        self.reset_parameters()

    def grow(self, num_users: int, num_items: int) -> None:
        super().grow(num_users, num_items)
        self.user_state.grow(self.num_users)
        self.item_state.grow(self.num_items)

    def reset_rows(self, users: Tensor, items: Tensor) -> None:
        super().reset_rows(users, items)
        self.user_state.reset_rows(users.to(self.user_emb.device))
        self.item_state.reset_rows(items.to(self.item_emb.device))

    def reset_parameters(self) -> None:
        self.reset_tables()
        self.relation_emb.reset_parameters()
        self.time_enc.reset_parameters()
        self.gru.reset_parameters()
        self.memory_proj.reset_parameters()
        self.attention.reset_parameters()

    def reset_state(self) -> None:
        self.user_state.reset()
        self.item_state.reset()

    @torch.no_grad()
    def observe(self, batch: EdgeBatch) -> None:
        batch = batch.to(self.user_emb.device)
        for name, rows, size in (
            ("user", batch.users, self.num_users),
            ("item", batch.items, self.num_items),
        ):
            bad = rows[(rows < 0) | (rows >= size)]
            if bad.numel():
                raise ValueError(f"batch {name} row {int(bad[0])} is outside 0..{size - 1}")
        bad = batch.relations[(batch.relations < 0) | (batch.relations >= self.num_relations)]
        if bad.numel():
            raise ValueError(f"batch relation {int(bad[0])} is outside 0..{self.num_relations - 1}")
        # 1. Commit the previous batch's messages (both sides read the old memories).
        users = (self.user_state.pending_partner >= 0).nonzero().squeeze(1)
        items = (self.item_state.pending_partner >= 0).nonzero().squeeze(1)
        new_users = self._memory_after_pending(self.user_state, self.item_state, users)
        new_items = self._memory_after_pending(self.item_state, self.user_state, items)
        for state, rows, memory in (
            (self.user_state, users, new_users),
            (self.item_state, items, new_items),
        ):
            state.memory[rows] = memory
            state.last_update[rows] = state.pending_time[rows]
            state.pending_partner[rows] = -1
        # 2. This batch becomes the pending messages: the latest event per node.
        for state, own, partner in (
            (self.user_state, batch.users, batch.items),
            (self.item_state, batch.items, batch.users),
        ):
            latest = _latest_per_row(own, batch.times)
            rows = own[latest]
            state.pending_partner[rows] = partner[latest]
            state.pending_relation[rows] = batch.relations[latest]
            state.pending_weight[rows] = batch.weights[latest].float()
            state.pending_time[rows] = batch.times[latest]

    def forward(self, graph: BipartiteGraph, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        device = self.user_emb.device
        graph, users, items = graph.to(device), users.to(device), items.to(device)
        check_rows(graph, users, items, self)
        offset = self.num_users
        edges = row_edges(graph, offset)
        targets = torch.cat([users, items + offset])

        def most_recent(nodes: Tensor) -> tuple[Tensor, Tensor]:
            wanted = torch.zeros(offset + self.num_items, dtype=torch.bool, device=device)
            wanted[nodes] = True
            candidates = wanted[edges.dst].nonzero().squeeze(1)
            kept = smallest_k_per_group(
                edges.dst[candidates], -edges.times[candidates], self.num_neighbors
            )
            return edges.src[candidates[kept]], candidates[kept]

        src, chosen = expand_hops(targets, offset + self.num_items, 1, most_recent)
        dst = edges.dst[chosen]
        nodes = torch.unique(torch.cat([targets, src]))
        split = int((nodes < offset).sum())
        memory = torch.cat(
            [
                self._memory_after_pending(self.user_state, self.item_state, nodes[:split]),
                self._memory_after_pending(
                    self.item_state, self.user_state, nodes[split:] - offset
                ),
            ]
        )
        x = self.memory_proj(memory) + node_rows(nodes, offset, self.user_emb, self.item_emb)
        edge_attr = torch.cat(
            [
                self.time_enc(graph.now - edges.times[chosen]),
                self.relation_emb(edges.relations[chosen]),
                torch.log1p(edges.weights[chosen].clamp(min=0)).unsqueeze(-1),
            ],
            dim=-1,
        )
        edge_index = torch.stack([torch.searchsorted(nodes, src), torch.searchsorted(nodes, dst)])
        h = self.attention(x, edge_index, edge_attr)
        out = F.normalize(h, dim=-1)[torch.searchsorted(nodes, targets)]
        return out[: users.numel()], out[users.numel() :]

    def _memory_after_pending(self, own: MemoryTable, other: MemoryTable, rows: Tensor) -> Tensor:
        """Memory of ``rows`` after their pending message; differentiable, writes nothing."""
        memory = own.memory[rows]
        pending = (own.pending_partner[rows] >= 0).nonzero().squeeze(1)
        if pending.numel() == 0:
            return memory
        rows = rows[pending]
        last = own.last_update[rows]
        gap = torch.where(last >= 0, own.pending_time[rows] - last, torch.zeros_like(last))
        message = torch.cat(
            [
                memory[pending],
                other.memory[own.pending_partner[rows]],
                self.relation_emb(own.pending_relation[rows]),
                torch.log1p(own.pending_weight[rows].clamp(min=0)).unsqueeze(-1),
                self.time_enc(gap),
            ],
            dim=-1,
        )
        updated = self.gru(message, memory[pending]).to(memory.dtype)
        return memory.index_put((pending,), updated)


def _latest_per_row(rows: Tensor, times: Tensor) -> Tensor:
    """Position of each row's latest event (ties: the later one in the batch)."""
    backwards = torch.arange(rows.numel() - 1, -1, -1, device=rows.device)
    return backwards[smallest_k_per_group(rows[backwards], -times[backwards], 1)]
