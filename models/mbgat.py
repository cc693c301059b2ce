"""Multi-behaviour relation-aware graph attention over the decayed user-item graph.

One relation per behaviour (event type: view, click, purchase, ...), as in multi-behaviour
recommenders (MBGCN, Jin et al., 2020, https://arxiv.org/abs/2006.08855) and relational
graph attention (RGAT, Busbridge et al., 2019, https://arxiv.org/abs/1904.05811). Each
layer attends within each behaviour, then across behaviours, per node::

    h_v^r = sum_{u in N_r(v)} a_uv^r W_r h_u,   a^r = softmax_u(LeakyReLU(att_r[W_r h_v ||
            W_r h_u || W_e log(1 + w_uv)]))             (GATConv, decayed weight as edge feature)
    b_v^r = softmax_{r : N_r(v) non-empty}(q^T tanh(P h_v^r + p))     (behaviour attention)
    h_v'  = W_root h_v + sum_r b_v^r h_v^r
    hidden layers then ELU; z_v = h_v^L / ||h_v^L||

``N_r(v)`` keeps the ``num_neighbors`` heaviest (decayed weight) ``r``-edges of ``v``, so a
frequent behaviour (views) cannot crowd out a rare one (purchases). Node inputs are learnt
id embeddings; a behaviour with no edges simply contributes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GATConv  # type: ignore[import-untyped, unused-ignore]
from torch_geometric.nn.inits import reset  # type: ignore[import-untyped, unused-ignore]

from models.base import BipartiteGraph
from models.errors import check_positive
from models.id_tables import IdTableEncoder
from models.row_space import check_rows, expand_hops, node_rows, row_edges, smallest_k_per_group


class RelationAttentionLayer(torch.nn.Module):
    """Per-behaviour ``GATConv`` and node-level attention across behaviours.

    Args:
        num_relations: number of behaviours.
        dim: input and output dimension.
        heads: attention heads per behaviour (averaged).
    """

    def __init__(self, num_relations: int, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList(
            GATConv(dim, dim, heads=heads, concat=False, add_self_loops=False, edge_dim=1)
            for _ in range(num_relations)
        )
        self.behaviour_proj = torch.nn.Linear(dim, dim)
        self.behaviour_query = torch.nn.Parameter(torch.empty(dim))
        self.root = torch.nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset(self.convs)
        self.behaviour_proj.reset_parameters()
        torch.nn.init.normal_(self.behaviour_query, std=self.behaviour_query.numel() ** -0.5)
        self.root.reset_parameters()

    def forward(
        self, x: Tensor, edge_index: Tensor, relations: Tensor, edge_weight: Tensor
    ) -> Tensor:
        per_relation: list[Tensor] = []
        present: list[Tensor] = []
        feature = torch.log1p(edge_weight.clamp(min=0)).unsqueeze(-1)
        for relation, conv in enumerate(self.convs):
            mask = relations == relation
            per_relation.append(conv(x, edge_index[:, mask], feature[mask]))
            degree = torch.zeros(x.shape[0], device=x.device).index_add(
                0, edge_index[1, mask], torch.ones_like(feature[mask, 0])
            )
            present.append(degree > 0)
        stacked = torch.stack(per_relation)  # [R, n, dim]
        has = torch.stack(present).unsqueeze(-1)  # [R, n, 1]
        score: Tensor = torch.tanh(self.behaviour_proj(stacked)) @ self.behaviour_query
        score = score.unsqueeze(-1).masked_fill(~has, -1e4)  # finite: no NaN for a lone node
        weight = torch.softmax(score, dim=0) * has  # behaviours without edges weigh zero
        root: Tensor = self.root(x)
        return root + (weight * stacked).sum(0)


class MultiBehaviourGATEncoder(IdTableEncoder):
    """Relation-aware attention, one relation per behaviour, over decayed edge weights.

    Args:
        num_relations: number of relation (event) types.
        dim: embedding dimension.
        num_layers: attention layers (hops).
        heads: attention heads per behaviour.
        num_neighbors: heaviest neighbours kept per node and behaviour.
        init_std: standard deviation of fresh id-embedding rows.
        seed: seed of the id-embedding rows (:func:`models.id_tables.seeded_rows`).
    """

    name = "mbgat"

    def __init__(
        self,
        num_relations: int,
        dim: int = 64,
        *,
        num_layers: int = 2,
        heads: int = 2,
        num_neighbors: int = 20,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(num_relations, dim, init_std=init_std, seed=seed)
        check_positive(num_layers=num_layers, heads=heads, num_neighbors=num_neighbors)
        self.num_layers = num_layers
        self.num_neighbors = num_neighbors
        self.layers = torch.nn.ModuleList(
            RelationAttentionLayer(num_relations, dim, heads) for _ in range(num_layers)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.reset_tables()
        reset(self.layers)

    def forward(self, graph: BipartiteGraph, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        device = self.user_emb.device
        graph, users, items = graph.to(device), users.to(device), items.to(device)
        check_rows(graph, users, items, self)
        offset, num_nodes = self.num_users, self.num_users + self.num_items
        edges = row_edges(graph, offset)
        targets = torch.cat([users, items + offset])

        def heaviest(nodes: Tensor) -> tuple[Tensor, Tensor]:
            wanted = torch.zeros(num_nodes, dtype=torch.bool, device=device)
            wanted[nodes] = True
            candidates = wanted[edges.dst].nonzero().squeeze(1)
            group = edges.dst[candidates] * self.num_relations + edges.relations[candidates]
            kept = smallest_k_per_group(group, -edges.weights[candidates], self.num_neighbors)
            return edges.src[candidates[kept]], candidates[kept]

        src, chosen = expand_hops(targets, num_nodes, self.num_layers, heaviest)
        dst = edges.dst[chosen]
        nodes = torch.unique(torch.cat([targets, src, dst]))
        edge_index = torch.stack([torch.searchsorted(nodes, src), torch.searchsorted(nodes, dst)])
        h = node_rows(nodes, offset, self.user_emb, self.item_emb)
        for depth, layer in enumerate(self.layers):
            h = layer(h, edge_index, edges.relations[chosen], edges.weights[chosen])
            if depth < self.num_layers - 1:
                h = F.elu(h)
        out = F.normalize(h, dim=-1)[torch.searchsorted(nodes, targets)]
        return out[: users.numel()], out[users.numel() :]
