"""Follow the embedding topics into a local table of the latest vectors; answer top-k.

:class:`LatestVectors` is the fold of one topic (no Kafka in it): per id it keeps the
record with the highest ``model_version`` (the later one on a tie), ignores and counts
older ones, drops a key on a tombstone. :class:`EmbeddingTable` feeds two of them from
``user-embeddings`` and ``item-embeddings`` and scores items for a user by exact dot
product over a dense float32 matrix (numpy): exact, and a few milliseconds for 10^5
items of dimension 64. An approximate index is not built in.

>>> import numpy as np
>>> from stream.publish.schema import EmbeddingRecord, encode_record
>>> def value(version, x):
...     vector = np.array([x], np.float32)
...     return encode_record(EmbeddingRecord("item", "i1", version, vector, 0, 0))
>>> items = LatestVectors("item")
>>> [items.apply(b"i1", value(v, x)) for v, x in [(2, 1.0), (1, 9.0), (2, 3.0)]]
['applied', 'stale', 'applied']
>>> items.get("i1").vector.tolist(), items.stats.stale
([3.0], 1)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from kafka import TopicPartition
from kafka.errors import TopicAuthorizationFailedError

from stream.errors import ConfigError, SchemaError
from stream.kafka.access import refusal
from stream.kafka.clients import kafka_consumer
from stream.publish.schema import EmbeddingRecord, NodeKind, decode_record
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)

Outcome = Literal["applied", "stale", "deleted", "invalid", "ignored"]


@dataclass
class FoldStats:
    """Counts of what a fold did with the records it was given."""

    applied: int = 0
    stale: int = 0  # model_version older than the one held: ignored
    deleted: int = 0  # tombstones that removed a held key
    invalid: int = 0  # values that do not follow the schema (or disagree with their key)

    def __add__(self, other: FoldStats) -> FoldStats:
        return FoldStats(
            self.applied + other.applied,
            self.stale + other.stale,
            self.deleted + other.deleted,
            self.invalid + other.invalid,
        )


@dataclass(frozen=True)
class TableUpdate:
    """One change to the table: a new vector, or ``record is None`` for a removed key."""

    kind: NodeKind
    id: str
    record: EmbeddingRecord | None


class LatestVectors:
    """The latest vector per id of one node kind, rows of one dense float32 matrix."""

    def __init__(self, kind: NodeKind) -> None:
        self.kind: NodeKind = kind
        self.stats = FoldStats()
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._meta = np.zeros((0, 3), dtype=np.int64)  # model_version, event ms, publish ms
        self.last: EmbeddingRecord | None = None  # the record the latest apply() accepted

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ids))

    @property
    def dim(self) -> int | None:
        return self._matrix.shape[1] if self._ids else None

    def get(self, node_id: str) -> EmbeddingRecord | None:
        row = self._rows.get(node_id)
        if row is None:
            return None
        version, event_ms, publish_ms = (int(x) for x in self._meta[row])
        return EmbeddingRecord(
            self.kind, node_id, version, self._matrix[row].copy(), event_ms, publish_ms
        )

    def matrix(self) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Held ids and a read-only view of their vectors (row i is ids[i])."""
        view = self._matrix[: len(self._ids)]
        view.flags.writeable = False
        return list(self._ids), view

    def apply(self, key: bytes | None, value: bytes | None) -> Outcome:
        """Fold one record (key, value) of this kind's topic into the table."""
        self.last = None
        if value is None:
            return self._delete(key)
        try:
            record = decode_record(value, kind=self.kind)
        except SchemaError:
            self.stats.invalid += 1
            return "invalid"
        if key is not None and key != record.key:
            self.stats.invalid += 1
            return "invalid"
        row = self._rows.get(record.id)
        if row is not None and record.model_version < self._meta[row, 0]:
            self.stats.stale += 1
            return "stale"
        if self._ids and record.dim != self._matrix.shape[1]:
            self.stats.invalid += 1  # a model of another dimension: not comparable
            return "invalid"
        if row is None:
            row = self._append(record.id, record.dim)
        self._matrix[row] = record.vector
        self._meta[row] = (record.model_version, record.event_time_ms, record.publish_time_ms)
        self.stats.applied += 1
        self.last = record
        return "applied"

    def _append(self, node_id: str, dim: int) -> int:
        row = len(self._ids)
        if not self._ids:
            self._matrix = np.zeros((16, dim), dtype=np.float32)
            self._meta = np.zeros((16, 3), dtype=np.int64)
        elif row == self._matrix.shape[0]:  # grow by doubling: amortised O(1) per id
            self._matrix = np.concatenate([self._matrix, np.zeros_like(self._matrix)])
            self._meta = np.concatenate([self._meta, np.zeros_like(self._meta)])
        self._rows[node_id] = row
        self._ids.append(node_id)
        return row

    def _delete(self, key: bytes | None) -> Outcome:
        try:
            node_id = key.decode() if key is not None else None
        except UnicodeDecodeError:
            node_id = None
        row = self._rows.pop(node_id, None) if node_id is not None else None
        if row is None:
            return "ignored"
        last = len(self._ids) - 1
        if row != last:  # move the last row into the hole: the matrix stays dense
            moved = self._ids[last]
            self._matrix[row] = self._matrix[last]
            self._meta[row] = self._meta[last]
            self._ids[row] = moved
            self._rows[moved] = row
        self._ids.pop()
        self.stats.deleted += 1
        return "deleted"


