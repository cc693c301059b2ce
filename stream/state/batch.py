"""Pending writes over the live store: reads see them, one ``WriteBatch`` commits them.

The graph store stages every change of one :meth:`DecayedGraphStore.apply` here (edges
both ways, node degrees, the dedup entries) and writes them, with the source offsets,
in one atomic batch.

A batch's reads go to RocksDB in one list get first (:meth:`BatchUpdate.prefetch`):
rocksdict releases the GIL for a list get and holds it for each single one, and the
worker's ingest and training threads share one interpreter (at 10,000 events/s the single
gets were 11 % of the time, py-spy ``--gil``; docs/benchmarks.md, "GIL share").

With ``log_changes`` it also remembers, for the changelog (:mod:`stream.ingest.changelog`),
which logged keys (:data:`stream.state.keys.LOGGED`) changed and in which source
partition (:attr:`BatchUpdate.partition`, set by the store before each partition's work).

Each partition's live edge count (:func:`stream.state.keys.partition_edges_key`) moves with
the edge records the batch writes: an edge record names its partition, so comparing each
written one with what the store held gives every count's change, whichever path wrote it
(an event, pruning, a partition dropped or restored), in the same atomic write.
"""

from __future__ import annotations

from collections.abc import Iterable

from rocksdict import WriteBatch

from stream.state import keys as k
from stream.state.rocks import Rocks


class BatchUpdate:
    """Pending writes over the live store: reads see them, one WriteBatch commits them."""

    def __init__(self, db: Rocks, log_changes: bool = False) -> None:
        self._db = db
        self._pending: dict[bytes, bytes | None] = {}
        self._read: dict[bytes, bytes | None] = {}  # the store's values, as read
        self._log_changes = log_changes
        self._logged: dict[bytes, int] = {}  # logged key -> the partition that changed it
        self.partition = 0

    @property
    def empty(self) -> bool:
        return not self._pending

    def prefetch(self, keys: Iterable[bytes]) -> None:
        """Read the store's values of ``keys`` in one call, for :meth:`get` (a pending
        write of a key still wins over its prefetched value)."""
        wanted = [key for key in dict.fromkeys(keys) if key not in self._read]
        self._read.update(zip(wanted, self._db.get_many(wanted), strict=True))

    def get(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        if key in self._read:
            return self._read[key]
        value = self._db.get(key)
        self._read[key] = value  # the batch is the store's one writer until it is written
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self._written(key)
        self._pending[key] = value

    def delete(self, key: bytes) -> None:
        self._written(key)
        self._pending[key] = None

    def _written(self, key: bytes) -> None:
        tag = key[:1]
        if tag == k.EDGE and key not in self._read:  # its store value: edge_counts' before
            self._read[key] = self._db.get(key)
        if self._log_changes and tag in k.LOGGED:
            self._logged[key] = self.partition

    def changes(self) -> list[tuple[int, bytes, bytes | None]]:
        """``(partition, key, value or None for a delete)`` of each logged key changed."""
        return [(part, key, self._pending[key]) for key, part in self._logged.items()]

    def bump_degree(self, node: bytes, delta: int) -> int:
        """Change a node's degree; returns +1 if the node appeared, -1 if it expired."""
        key = k.NODE + node
        raw = self.get(key)
        before = k.DEGREE_VALUE.unpack(raw)[0] if raw else 0
        after = before + delta
        if after <= 0:
            self.delete(key)
        else:
            self.put(key, k.DEGREE_VALUE.pack(after))
        return (after > 0) - (before > 0)

    def remove_edge(self, suffix: bytes) -> int:
        """Delete an edge and its reverse entry; returns the change in node count."""
        self.delete(k.EDGE + suffix)
        self.delete(k.REVERSE + k.reverse_suffix(suffix))
        src, _, dst = k.split_edge_suffix(suffix)
        return self.bump_degree(k.node_key(*src), -1) + self.bump_degree(k.node_key(*dst), -1)

    def is_duplicate(
        self, partition: int, event_id: str, ts: int, now: int, window_ms: int
    ) -> bool:
        """Check and record an event id; an entry past the window counts as absent."""
        eid = event_id.encode("utf-8")
        key = k.dedup_key(partition, eid)
        raw = self.get(key)
        if raw is not None:
            (seen_ts,) = k.TIME_VALUE.unpack(raw)
            if seen_ts >= now - window_ms:
                return True
            self.delete(k.dedup_expiry_key(partition, max(0, seen_ts), eid))
        self.put(key, k.TIME_VALUE.pack(ts))
        self.put(k.dedup_expiry_key(partition, ts, eid), b"")
        return False

    def add_edge(self, suffix: bytes, value: bytes, expires_at: int) -> int:
        """Put a restored edge record with its derived keys; returns the change in nodes."""
        partition = k.EDGE_VALUE.unpack(value)[2]
        self.put(k.EDGE + suffix, value)
        self.put(k.REVERSE + k.reverse_suffix(suffix), b"")
        self.put(k.expiry_key(partition, expires_at, suffix), b"")
        src, _, dst = k.split_edge_suffix(suffix)
        return self.bump_degree(k.node_key(*src), 1) + self.bump_degree(k.node_key(*dst), 1)

    def add_dedup(self, key: bytes, value: bytes) -> None:
        """Put a restored duplicate-filter entry (``D`` key) with its expiry index."""
        (ts,) = k.TIME_VALUE.unpack(value)
        partition = k.partition_of(key)
        self.put(key, value)
        self.put(k.dedup_expiry_key(partition, ts, key[5:]), b"")

    def edge_counts(self) -> dict[int, int]:
        """Each partition's change in live edges, were the batch written now."""
        change: dict[int, int] = {}
        for key, after in self._pending.items():
            if key[:1] != k.EDGE:
                continue
            before = self._read[key]  # every edge key written was read first (_written)
            was = None if before is None else k.EDGE_VALUE.unpack(before)[2]
            now = None if after is None else k.EDGE_VALUE.unpack(after)[2]
            if was != now:
                if was is not None:
                    change[was] = change.get(was, 0) - 1
                if now is not None:
                    change[now] = change.get(now, 0) + 1
        return change

    def to_write_batch(self) -> WriteBatch:
        """The pending writes, with the partitions' edge counts they move."""
        for partition, change in self.edge_counts().items():
            key = k.partition_edges_key(partition)
            raw = self._db.get(key)
            count = (k.COUNT_VALUE.unpack(raw)[0] if raw else 0) + change
            # none for none: a store holds the same keys whichever way it got its edges
            self._pending[key] = k.COUNT_VALUE.pack(count) if count else None
        batch = WriteBatch(raw_mode=True)
        for key, value in self._pending.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        return batch
