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

Each layer is one CSR sparse product with ``\\tilde A`` (:class:`NormalisedAdjacency`,
built once per forward): faster than PyG's gather-multiply-scatter on a CPU
(bench/results/propagation.json has the speed-ups), and fewer kernel launches on a GPU
(one sparse product instead of gather, multiply, scatter).

A step can also run on a sampled neighbourhood (:meth:`LightGCNEncoder.forward_local`): the
same layers as gather-multiply-scatter over the neighbourhood's edges, normalised by the
full graph's degrees, the tables read with row-sparse gradients. Not with learnt relation
scales: moving a scale moves every edge, so no step of theirs is local.

Row ``r`` of either table is initialised from a generator seeded by
``(seed, kind, r // GROW_CHUNK)`` (:func:`models.id_tables.seeded_rows`): a row's initial
value depends on nothing but the seed and its place, so growing,
:meth:`LightGCNEncoder.reset_rows` and :meth:`LightGCNEncoder.reset_parameters` all agree,
with no random state outside ``state_dict``.

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

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from models.base import BipartiteGraph, Encoder, PartialSums, grown_size
from models.errors import ModelConfigError
from models.id_tables import KIND_CODE, seeded_rows
from models.neighbourhood import Neighbourhood

# The adjacency is a CSR tensor by design; torch says once a process, on stderr, that CSR
# support is "beta", which every worker start printed.
warnings.filterwarnings(
    "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
)


class LightGCNEncoder(Encoder):
    """Layer-combined linear propagation of ID embeddings (the default encoder).

    Args:
        num_relations: relation (event) types.
        dim: embedding dimension.
        num_layers: propagation layers ``L`` (0 gives plain matrix factorisation).
        relation_scale: learn a per-relation edge-weight scale ``exp(s_r)`` (starts at 1).
        init_std: standard deviation of the normal initialisation of the tables.
        user_init_std: the same for user rows only (None: ``init_std``). 0 starts a user
            at zero, so a new user's vector is its items' (layer 1 on): useful from its
            first event instead of noise until its own row has been trained.
        seed: seed of the row initialisation.
    """

    name = "lightgcn"
    neighbour_mean: Tensor  # buffers (see __init__)
    user_history: Tensor
    item_history: Tensor

    def __init__(
        self,
        num_relations: int,
        dim: int = 64,
        num_layers: int = 2,
        relation_scale: bool = False,
        init_std: float = 0.1,
        user_init_std: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(num_relations, dim)
        if num_layers < 0:
            raise ModelConfigError(f"num_layers must be >= 0, got {num_layers!r}")
        if not init_std > 0:
            raise ModelConfigError(f"init_std must be > 0, got {init_std!r}")
        if user_init_std is not None and not user_init_std >= 0:
            raise ModelConfigError(f"user_init_std must be >= 0, got {user_init_std!r}")
        self.num_layers = num_layers
        self.init_std = init_std
        self.user_init_std = init_std if user_init_std is None else user_init_std
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.long))
        self.user_emb = torch.nn.Parameter(torch.zeros(0, dim))
        self.item_emb = torch.nn.Parameter(torch.zeros(0, dim))
        self.relation_log_scale = (
            torch.nn.Parameter(torch.zeros(num_relations)) if relation_scale else None
        )
        self._last_adjacency: tuple[BipartiteGraph, Any, NormalisedAdjacency] | None = None
        # per item row, its layers 1..L over L + 1 as of its last embedding (zero before
        # any): a local step's negatives (negative_vectors). Kept only once those are asked
        # for (a full step never reads them); derived, not state: not saved.
        self.register_buffer("neighbour_mean", torch.zeros(0, dim), persistent=False)
        # per row, its layers 1..L-1 side by side as of its last embedding: what a local
        # step with layer history reads of a neighbour (forward_historical). Kept once
        # asked for (keep_layer_history), filled by every full embedding; not saved.
        width = max(num_layers - 1, 0) * dim
        self.register_buffer("user_history", torch.zeros(0, width), persistent=False)
        self.register_buffer("item_history", torch.zeros(0, width), persistent=False)
        self._history_wanted = False
        self._history_filled = False
        self.reset_parameters()

    @property
    def num_users(self) -> int:
        return int(self.user_emb.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_emb.shape[0])

    # -- initialisation --------------------------------------------------------------

    def _init_rows(self, kind: str, rows: Tensor) -> Tensor:
        """Initial values of these rows (a function of seed, kind and row only)."""
        std = self.user_init_std if kind == "user" else self.init_std
        return seeded_rows(int(self.get_buffer("seed")), kind, rows, self.dim, std)

    def _table(self, kind: str) -> torch.nn.Parameter:
        return self.user_emb if kind == "user" else self.item_emb

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for kind in KIND_CODE:
                table = self._table(kind)
                rows = torch.arange(table.shape[0])
                table.copy_(self._init_rows(kind, rows).to(table.device, table.dtype))
            if self.relation_log_scale is not None:
                self.relation_log_scale.zero_()
        self._history_filled = False  # the kept layers are of other parameters

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
        if self.keeps_neighbour_means:
            self._fit_neighbour_means()
        if self._history_wanted:
            self._fit_history()

    @property
    def keeps_neighbour_means(self) -> bool:
        """Whether embeddings keep the items' layers 1..L (once negatives were asked for)."""
        return self.neighbour_mean.shape[0] > 0

    def _fit_neighbour_means(self) -> None:
        self.neighbour_mean = _zero_padded(self.neighbour_mean, self.num_items)

    def keep_layer_history(self) -> None:
        """From the next full embedding on, keep every row's layers 1..L-1 for
        :meth:`forward_historical`."""
        self._history_wanted = True
        self._fit_history()

    @property
    def has_layer_history(self) -> bool:
        return self._history_filled

    def _fit_history(self) -> None:
        for kind, size in (("user", self.num_users), ("item", self.num_items)):
            kept = getattr(self, f"{kind}_history")
            setattr(self, f"{kind}_history", _zero_padded(kept, size))  # no edge yet: 0

    @torch.no_grad()
    def reset_rows(self, users: Tensor, items: Tensor) -> None:
        for kind, rows in (("user", users), ("item", items)):
            if rows.numel():
                table = self._table(kind)
                rows = rows.to(torch.long).cpu()
                table[rows.to(table.device)] = self._init_rows(kind, rows).to(
                    table.device, table.dtype
                )
        kept_of = (
            (self.user_history, users),
            (self.item_history, items),
            (self.neighbour_mean, items),
        )
        for kept, rows in kept_of:  # what is kept of a row's edges, where it is kept at all
            if rows.numel() and kept.shape[0]:
                kept[rows.to(torch.long).to(kept.device)] = 0.0  # a reset row has no edge

    # -- propagation -------------------------------------------------------------------

    def forward(self, graph: BipartiteGraph, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        total, _, layers = self._propagate(graph)
        return self._select(total, layers, users, items)

    def _propagate(self, graph: BipartiteGraph) -> tuple[Tensor, Tensor | None, int]:
        """``(Σ_k e^(k) over every node, the last layer e^(L) or None, the layers summed)``."""
        n_users, n_items = self.num_users, self.num_items
        if graph.num_users > n_users or graph.num_items > n_items:
            raise ValueError(
                f"graph has {graph.num_users} user / {graph.num_items} item rows, the encoder "
                f"{n_users} / {n_items}: grow() first"
            )
        x = torch.cat([self.user_emb, self.item_emb])
        total, last, layers = x, None, 1
        # an embedding of every row: keep its layers 1..L-1 (forward_historical)
        deep: list[Tensor] | None = (
            [] if self._history_wanted and not torch.is_grad_enabled() else None
        )
        if self.num_layers and graph.num_edges:
            adjacency = self._adjacency(graph, x.dtype)
            for layer in range(self.num_layers):
                x = adjacency @ x
                total = total + x
                if deep is not None and layer < self.num_layers - 1:
                    deep.append(x)
            last, layers = x, layers + self.num_layers
        if deep is not None:
            self._fit_history()
            # no layer kept: one layer (width 0), or no edge (every layer 0)
            width = self.user_history.shape[1]
            kept = torch.cat(deep, dim=1) if deep else x.new_zeros(x.shape[0], width)
            self.user_history.copy_(kept[:n_users].float())
            self.item_history.copy_(kept[n_users:].float())
            self._history_filled = True
        return total, last, layers

    def _select(
        self, total: Tensor, layers: int, users: Tensor, items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The normalised layer mean of these rows."""
        n_users = self.num_users
        if not torch.is_grad_enabled() and items.numel() and self.keeps_neighbour_means:
            # an embedding: keep these items' layers 1..L
            mine = total.index_select(0, items + n_users) - self.item_emb.index_select(0, items)
            self.neighbour_mean[items] = (mine / layers).float()
        if users.numel() + items.numel() >= total.shape[0]:  # every node, then the rows
            out = F.normalize((total / layers if layers > 1 else total).float(), dim=-1)
            return out.index_select(0, users), out.index_select(0, items + n_users)

        def rows(nodes: Tensor) -> Tensor:
            # Fewer rows asked than nodes (a training step on a large graph): the mean and
            # normalisation (per row) for those only, and so their backward; each row once,
            # so a repeated row's gradients add up before its normalisation's backward as
            # over every node: the same floats, values and gradients.
            again = None
            if total.requires_grad:
                nodes, again = torch.unique(nodes, return_inverse=True)
            mean = total.index_select(0, nodes)
            mean = mean / layers if layers > 1 else mean
            out = F.normalize(mean.float(), dim=-1)
            return out if again is None else out.index_select(0, again)

        return rows(users), rows(items + n_users)

    @torch.no_grad()
    def embed_with_partial(
        self, graph: BipartiteGraph, users: Tensor, items: Tensor
    ) -> tuple[Tensor, Tensor, PartialSums | None]:
        was_training = self.training
        self.eval()
        try:
            own = torch.cat([self.user_emb, self.item_emb])  # a copy: the step moves these
            total, last, layers = self._propagate(graph)
            user_vec, item_vec = self._select(total, layers, users, items)
        finally:
            self.train(was_training)
        # Σ_{k<L} e^(k): a node's layers 1..L are its edges' coefficients times these
        passed = total if last is None else total - last
        sizes = [self.num_users, self.num_items]
        return (
            user_vec,
            item_vec,
            PartialSums(*torch.split(own, sizes), *torch.split(passed, sizes)),
        )

    @torch.no_grad()
    def embed_one_hop(
        self,
        partial: PartialSums,
        neighbourhood: Neighbourhood,
        users: Tensor,
        items: Tensor,
        stale: tuple[Tensor, Tensor],
    ) -> tuple[Tensor, Tensor]:
        hood = neighbourhood
        user_rows, item_rows = hood.rows()
        then = {
            "user": self._rows_then(
                "user", partial.own_users, partial.passed_users, user_rows, stale[0]
            ),
            "item": self._rows_then(
                "item", partial.own_items, partial.passed_items, item_rows, stale[1]
            ),
        }
        own = torch.cat([then["user"][0], then["item"][0]])
        at = torch.cat([hood.local(users), hood.local(items + hood.num_users)])
        total = own.index_select(0, at)
        if self.num_layers and hood.num_edges:
            passed = torch.cat([then["user"][1], then["item"][1]])
            coefficient = _coefficients(hood, own.dtype)
            # only the asked rows' edges: one sparse product, not an edge-by-dim gather
            asked = torch.full((own.shape[0],), -1, dtype=torch.long, device=own.device)
            asked[at] = torch.arange(at.numel(), device=own.device)
            mine = asked[hood.dst] >= 0
            product = _csr(
                asked[hood.dst[mine]],
                hood.src[mine],
                coefficient[mine],
                (at.numel(), own.shape[0]),
            )
            total = total + product @ passed
        out = F.normalize((total / (self.num_layers + 1)).float(), dim=-1)
        return torch.split(out, [users.numel(), items.numel()])  # type: ignore[return-value]

    def _rows_then(
        self, kind: str, own: Tensor, passed: Tensor, rows: Tensor, stale: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(own row, passed-on sum)`` of these rows as of the propagation; a row past its
        tables or ``stale`` has its initial row for both (it had no edge then)."""
        known = (rows < own.shape[0]) & ~torch.isin(rows, stale.to(rows.device))
        if bool(known.all()):  # the usual case: whole-row gathers (index_select, ~3x faster)
            return own.index_select(0, rows), passed.index_select(0, rows).to(own.dtype)
        mine = torch.empty(rows.numel(), own.shape[1], dtype=own.dtype, device=own.device)
        mine[known] = own[rows[known]]
        mine[~known] = self._init_rows(kind, rows[~known]).to(own.device, own.dtype)
        sums = mine.clone()
        sums[known] = passed[rows[known]].to(own.dtype)
        return mine, sums

    def _adjacency(self, graph: BipartiteGraph, dtype: torch.dtype) -> NormalisedAdjacency:
        """The graph's adjacency; kept for the next call with the same graph object (a
        step's training forward and its re-embedding), unless relation scales are learnt."""
        key = (self.num_users, self.num_items, dtype)
        cached = self._last_adjacency
        if cached is not None and cached[0] is graph and cached[1] == key:
            return cached[2]
        adjacency = NormalisedAdjacency.build(graph, *key[:2], self.relation_log_scale, dtype)
        if self.relation_log_scale is None:
            self._last_adjacency = (graph, key, adjacency)
        return adjacency

    @property
    def local_step(self) -> bool:
        return self.relation_log_scale is None

    def row_parameters(self) -> tuple[torch.nn.Parameter, ...]:
        return (self.user_emb, self.item_emb)

    def _rows_of(self, hood: Neighbourhood) -> tuple[Tensor, Tensor, Tensor]:
        """``(user rows, item rows, their id rows)`` of a neighbourhood's nodes in local
        order, the id rows with row-sparse gradients."""
        if not self.local_step:
            raise ValueError("learnt relation scales move every edge: no local step")
        user_rows, item_rows = hood.rows()
        x = torch.cat(
            [
                F.embedding(user_rows, self.user_emb, sparse=True),
                F.embedding(item_rows, self.item_emb, sparse=True),
            ]
        )
        return user_rows, item_rows, x

    def forward_local(
        self, neighbourhood: Neighbourhood, users: Tensor, items: Tensor
    ) -> tuple[Tensor, Tensor]:
        hood = neighbourhood
        x = self._rows_of(hood)[2]
        coefficient = _coefficients(hood, x.dtype)
        n_users, count = hood.num_users, users.numel()
        at = torch.cat([hood.local(users), hood.local(items + n_users)])  # the seeds asked
        total = own = x.index_select(0, at)
        n = hood.nodes.numel()
        position = torch.arange(n, device=x.device)  # of each hood node in x's rows, or -1
        for layer in range(self.num_layers):
            # Layer l feeds only the nodes within L - l hops of the seeds, whose edges are
            # the first L - l hops' (the last layer: the seeds' own), and only those rows
            # are computed; a node with no edge there, or a source outside the last
            # layer's rows, holds 0, as in a product over every node. The seeds' sums are
            # the same, with fewer products and rows.
            used = hood.within_hops(self.num_layers - layer)
            dst, src, value = hood.dst[:used], hood.src[:used], coefficient[:used]
            source = position[src]
            found = source >= 0
            dst, source, value = dst[found], source[found], value[found]
            receives = torch.zeros(n, dtype=torch.bool, device=x.device)
            receives[dst] = True
            rows = receives.nonzero().flatten()  # sorted: the rows keep the nodes' order
            if rows.numel() == 0:
                break  # no edge: this layer and the later ones hold 0 everywhere
            position = torch.full((n,), -1, dtype=torch.long, device=x.device)
            position[rows] = torch.arange(rows.numel(), device=x.device)
            target = position[dst]
            shape = (rows.numel(), x.shape[0])
            x = _product(target, source, value, shape, x)
            seed_row = position[at]
            has = seed_row >= 0
            total = total + torch.where(has[:, None], x.index_select(0, seed_row.clamp(min=0)), 0.0)
        if not torch.is_grad_enabled():  # an embedding: keep the items' layers 1..L
            self._keep_layers(hood.nodes[at], None, total - own)
        out = F.normalize((total / (self.num_layers + 1)).float(), dim=-1)
        user_vec, item_vec = torch.split(out, [count, at.numel() - count])
        return user_vec, item_vec

    def negative_vectors(self, items: Tensor) -> Tensor:
        """Vectors of negative items for a local step: ``normalise(e⁽⁰⁾ / (L + 1) +``
        their layers 1..L as of their last embedding), with a row-sparse gradient on their
        own rows only. The same values as :meth:`forward`'s right after an embedding of
        every row; no neighbourhood to sample, so a negative costs one row, not a tree.
        A negative's neighbours are pushed by no step (on the full step, letting the
        gradient reach only the own row measured even: eval-levers-negatives.json)."""
        self._fit_neighbour_means()  # from the first call on, embeddings keep them
        own = F.embedding(items, self.item_emb, sparse=True)
        passed = self.neighbour_mean.index_select(0, items).to(own.dtype)
        return F.normalize((passed + own / (self.num_layers + 1)).float(), dim=-1)

    def forward_historical(
        self, neighbourhood: Neighbourhood, users: Tensor, items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """These seeds' vectors from their one-hop ``neighbourhood`` alone: layer 1 from
        the neighbours' rows now (row-sparse gradients: the seeds' and neighbours' rows
        move), layer ``k`` > 1 from the neighbours' layer ``k - 1`` as of their last
        embedding (kept, no gradient: GNNAutoScale's historical embeddings). Exact when
        those are current and the neighbourhood holds every edge; the cost is the seeds'
        edges, not their trees. Without gradient (an embedding) the seeds' own layers
        1..L-1 are kept in turn."""
        hood = neighbourhood
        user_rows, item_rows, x = self._rows_of(hood)
        n_users, count = hood.num_users, users.numel()
        at = torch.cat([hood.local(users), hood.local(items + n_users)])  # the seeds asked
        seeds, again = torch.unique(at, return_inverse=True)
        total = x.index_select(0, seeds)
        deep = x.new_zeros(seeds.numel(), self.user_history.shape[1])  # no edge: layers 0
        if self.num_layers and hood.num_edges:
            # the seeds' own edges: one sparse product over the neighbours' rows
            row_of = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
            row_of[seeds] = torch.arange(seeds.numel(), device=x.device)
            mine = row_of[hood.dst] >= 0
            target, source = row_of[hood.dst[mine]], hood.src[mine]
            value = _coefficients(hood, x.dtype)[mine]
            shape = (seeds.numel(), x.shape[0])
            matrix = _csr(target, source, value, shape)  # both products below read it
            first = _product(target, source, value, shape, x, matrix)
            kept = torch.cat(
                [
                    self.user_history.index_select(0, user_rows),
                    self.item_history.index_select(0, item_rows),
                ]
            )
            with torch.no_grad():
                later = (
                    _product(target, source, value, shape, kept.to(x.dtype), matrix)
                    if kept.shape[1]
                    else first[:, :0]
                )
            deep = torch.cat([first, later], dim=1)[:, : later.shape[1]]  # layers 1..L-1
            total = total + first + later.view(seeds.numel(), -1, self.dim).sum(dim=1)
        if not torch.is_grad_enabled():  # an embedding: keep what a later one reads
            self._keep_layers(hood.nodes[seeds], deep, total - x.index_select(0, seeds))
        mean = total.index_select(0, again) / (self.num_layers + 1)
        out = F.normalize(mean.float(), dim=-1)
        user_vec, item_vec = torch.split(out, [count, at.numel() - count])
        return user_vec, item_vec

    def _keep_layers(self, nodes: Tensor, deep: Tensor | None, passed: Tensor) -> None:
        """Keep these nodes' layers 1..L-1 (``deep``; None: not computed) and, for items,
        their layers 1..L over L + 1 (``passed`` is their sum), when kept at all."""
        is_user = nodes < self.num_users
        items = nodes[~is_user] - self.num_users
        if deep is not None and self._history_wanted:
            self.user_history[nodes[is_user]] = deep[is_user].float()
            self.item_history[items] = deep[~is_user].float()
        if self.keeps_neighbour_means and items.numel():
            self.neighbour_mean[items] = (passed[~is_user] / (self.num_layers + 1)).float()


def _zero_padded(table: Tensor, rows: int) -> Tensor:
    """``table`` with zero rows appended up to ``rows`` (itself when it has them)."""
    missing = rows - table.shape[0]
    if missing <= 0:
        return table
    return torch.cat([table, table.new_zeros(missing, table.shape[1])])


def _product(
    rows: Tensor,
    cols: Tensor,
    values: Tensor,
    shape: tuple[int, int],
    x: Tensor,
    forward: Tensor | None = None,
) -> Tensor:
    """The sparse matrix ``(rows, cols, values)`` of ``shape`` times ``x``; when a gradient
    is to reach ``x``, through the transpose built once too (no gradient to ``values``).
    ``forward``: that matrix's :func:`_csr`, where the caller has built it already."""
    if forward is None:
        forward = _csr(rows, cols, values, shape)
    if torch.is_grad_enabled() and x.requires_grad:
        transposed = _csr(cols, rows, values, (shape[1], shape[0]))
        product: Tensor = _SparseProduct.apply(forward, transposed, x)
        return product
    return _sparse_times(forward, x)


def _coefficients(hood: Neighbourhood, dtype: torch.dtype) -> Tensor:
    """Each edge's ``w / sqrt(deg(dst) deg(src))`` with the full graph's degrees."""
    inv_sqrt = torch.where(hood.degree > 0, hood.degree.clamp(min=1e-30).rsqrt(), 0.0)
    dst, src = inv_sqrt.index_select(0, hood.dst), inv_sqrt.index_select(0, hood.src)
    return (dst * hood.weight * src).to(dtype)


@dataclass(frozen=True)
class NormalisedAdjacency:
    """``D^-1/2 A D^-1/2`` of the symmetric user-item graph (users first, then items).

    When no gradient has to reach the relation scales (none learnt, or no grad mode) it is
    one CSR matrix with the normalisation folded into its values: a layer is one sparse
    product. Otherwise it keeps one CSR block of raw summed weights per relation, with the
    scales and ``D^-1/2`` as dense factors, ``D^-1/2 Σ_r exp(s_r) A_r D^-1/2 x``, so autograd
    reaches ``s_r`` through dense products only (a gradient with respect to sparse values
    would cost a sampled dense product). Parallel edges of a (user, item) pair add up.

    >>> g = BipartiteGraph(1, 2, torch.tensor([0, 0]), torch.tensor([0, 1]),
    ...                    torch.tensor([0, 0]), torch.tensor([1.0, 3.0]), torch.zeros(2), 0)
    >>> (NormalisedAdjacency.build(g, 1, 2, None, torch.float) @ torch.eye(3)).to_dense()
    tensor([[0.0000, 0.5000, 0.8660],
            [0.5000, 0.0000, 0.0000],
            [0.8660, 0.0000, 0.0000]])
    """

    blocks: tuple[Tensor, ...]  # symmetric sparse CSR [N, N], no gradient
    scales: Tensor | None  # one factor per block (with gradient), or None: one block
    inv_sqrt_degree: Tensor | None  # [N, 1] when not folded into the blocks

    @classmethod
    def build(
        cls,
        graph: BipartiteGraph,
        num_users: int,
        num_items: int,
        log_scale: Tensor | None,
        dtype: torch.dtype,
    ) -> NormalisedAdjacency:
        """The adjacency of ``graph`` over tables of ``num_users`` + ``num_items`` rows.

        ``log_scale`` holds the per-relation ``s_r`` (``None``: every scale is 1); values
        are of ``dtype``.
        """
        num_nodes = num_users + num_items
        weights = graph.weights.to(dtype)
        users, items = graph.users, graph.items + num_users
        if log_scale is not None:
            scales = log_scale.exp()
            weights = weights * scales[graph.relations]
        degree = weights.new_zeros(num_nodes).index_add(
            0, torch.cat([users, items]), torch.cat([weights, weights])
        )
        positive = degree > 0
        inv_sqrt = torch.where(positive, torch.where(positive, degree, 1.0).rsqrt(), 0.0)
        if log_scale is None or not (log_scale.requires_grad and torch.is_grad_enabled()):
            block = _symmetric_csr(users, items, weights.detach(), num_nodes, inv_sqrt.detach())
            return cls((block,), None, None)
        present = torch.unique(graph.relations, sorted=True).tolist()
        blocks = []
        for relation in present:
            mine = graph.relations == relation
            raw = graph.weights[mine].to(dtype)
            blocks.append(_symmetric_csr(users[mine], items[mine], raw, num_nodes, None))
        return cls(tuple(blocks), scales[present], inv_sqrt[:, None])

    def __matmul__(self, x: Tensor) -> Tensor:
        h = x if self.inv_sqrt_degree is None else x * self.inv_sqrt_degree
        parts = [_SymmetricSparseProduct.apply(block, h) for block in self.blocks]
        out: Tensor = parts[0]
        if self.scales is not None:
            out = out * self.scales[0]
            for scale, part in zip(self.scales[1:], parts[1:], strict=True):
                out = out + scale * part
        return out if self.inv_sqrt_degree is None else out * self.inv_sqrt_degree


def _symmetric_csr(
    users: Tensor, items: Tensor, weights: Tensor, num_nodes: int, inv_sqrt: Tensor | None
) -> Tensor:
    """CSR of the (node, node) matrix with ``w`` at (user, item) and (item, user), summed.

    ``items`` are already offset into node space; with ``inv_sqrt`` each value is
    ``inv_sqrt[row] * w * inv_sqrt[col]``. Indices are int32 where they fit: the CPU
    product (MKL) would otherwise convert them on every call.

    Every user node is below every item node, so the user rows' entries (keyed by user,
    item) and the item rows' (by item, user) are sorted one side at a time and concatenated:
    a graph already in canonical order (by user, then item: a snapshot's) sorts only its
    item side, where sorting both sides together cost a sort of twice the edges. Stable
    sorts, so parallel edges add up in the order given, as they always have. Once the edges
    are by user, a stable sort of their items alone puts them by item, then user: int32
    keys where sorting (user, item) keys took int64 ones, half the time.
    """
    user_side = users * num_nodes + items
    user_weights = weights
    if user_side.numel() > 1 and not bool((user_side[1:] >= user_side[:-1]).all()):
        user_side, order = torch.sort(user_side, stable=True)
        user_weights = weights.index_select(0, order)
        users, items = users.index_select(0, order), items.index_select(0, order)
    narrow = torch.int32 if num_nodes < 2**31 else torch.int64
    by_item, order = torch.sort(items.to(narrow), stable=True)
    item_side = by_item.to(users.dtype) * num_nodes + users.index_select(0, order)
    key, slot = torch.unique_consecutive(torch.cat([user_side, item_side]), return_inverse=True)
    values = weights.new_zeros(key.numel()).index_add(
        0, slot, torch.cat([user_weights, user_weights.index_select(0, order)])
    )
    row, col = key.div(num_nodes, rounding_mode="floor"), key.remainder(num_nodes)
    if inv_sqrt is not None:  # index_select: advanced indexing's gather is 4x slower on CPU
        values = inv_sqrt.index_select(0, row) * values * inv_sqrt.index_select(0, col)
    index = torch.int32 if max(num_nodes, key.numel()) < 2**31 else torch.int64
    crow = torch.zeros(num_nodes + 1, dtype=index, device=key.device)
    crow[1:] = torch.bincount(row, minlength=num_nodes).cumsum(0)
    return torch.sparse_csr_tensor(
        crow, col.to(index), values, (num_nodes, num_nodes), check_invariants=False
    )


def _csr(rows: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """CSR of ``shape`` with ``values`` at ``(rows, cols)`` (repeats add up)."""
    height, width = shape
    order = torch.argsort(rows * width + cols)
    fits = max(height, width) < 2**31 and rows.numel() < 2**31
    index = torch.int32 if fits else torch.int64
    crow = torch.zeros(height + 1, dtype=index, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=height).cumsum(0)
    return torch.sparse_csr_tensor(
        crow, cols[order].to(index), values[order], (height, width), check_invariants=False
    )


class _SparseProduct(torch.autograd.Function):
    """``A @ x`` for a constant sparse ``A`` given with its transpose (the backward's)."""

    @staticmethod
    def forward(ctx: Any, matrix: Tensor, transposed: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(transposed)
        return _sparse_times(matrix, x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor]:
        (transposed,) = ctx.saved_tensors
        return None, None, _sparse_times(transposed, grad)


def _sparse_times(matrix: Tensor, dense: Tensor) -> Tensor:
    """``matrix @ dense`` in the matrix's dtype: under CUDA autocast a gradient arrives in
    bf16 while the matrix is fp32, a mix cuSPARSE's SpMM refuses ("operation not
    supported"); autograd casts the result back to the input's dtype.

    On the CPU the product writes straight into an unfilled result (``beta=0``: the
    result's old contents are never read, NaN included): ``matrix @ dense`` there zero-fills
    one buffer and copies it into another around MKL's product, 2.3x the product's time
    (6.4 against 2.8 ms for 200k edges, 64 columns), the same floats."""
    with torch.autocast(device_type=dense.device.type, enabled=False):
        dense = dense.to(matrix.dtype)
        if matrix.device.type != "cpu":
            return matrix @ dense
        out = dense.new_empty(matrix.shape[0], dense.shape[1])
        return torch.addmm(out, matrix, dense, beta=0, out=out)


class _SymmetricSparseProduct(torch.autograd.Function):
    """``A @ x`` for a constant symmetric sparse ``A``: the backward is ``A @ grad`` again.

    Autograd's own backward multiplies by ``A.T`` (a CSC matrix), which costs a conversion
    per layer on the CPU.
    """

    @staticmethod
    def forward(ctx: Any, matrix: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(matrix)
        return _sparse_times(matrix, x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        (matrix,) = ctx.saved_tensors
        return None, _sparse_times(matrix, grad)