def top_k(
    query: npt.NDArray[np.float32], ids: list[str], matrix: npt.NDArray[np.float32], k: int
) -> list[tuple[str, float]]:
    """The ``k`` ids whose rows have the highest dot product with ``query``, best first.

    Ties are broken by id so the answer is deterministic.

    >>> top_k(np.array([1, 0], np.float32), ["a", "b", "c"],
    ...       np.array([[0.5, 0], [2, 9], [0.5, 1]], np.float32), 2)
    [('b', 2.0), ('a', 0.5)]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    if not ids:
        return []
    scores = matrix @ np.asarray(query, dtype=np.float32)
    k = min(k, len(ids))
    kth = np.partition(scores, len(ids) - k)[len(ids) - k]  # the k-th best score
    # Every row tied with the k-th best score is a candidate, so the tie-break is by id.
    candidates = np.flatnonzero(scores >= kth)
    ranked = sorted((-float(scores[i]), ids[i]) for i in candidates)[:k]
    return [(node_id, -negative) for negative, node_id in ranked]


class EmbeddingTable:
    """Follows ``user-embeddings`` and ``item-embeddings`` into two :class:`LatestVectors`.

    Args:
        kafka: the brokers (and how to connect to them).
        user_topic, item_topic: the embedding topics (they must exist).
        from_beginning: start at the beginning of both topics (the whole table); else
            at their current ends (only updates from now on).

    Reads every partition without a consumer group (nothing is committed): each table is
    a full replica.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        user_topic: str = "user-embeddings",
        item_topic: str = "item-embeddings",
        *,
        from_beginning: bool = True,
    ) -> None:
        self._kafka = kafka
        self.users = LatestVectors("user")
        self.items = LatestVectors("item")
        self._folds: dict[str, LatestVectors] = {user_topic: self.users, item_topic: self.items}
        self._consumer = kafka_consumer(
            kafka,
            group_id=None,
            enable_auto_commit=False,
            client_id="streamgnn-embedding-table",
            auto_offset_reset="earliest",  # a position the log no longer holds: see poll
        )
        try:
            self._partitions = [
                TopicPartition(topic, p)
                for topic in self._folds
                for p in sorted(self._existing_partitions(topic))
            ]
            self._consumer.assign(self._partitions)
            if from_beginning:
                self._consumer.seek_to_beginning(*self._partitions)
            else:
                self._consumer.seek_to_end(*self._partitions)
        except BaseException:
            self._consumer.close()
            raise

    @property
    def stats(self) -> FoldStats:
        return self.users.stats + self.items.stats

    def poll(self, timeout_ms: int = 500) -> list[TableUpdate]:
        """Fetch what is there (waiting up to ``timeout_ms``); return the changes applied.

        A partition whose log became shorter than what the table had read (the topic
        deleted and created again, which the trainer then gives every vector again; the
        client takes it for a truncation and moves to the new log's end) is read again
        from its beginning; versions keep an older record from replacing a newer one.
        """
        before = {tp: self._consumer.position(tp) for tp in self._partitions}
        try:
            fetched = self._consumer.poll(timeout_ms=timeout_ms)
        except TopicAuthorizationFailedError as exc:  # never retried: the command ends
            raise refusal(self._kafka, "read the embedding topics", str(exc)) from None
        shortened = [tp for tp, was in before.items() if self._consumer.position(tp) < was]
        if shortened:
            log.warning(
                "embedding topic partitions %s end before what was read: reading them again "
                "from their beginning (deleted and created again?)",
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in shortened),
            )
            self._consumer.seek_to_beginning(*shortened)
        updates: list[TableUpdate] = []
        for tp, records in fetched.items():
            fold = self._folds[tp.topic]
            for record in records:
                outcome = fold.apply(record.key, record.value)
                if outcome == "applied" and fold.last is not None:
                    updates.append(TableUpdate(fold.kind, fold.last.id, fold.last))
                elif outcome == "deleted":
                    updates.append(TableUpdate(fold.kind, record.key.decode(), None))
        return updates

    def catch_up(self, timeout_s: float = 60.0) -> int:
        """Poll until both topics are read up to their ends as of this call.

        Returns the number of changes applied; raises ``TimeoutError`` if not done in time.
        """
        ends: dict[TopicPartition, int] = self._consumer.end_offsets(self._partitions)
        deadline = time.monotonic() + timeout_s
        changes = 0
        while any(self._consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"embedding topics not read to their end in {timeout_s}s")
            changes += len(self.poll(timeout_ms=200))
        return changes

    def top_k(self, user_id: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` held items with the highest dot product with the user's vector.

        Raises ``KeyError`` when the table holds no vector for ``user_id``.
        """
        user = self.users.get(user_id)
        if user is None:
            raise KeyError(f"no vector for user {user_id!r}")
        ids, matrix = self.items.matrix()
        if ids and matrix.shape[1] != user.dim:
            raise ValueError(f"user dim {user.dim} differs from item dim {matrix.shape[1]}")
        return top_k(user.vector, ids, matrix, k)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> EmbeddingTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _existing_partitions(self, topic: str) -> set[int]:
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            raise ConfigError(
                f"embedding topic {topic!r} does not exist, or this principal may not describe "
                'it (see docs/security.md, "Access control")'
            )
        return set(partitions)
