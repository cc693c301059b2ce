"""The trainer's in-memory mirror of the decayed user-item graph.

:class:`GraphMirror` is loaded once from :meth:`DecayedGraphStore.edges` and then kept in
step with the store from the micro-batches the worker applies, never by rescanning RocksDB:
an update costs O(batch) Python and a snapshot costs O(edges) vectorised tensor work. Its
:attr:`GraphMirror.index` (:mod:`stream.learn.graph_view`) is kept up to date with every
write, so a local learn step reads incident edges, degrees and a replay draw without
O(edges) work (:meth:`GraphMirror.view`, :meth:`GraphMirror.sample_replay`).

It applies the store's own rules (:mod:`stream.state.decay`, called with the same
arguments in the same order, so a single-partition replay gives the very same floats):

* relation ``r`` is the ``r``-th behaviour in sorted order, the store's relation code;
* an event merges ``beta * weight`` into its edge's ``(w_ref, t_ref)``; an edge already
  below epsilon at the event's watermark is forgotten first, and a late event whose edge
  decayed away before it arrived adds nothing (the store's lazy pruning);
* a snapshot decays every weight to its partition's watermark and prunes edges below
  epsilon (the store's bulk pruning);
* "now" is per source partition, as in the store: each edge remembers the partition that
  wrote it (its user's) and decays to that partition's watermark, which moves by the
  events' :attr:`~stream.events.Interaction.stream_ts`. A lagging or replayed partition is
  never aged by a faster one. :attr:`GraphMirror.watermark` (the newest of them) is only a
  report and the snapshot's ``now`` for encoders that read time.

Where it may differ from the store, on purpose:

* ``follow`` (social, user -> user) edges are skipped: this is the bipartite user-item
  graph the encoders learn from.
* Duplicate ``event_id`` s are filtered by the store, not here: pass only events the store
  applied, or a duplicate counts twice in the mirror until the next reload.
* Rows the id registry evicts lose their edges (:meth:`GraphMirror.drop_rows`), and events
  whose id was refused (row ``-1``) are not mirrored.

>>> from stream.events import Interaction
>>> from stream.behaviours import Behaviour
>>> m = GraphMirror({"click": Behaviour(1.0, 1_000)}, epsilon=0.1)
>>> batch = m.apply([Interaction("u", "i", "click", 1_000)], torch.tensor([0]), torch.tensor([0]))
>>> batch.weights.tolist(), m.watermark
([1.0], 1000)
>>> _ = m.apply([Interaction("u", "j", "click", 3_000)], torch.tensor([0]), torch.tensor([1]))
>>> g = m.snapshot(num_users=1, num_items=2)
>>> g.items.tolist(), g.weights.tolist()       # item 0 decayed two half-lives
([0, 1], [0.25, 1.0])
>>> _ = m.apply([Interaction("v", "i", "click", 9_000)], torch.tensor([1]), torch.tensor([0]),
...             partitions=[1])
>>> m.snapshot().weights.tolist()    # partition 1's later time does not age partition 0
[0.25, 1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from models.base import BipartiteGraph, EdgeBatch
from stream.behaviours import SOCIAL_EVENT_TYPES, Behaviour
from stream.errors import ConfigError
from stream.events import Interaction
from stream.learn.canonical_order import CanonicalOrder
from stream.learn.graph_view import MirrorIndex, NodeView
from stream.state.decay import DecayedWeight, decay_factor, is_dead, merge
from stream.state.graph_store import DecayedGraphStore
from stream.state.keys import ITEM, USER

_EdgeKey = tuple[int, int, int]  # (user row, item row, relation)
_ITEM_BITS, _RELATION_BITS = 32, 8
_ROW_SHIFT = _ITEM_BITS + _RELATION_BITS  # a slot key's user row is above this bit
_USER_BITS = 63 - _ROW_SHIFT  # the rest of a non-negative int64 (keys are built in tensors)
_ITEM_MASK, _RELATION_MASK = (1 << _ITEM_BITS) - 1, (1 << _RELATION_BITS) - 1


def _slot_key(key: _EdgeKey) -> int:
    """One int for an edge key, the slot index's key: a tuple of three ints costs ~190 bytes
    per held edge in the index, one int ~36 (measured at 1M edges: the tuple keys were half the
    mirror's RSS).

    >>> _slot_key((1, 2, 3)) == (1 << 40) | (2 << 8) | 3
    True
    """
    u, i, r = key
    if u >> _USER_BITS or i >> _ITEM_BITS or r >> _RELATION_BITS:
        raise ValueError(f"edge key {key} is out of the slot index's range")
    return (((u << _ITEM_BITS) | i) << _RELATION_BITS) | r


def slot_keys(users: Tensor, items: Tensor, relations: Tensor) -> list[int]:
    """:func:`_slot_key` of many edges at once (a bulk load of the index)."""
    if (
        bool((users >> _USER_BITS).any())
        or bool((items >> _ITEM_BITS).any())
        or bool((relations >> _RELATION_BITS).any())
    ):
        raise ValueError("an edge key is out of the slot index's range")
    keys: list[int] = _packed(users, items, relations).tolist()
    return keys


def _packed(users: Tensor, items: Tensor, relations: Tensor) -> Tensor:
    """:func:`_slot_key` of edges in range, as a tensor (no range check)."""
    return (((users << _ITEM_BITS) | items) << _RELATION_BITS) | relations


def _unpacked(keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(user rows, item rows, relations)`` of packed slot keys."""
    return keys >> _ROW_SHIFT, (keys >> _RELATION_BITS) & _ITEM_MASK, keys & _RELATION_MASK


@dataclass(frozen=True)
class StoredEdge:
    """A user -> item edge read from the store, by external id."""

    user_id: str
    item_id: str
    relation: str
    state: DecayedWeight
    partition: int = 0  # the source partition that writes it


def store_user_item_edges(store: DecayedGraphStore) -> Iterator[StoredEdge]:
    """The store's user -> item edges (one full scan; ``follow`` edges are skipped)."""
    for edge in store.edges():
        if edge.src_kind == USER and edge.dst_kind == ITEM:
            yield StoredEdge(edge.src_id, edge.dst_id, edge.relation, edge.state, edge.partition)


class GraphMirror:
    """Decayed, relation-typed user-item edges in row space, held in tensors.

    Args:
        behaviours: the store's behaviours (event type -> weight and half-life).
        epsilon: the store's pruning threshold.
        recency_half_life_ms: the trainer's user-recency half-life (:func:`user_recency`),
            which the incremental index's degrees and weights include (0: off).
    """

    def __init__(
        self,
        behaviours: Mapping[str, Behaviour],
        epsilon: float,
        recency_half_life_ms: float = 0,
    ) -> None:
        if not behaviours:
            raise ConfigError("the graph mirror needs at least one behaviour")
        if not epsilon > 0:
            raise ConfigError(f"epsilon must be > 0, got {epsilon!r}")
        self.relation_names: tuple[str, ...] = tuple(sorted(behaviours))
        self.epsilon = float(epsilon)
        self._code = {name: r for r, name in enumerate(self.relation_names)}
        self._beta = [behaviours[n].beta for n in self.relation_names]
        self._half_life = [behaviours[n].half_life_ms for n in self.relation_names]
        self._half_life_t = torch.tensor(self._half_life, dtype=torch.float64)
        self._index: dict[int, int] = {}  # _slot_key(edge key) -> slot
        self._free: list[int] = []
        self._used = 0  # slots ever handed out; free ones are listed in _free
        self._users = torch.zeros(0, dtype=torch.long)
        self._items = torch.zeros(0, dtype=torch.long)
        self._relations = torch.zeros(0, dtype=torch.long)
        self._w_ref = torch.zeros(0, dtype=torch.float64)
        self._t_ref = torch.zeros(0, dtype=torch.long)
        self._part = torch.zeros(0, dtype=torch.long)  # the source partition of each edge
        self._alive = torch.zeros(0, dtype=torch.bool)
        self.watermarks: dict[int, int] = {}  # source partition -> its stream time
        self.index = MirrorIndex(self, recency_half_life_ms)
        self._order = CanonicalOrder()  # the held edges by key, as of the last snapshot

    @property
    def watermark(self) -> int | None:
        """The newest partition watermark (a report; decay uses each edge's own)."""
        return max(self.watermarks.values()) if self.watermarks else None

    @property
    def num_relations(self) -> int:
        return len(self.relation_names)

    @property
    def num_edges(self) -> int:
        """Edges held (some may have decayed below epsilon since the last snapshot)."""
        return len(self._index)

    def relation(self, event_type: str) -> int:
        """The relation index of an event type (the store's relation code)."""
        try:
            return self._code[event_type]
        except KeyError:
            raise ValueError(f"unknown event type {event_type!r}") from None

    # -- writes -----------------------------------------------------------------------

    def load_edges(self, edges: Sequence[StoredEdge], users: Tensor, items: Tensor) -> None:
        """Put stored edges (state as stored) at these rows; ``-1`` rows are skipped."""
        states: dict[_EdgeKey, DecayedWeight | None] = {}
        parts: dict[_EdgeKey, int] = {}
        for edge, u, i in zip(edges, users.tolist(), items.tolist(), strict=True):
            if u >= 0 and i >= 0:
                key = (u, i, self.relation(edge.relation))
                states[key], parts[key] = edge.state, edge.partition
                self._advance(edge.partition, edge.state[1])
        self.index.stale = True  # a bulk load: rebuilt at the next read, not kept per edge
        self._write_edges(states, parts)

    def set_edges(
        self, states: Mapping[_EdgeKey, DecayedWeight | None], parts: Mapping[_EdgeKey, int]
    ) -> None:
        """Set edges to their states as stored (``None`` removes one): a changelog's
        records, folded one batch at a time; the index is kept up to date, not rebuilt."""
        for key, state in states.items():
            if state is not None:
                self._advance(parts[key], state[1])
        self._write_edges(states, parts)

    def edge_states(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(user rows, item rows, relations, ``w_ref``, ``t_ref``) of every held edge, as
        stored (not decayed)."""
        slots = self._alive[: self._used].nonzero().flatten()
        return (
            self._users[slots],
            self._items[slots],
            self._relations[slots],
            self._w_ref[slots],
            self._t_ref[slots],
        )

    def advance(self, now: int, partitions: Sequence[int] | None = None) -> None:
        """Move watermarks forward to ``now``: those of ``partitions``, else every known one
        (partition 0 when none is known yet)."""
        for partition in partitions if partitions is not None else list(self.watermarks) or [0]:
            self._advance(partition, now)

    def _advance(self, partition: int, now: int) -> None:
        self.watermarks[partition] = max(now, self.watermarks.get(partition, now))

    def apply(
        self,
        interactions: Sequence[Interaction],
        users: Tensor,
        items: Tensor,
        partitions: Sequence[int] | None = None,
    ) -> EdgeBatch:
        """Merge events (rows from the id registry) into the mirror, in order.

        ``partitions`` holds each event's source partition (None: all partition 0).
        Returns the :class:`EdgeBatch` of the events that left an edge: skipped are social
        events, events with a ``-1`` row and late events that decayed away on arrival.
        ``weights`` is the edge's ``w_ref`` right after the event.
        """
        if partitions is None:
            partitions = [0] * len(interactions)
        if not len(interactions) == users.numel() == items.numel() == len(partitions):
            raise ValueError(
                f"{len(interactions)} interactions but {users.numel()} user rows, "
                f"{items.numel()} item rows and {len(partitions)} partitions"
            )
        rows = (users.tolist(), items.tolist())
        relations = self._relations_of(interactions, *rows)
        keys, slots, current = self._lookup(*rows, relations)
        parts: dict[int, int] = {}
        marks = dict(self.watermarks)
        out_u: list[int] = []
        out_i: list[int] = []
        out_r: list[int] = []
        out_w: list[float] = []
        out_t: list[int] = []
        key_of = iter(keys)  # the kept events' keys, in order
        for event, u, i, r, p in zip(interactions, *rows, relations, partitions, strict=True):
            # every event moves its partition's stream time, as in the store
            stream_ts = event.stream_ts
            wm = marks[p] = max(stream_ts, marks.get(p, stream_ts))
            if r < 0:
                continue
            key = next(key_of)
            h = self._half_life[r]
            parts[key] = p
            old = current[key]
            base = old if old is not None and not is_dead(old, wm, h, self.epsilon) else None
            new = merge(base or (0.0, event.ts), self._beta[r] * event.weight, event.ts, h)
            if is_dead(new, wm, h, self.epsilon):
                current[key] = None
                continue
            current[key] = new
            out_u.append(u)
            out_i.append(i)
            out_r.append(r)
            out_w.append(new[0])
            out_t.append(event.ts)
        self.watermarks = marks
        self._write(current, parts, slots)
        return EdgeBatch(
            torch.tensor(out_u, dtype=torch.long),
            torch.tensor(out_i, dtype=torch.long),
            torch.tensor(out_r, dtype=torch.long),
            torch.tensor(out_w, dtype=torch.float32),
            torch.tensor(out_t, dtype=torch.long),
        )

    def positives(
        self, interactions: Sequence[Interaction], users: Tensor, items: Tensor
    ) -> EdgeBatch:
        """The edges of events already merged (e.g. loaded from the store), as the
        :class:`EdgeBatch` :meth:`apply` returns, changing nothing: ``weights`` are the
        edges' ``w_ref`` now; events whose edge is not held (pruned, refused) are left out."""
        rows = (users.tolist(), items.tolist())
        relations = self._relations_of(interactions, *rows)
        keys, _, current = self._lookup(*rows, relations)
        out: list[tuple[int, int, int, float, int]] = []
        key_of = iter(keys)
        for event, u, i, r in zip(interactions, *rows, relations, strict=True):
            if r < 0:
                continue
            state = current[next(key_of)]
            if state is not None:
                out.append((u, i, r, state[0], event.ts))
        u_, i_, r_, w_, t_ = zip(*out, strict=True) if out else ((), (), (), (), ())
        return EdgeBatch(
            torch.tensor(u_, dtype=torch.long),
            torch.tensor(i_, dtype=torch.long),
            torch.tensor(r_, dtype=torch.long),
            torch.tensor(w_, dtype=torch.float32),
            torch.tensor(t_, dtype=torch.long),
        )

    def edges_since(self, newer_than_ms: int | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(user rows, item rows, relations, newest event times) of the held edges whose
        newest event is after ``newer_than_ms`` (every held edge for ``None``)."""
        n = self._used
        held = self._alive[:n]
        if newer_than_ms is not None:
            held = held & (self._t_ref[:n] > newer_than_ms)
        slots = held.nonzero().flatten()
        return self._users[slots], self._items[slots], self._relations[slots], self._t_ref[slots]

    def _relations_of(
        self, interactions: Sequence[Interaction], users: list[int], items: list[int]
    ) -> list[int]:
        """Each event's relation, -1 for one the mirror skips (a refused row, a social
        event); an unknown event type raises ValueError before anything changes."""
        social, relation = SOCIAL_EVENT_TYPES, self.relation
        return [
            -1 if u < 0 or i < 0 or event.event_type in social else relation(event.event_type)
            for event, u, i in zip(interactions, users, items, strict=True)
        ]

    def _lookup(
        self, users: list[int], items: list[int], relations: list[int]
    ) -> tuple[list[int], dict[int, int | None], dict[int, DecayedWeight | None]]:
        """The slot keys of the events the mirror keeps (one per such event, in order), each
        distinct key's slot (None: not held) and current state, read with one gather."""
        kept = [k for k, r in enumerate(relations) if r >= 0]
        if not kept:
            return [], {}, {}
        keys = slot_keys(
            torch.tensor([users[k] for k in kept]),
            torch.tensor([items[k] for k in kept]),
            torch.tensor([relations[k] for k in kept]),
        )
        index = self._index
        slots = {key: index.get(key) for key in keys}
        current: dict[int, DecayedWeight | None] = dict.fromkeys(slots)
        held = [(key, slot) for key, slot in slots.items() if slot is not None]
        if held:
            at = torch.tensor([slot for _, slot in held], dtype=torch.long)
            w_ref, t_ref = self._w_ref[at].tolist(), self._t_ref[at].tolist()
            for (key, _), w, t in zip(held, w_ref, t_ref, strict=True):
                current[key] = (w, t)
        return keys, slots, current

    def _write_edges(
        self, states: Mapping[_EdgeKey, DecayedWeight | None], parts: Mapping[_EdgeKey, int]
    ) -> None:
        """:meth:`_write` of states keyed by ``(user row, item row, relation)``."""
        packed = {edge: _slot_key(edge) for edge in states}
        index = self._index
        self._write(
            {packed[edge]: state for edge, state in states.items()},
            {packed[edge]: part for edge, part in parts.items() if edge in packed},
            {key: index.get(key) for key in packed.values()},
        )

    def _write(
        self,
        states: Mapping[int, DecayedWeight | None],
        parts: Mapping[int, int],
        slots: Mapping[int, int | None],
    ) -> None:
        """Store edge states (and their partitions) by slot key; ``None`` removes the edge.
        ``slots``: each key's slot as the index holds it now (None: not held)."""
        users = torch.tensor(sorted({key >> _ROW_SHIFT for key in states}), dtype=torch.long)
        self.index.retract(users)
        at: list[int] = []
        fresh: list[bool] = []
        released: list[int] = []
        keys: list[int] = []
        t_refs: list[int] = []
        w_refs: list[float] = []
        for key, state in states.items():
            slot = slots[key]
            if state is None:
                if slot is not None:
                    self._release(key, slot)
                    released.append(slot)
                continue
            fresh.append(slot is None)
            at.append(self._allocate(key) if slot is None else slot)
            keys.append(key)
            t_refs.append(state[1])
            w_refs.append(state[0])
        written = torch.tensor(at, dtype=torch.long)
        if at:
            packed = torch.tensor(keys, dtype=torch.long)
            self._users[written], self._items[written], self._relations[written] = _unpacked(packed)
            self._t_ref[written] = torch.tensor(t_refs, dtype=torch.long)
            self._part[written] = torch.tensor([parts.get(k, 0) for k in keys], dtype=torch.long)
            self._w_ref[written] = torch.tensor(w_refs, dtype=torch.float64)
            self._alive[written] = True
        freed = torch.tensor(released, dtype=torch.long)
        handed_out = torch.tensor(fresh, dtype=torch.bool)
        self._order.released(freed)
        self._order.allocated(written[handed_out])
        self.index.released(freed)
        self.index.written(written, handed_out, users)

    def _allocate(self, key: int) -> int:
        if self._free:
            slot = self._free.pop()
        else:
            slot = self._used
            self._used += 1
            if slot >= self._alive.numel():
                self._grow(max(1024, 2 * self._alive.numel()))
        self._index[key] = slot
        return slot

    def _release(self, key: int, slot: int) -> None:
        del self._index[key]
        self._free.append(slot)
        self._alive[slot] = False

    def _grow(self, capacity: int) -> None:
        def grown(t: Tensor) -> Tensor:
            return torch.cat([t, t.new_zeros(capacity - t.numel())])

        self._users, self._items = grown(self._users), grown(self._items)
        self._relations, self._t_ref = grown(self._relations), grown(self._t_ref)
        self._part = grown(self._part)
        self._w_ref, self._alive = grown(self._w_ref), grown(self._alive)
        self._order.grow(capacity)

    def drop_rows(self, users: Tensor, items: Tensor) -> int:
        """Forget every edge of these (evicted) rows; returns how many edges went."""
        if users.numel() == 0 and items.numel() == 0:
            return 0
        self.index.prepare()
        slots = torch.unique(
            torch.cat([self.index.held("user", users.cpu()), self.index.held("item", items.cpu())])
        )
        self._forget(slots)
        return int(slots.numel())

    def _forget(self, slots: Tensor) -> None:
        """:meth:`_release` of many slots, vectorised (a pruning snapshot forgets every edge
        that decayed away since the last: thousands a call at a steady state)."""
        rows = self._users[slots]
        users = torch.unique(rows)
        self.index.retract(users)
        index = self._index
        for key in slot_keys(rows, self._items[slots], self._relations[slots]):
            del index[key]
        self._free.extend(slots.tolist())
        self._alive[slots] = False
        self._order.released(slots)
        self.index.released(slots)
        self.index.written(slots[:0], torch.zeros(0, dtype=torch.bool), users)

    # -- reads without O(edges) work (the incremental index) --------------------------------

    def view(self, num_users: int, num_items: int) -> NodeView:
        """The held edges in an encoder's node space, for a local step (see
        :mod:`stream.learn.graph_view`)."""
        self.index.prepare()
        return NodeView(self.index, num_users, num_items)

    def sample_replay(
        self, n: int, generator: torch.Generator, older_than: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(user rows, item rows)`` of ``n`` held edges drawn ∝ their weight in the
        trainer's view (with replacement), among those whose newest event is before
        ``older_than``; empty when nothing qualifies."""
        if n < 0:
            raise ValueError(f"replay sample size must be >= 0, got {n!r}")
        self.index.prepare()
        return self.index.sample_replay(n, generator, older_than)

    # -- snapshots --------------------------------------------------------------------

    def snapshot(
        self, num_users: int | None = None, num_items: int | None = None, prune: bool = True
    ) -> BipartiteGraph:
        """Edges decayed to their partitions' watermarks, below-epsilon ones left out, in
        canonical order; the graph's ``now`` is the newest watermark.

        The order (by user, item, relation) depends only on the edge set, so two mirrors
        holding the same edges give the same snapshot however they were built. ``prune``
        also forgets the dead edges (each is forgotten once, so the cost is amortised);
        a read path passes ``prune=False`` and changes nothing.
        """
        n = self._used
        now = self.watermark if self.watermark is not None else 0
        weights = self._decayed(n)
        alive = self._alive[:n]
        live = alive & (weights >= self.epsilon)
        if prune:
            self._forget((alive & ~live).nonzero().flatten())
        slots, keys = self._order.current(live, self._packed_keys)
        if prune:
            self._order.keep(slots, keys)
        # The columns are decoded from the keys, not gathered by the order: a gather in
        # random order misses the cache on every element (a third of a snapshot at 1M edges).
        users, items, relations = _unpacked(keys)
        max_user = int(users.max()) + 1 if users.numel() else 0
        max_item = int(items.max()) + 1 if items.numel() else 0
        if num_users is not None and num_users < max_user:
            raise ValueError(f"num_users {num_users} < highest user row + 1 ({max_user})")
        if num_items is not None and num_items < max_item:
            raise ValueError(f"num_items {num_items} < highest item row + 1 ({max_item})")
        return BipartiteGraph(
            num_users if num_users is not None else max_user,
            num_items if num_items is not None else max_item,
            users,
            items,
            relations,
            weights.index_select(0, slots).to(torch.float32),
            self._t_ref.index_select(0, slots),
            now,
        )

    def _packed_keys(self, slots: Tensor) -> Tensor:
        """These slots' slot keys (:func:`_slot_key`), whose order is the (user, item,
        relation) order. index_select: advanced indexing's gather is ~4x slower on CPU."""
        users, items = self._users.index_select(0, slots), self._items.index_select(0, slots)
        relations = self._relations.index_select(0, slots)
        return _packed(users, items, relations)

    def watermarks_by_partition(self) -> Tensor:
        """Each partition's watermark, indexed by partition (0 for one never seen)."""
        marks = torch.zeros(max(self.watermarks, default=0) + 1, dtype=torch.long)
        for partition, mark in self.watermarks.items():
            marks[partition] = mark
        return marks

    def _decayed(self, n: int) -> Tensor:
        """``weight_at`` each edge's partition watermark for the first ``n`` slots,
        vectorised (float64, as the store)."""
        marks = self.watermarks_by_partition()
        now = marks.index_select(0, self._part[:n].clamp(max=marks.numel() - 1))
        age = (now - self._t_ref[:n]).clamp(min=0).to(torch.float64)
        half_life = self._half_life_t.index_select(0, self._relations[:n])
        return self._w_ref[:n] * decay_factor(age, half_life)
