"""The graph changelog folded into a trainer's mirror (``streamgnn train``): after every
write, the mirror holds exactly the store's user -> item edges, as stored, and each
partition's stream time; pruned edges (tombstones) leave it, ``follow`` edges and the
duplicate filter never enter it; a fold hands back the edges it set, to train on."""

from __future__ import annotations

import random
from pathlib import Path

from stream.behaviours import Behaviour
from stream.events import Interaction
from stream.learn.changelog_fold import edge_digest, graph_digest
from stream.learn.trainer import IncrementalTrainer
from stream.settings.training import TrainerSettings
from stream.state import keys as k
from stream.state.graph_store import DecayedGraphStore, PartitionBatch

# Short half-lives over a long stream: edges die and are pruned (tombstones).
BEHAVIOURS = {
    "click": Behaviour(1.0, 2_000),
    "purchase": Behaviour(5.0, 20_000),
    "follow": Behaviour(1.0, 2_000),
}
EPSILON = 1e-2
T0 = 1_700_000_000_000
TOPIC = "interactions"


def _stream(rng: random.Random, count: int) -> list[tuple[int, Interaction]]:
    """(partition, event): users keep to a partition, events carry ids and repeat some."""
    events = []
    for n in range(count):
        user = rng.randrange(30)
        kind = rng.choice(("click", "click", "purchase", "follow"))
        item = f"u{rng.randrange(30)}" if kind == "follow" else f"i{rng.randrange(25)}"
        seq = n - 1 if n % 9 == 8 else n  # a repeated event id: the filter drops it
        ts = T0 + seq * 100 - rng.randrange(3) * 1_500  # some late
        events.append((user % 3, Interaction(f"u{user}", item, kind, ts, event_id=f"e{seq}")))
    return events


def _user_item(key: bytes) -> bool:
    (src, _), _, (dst, _) = k.split_edge_suffix(key[1:])
    return src == k.USER and dst == k.ITEM


def _store_edges(store: DecayedGraphStore) -> list[tuple[str, str, int, float, int]]:
    codes = {name: r for r, name in enumerate(sorted(BEHAVIOURS))}
    return [
        (e.src_id, e.dst_id, codes[e.relation], e.state[0], e.state[1])
        for e in store.edges()
        if e.src_kind == k.USER and e.dst_kind == k.ITEM
    ]


def test_folding_each_writes_changes_keeps_the_mirror_equal_to_the_store(tmp_path: Path) -> None:
    rng = random.Random(7)
    trainer = IncrementalTrainer(TrainerSettings(dim=8, device="cpu"), BEHAVIOURS, EPSILON)
    offsets = {p: 0 for p in range(3)}
    tombstones = 0
    events = _stream(rng, 3_000)
    with DecayedGraphStore(
        tmp_path / "graph", BEHAVIOURS, EPSILON, dedup_window_ms=60_000, log_changes=True
    ) as store:
        for start in range(0, len(events), 150):
            chunk = events[start : start + 150]
            batches = []
            for p in range(3):
                mine = [e for part, e in chunk if part == p]
                offsets[p] += len(mine)
                if mine:
                    batches.append(PartitionBatch(p, offsets[p], mine))
            result = store.apply(TOPIC, batches)
            changes = [(key, value) for _, key, value in result.changes]
            tombstones += sum(value is None for _, value in changes)
            folded = trainer.fold(changes, TOPIC)
            # What the fold hands back to train on: the user -> item edges it set.
            final = dict(changes)
            set_here = [
                key
                for key, value in final.items()
                if key[:1] == k.EDGE and value is not None and _user_item(key)
            ]
            assert len(folded.interactions) == len(folded.partitions) == len(set_here)
            assert all(e.event_type != "follow" for e in folded.interactions)
            count, digest = graph_digest(trainer)
            edges = _store_edges(store)
            assert (count, digest) == (len(edges), edge_digest(edges))
            marks = {p: wm for (t, p), (_, wm) in store.positions().items() if t == TOPIC}
            assert trainer.mirror.watermarks == marks
    assert tombstones > 0  # edges were pruned and left the mirror
    assert any(e[3] > 1.0 for e in edges)  # edges merged several events


