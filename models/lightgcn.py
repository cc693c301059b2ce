"""LightGCN over the decayed user-item graph.

Paper: He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020, https://arxiv.org/abs/2002.02126.

Update rule, on the bipartite graph with users and items as one node set:

.. math::

    e^{(k+1)} = \\tilde A\\, e^{(k)}, \\qquad
    \\tilde A = D^{-1/2} A D^{-1/2}, \\qquad
    z = \\mathrm{normalize}\\Big(\\sum_{k=0}^{L} \\alpha_k e^{(k)}\\Big),
    \\quad \\alpha_k = \\tfrac{1}{L+1}

with ``e^{(0)}`` the learnt embedding tables and ``A`` the symmetric user-item adjacency
whose entry for a (user, item) pair is the sum over relations of the decayed edge weights
(each optionally times a learnt per-relation scale ``exp(s_r)``). No feature transform,
no non-linearity, no self loop; an isolated row keeps ``α₀ e^{(0)}``.

Row ``r`` of either table is initialised from a generator seeded by
``(seed, kind, r // GROW_CHUNK)``: a row's initial value depends on nothing but the seed
and its place, so growing, :meth:`LightGCNEncoder.reset_rows` and
:meth:`LightGCNEncoder.reset_parameters` all agree, with no random state outside
``state_dict``.

>>> import torch
>>> from models.base import BipartiteGraph
>>> enc = LightGCNEncoder(num_relations=1, dim=8, num_layers=2)
>>> enc.grow(2, 3)
>>> g = BipartiteGraph(2, 3, torch.tensor([0, 1]), torch.tensor([0, 2]),
...                    torch.tensor([0, 0]), torch.tensor([1.0, 0.5]), torch.tensor([0, 0]), 0)
>>> u, i = enc.embed(g, torch.tensor([0, 1]), torch.tensor([0, 1, 2]))
>>> tuple(u.shape), tuple(i.shape), torch.allclose(u.norm(dim=1), torch.ones(2))
((2, 8), (3, 8), True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import LGConv  # type: ignore[import-untyped, unused-ignore]
from torch_geometric.nn.conv.gcn_conv import (  # type: ignore[import-untyped, unused-ignore]
    gcn_norm,
)

from models.base import GROW_CHUNK, BipartiteGraph, Encoder, grown_size
from stream.errors import ConfigError

_KIND_CODE = {"user": 1, "item": 2}


class LightGCNEncoder(Encoder):
    """Layer-combined linear propagation of ID embeddings (the default encoder).

    Args:
        num_relations: relation (event) types.
        dim: embedding dimension.
        num_layers: propagation layers ``L`` (0 gives plain matrix factorisation).
        relation_scale: learn a per-relation edge-weight scale ``exp(s_r)`` (starts at 1).
        init_std: standard deviation of the normal initialisation of the tables.
        seed: seed of the row initialisation.
    """

    name = "lightgcn"

    def __init__(
        self,
        num_relations: int,
        dim: int = 64,
        num_layers: int = 2,
        relation_scale: bool = False,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(num_relations, dim)
        if num_layers < 0:
            raise ConfigError(f"num_layers must be >= 0, got {num_layers!r}")
        if not init_std > 0:
            raise ConfigError(f"init_std must be > 0, got {init_std!r}")
        self.num_layers = num_layers
        self.init_std = init_std
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.long))
        self.user_emb = torch.nn.Parameter(torch.zeros(0, dim))
        self.item_emb = torch.nn.Parameter(torch.zeros(0, dim))
        self.relation_log_scale = (
            torch.nn.Parameter(torch.zeros(num_relations)) if relation_scale else None
        )
        # LGConv holds no weights; the normalisation is done once per forward, below.
        self.convs = torch.nn.ModuleList(LGConv(normalize=False) for _ in range(num_layers))
        self.reset_parameters()

    @property
    def num_users(self) -> int:
        return int(self.user_emb.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_emb.shape[0])

    # -- initialisation --------------------------------------------------------------

    def _init_rows(self, kind: str, rows: Tensor) -> Tensor:
        """Initial values of these rows (a function of seed, kind and chunk only)."""
        rows = rows.cpu()
        out = torch.empty(rows.numel(), self.dim)
        seed = int(self.get_buffer("seed"))
        for chunk in sorted(set(rows.div(GROW_CHUNK, rounding_mode="floor").tolist())):
            g = torch.Generator().manual_seed(
                (seed * 1_000_003 + _KIND_CODE[kind]) * 1_000_003 + chunk
            )
            values = torch.randn(GROW_CHUNK, self.dim, generator=g) * self.init_std
            sel = rows.div(GROW_CHUNK, rounding_mode="floor") == chunk
            out[sel] = values[rows[sel] - chunk * GROW_CHUNK]
        return out

    def _table(self, kind: str) -> torch.nn.Parameter:
        return self.user_emb if kind == "user" else self.item_emb

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for kind in _KIND_CODE:
                table = self._table(kind)
                rows = torch.arange(table.shape[0])
                table.copy_(self._init_rows(kind, rows).to(table.device, table.dtype))
            if self.relation_log_scale is not None:
                self.relation_log_scale.zero_()

    def grow(self, num_users: int, num_items: int) -> None:
        for kind, needed in (("user", num_users), ("item", num_items)):
            table = self._table(kind)
            size = grown_size(needed, table.shape[0])
            if size == table.shape[0]:
                continue
            new_rows = torch.arange(table.shape[0], size)
            fresh = self._init_rows(kind, new_rows).to(table.device, table.dtype)
            grown = torch.nn.Parameter(torch.cat([table.detach(), fresh]))
            setattr(self, f"{kind}_emb", grown)

    @torch.no_grad()
    def reset_rows(self, users: Tensor, items: Tensor) -> None:
        for kind, rows in (("user", users), ("item", items)):
            if rows.numel():
                table = self._table(kind)
                rows = rows.to(torch.long).cpu()
                table[rows.to(table.device)] = self._init_rows(kind, rows).to(
                    table.device, table.dtype
                )

    # -- propagation -------------------------------------------------------------------

    def forward(self, graph: BipartiteGraph, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        n_users, n_items = self.num_users, self.num_items
        if graph.num_users > n_users or graph.num_items > n_items:
            raise ValueError(
                f"graph has {graph.num_users} user / {graph.num_items} item rows, the encoder "
                f"{n_users} / {n_items}: grow() first"
            )
        x = torch.cat([self.user_emb, self.item_emb])
        out = x
        if self.num_layers and graph.num_edges:
            weight = graph.weights.to(x.dtype)
            if self.relation_log_scale is not None:
                weight = weight * self.relation_log_scale.exp()[graph.relations]
            src, dst = graph.users, graph.items + n_users
            edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
            # Parallel edges (one per relation) add up in the scatter and in the degree,
            # which is the same as summing the relations' weights per (user, item) pair.
            edge_index, norm = gcn_norm(
                edge_index, torch.cat([weight, weight]), n_users + n_items, add_self_loops=False
            )
            total = x
            for conv in self.convs:
                x = conv(x, edge_index, norm)
                total = total + x
            out = total / (self.num_layers + 1)
        out = F.normalize(out.float(), dim=-1)
        return out[users], out[items + n_users]
