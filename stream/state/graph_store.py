"""The time-decayed, relation-typed user-item graph, durable in RocksDB.

One :class:`DecayedGraphStore` owns one RocksDB directory (``rocksdict`` in raw bytes
mode; nothing is ever pickled). :meth:`DecayedGraphStore.apply` writes a batch of
events *and* the source offsets they came from in one atomic ``WriteBatch``, so after
any crash the store's offsets say exactly which events it holds.

Why the result is the same whatever the batching (and so bit for bit across crashes):

* "now" for an event is its partition's watermark, stored with the offset: the newest
  :attr:`~stream.events.Interaction.stream_ts` applied in that partition (an event's time,
  capped by the Kafka record timestamp it came with, so no single record can move stream
  time past the clock it vouches for). It depends only on the partition's own order.
* Every event :meth:`DecayedGraphStore.apply` counts as applied changed an edge. One that
  cannot (weight 0, or so late that it had decayed below epsilon before it arrived) is
  counted as ignored under its reason (:data:`stream.events.IGNORED_REASONS`); duplicates
  are counted apart. Only applied events are reported back (:attr:`ApplyResult.kept`), so
  only they reach the trainer.
* An edge is only ever written from its user's partition (the topic is keyed by user),
  so its events always merge in the same order.
* Pruning is one rule, :func:`stream.state.decay.is_dead` at the partition watermark,
  applied lazily when an event touches an edge and in bulk after each batch. Watermarks
  only grow, so both give the same answer whenever they run.

With ``log_changes`` every write also reports the logged records it changed
(:attr:`ApplyResult.changes`) for the changelog; :mod:`stream.state.partition_state` drops
a partition's state and loads it back from its folded changelog.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rocksdict import AccessType, BlockBasedOptions, Options, Rdict, WriteBatch, WriteOptions

from stream.behaviours import SOCIAL_EVENT_TYPES, Behaviour, behaviours_option
from stream.errors import StoreError, StoreWriteError
from stream.events import Interaction
from stream.state import keys as k
from stream.state.batch import BatchUpdate
from stream.state.decay import DecayedWeight, expiry_time, is_dead, merge, weight_at
from stream.state.rocks import Rocks

FORMAT = b"streamgnn-graph-v1"
_META_FORMAT = k.META + b"format"
_META_BEHAVIOURS = k.META + b"behaviours"
_META_COUNTS = k.META + b"counts"
# present once every partition's edge count is kept (stores made before counted them once)
_META_PARTITION_EDGES = k.META + b"partition_edges_kept"
BLOOM_BITS_PER_KEY = 10  # RocksDB's usual choice: ~1 % false positives, ~1.25 bytes a key
# Each memtable's size (RocksDB's default: 64 MiB). A batch's write inserts every key into
# the memtable's skiplist holding the GIL (rocksdict does not release it), and a smaller
# skiplist is shallower and more of it cached: 16 MiB took the write from 8.9 to 5.1 µs an
# event at 1.1M edges (7.7 to 4.4 at 275k) over 40 calls of 5,000 events, the process's CPU
# with the background flushes included no higher (28.6 against 29.6 µs an event).
WRITE_BUFFER_BYTES = 16 << 20

log = logging.getLogger("streamgnn.store")


@dataclass(frozen=True)
class PartitionBatch:
    """Valid events of one source partition, in offset order, and the next offset to read."""

    partition: int
    next_offset: int
    interactions: Sequence[Interaction]


@dataclass(frozen=True)
class ApplyResult:
    applied: int
    duplicates: int
    pruned: int
    # Per batch (same order), the indices of its interactions that were applied.
    kept: tuple[tuple[int, ...], ...] = ()
    ignored: Mapping[str, int] = field(default_factory=dict)
    # With log_changes: (partition, key, value or None) of every logged record this write
    # and its pruning changed, in write order (see stream.state.keys.LOGGED).
    changes: tuple[tuple[int, bytes, bytes | None], ...] = ()


@dataclass(frozen=True)
class GraphCounts:
    nodes: int
    edges: int
    pruned_total: int


@dataclass(frozen=True)
class Edge:
    """A stored edge; ``state`` is ``(w_ref, t_ref)``, see :mod:`stream.state.decay`."""

    src_kind: bytes
    src_id: str
    relation: str
    dst_kind: bytes
    dst_id: str
    state: DecayedWeight
    partition: int = 0  # the source partition that writes it (its user's)


def _options(bloom_bits_per_key: int, write_buffer_bytes: int) -> Options:
    """Raw-bytes RocksDB options with a whole-key bloom filter in every table file and
    memtables of ``write_buffer_bytes`` (see :data:`WRITE_BUFFER_BYTES`).

    Most point reads of a growing graph miss: the first event of each user-item pair looks
    up an edge that is not there yet. Without a filter a miss searches every level's index
    and data blocks, and the more table files the graph has spilled into, the dearer it is;
    the filter answers nearly every miss from memory. Prefix scans are unaffected.
    """
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(write_buffer_bytes)
    if bloom_bits_per_key:
        table = BlockBasedOptions()
        table.set_bloom_filter(bloom_bits_per_key, False)  # full filters, not per block
        options.set_block_based_table_factory(table)
    return options


def _as_option(raw: bytes | None) -> str:
    """Stored behaviours (``{name: [beta, half_life_ms]}``) as ``--behaviours`` takes them,
    for an error message to copy from; what was there if that is not what it holds."""
    try:
        stored = json.loads(raw or b"")
        return behaviours_option({n: Behaviour(b, h) for n, (b, h) in stored.items()})
    except (ValueError, TypeError, AttributeError):
        return repr(raw)


@dataclass(frozen=True)
class _Relation:
    code: int
    beta: float
    half_life_ms: int
    dst_kind: bytes


# An event's edge: its relation, source and destination node keys, and its key suffix.
_Edge = tuple[_Relation, bytes, bytes, bytes]


class DecayedGraphStore:
    """Durable decayed graph plus the source positions it has applied.

    Args:
        path: RocksDB directory (created if missing).
        behaviours: event type → weight and half-life. Fixed for the store's life: a
            store opened with other behaviours is refused, since stored weights would
            silently change meaning.
        epsilon: edges whose decayed weight falls below this are pruned.
        dedup_window_ms: a repeated ``event_id`` is ignored while the partition
            watermark is within this many ms of the first copy's event time.
        sync_writes: fsync each batch (survive power loss, not only a crash).
        read_only: open for reading beside a live writer (secondary-free read-only).
        log_changes: report the logged records each write changes (the changelog's input).
        bloom_bits_per_key: each table file's whole-key bloom filter (0: none; see
            :func:`_options`). A file keeps the filter it was written with.
        write_buffer_bytes: each memtable's size (see :data:`WRITE_BUFFER_BYTES`).
    """

    def __init__(
        self,
        path: Path,
        behaviours: Mapping[str, Behaviour],
        epsilon: float = 1e-3,
        dedup_window_ms: int = 86_400_000,
        sync_writes: bool = False,
        read_only: bool = False,
        log_changes: bool = False,
        bloom_bits_per_key: int = BLOOM_BITS_PER_KEY,
        write_buffer_bytes: int = WRITE_BUFFER_BYTES,
    ) -> None:
        self._epsilon = epsilon
        self._log_changes = log_changes
        self._changes: list[tuple[int, bytes, bytes | None]] = []  # apply's and prune's
        self._dedup_window_ms = dedup_window_ms
        names = sorted(behaviours)
        self._relations = {
            name: _Relation(
                code,
                behaviours[name].beta,
                behaviours[name].half_life_ms,
                k.USER if name in SOCIAL_EVENT_TYPES else k.ITEM,
            )
            for code, name in enumerate(names)
        }
        self._relation_names = names
        self._half_lives = [behaviours[name].half_life_ms for name in names]
        options = _options(bloom_bits_per_key, write_buffer_bytes)
        access = AccessType.read_only() if read_only else AccessType.read_write()
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._db = Rocks(Rdict(str(path), options, access_type=access), path)
        except Exception as exc:  # rocksdict raises plain Exception (lock held, corrupt)
            raise StoreError(f"cannot open graph store at {path}: {exc}") from exc
        self._write_options = WriteOptions()
        self._write_options.sync = sync_writes
        self._path = path
        self._write_failed = False
        try:
            self._check_format(behaviours, read_only)
        except StoreError:
            self._db.close()  # a refused store is not left locked
            raise

    # -- lifecycle ----------------------------------------------------------------

    def _check_format(self, behaviours: Mapping[str, Behaviour], read_only: bool) -> None:
        wanted = json.dumps(
            {n: [b.beta, b.half_life_ms] for n, b in sorted(behaviours.items())}
        ).encode()
        fmt = self._db.get(_META_FORMAT)
        if fmt is None:
            if read_only or any(True for _ in self.scan(b"")):
                raise StoreError(f"{self._path} is not a streamgnn graph store")
            batch = WriteBatch(raw_mode=True)
            batch.put(_META_FORMAT, FORMAT)
            batch.put(_META_BEHAVIOURS, wanted)
            batch.put(_META_COUNTS, k.COUNTS_VALUE.pack(0, 0, 0))
            batch.put(_META_PARTITION_EDGES, b"")
            self._write(batch)
            return
        if fmt != FORMAT:
            raise StoreError(f"store format {fmt!r} is not {FORMAT!r}")
        if not read_only and self._db.get(_META_PARTITION_EDGES) is None:
            self._count_partition_edges()
        stored = self._db.get(_META_BEHAVIOURS)
        if stored != wanted:
            raise StoreError(
                f"store {self._path} was built with behaviours {_as_option(stored)}, "
                f"the configuration says {_as_option(wanted)}: start with --behaviours "
                "(STREAMGNN_BEHAVIOURS) set to the store's, or replay the topic into a fresh "
                "store (changing half-lives or weights changes what every stored weight means)"
            )

    def _count_partition_edges(self) -> None:
        """Count each partition's edges once, for a store made before they were kept: one
        pruning-index key per live edge, under its partition."""
        counts: dict[int, int] = {}
        for key, _ in self.scan(k.EXPIRY):
            partition = k.partition_of(key)
            counts[partition] = counts.get(partition, 0) + 1
        batch = WriteBatch(raw_mode=True)
        for partition, count in counts.items():
            batch.put(k.partition_edges_key(partition), k.COUNT_VALUE.pack(count))
        batch.put(_META_PARTITION_EDGES, b"")
        self._write(batch)
        log.info("graph store %s: counted the edges of %d partitions", self._path, len(counts))

    def _write(self, batch: WriteBatch) -> None:
        """Write ``batch`` atomically. A failed write (a full or failing disk) raises
        :class:`StoreWriteError`: RocksDB appends the batch to its log before it applies
        any of it, so none of it is in the store, and the store refuses every later write."""
        try:
            self._db.write(batch, self._write_options)
        except Exception as exc:  # rocksdict raises plain Exception("IO error: ...")
            self._write_failed = True
            raise StoreWriteError(
                f"cannot write to the graph store at {self._path}: {exc}; the batch "
                "was not written: free the space or fix the disk, then restart (the worker "
                "resumes after the last event the store holds)"
            ) from exc

    def close(self) -> None:
        try:
            self._db.close()
        except Exception as exc:  # closing flushes the memtables: the disk again
            if self._write_failed:  # already raised, with the cause: do not mask it
                log.warning("graph store closed after a failed write: %s", exc)
                return
            raise StoreWriteError(f"cannot close the graph store at {self._path}: {exc}") from exc

    def __enter__(self) -> DecayedGraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- positions ----------------------------------------------------------------

    def position(self, topic: str, partition: int) -> tuple[int, int] | None:
        """``(next_offset, watermark)`` applied for a source partition, or None if never."""
        raw = self._db.get(k.offset_key(topic, partition))
        if raw is None:
            return None
        next_offset, watermark = k.POSITION_VALUE.unpack(raw)
        return int(next_offset), int(watermark)

    def positions(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Every source partition's ``(next_offset, watermark)``."""
        out = {}
        for key, value in self.scan(k.OFFSET):
            next_offset, watermark = k.POSITION_VALUE.unpack(value)
            out[k.split_offset_key(key)] = (int(next_offset), int(watermark))
        return out

    def incarnation(self, topic: str) -> str | None:
        """The incarnation (Kafka's topic id) of ``topic`` its stored offsets belong to."""
        raw = self._db.get(k.INCARNATION + topic.encode("utf-8"))
        return None if raw is None else raw.decode()

    def begin_incarnation(self, topic: str, incarnation: str) -> list[int]:
        """Record that ``topic``'s stored offsets belong to its incarnation ``incarnation``.

        When they belonged to another (the topic was deleted and created again under its
        name, and its offsets started again at 0), every one of them goes back to 0 in the
        same write, its partition's watermark kept; returns the partitions so moved.
        """
        recorded = self.incarnation(topic)
        if recorded == incarnation:
            return []
        batch = WriteBatch(raw_mode=True)
        moved = []
        if recorded is not None:
            for (stored, partition), (_, watermark) in sorted(self.positions().items()):
                if stored == topic:
                    batch.put(k.offset_key(topic, partition), k.POSITION_VALUE.pack(0, watermark))
                    moved.append(partition)
        batch.put(k.INCARNATION + topic.encode("utf-8"), incarnation.encode())
        self._write(batch)
        return moved

    def rewind(self, topic: str, partition: int) -> None:
        """Move ``partition``'s position back to offset 0, its watermark kept: its topic was
        created again (the changelog's :func:`stream.ingest.changelog.validate_or_restore`)."""
        position = self.position(topic, partition)
        watermark = -1 if position is None else position[1]
        batch = WriteBatch(raw_mode=True)
        batch.put(k.offset_key(topic, partition), k.POSITION_VALUE.pack(0, watermark))
        self._write(batch)

    def watermark(self) -> int | None:
        """Stream time: the newest event time applied in any partition."""
        marks = [wm for _, wm in self.positions().values() if wm >= 0]
        return max(marks) if marks else None

    # -- the write path -----------------------------------------------------------

    def apply(self, topic: str, batches: Sequence[PartitionBatch]) -> ApplyResult:
        """Apply events and record offsets in one atomic write, then prune.

        Pruning is written separately: it is a pure function of the state and the
        stored watermarks, so a crash before it only delays it.
        """
        update = BatchUpdate(self._db, self._log_changes)
        counts = self.counts()
        nodes, edges, pruned_total = counts.nodes, counts.edges, counts.pruned_total
        duplicates = pruned = 0
        kept: list[tuple[int, ...]] = []
        ignored: dict[str, int] = {}
        keyed = [[self._edge_of(event) for event in part.interactions] for part in batches]
        update.prefetch(self._reads(batches, keyed))
        for part, part_edges in zip(batches, keyed, strict=True):
            update.partition = part.partition
            pos = self.position(topic, part.partition)
            watermark = pos[1] if pos else -1
            applied_here: list[int] = []
            for index, (event, edge) in enumerate(zip(part.interactions, part_edges, strict=True)):
                watermark = max(watermark, event.stream_ts)
                if event.event_id is not None and update.is_duplicate(
                    part.partition, event.event_id, event.ts, watermark, self._dedup_window_ms
                ):
                    duplicates += 1
                    continue
                dn, de, dp, reason = self._apply_event(
                    update, part.partition, event, watermark, edge
                )
                nodes, edges, pruned = nodes + dn, edges + de, pruned + dp
                if reason is None:
                    applied_here.append(index)
                else:
                    ignored[reason] = ignored.get(reason, 0) + 1
            kept.append(tuple(applied_here))
            update.put(
                k.offset_key(topic, part.partition),
                k.POSITION_VALUE.pack(part.next_offset, watermark),
            )
        update.put(_META_COUNTS, k.COUNTS_VALUE.pack(nodes, edges, pruned_total + pruned))
        self._write(update.to_write_batch())
        self._changes.extend(update.changes())
        pruned += self.prune(topic, [b.partition for b in batches])
        applied = sum(len(k) for k in kept)
        changes, self._changes = tuple(self._changes), []
        return ApplyResult(applied, duplicates, pruned, tuple(kept), ignored, changes)

    def _edge_of(self, event: Interaction) -> _Edge:
        rel = self._relations[event.event_type]
        src = k.node_key(k.USER, event.user_id)
        dst = k.node_key(rel.dst_kind, event.item_id)
        return rel, src, dst, k.edge_suffix(src, rel.code, dst)

    @staticmethod
    def _reads(batches: Sequence[PartitionBatch], keyed: list[list[_Edge]]) -> Iterator[bytes]:
        """Every key :meth:`_apply_event` may read for these events: the edge, its two
        nodes' degrees and the event id's duplicate-filter entry."""
        for part, part_edges in zip(batches, keyed, strict=True):
            for event, (_, src, dst, suffix) in zip(part.interactions, part_edges, strict=True):
                yield k.EDGE + suffix
                yield k.NODE + src
                yield k.NODE + dst
                if event.event_id is not None:
                    yield k.dedup_key(part.partition, event.event_id.encode("utf-8"))

    def _apply_event(
        self, update: BatchUpdate, partition: int, event: Interaction, now: int, edge: _Edge
    ) -> tuple[int, int, int, str | None]:
        """Merge one event into its edge; returns (Δnodes, Δedges, pruned, ignored reason)."""
        rel, src, dst, suffix = edge
        if rel.beta * event.weight == 0.0:
            return 0, 0, 0, "zero_weight"  # adds nothing; the edge, if any, is as it was
        edge_key = k.EDGE + suffix
        old_raw = update.get(edge_key)
        base: DecayedWeight | None = None
        pruned = 0
        if old_raw is not None:
            w_ref, t_ref, old_part = k.EDGE_VALUE.unpack(old_raw)
            old = (w_ref, t_ref)
            update.delete(k.expiry_key(old_part, self._expiry(old, rel), suffix))
            if is_dead(old, now, rel.half_life_ms, self._epsilon):
                pruned = 1  # lazily: the same rule the bulk pass applies
            else:
                base = old
        new = merge(base or (0.0, event.ts), rel.beta * event.weight, event.ts, rel.half_life_ms)
        if is_dead(new, now, rel.half_life_ms, self._epsilon):
            # A late event that had decayed away before it arrived: it changes nothing
            # (a dead old edge it found is pruned, as the bulk pass would).
            if old_raw is None:
                return 0, 0, 0, "decayed"
            dn = update.remove_edge(suffix)
            return dn, -1, pruned, "decayed"
        update.put(edge_key, k.EDGE_VALUE.pack(new[0], new[1], partition))
        update.put(k.expiry_key(partition, self._expiry(new, rel), suffix), b"")
        if old_raw is not None:
            return 0, 0, pruned, None
        update.put(k.REVERSE + k.reverse_of(src, rel.code, dst), b"")
        dn = update.bump_degree(src, 1) + update.bump_degree(dst, 1)
        return dn, 1, pruned, None

    def _expiry(self, state: DecayedWeight, rel: _Relation) -> int:
        return expiry_time(state, rel.half_life_ms, self._epsilon)

    def prune(self, topic: str, partitions: Sequence[int]) -> int:
        """Delete edges below epsilon and expired duplicate-filter entries; returns edges pruned.

        Its logged changes go out with those of the :meth:`apply` that runs it.
        """
        update = BatchUpdate(self._db, self._log_changes)
        pruned = dnodes = 0
        for partition in partitions:
            update.partition = partition
            pos = self.position(topic, partition)
            if pos is None:
                continue
            now = pos[1]
            for key, _ in self.scan(k.partition_prefix(k.EXPIRY, partition)):
                if k.time_in_index_key(key) >= now:
                    break
                suffix = key[13:]
                raw = update.get(k.EDGE + suffix)
                if raw is None:  # stale index entry; should not happen, but harmless
                    update.delete(key)
                    continue
                w_ref, t_ref, _ = k.EDGE_VALUE.unpack(raw)
                half_life = self._half_lives[k.split_edge_suffix(suffix)[1]]
                if is_dead((w_ref, t_ref), now, half_life, self._epsilon):
                    update.delete(key)
                    dnodes += update.remove_edge(suffix)
                    pruned += 1
            horizon = now - self._dedup_window_ms
            for key, _ in self.scan(k.partition_prefix(k.DEDUP_EXPIRY, partition)):
                if k.time_in_index_key(key) >= horizon:
                    break
                update.delete(key)
                update.delete(k.dedup_key(partition, key[13:]))
        if update.empty:
            return 0
        self.commit(update, dnodes, -pruned, pruned)
        self._changes.extend(update.changes())
        return pruned

    # -- what whole-partition operations build on (stream.state.partition_state) --------

    def stage(self) -> BatchUpdate:
        """Pending writes over this store (nothing logged), for :meth:`commit`."""
        return BatchUpdate(self._db)

    def commit(
        self, update: BatchUpdate, dnodes: int = 0, dedges: int = 0, dpruned: int = 0
    ) -> None:
        """Write ``update`` and the node, edge and pruned counts moved by it, atomically."""
        c = self.counts()
        counts = (c.nodes + dnodes, c.edges + dedges, c.pruned_total + dpruned)
        update.put(_META_COUNTS, k.COUNTS_VALUE.pack(*counts))
        self._write(update.to_write_batch())

    @property
    def path(self) -> Path:
        """The store's RocksDB directory."""
        return self._path

    @property
    def relation_count(self) -> int:
        """Relations (behaviours) the store's edges may have: codes ``0 .. count - 1``."""
        return len(self._relation_names)

    def edge_expiry(self, suffix: bytes, value: bytes) -> int:
        """When a stored edge record decays below epsilon (its pruning-index time)."""
        w_ref, t_ref, _ = k.EDGE_VALUE.unpack(value)
        half_life = self._half_lives[k.split_edge_suffix(suffix)[1]]
        return expiry_time((w_ref, t_ref), half_life, self._epsilon)

    # -- the read path (never writes) -----------------------------------------------

    def counts(self) -> GraphCounts:
        raw = self._db.get(_META_COUNTS)
        nodes, edges, pruned = k.COUNTS_VALUE.unpack(raw) if raw else (0, 0, 0)
        return GraphCounts(int(nodes), int(edges), int(pruned))

    def partition_edges(self, partitions: Iterable[int]) -> int:
        """Live edges these source partitions own (each edge is its user's partition's):
        what a worker holds for the partitions assigned to it, unlike :meth:`counts`,
        which also counts the partitions it cached and gave away."""
        keys = [k.partition_edges_key(p) for p in partitions]
        raws = self._db.get_many(keys)
        return sum(k.COUNT_VALUE.unpack(raw)[0] for raw in raws if raw is not None)

    def edges(self) -> Iterator[Edge]:
        """Every edge, in key order."""
        yield from self._edges_from(k.EDGE)

    def out_edges(self, kind: bytes, node_id: str) -> Iterator[Edge]:
        """Edges whose source is the node (a user's items and followees)."""
        yield from self._edges_from(k.EDGE + k.node_key(kind, node_id))

    def in_edges(self, kind: bytes, node_id: str) -> Iterator[Edge]:
        """Edges whose destination is the node (an item's users, a user's followers)."""
        for key, _ in self.scan(k.REVERSE + k.node_key(kind, node_id)):
            dst, rel, src = k.split_edge_suffix(key[1:])
            raw = self._db.get(k.EDGE + k.edge_suffix(k.node_key(*src), rel, k.node_key(*dst)))
            if raw is not None:
                yield self._edge(src, rel, dst, raw)

    def edge_weight(self, user_id: str, item_id: str, event_type: str, now: int) -> float:
        """Decayed weight of one edge at event time ``now`` (0.0 when absent)."""
        rel = self._relations[event_type]
        suffix = k.edge_suffix(
            k.node_key(k.USER, user_id), rel.code, k.node_key(rel.dst_kind, item_id)
        )
        raw = self._db.get(k.EDGE + suffix)
        if raw is None:
            return 0.0
        w_ref, t_ref, _ = k.EDGE_VALUE.unpack(raw)
        return weight_at((w_ref, t_ref), now, rel.half_life_ms)

    def degree(self, kind: bytes, node_id: str) -> int:
        raw = self._db.get(k.NODE + k.node_key(kind, node_id))
        return int(k.DEGREE_VALUE.unpack(raw)[0]) if raw else 0

    def digest(self) -> str:
        """SHA-256 over every key and value: equal digests mean identical stores. Topic ids
        are left out: which incarnation of a topic the offsets were read from is not what
        the store holds (a worker with ``--changelog`` records none)."""
        h = hashlib.sha256()
        for key, value in self.scan(b""):
            if key.startswith(k.INCARNATION):
                continue
            h.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
        return h.hexdigest()

    def _edges_from(self, prefix: bytes) -> Iterator[Edge]:
        for key, value in self.scan(prefix):
            src, rel, dst = k.split_edge_suffix(key[1:])
            yield self._edge(src, rel, dst, value)

    def _edge(self, src: tuple[bytes, str], rel: int, dst: tuple[bytes, str], raw: bytes) -> Edge:
        w_ref, t_ref, partition = k.EDGE_VALUE.unpack(raw)
        relation = self._relation_names[rel]
        return Edge(src[0], src[1], relation, dst[0], dst[1], (w_ref, t_ref), int(partition))

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Raw ``(key, value)`` records under ``prefix``, in key order."""
        yield from self._db.scan(prefix)