def test_a_fold_hands_back_each_edge_it_set_once_at_its_newest_event() -> None:
    trainer = IncrementalTrainer(TrainerSettings(dim=8, device="cpu"), BEHAVIOURS, EPSILON)
    edge = k.EDGE + k.edge_suffix(k.node_key(k.USER, "u1"), 0, k.node_key(k.ITEM, "i1"))
    social = k.EDGE + k.edge_suffix(k.node_key(k.USER, "u1"), 1, k.node_key(k.USER, "u2"))
    gone = k.EDGE + k.edge_suffix(k.node_key(k.USER, "u2"), 2, k.node_key(k.ITEM, "i1"))
    changes: list[tuple[bytes, bytes | None]] = [
        (gone, k.EDGE_VALUE.pack(1.0, T0, 1)),
        (edge, k.EDGE_VALUE.pack(1.0, T0, 1)),
        (edge, k.EDGE_VALUE.pack(2.0, T0 + 5, 1)),
        (social, k.EDGE_VALUE.pack(1.0, T0, 1)),
        (gone, None),
        (k.dedup_key(1, b"e1"), k.TIME_VALUE.pack(T0)),
        (k.offset_key(TOPIC, 1), k.POSITION_VALUE.pack(4, T0 + 9)),
        (k.offset_key("elsewhere", 2), k.POSITION_VALUE.pack(4, T0 + 99)),
    ]
    folded = trainer.fold(changes, TOPIC)
    assert folded.interactions == [Interaction("u1", "i1", "click", T0 + 5)]
    assert folded.partitions == [1]
    assert graph_digest(trainer) == (1, edge_digest([("u1", "i1", 0, 2.0, T0 + 5)]))
    assert trainer.mirror.watermarks == {1: T0 + 9}
    trainer.fold([(edge, None)], TOPIC)
    assert graph_digest(trainer)[0] == 0


def test_records_no_worker_writes_are_skipped_saying_so_and_the_rest_folded(caplog) -> None:
    trainer = IncrementalTrainer(TrainerSettings(dim=8, device="cpu"), BEHAVIOURS, EPSILON)
    edge = k.EDGE + k.edge_suffix(k.node_key(k.USER, "u1"), 0, k.node_key(k.ITEM, "i1"))
    other = k.EDGE + k.edge_suffix(k.node_key(k.USER, "u2"), 0, k.node_key(k.ITEM, "i2"))
    unknown_relation = k.EDGE + k.edge_suffix(k.node_key(k.USER, "u3"), 9, k.node_key(k.ITEM, "i3"))
    changes: list[tuple[bytes, bytes | None]] = [
        (edge, k.EDGE_VALUE.pack(1.0, T0, 1)),
        (other, k.EDGE_VALUE.pack(float("nan"), T0, 1)),  # would turn every vector NaN
        (other, k.EDGE_VALUE.pack(float("inf"), T0, 1)),
        (other, b"1234567"),  # a value cut short
        (other, b""),  # empty, which is not a tombstone (None)
        (unknown_relation, k.EDGE_VALUE.pack(1.0, T0, 1)),
        (edge[:7], None),  # a tombstone whose key is cut short
        (k.offset_key(TOPIC, 1), b"\x00"),
        (k.offset_key(TOPIC, 1), k.POSITION_VALUE.pack(4, T0 + 9)),
    ]
    with caplog.at_level("WARNING", logger="streamgnn.training"):
        folded = trainer.fold(changes, TOPIC)
    assert folded.interactions == [Interaction("u1", "i1", "click", T0)]
    assert graph_digest(trainer) == (1, edge_digest([("u1", "i1", 0, 1.0, T0)]))
    assert trainer.mirror.watermarks == {1: T0 + 9}
    assert "skipped 7 changelog records no streamgnn worker writes" in caplog.text
