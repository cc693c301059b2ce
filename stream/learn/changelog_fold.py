"""The graph changelog folded into a trainer's mirror (``streamgnn train``).

The changelog (:mod:`stream.ingest.changelog`) carries each source partition's edge
records ``F`` (edge key -> ``w_ref, t_ref, partition``; a tombstone when the edge is
pruned), its duplicate filter ``D`` and its position ``O`` (next offset, watermark). The
trainer's graph is the user -> item edges and each partition's stream time, so ``F``
records set or remove mirror edges as stored (never merged a second time: the ingest
worker merged the events) and ``O`` records move the partition's watermark; ``D`` records
and ``follow`` (user -> user) edges are not the trainer's graph.

What a fold hands back to train on is each edge it set, as one interaction at the edge's
newest event time (for :meth:`IncrementalTrainer.learn` with ``in_graph``), as the worker's
catch-up does with the edges of its store.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from stream.events import Interaction
from stream.learn.bootstrap import rows_or_assign
from stream.state import keys as k

if TYPE_CHECKING:
    from stream.learn.trainer import IncrementalTrainer

Change = tuple[bytes, bytes | None]  # a changelog record: store key, value (None: tombstone)
_Edge = tuple[str, str, int]  # (user id, item id, relation code)
# a tombstone's key is checked as an edge record's, with a well-formed stand-in value
_TOMBSTONE_PARTS = k.EDGE_VALUE.pack(0.0, 0, 0)

log = logging.getLogger("streamgnn.training")

# The graph digest logged on stop is O(edges) Python (ids, text, sort): only up to this
# many edges, so a large graph does not delay the stop (it is a check for tests).
DIGEST_MAX_EDGES = 250_000


@dataclass
class Folded:
    """The edges one fold set, as interactions to train on, with their source partitions."""

    interactions: list[Interaction] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)


def fold_changes(trainer: IncrementalTrainer, changes: Sequence[Change], topic: str) -> Folded:
    """Fold changelog records (in log order) into ``trainer``'s mirror; ``topic`` is the
    interactions topic whose positions are read. Call under the trainer's lock."""
    edges: dict[_Edge, tuple[float, int, int] | None] = {}
    marks: dict[int, int] = {}
    relations = len(trainer.mirror.relation_names)
    skipped: list[bytes] = []
    for key, value in changes:
        tag = key[:1]
        if tag == k.EDGE:
            record = k.edge_record(key, _TOMBSTONE_PARTS if value is None else value, relations)
            if record is None:
                skipped.append(key)
            elif record.src[0] == k.USER and record.dst[0] == k.ITEM:
                state = None if value is None else (record.w_ref, record.t_ref, record.partition)
                edges[(record.src[1], record.dst[1], record.relation)] = state
        elif tag == k.OFFSET and value is not None:
            try:
                source, partition = k.split_offset_key(key)
                watermark = int(k.POSITION_VALUE.unpack(value)[1])
            except (struct.error, ValueError):  # short, or a topic name that is not UTF-8
                skipped.append(key)
                continue
            if source == topic and watermark >= 0:
                marks[partition] = max(watermark, marks.get(partition, watermark))
    if skipped:
        # not the store's (its worker wrote none of them), so not the trainer's graph
        log.warning(
            "skipped %d changelog records no streamgnn worker writes (the first's key: %r)",
            len(skipped),
            skipped[0][:80],
        )
    t = trainer
    upserts = [(edge, state) for edge, state in edges.items() if state is not None]
    states: dict[tuple[int, int, int], tuple[float, int] | None] = {}
    parts: dict[tuple[int, int, int], int] = {}
    folded = Folded()
    if upserts:
        now = max(state[1] for _, state in upserts)
        users = rows_or_assign(t, "user", [edge[0] for edge, _ in upserts], now)
        items = rows_or_assign(t, "item", [edge[1] for edge, _ in upserts], now)
        t._absorb_evictions()
        placed = (users >= 0) & (items >= 0)
        times = torch.tensor([state[1] for _, state in upserts], dtype=torch.long)
        t._note_event_times(users[placed], items[placed], times[placed])
        names = t.mirror.relation_names
        for (edge, state), u, i in zip(upserts, users.tolist(), items.tolist(), strict=True):
            if u < 0 or i < 0:
                continue  # the registry refused the id: not mirrored, as in learn
            states[(u, i, edge[2])] = (state[0], state[1])
            parts[(u, i, edge[2])] = state[2]
            folded.interactions.append(Interaction(edge[0], edge[1], names[edge[2]], state[1]))
            folded.partitions.append(state[2])
    removed = [edge for edge, state in edges.items() if state is None]
    if removed:
        users = t.registry.rows("user", [edge[0] for edge in removed])
        items = t.registry.rows("item", [edge[1] for edge in removed])
        for edge, u, i in zip(removed, users.tolist(), items.tolist(), strict=True):
            if u >= 0 and i >= 0:
                states[(u, i, edge[2])] = None
    t.mirror.set_edges(states, parts)
    for partition, watermark in marks.items():
        t.mirror.advance(watermark, [partition])
    return folded


def log_graph(trainer: IncrementalTrainer, max_edges: int = DIGEST_MAX_EDGES) -> tuple[int, str]:
    """Log and return the trainer's edge count and, up to ``max_edges`` edges (the digest
    is O(edges) Python), its :func:`graph_digest` ("" above). Call while no step runs."""
    edges, digest = trainer.mirror.num_edges, ""
    if edges <= max_edges:
        edges, digest = graph_digest(trainer)
    log.info("trainer graph: %d edges, digest %s", edges, digest or "-")
    return edges, digest


def graph_digest(trainer: IncrementalTrainer) -> tuple[int, str]:
    """(edges, digest) of the trainer's mirror as stored, comparable with
    :func:`edge_digest` of a folded changelog. Call while no learn step runs."""
    users, items, relations, w_refs, t_refs = trainer.mirror.edge_states()
    rows = zip(
        trainer.registry.ids("user", users),
        trainer.registry.ids("item", items),
        relations.tolist(),
        w_refs.tolist(),
        t_refs.tolist(),
        strict=True,
    )
    edges = list(rows)
    return len(edges), edge_digest(edges)


def edge_digest(edges: Iterable[tuple[str, str, int, float, int]]) -> str:
    """A digest of user -> item edges ``(user, item, relation code, w_ref, t_ref)`` that
    does not depend on their order (floats by their exact repr)."""
    lines = sorted(f"{u}\t{i}\t{r}\t{w!r}\t{t}" for u, i, r, w, t in edges)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]
