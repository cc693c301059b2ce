"""A learn step whose cost follows its batch: sample, train, re-embed what it trained.

With ``step_scope`` ``local`` a learn call

1. reads the graph through the mirror's incremental index
   (:class:`stream.learn.graph_view.NodeView`: each node's incident edges and full weighted
   degree, weights decayed lazily for what is gathered; no O(edges) work per call),
2. for each optimiser step, samples the ``layers``-hop neighbourhood of the step's users
   and positive items, at most ``fanout`` edges per node and hop
   (:func:`models.neighbourhood.sample_neighbourhood`), and computes their vectors on it
   (:meth:`models.base.Encoder.forward_local`); a negative item is its own row plus its
   layers 1..L as of its last embedding (:meth:`models.base.Encoder.negative_vectors`: no
   tree per negative, so 64 per positive cost 64 rows, not 64 trees); the id tables get
   row-sparse gradients and :class:`stream.learn.optimiser.RowAdam` moves only those rows.
   When the sample holds more than half the graph's edges (a small graph) the step runs on
   the whole graph instead, as cheap and exact (its negatives too: the full step's
   vectors), moving the rows within ``layers`` hops of the step's rows,
3. re-embeds some rows and publishes among those:

   * ``fanout`` > 0 (bounded): exactly the *seeds*, the rows of the call's positives (new
     and replayed edges: the users and items the loss pulled together) plus rows with new
     events, new rows, rows reset by eviction and the next ``sweep_rows`` rows of each
     kind in a round robin (:func:`stream.learn.refresh.swept`). Their vectors are
     computed on a ``fanout``-capped ``layers``-hop tree around them (the unbiased sampled
     estimate of the full propagation), so the cost is O(seeds x fanout^layers x dim)
     whatever the graph's size; a seed a step sampled is embedded on that step's own
     sample (its tree there is complete), the others on a tree drawn now.
     **Staleness rule**: every other row keeps its cached
     (published) vector, even when its own parameters moved (a negative pushed away, a
     neighbour in the sample) or a neighbour's did, until it is a seed again (its next
     event or replay draw), the sweep reaches it (at most live / ``sweep_rows`` calls) or
     ``full_refresh_every`` re-embeds every row. A call whose step ran on the whole graph,
     or whose re-embedding would draw more edges than the graph holds (a call coalescing
     thousands of events under load), re-embeds every row instead, with one full
     propagation: exact, and no dearer than the step or the trees it replaces.
   * ``fanout`` 0 (exact): every row within ``layers`` hops of a row that moved plus the
     batch's own rows (new edges), with the full graph's propagation at those rows (every
     edge, no cap): the same vectors a full step's re-embedding gives them. When those
     rows are more than a quarter of the graph, or a step ran on the whole graph, every
     row is re-embedded with one full propagation (cheaper, the same values).

With ``layer_history`` (:meth:`models.base.Encoder.forward_historical`) a neighbourhood, the
step's and the re-embedding's alike, is *one* hop around its seeds, and the neighbours'
layers 1..L-1 are read from what their last embedding kept (GNNAutoScale's historical
embeddings; an embedding of every row fills them, so a call with none kept yet steps on
the whole graph): the cost is O(seeds x fanout x dim), not O(seeds x fanout^layers x
dim). The gradient reaches the seeds' and their neighbours' rows, not the rows two hops
away; a re-embedded row's vector is exact up to its neighbours' kept layers' staleness (and
the fan-out's sampling). The re-embedding is bounded (the seeds) whatever ``fanout`` is.

Never re-embedded between refreshes in either mode: rows whose vectors drift only because
the graph decays or renormalises around them, or because the score prior's mix (a few
dense weights) moved; ``full_refresh_every`` re-embeds everything periodically for those.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from models.base import BipartiteGraph, Encoder
from models.neighbourhood import Neighbourhood, NeighbourSource, node_set, sample_neighbourhood

# Re-embed with one full propagation once the rows to re-embed are this share of all rows.
_FULL_SHARE = 0.25


class LocalStep:
    """The neighbourhoods of one learn call's optimiser steps, and the rows they moved.

    Args:
        index: the graph in the encoder's node space (on the host).
        whole_graph: the trainer's whole graph view, built only if a step needs it.
        num_edges: the graph's edges (a step sampling more than these runs on the whole).
        hops: propagation layers.
        fanout: edges per node and hop at most (0: all).
        generator: the learn call's generator (sampling is reproducible).
        positives: the call's positives ``(users, items)`` (rows), seeds of a bounded
            re-embedding.
        history: sample one hop and read the neighbours' deeper layers from their last
            embedding (:meth:`Encoder.forward_historical`) instead of sampling ``hops``;
            the re-embedding is then bounded (its seeds) whatever ``fanout`` is.
    """

    def __init__(
        self,
        index: NeighbourSource,
        whole_graph: Callable[[], BipartiteGraph],
        num_edges: int,
        hops: int,
        fanout: int,
        generator: torch.Generator,
        positives: tuple[Tensor, Tensor] | None = None,
        history: bool = False,
    ) -> None:
        self.index = index
        self.whole_graph = whole_graph
        self.num_edges = num_edges
        self.hops = hops
        self.fanout = fanout
        self.generator = generator
        self.history = history
        self._moved: list[Tensor] = []
        self._whole_graph_seeds: list[Tensor] = []
        self.whole_graph_steps = 0  # steps that ran on the whole graph instead
        none = torch.zeros(0, dtype=torch.long)
        self.positives = (none, none) if positives is None else positives
        # the steps' samples, with their seeds (sorted node ids): a seed's tree in it is
        # complete, so a bounded re-embedding of that seed reuses it instead of drawing
        self._trees: list[tuple[Neighbourhood, Tensor]] = []
        self.step_edges = 0  # edges the steps' samples drew from the index
        self.reembed_edges = 0  # edges the re-embedding drew afresh (seeds no step sampled)

    @property
    def bounded(self) -> bool:
        """Re-embed only the seeds (see the module docstring)."""
        return self.fanout > 0 or self.history

    @property
    def sample_hops(self) -> int:
        """Hops a neighbourhood spans: one with layer history, else every layer's."""
        return min(self.hops, 1) if self.history else self.hops

    def _forward(
        self, encoder: Encoder, hood: Neighbourhood, users: Tensor, items: Tensor
    ) -> tuple[Tensor, Tensor]:
        if self.history:
            return encoder.forward_historical(hood, users, items)
        return encoder.forward_local(hood, users, items)

    @property
    def num_users(self) -> int:
        return self.index.num_users

    @property
    def moved(self) -> Tensor:
        """Sorted nodes of every neighbourhood sampled so far: the rows the steps moved
        (with a whole-graph step: also every row within ``hops`` of its rows)."""
        parts = list(self._moved)
        if self._whole_graph_seeds:
            ball = self.index.within(torch.cat(self._whole_graph_seeds), self.hops)
            assert ball is not None  # no limit
            parts.append(ball)
        if not parts:
            return torch.zeros(0, dtype=torch.long)
        return node_set(torch.cat(parts), self.index.num_nodes)

    def vectors(
        self, encoder: Encoder, users: Tensor, items: Tensor, negatives: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The step's vectors of its users, positive items and negative items. Users and
        positives on their sampled neighbourhood (its nodes are the rows moved), negatives
        from their own rows and kept layers (:meth:`Encoder.negative_vectors`: their rows
        move too). When the sample would hold more than half the graph's edges (a small
        graph) all three on the whole graph instead: as cheap then, and exact (the full
        step's vectors); the rows moved are those within ``hops`` of these."""
        seeds = torch.cat([users, items + self.num_users]).cpu()
        hood = None
        if not self.history or encoder.has_layer_history:  # none kept yet: the whole graph
            hood = sample_neighbourhood(
                self.index, seeds, self.sample_hops, self.fanout, self.generator, self.num_edges
            )
        if hood is not None:
            self._moved.append(hood.nodes)
            self.step_edges += hood.num_edges
            if self.bounded:
                self._trees.append((hood, torch.unique(seeds)))
            user_vec, pos_vec = self._forward(encoder, hood.to(users.device), users, items)
            if negatives.numel() == 0:  # in-batch: the other positives are the negatives
                return user_vec, pos_vec, pos_vec[:0]
            self._moved.append(torch.unique(negatives).cpu() + self.num_users)
            return user_vec, pos_vec, encoder.negative_vectors(negatives)
        self.whole_graph_steps += 1
        self._whole_graph_seeds.append(torch.cat([seeds, negatives.cpu() + self.num_users]))
        user_vec, item_vec = encoder(self.whole_graph(), users, torch.cat([items, negatives]))
        pos_vec, neg_vec = item_vec.split([items.numel(), negatives.numel()])
        return user_vec, pos_vec, neg_vec

    def to_reembed(self, users: Tensor, items: Tensor) -> Tensor | None:
        """Sorted nodes to re-embed, given these rows (new events, new or reset rows, the
        sweep). Bounded: the seeds, these rows and the positives' rows. Exact: the nodes
        within ``hops`` of a moved node or of these rows (the batch's new edges renormalise
        the adjacency around them). None: every row, when a step ran on the whole graph
        (its view is built, and one full propagation costs what that step's forward did)
        or, exact, when those nodes are a large share of the graph (the cheaper way to the
        same vectors)."""
        if self.whole_graph_steps:
            return None
        if self.bounded:
            pos_users, pos_items = (rows.cpu() for rows in self.positives)
            user_rows = torch.cat([users.cpu(), pos_users])
            item_rows = torch.cat([items.cpu(), pos_items])
            seeds: Tensor = torch.unique(torch.cat([user_rows, item_rows + self.num_users]))
            return seeds
        seeds = torch.cat([*self._moved, users.cpu(), items.cpu() + self.num_users])
        return self.index.within(seeds, self.hops, int(_FULL_SHARE * self.index.num_nodes))

    def embed(
        self, encoder: Encoder, nodes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """``(user rows, item rows, their vectors)`` of these nodes (sorted): on a
        ``fanout``-capped tree when bounded, else exactly as a full propagation gives them
        (every edge). Bounded, a node a step sampled as a seed is embedded on that step's
        sample (its tree there is complete: the same unbiased estimate, with no second
        draw; the vector is then computed on the sample the step trained on), the others
        on a tree drawn now. Bounded, None when that draw would hold more edges than the
        graph (a call coalescing thousands of events): re-embed every row with one full
        propagation instead, cheaper and exact, as after a whole-graph step."""
        device = encoder.row_parameters()[0].device
        nodes = nodes.cpu()
        parts: list[tuple[Neighbourhood, Tensor]] = []
        rest = nodes
        for tree, seeds in reversed(self._trees):  # the latest step's sample first
            covered = torch.isin(rest, seeds)
            if bool(covered.any()):
                parts.append((tree, rest[covered]))
                rest = rest[~covered]
        if rest.numel() or not parts:
            # bounded: trees as large as the graph make one full propagation the cheaper
            # way (exact mode has its own rule in to_reembed)
            limit = self.num_edges if self.bounded else None
            hood = sample_neighbourhood(
                self.index, rest, self.sample_hops, self.fanout, self.generator, limit
            )
            if hood is None:
                return None
            self.reembed_edges += hood.num_edges
            parts.append((hood, rest))
        out_nodes, user_vecs, item_vecs = [], [], []
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.no_grad():
                for hood, mine in parts:
                    users = mine[mine < self.num_users]
                    items = mine[mine >= self.num_users] - self.num_users
                    user_vec, item_vec = self._forward(
                        encoder, hood.to(device), users.to(device), items.to(device)
                    )
                    out_nodes.append(torch.cat([users, items + self.num_users]))
                    user_vecs.append(user_vec)
                    item_vecs.append(item_vec)
        finally:
            encoder.train(was_training)
        joined = torch.cat(out_nodes)  # each node once: the parts are disjoint
        order = torch.argsort(joined)
        vectors = torch.cat([torch.cat(pair) for pair in zip(user_vecs, item_vecs, strict=True)])
        joined, vectors = joined[order], vectors[order.to(device)]
        is_user = joined < self.num_users
        users, items = joined[is_user], joined[~is_user] - self.num_users
        on = is_user.to(device)
        return users.to(device), items.to(device), vectors[on], vectors[~on]

    def absorb(self, moved: Tensor, whole_graph_steps: int) -> None:
        """Take ``moved`` as the rows the steps moved and ``whole_graph_steps`` as the
        steps run on the whole graph: those of every rank of a job, whose reduced
        gradients moved them all (:meth:`stream.learn.ranks.Ranks.merge_moved`). This
        rank's samples cover its share of the positives only: its re-embedding draws anew,
        as every other rank's does."""
        self._trees = []
        self._moved = [moved]
        self._whole_graph_seeds = []
        self.whole_graph_steps = whole_graph_steps
