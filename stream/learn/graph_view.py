"""The graph mirror's incremental index: what a local learn step reads without O(edges)
work per call.

:class:`MirrorIndex` keeps, beside :class:`~stream.learn.graph_mirror.GraphMirror`'s slot
arrays,

* each user's and each item's incident slots: a CSR of the slots held at the last rebuild
  (one direction per side) plus a sorted *delta* of the slots written since, merged in per
  write (O(delta) copying, no sort of the whole); an entry is valid while its slot is alive
  and not rewritten since (a base entry: the slot not written since the rebuild; a delta
  entry: the slot's allocation generation unchanged), so released, reused and rewritten
  slots need no search;
* each node's weighted degree in the trainer's view (decayed to each edge's partition
  watermark, times the user-recency factor of
  :func:`~stream.learn.graph_view.user_recency`), as per node, partition and relation
  sums ``Σ w_ref · 2^((t_ref - T0)/h_r) · recency`` at a reference time ``T0``: the degree
  at any watermarks is those sums times ``2^(-(wm_p - T0)/h_r)``. A write retracts and
  re-adds the contributions of every edge of the users it touches (their newest edge, and so
  their recency factors, may move);
* a rebuild, from the mirror's arrays, when the delta passes a share of the base
  (amortised O(log E) per written edge), when the watermarks moved far from ``T0`` (64
  half-lives of the shortest relation, so the sums stay in float64 range) or when a bulk load
  bypassed the writes. It forgets the edges decayed below epsilon first.

Weights are decayed lazily, for the slots a draw gathers only; those below epsilon are left
out of a draw. The one difference from a full snapshot, on purpose: an edge that decayed
below epsilon since the last rebuild still counts in its nodes' degrees (with its weight,
under epsilon) until a rebuild or a snapshot forgets it; and an edge whose event time is
ahead of its partition's watermark counts at its weight decayed *up* to the watermark
(the snapshot clamps it to ``w_ref``). Replay draws ∝ the same weights (uniform slots, then
acceptance against an upper bound of every weight: exact, and O(draws) however large the
graph).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from models.base import BipartiteGraph
from models.neighbourhood import Draw, NeighbourSource
from stream.learn import slot_records
from stream.learn.slot_lists import SlotLists
from stream.learn.slot_records import SlotRecords

if TYPE_CHECKING:
    from stream.learn.graph_mirror import GraphMirror

RECENCY_HALVINGS = 20  # past this many half-lives behind its user's newest an edge counts 0
_MAX_HALF_LIVES = 64  # of the shortest relation between T0 and the newest watermark
_REPLAY_ROUNDS = 64  # acceptance rounds before a replay draw falls back to every edge


class MirrorIndex:
    """The incremental index of one :class:`GraphMirror` (see the module docstring).

    The mirror calls :meth:`retract` before it writes or releases slots and
    :meth:`written` after; a reader calls :meth:`prepare` first (it may rebuild).
    """

    def __init__(
        self, mirror: GraphMirror, recency_half_life_ms: float, rebuild_share: float = 0.125
    ) -> None:
        self.mirror = mirror
        self.recency_half_life_ms = float(recency_half_life_ms)
        self.rebuild_share = rebuild_share
        self.stale = True  # rebuild before the next read (nothing built, or a bulk load)
        self.rebuilds = 0
        self._sides = {"user": SlotLists(), "item": SlotLists()}
        self._gen = torch.zeros(0, dtype=torch.long)  # per slot: allocations so far
        self._written = torch.zeros(0, dtype=torch.bool)  # per slot: since the last rebuild
        self._records = SlotRecords()  # the fields a draw reads, one row per slot
        self._contrib = torch.zeros(0, dtype=torch.float64)  # per slot: its degree term
        self._newest = torch.zeros(0, dtype=torch.long)  # per user row: newest held edge time
        self._degree = {k: torch.zeros(0, 1, 1, dtype=torch.float64) for k in self._sides}
        self._t0 = 0
        self._w_max = 0.0  # at least every held edge's weight (they only decay)
        self._far = False  # an edge's term left float64's comfortable range: rebuild

    @property
    def delta_entries(self) -> int:
        """Entries written since the last rebuild (users' side)."""
        return self._sides["user"].delta_size

    # -- upkeep, called by the mirror -------------------------------------------------

    def retract(self, users: Tensor) -> None:
        """Take out the degree terms of every held edge of these users (before a write)."""
        if self.stale or users.numel() == 0:
            return
        self._apply(self.held("user", users), sign=-1.0)

    def written(self, slots: Tensor, fresh: Tensor, users: Tensor) -> None:
        """Index slots just written (``fresh``: newly allocated), then put back the terms of
        every held edge of ``users`` (those retracted, with their newest edge now)."""
        if self.stale:
            return
        self._fit_slots()
        self._gen[slots[fresh]] += 1
        new = fresh | ~self._written[slots]
        self._written[slots] = True
        m = self.mirror
        if bool(new.any()):
            added, gens = slots[new], self._gen[slots[new]]
            self._sides["user"].add(m._users[added], added, gens)
            self._sides["item"].add(m._items[added], added, gens)
        self._records.pack(m, slots, self._gen, self._written)
        live = slots[m._alive[slots]]
        if live.numel():
            self._w_max = max(self._w_max, float(m._w_ref[live].max()))
        held = self.held("user", users)
        self._fit_rows("user", int(users.max()) + 1 if users.numel() else 0)
        self._newest[users] = 0
        self._newest.scatter_reduce_(0, m._users[held], m._t_ref[held], "amax")
        self._apply(held, sign=1.0)

    def released(self, slots: Tensor) -> None:
        """Mark released slots written (their base entries are stale from now on)."""
        if not self.stale:
            self._fit_slots()
            self._written[slots] = True
            self._records.pack(self.mirror, slots, self._gen, self._written)

    # -- reads --------------------------------------------------------------------------

    def prepare(self) -> None:
        """Rebuild if due; call before reading."""
        m = self.mirror
        marks = list(m.watermarks.values())
        shortest = float(m._half_life_t.min())
        far = bool(marks) and (max(marks) - self._t0) / shortest > _MAX_HALF_LIVES
        delta = max(side.delta_size for side in self._sides.values())
        base = max(side.base_size for side in self._sides.values())
        if self.stale or self._far or far or delta > self.rebuild_share * base + 1024:
            self.rebuild()

    def rebuild(self) -> None:
        """Forget the edges decayed below epsilon, then index every held edge afresh."""
        m = self.mirror
        self.stale = True  # the mirror's releases below need no upkeep
        n = m._used
        m._forget((m._alive[:n] & (m._decayed(n) < m.epsilon)).nonzero().flatten())
        slots = m._alive[:n].nonzero().flatten()
        for kind, side in self._sides.items():
            side.rebuild((m._users if kind == "user" else m._items)[slots], slots)
        self._fit_slots()
        self._written.zero_()
        self._contrib.zero_()
        self._records.pack(m, torch.arange(m._used), self._gen, self._written)
        self._t0 = m.watermark or 0
        self._far = False
        self._degree = {k: torch.zeros(0, 1, 1, dtype=torch.float64) for k in self._sides}
        self._newest = torch.zeros(0, dtype=torch.long)
        users = m._users[slots]
        self._fit_rows("user", int(users.max()) + 1 if slots.numel() else 0)
        self._newest.scatter_reduce_(0, users, m._t_ref[slots], "amax")
        self._apply(slots, sign=1.0)
        self._w_max = float(self.weights(slots)[1].max()) if slots.numel() else 0.0
        self.stale = False
        self.rebuilds += 1

    def held(self, kind: str, rows: Tensor) -> Tensor:
        """Every held slot of these rows (alive, including any decayed below epsilon)."""
        _, slots, _, gens = self._sides[kind].entries(rows, 0, None)
        return slots[self._valid(slots, gens)]

    def gather(
        self, kind: str, rows: Tensor, fanout: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(owner row, other end's row, weight x scale, relation)`` of these rows' edges,
        ``fanout`` per row from the base (and every delta one); below-epsilon ones left out."""
        owner, slots, scale, gens = self._sides[kind].entries(rows, fanout, generator)
        records = self._records.read(slots)
        keep = slot_records.valid(records, gens)
        owner, records, scale = owner[keep], records[keep], scale[keep]
        weight, decayed = self._weights(records)
        live = decayed >= self.mirror.epsilon
        owner, records, weight = owner[live], records[live], (weight * scale)[live]
        other = records[:, slot_records.ITEM if kind == "user" else slot_records.USER]
        return owner, other, weight.float(), records[:, slot_records.RELATION]

    def counts(self, kind: str, rows: Tensor, fanout: int) -> Tensor:
        return self._sides[kind].counts(rows, fanout)

    def degree(self, kind: str, rows: Tensor) -> Tensor:
        """float32 weighted degree of these rows at the current watermarks."""
        table = self._degree[kind]
        inside = rows < table.shape[0]
        out = torch.zeros(rows.numel(), dtype=torch.float64)
        if bool(inside.any()):
            terms = table.index_select(0, rows[inside]) * self._scale_now(table.shape[1])
            out[inside] = terms.sum(dim=(1, 2))
        return out.clamp(min=0).float()  # a retraction's rounding never goes negative

    def weights(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        """``(weight, decayed)``: each slot's weight decayed to its partition's watermark
        (float64) times its user-recency factor, and without it."""
        return self._weights(self._records.read(slots))

    def _weights(self, records: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`weights` of these slots' packed rows."""
        m = self.mirror
        part, t = records[:, slot_records.PART], records[:, slot_records.T_REF]
        now = m.watermarks_by_partition().index_select(0, part)
        age = (now - t).clamp(min=0).to(torch.float64)
        half_life = m._half_life_t.index_select(0, records[:, slot_records.RELATION])
        decayed = slot_records.w_ref(records) * torch.exp2(-age / half_life)
        return decayed * self._recency(records[:, slot_records.USER], t), decayed

    def sample_replay(
        self, n: int, generator: torch.Generator, older_than: int | None
    ) -> tuple[Tensor, Tensor]:
        """``(users, items)`` of ``n`` held edges drawn ∝ :meth:`weights` with replacement,
        among those whose newest event is before ``older_than``: uniform slots accepted
        with probability weight / an upper bound of every weight. Empty when none weighs."""
        m = self.mirror
        used = m._used
        chosen: list[Tensor] = []
        need, rate = n, 0.5
        for _ in range(_REPLAY_ROUNDS if n > 0 and used and self._w_max > 0 else 0):
            tries = max(256, int(need / rate * 1.25))
            if tries > used:
                break  # as dear as weighing every edge once: do that instead
            slots = torch.randint(0, used, (tries,), generator=generator)
            draw = torch.rand(tries, generator=generator, dtype=torch.float64)
            weight = self._replay_weights(slots, older_than)
            accepted = slots[draw * self._w_max < weight]
            chosen.append(accepted[:need])
            need -= int(chosen[-1].numel())
            rate = max(accepted.numel() / tries, 1e-4)
            if need == 0:
                break
        if need and n > 0 and used:  # nearly nothing weighs: every edge, once
            every = torch.arange(used)
            weight = self._replay_weights(every, older_than)
            held = self.weights(every)[1][m._alive[:used]]
            self._w_max = float(held.max()) if held.numel() else 0.0  # a tighter bound
            if not float(weight.sum()) > 0:
                return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
            cdf = weight.cumsum(0)
            r = torch.rand(need, generator=generator, dtype=torch.float64) * cdf[-1]
            chosen.append(torch.searchsorted(cdf, r, right=True).clamp(max=used - 1))
        slots = torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)
        return m._users.index_select(0, slots), m._items.index_select(0, slots)

    # -- internals ------------------------------------------------------------------------

    def _replay_weights(self, slots: Tensor, older_than: int | None) -> Tensor:
        m = self.mirror
        weight, decayed = self.weights(slots)
        keep = (decayed >= m.epsilon) & m._alive.index_select(0, slots)
        if older_than is not None:
            keep &= m._t_ref.index_select(0, slots) < older_than
        return torch.where(keep, weight, 0.0)

    def _valid(self, slots: Tensor, gens: Tensor) -> Tensor:
        m = self.mirror
        unwritten = ~self._written.index_select(0, slots)
        same_gen = self._gen.index_select(0, slots) == gens
        return m._alive.index_select(0, slots) & torch.where(gens < 0, unwritten, same_gen)

    def _scale_now(self, partitions: int) -> Tensor:
        """``[P, R]``: ``2^(-(wm_p - T0)/h_r)``, the terms' decay from ``T0`` to now."""
        marks = self.mirror.watermarks_by_partition()
        span = torch.zeros(partitions, dtype=torch.float64)
        span[: min(partitions, marks.numel())] = (marks[:partitions] - self._t0).double()
        return torch.exp2(-span[:, None] / self.mirror._half_life_t[None, :])

    def _recency(self, users: Tensor, times: Tensor) -> Tensor:
        """:func:`~stream.learn.graph_view.user_recency`'s factor of these edges."""
        if not self.recency_half_life_ms:
            return torch.ones(users.numel(), dtype=torch.float64)
        newest = self._newest.index_select(0, users.clamp(max=self._newest.numel() - 1))
        halvings = (newest - times).clamp(min=0).to(torch.float64) / self.recency_half_life_ms
        return torch.where(halvings > RECENCY_HALVINGS, 0.0, torch.exp2(-halvings))

    def _apply(self, slots: Tensor, sign: float) -> None:
        """Add (sign 1: computed now) or take out (sign -1: as stored) slots' degree terms."""
        if slots.numel() == 0:
            return
        m = self.mirror
        # index_select: advanced indexing's gather costs several times as much on the CPU
        users, items = m._users.index_select(0, slots), m._items.index_select(0, slots)
        relation, part = m._relations.index_select(0, slots), m._part.index_select(0, slots)
        if sign > 0:
            t_ref = m._t_ref.index_select(0, slots)
            exponent = (t_ref - self._t0).double() / m._half_life_t.index_select(0, relation)
            if bool((exponent > 4 * _MAX_HALF_LIVES).any()):
                self._far = True  # rebuilt at the next read, with a later T0
            terms = m._w_ref.index_select(0, slots) * torch.exp2(exponent.clamp(max=900))
            terms = terms * self._recency(users, t_ref)
            self._contrib[slots] = terms
        else:
            terms = -self._contrib.index_select(0, slots)
            self._contrib[slots] = 0.0
        partitions = int(part.max()) + 1
        for kind, rows in (("user", users), ("item", items)):
            self._fit_rows(kind, int(rows.max()) + 1, partitions)
            table = self._degree[kind]
            flat = (rows * table.shape[1] + part) * table.shape[2] + relation
            table.view(-1).index_add_(0, flat, terms)

    def _fit_slots(self) -> None:
        size = self.mirror._alive.numel()
        if self._gen.numel() < size:
            more = size - self._gen.numel()
            self._gen = torch.cat([self._gen, self._gen.new_zeros(more)])
            self._written = torch.cat([self._written, self._written.new_zeros(more)])
            self._contrib = torch.cat([self._contrib, self._contrib.new_zeros(more)])
        self._records.fit(size)

    def _fit_rows(self, kind: str, rows: int, partitions: int = 1) -> None:
        table = self._degree[kind]
        size, parts = table.shape[0], table.shape[1]
        relations = self.mirror.num_relations
        if rows > size or partitions > parts or table.shape[2] != relations:
            grown = table.new_zeros(max(rows, 2 * size), max(partitions, parts), relations)
            if table.numel():
                grown[:size, :parts] = table
            self._degree[kind] = grown
        if kind == "user" and self._newest.numel() < rows:
            more = max(rows, 2 * self._newest.numel()) - self._newest.numel()
            self._newest = torch.cat([self._newest, self._newest.new_zeros(more)])


class NodeView(NeighbourSource):
    """A :class:`MirrorIndex` in an encoder's node space (items after ``num_users``)."""

    def __init__(self, index: MirrorIndex, num_users: int, num_items: int) -> None:
        self.index = index
        self.num_users = num_users
        self._num_nodes = num_users + num_items

    @property
    def num_nodes(self) -> int:
        return self._num_nodes

    def node_degree(self, nodes: Tensor) -> Tensor:
        is_user = nodes < self.num_users
        out = torch.zeros(nodes.numel())
        out[is_user] = self.index.degree("user", nodes[is_user])
        out[~is_user] = self.index.degree("item", nodes[~is_user] - self.num_users)
        return out

    def counts(self, nodes: Tensor, fanout: int) -> Tensor:
        is_user = nodes < self.num_users
        out = torch.zeros(nodes.numel(), dtype=torch.long)
        out[is_user] = self.index.counts("user", nodes[is_user], fanout)
        out[~is_user] = self.index.counts("item", nodes[~is_user] - self.num_users, fanout)
        return out

    def draw(self, nodes: Tensor, fanout: int, generator: torch.Generator | None) -> Draw:
        is_user = nodes < self.num_users
        u_owner, u_item, u_weight, u_rel = self.index.gather(
            "user", nodes[is_user], fanout, generator
        )
        i_owner, i_user, i_weight, i_rel = self.index.gather(
            "item", nodes[~is_user] - self.num_users, fanout, generator
        )
        return Draw(
            torch.cat([u_owner, i_owner + self.num_users]),
            torch.cat([u_item + self.num_users, i_user]),
            torch.cat([u_weight, i_weight]),
            torch.cat([u_rel, i_rel]),
        )


def user_recency(graph: BipartiteGraph, half_life_ms: float) -> BipartiteGraph:
    """``graph`` with each edge's weight times ``2^(-(t_u - t)/h)``, ``t_u`` being the
    newest edge time of the edge's user: a user's latest items weigh most in the user's
    vector, however long ago the user was last seen (the store's decay runs from the
    stream's now instead, and fades a returning user's whole history alike). ``h`` 0: as is.

    >>> g = BipartiteGraph(1, 2, torch.tensor([0, 0]), torch.tensor([0, 1]),
    ...                    torch.tensor([0, 0]), torch.tensor([1.0, 1.0]),
    ...                    torch.tensor([0, 2_000]), 9_000)
    >>> user_recency(g, 1_000).weights.tolist()
    [0.25, 1.0]
    """
    if not half_life_ms or graph.num_edges == 0:
        return graph
    newest = torch.zeros(graph.num_users, dtype=graph.times.dtype, device=graph.times.device)
    newest = newest.scatter_reduce(0, graph.users, graph.times, "amax", include_self=False)
    age = (newest.index_select(0, graph.users) - graph.times).clamp(min=0).to(torch.float64)
    halvings = age / half_life_ms
    # Past RECENCY_HALVINGS an edge counts 0 in this view (its user's other edges weigh
    # 2^20 times more): a float32 factor would turn subnormal there, and an encoder that
    # normalises by a node's weight sum squares it in its gradient (0, then inf/NaN).
    factor = torch.where(halvings > RECENCY_HALVINGS, 0.0, torch.exp2(-halvings))
    return dataclasses.replace(graph, weights=graph.weights * factor.to(graph.weights.dtype))
