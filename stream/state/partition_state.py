"""A source partition's state as a whole: dropped from the store, read out as its folded
changelog would hold it, or loaded back from that with every derived key rebuilt
(:mod:`stream.ingest.changelog`).

A partition owns its edges (each written from its user's partition), its duplicate filter
and its position; node degrees are shared (items), so dropping a partition's edges lowers
them and restoring raises them again.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from stream.errors import StoreError
from stream.state import keys as k
from stream.state.graph_store import DecayedGraphStore

CHUNK = 20_000  # records per write while restoring: bounded WriteBatches


def drop_partition(store: DecayedGraphStore, topic: str, partition: int) -> int:
    """Forget everything ``partition`` wrote, in one write; returns the edges dropped."""
    update = store.stage()
    edges = dnodes = 0
    for key, _ in store.scan(k.partition_prefix(k.EXPIRY, partition)):  # one per live edge
        update.delete(key)
        if update.get(k.EDGE + key[13:]) is not None:
            dnodes += update.remove_edge(key[13:])
            edges += 1
    for tag in (k.DEDUP, k.DEDUP_EXPIRY):
        for key, _ in store.scan(k.partition_prefix(tag, partition)):
            update.delete(key)
    update.delete(k.offset_key(topic, partition))
    store.commit(update, dnodes, -edges)
    return edges


def partition_records(store: DecayedGraphStore, topic: str, partition: int) -> dict[bytes, bytes]:
    """``partition``'s logged state as its folded changelog holds it (live key -> value):
    what :func:`restore_partition` loads back, so a changelog can be written again from it."""
    read = store.stage()
    records: dict[bytes, bytes] = {}
    for key, _ in store.scan(k.partition_prefix(k.EXPIRY, partition)):  # one per live edge
        edge = k.EDGE + key[13:]
        value = read.get(edge)
        if value is not None:
            records[edge] = value
    records.update(store.scan(k.partition_prefix(k.DEDUP, partition)))
    position = read.get(k.offset_key(topic, partition))
    if position is not None:
        records[k.offset_key(topic, partition)] = position
    return records


def restore_partition(
    store: DecayedGraphStore,
    topic: str,
    partition: int,
    records: Mapping[bytes, bytes],
    changelog: str = "the changelog",
) -> None:
    """Load a dropped partition's folded changelog (live key -> value), read from the
    topic ``changelog`` (named in the error a record it refuses raises).

    Written in chunks with the position last: a crash midway leaves no position, so the
    next assignment drops and restores again. A record the partition's worker would not
    have written (another partition's, not a logged kind, or malformed: :func:`_own_record`)
    is refused before anything is written. The source topic's id (``S``) is the changelog's
    own: not loaded (the store keeps one per topic).
    """
    position_key = k.offset_key(topic, partition)
    singles = (position_key, k.source_key(topic, partition))  # one each: position, source id
    for key, value in records.items():
        if not _own_record(store, partition, key, value, singles):
            raise StoreError(
                f"{changelog}[{partition}] holds a record no streamgnn worker writes there "
                f"(key {key[:80]!r}, a {len(value)}-byte value): a tombstone for that key "
                "(the key with no value) sent to that partition drops it from the next "
                "restore"
            )
    items = [(key, value) for key, value in records.items() if key not in singles]
    for start in range(0, len(items), CHUNK):
        update = store.stage()
        edges = dnodes = 0
        for key, value in items[start : start + CHUNK]:
            if key[:1] == k.DEDUP:
                update.add_dedup(key, value)
            else:
                dnodes += update.add_edge(key[1:], value, store.edge_expiry(key[1:], value))
                edges += 1
        store.commit(update, dnodes, edges)
    if position_key in records:
        update = store.stage()
        update.put(position_key, records[position_key])
        store.commit(update)


def _own_record(
    store: DecayedGraphStore,
    partition: int,
    key: bytes,
    value: bytes,
    singles: tuple[bytes, bytes],
) -> bool:
    """Whether a changelog record is one ``partition``'s worker writes, well formed
    (:func:`stream.state.keys.edge_record` for an edge)."""
    tag = key[:1]
    if tag == k.EDGE:
        edge = k.edge_record(key, value, store.relation_count)
        return edge is not None and edge.partition == partition
    try:
        if tag == k.DEDUP:
            k.TIME_VALUE.unpack(value)
            return len(key) > 5 and k.partition_of(key) == partition
        if key == singles[0]:
            k.POSITION_VALUE.unpack(value)
    except struct.error:  # a short key or value
        return False
    return key in singles
