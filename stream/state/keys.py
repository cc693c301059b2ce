"""Byte layout of the graph store's RocksDB keys and values.

Every key starts with one tag byte, so each kind of record is a contiguous, prefix-
scannable range. Node ids are length-prefixed, so an id may hold any byte (even NUL)
and one node's prefix never matches another's.

=====  =======================================================  ===========================
tag    key                                                      value
=====  =======================================================  ===========================
``F``  node(src) · relation · node(dst)  (the edge record)      ``<dqI`` w_ref, t_ref, part
``R``  node(dst) · relation · node(src)  (reverse adjacency)    empty
``N``  node                                                     ``<I`` degree
``X``  partition · expiry time · edge suffix (pruning index)    empty
``D``  partition · event id  (duplicate filter)                 ``<q`` event time
``Y``  partition · event time · event id  (its expiry index)    empty
``O``  topic · NUL · partition  (source position)               ``<qq`` next offset, watermark
``M``  name  (store metadata and counters)                      varies
``M``  ``partition_edges`` · NUL · partition                    ``<q`` the partition's edges
``S``  topic · NUL · partition  (changelog only)                 the topic's Kafka id
=====  =======================================================  ===========================

The changelog (:mod:`stream.ingest.changelog`) logs the ``F``, ``D`` and ``O`` records
(:data:`LOGGED`) under these same keys; every other record is derived from them. It also
carries, per partition, ``S``: the id of the topic incarnation its position belongs to
(Kafka drops a deleted topic's group offsets, so only this tells a topic created again
from offsets that expired). The store keeps one such id per topic instead
(:data:`INCARNATION`).

>>> k = edge_suffix(node_key(USER, "u1"), 3, node_key(ITEM, "i9"))
>>> split_edge_suffix(k)
((b'u', 'u1'), 3, (b'i', 'i9'))
"""

import math
import struct
from typing import NamedTuple

USER = b"u"
ITEM = b"i"

EDGE = b"F"
REVERSE = b"R"
NODE = b"N"
EXPIRY = b"X"
DEDUP = b"D"
DEDUP_EXPIRY = b"Y"
OFFSET = b"O"
META = b"M"
INCARNATION = META + b"incarnation\x00"  # + topic: the topic id its stored offsets belong to
PARTITION_EDGES = META + b"partition_edges\x00"  # + partition: its live edges (see graph_store)
SOURCE = b"S"
LOGGED = frozenset((EDGE, DEDUP, OFFSET))  # the store's records the changelog carries

EDGE_VALUE = struct.Struct("<dqI")
DEGREE_VALUE = struct.Struct("<I")
TIME_VALUE = struct.Struct("<q")
POSITION_VALUE = struct.Struct("<qq")
COUNTS_VALUE = struct.Struct("<qqq")
COUNT_VALUE = struct.Struct("<q")

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def node_key(kind: bytes, node_id: str) -> bytes:
    """``kind · len(id) · id``: a node's identity inside every other key."""
    raw = node_id.encode("utf-8")
    return kind + _U16.pack(len(raw)) + raw


def _split_node(buf: bytes, pos: int) -> tuple[tuple[bytes, str], int]:
    kind = buf[pos : pos + 1]
    (size,) = _U16.unpack_from(buf, pos + 1)
    start = pos + 3
    return (kind, buf[start : start + size].decode("utf-8")), start + size


def edge_suffix(src: bytes, relation: int, dst: bytes) -> bytes:
    return src + bytes((relation,)) + dst


def split_edge_suffix(suffix: bytes) -> tuple[tuple[bytes, str], int, tuple[bytes, str]]:
    """Inverse of :func:`edge_suffix`: ``((kind, id), relation, (kind, id))``."""
    src, pos = _split_node(suffix, 0)
    dst, _ = _split_node(suffix, pos + 1)
    return src, suffix[pos], dst


def reverse_of(src: bytes, relation: int, dst: bytes) -> bytes:
    """:func:`reverse_suffix` of ``edge_suffix(src, relation, dst)``, from its parts."""
    return dst + bytes((relation,)) + src


def reverse_suffix(suffix: bytes) -> bytes:
    """The same edge keyed from its destination side."""
    (_, _), pos = _split_node(suffix, 0)
    return suffix[pos + 1 :] + suffix[pos : pos + 1] + suffix[:pos]


def partition_prefix(tag: bytes, partition: int) -> bytes:
    return tag + _U32.pack(partition)


def expiry_key(partition: int, expires_at: int, suffix: bytes) -> bytes:
    return partition_prefix(EXPIRY, partition) + _U64.pack(expires_at) + suffix


def partition_of(key: bytes) -> int:
    """The partition right after the tag of an X, D or Y key."""
    return int(_U32.unpack_from(key, 1)[0])


def partition_edges_key(partition: int) -> bytes:
    return PARTITION_EDGES + _U32.pack(partition)


def dedup_key(partition: int, event_id: bytes) -> bytes:
    return partition_prefix(DEDUP, partition) + event_id


def dedup_expiry_key(partition: int, ts: int, event_id: bytes) -> bytes:
    return partition_prefix(DEDUP_EXPIRY, partition) + _U64.pack(ts) + event_id


def time_in_index_key(key: bytes) -> int:
    """The big-endian time right after ``tag · partition`` in an X or Y key."""
    (t,) = _U64.unpack_from(key, 5)
    return int(t)


def offset_key(topic: str, partition: int) -> bytes:
    return OFFSET + topic.encode("utf-8") + b"\x00" + _U32.pack(partition)


def source_key(topic: str, partition: int) -> bytes:
    return SOURCE + topic.encode("utf-8") + b"\x00" + _U32.pack(partition)


def split_offset_key(key: bytes) -> tuple[str, int]:
    topic, _, part = key[1:].partition(b"\x00")
    return topic.decode("utf-8"), int(_U32.unpack(part)[0])


# Record times are epoch milliseconds below this (the events' own rule: from 1e14 on, a
# time is micro- or nanoseconds and the event is dead-lettered); a larger one would decay
# to a weight past any float.
TIME_LIMIT_MS = 100_000_000_000_000


class EdgeRecord(NamedTuple):
    """An ``F`` record's parts."""

    src: tuple[bytes, str]
    relation: int
    dst: tuple[bytes, str]
    w_ref: float
    t_ref: int
    partition: int


def edge_record(key: bytes, value: bytes, relations: int) -> EdgeRecord | None:
    """The parts of an ``F`` record as a worker writes it (a relation below ``relations``,
    a finite non-negative weight, a time of an event); None for any other bytes: read from
    the changelog, which anyone with the right may write to, a record must neither stop its
    reader with a bare traceback nor reach a graph with a weight that turns vectors NaN.

    >>> key = EDGE + edge_suffix(node_key(USER, "u1"), 0, node_key(ITEM, "i9"))
    >>> edge_record(key, EDGE_VALUE.pack(2.0, 1_000, 3), relations=1).partition
    3
    >>> edge_record(key, EDGE_VALUE.pack(float("nan"), 1_000, 3), relations=1) is None
    True
    """
    try:
        src, relation, dst = split_edge_suffix(key[1:])
        w_ref, t_ref, partition = EDGE_VALUE.unpack(value)
    except (struct.error, IndexError, ValueError):  # short, or an id that is not UTF-8
        return None
    if not (
        key[:1] == EDGE
        and relation < relations
        and math.isfinite(w_ref)
        and w_ref >= 0
        and 0 <= t_ref < TIME_LIMIT_MS
    ):
        return None
    return EdgeRecord(src, relation, dst, float(w_ref), int(t_ref), int(partition))
