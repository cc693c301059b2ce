"""Pending writes over the live store: reads see them, one ``WriteBatch`` commits them.

The graph store stages every change of one :meth:`DecayedGraphStore.apply` here (edges
both ways, node degrees, the dedup entries) and writes them, with the source offsets,
in one atomic batch.
"""

from __future__ import annotations

from rocksdict import Rdict, WriteBatch

from stream.state import keys as k


class BatchUpdate:
    """Pending writes over the live store: reads see them, one WriteBatch commits them."""

    def __init__(self, db: Rdict) -> None:
        self._db = db
        self._pending: dict[bytes, bytes | None] = {}

    @property
    def empty(self) -> bool:
        return not self._pending

    def get(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        value: bytes | None = self._db.get(key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self._pending[key] = value

    def delete(self, key: bytes) -> None:
        self._pending[key] = None

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

    def to_write_batch(self) -> WriteBatch:
        batch = WriteBatch(raw_mode=True)
        for key, value in self._pending.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        return batch
