"""GraphMirror: kept in step with the durable store from micro-batches alone."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from models.base import BipartiteGraph
from models.ids import IdRegistry
from stream.behaviours import Behaviour
from stream.events import Interaction
from stream.learn.canonical_order import CanonicalOrder
from stream.learn.graph_mirror import GraphMirror, slot_keys, store_user_item_edges
from stream.state.graph_store import DecayedGraphStore, PartitionBatch
from stream.state.keys import ITEM

BEHAVIOURS = {
    "click": Behaviour(1.0, 2_000),
    "purchase": Behaviour(5.0, 10_000),
    "view": Behaviour(0.5, 500),
    "follow": Behaviour(1.0, 10_000),
}
EPSILON = 0.05


def synthetic_stream(seed: int, n: int) -> list[Interaction]:
    """Mostly increasing times with late events and long gaps (so edges decay and die)."""
    rng = random.Random(seed)
    t, out = 10_000, []
    for _ in range(n):
        t += rng.choice([0, 50, 200, 1_000, 8_000])
        ts = t - rng.choice([0, 0, 0, 300, 3_000])  # some late, out-of-order events
        event_type = rng.choice(["click", "click", "purchase", "view", "follow"])
        item = f"u{rng.randrange(6)}" if event_type == "follow" else f"i{rng.randrange(8)}"
        weight = rng.choice([1.0, 1.0, 0.5, 3.0])
        out.append(Interaction(f"u{rng.randrange(6)}", item, event_type, ts, weight))
    return out


def mirror_apply(mirror: GraphMirror, reg: IdRegistry, events: list[Interaction]) -> None:
    now = max(e.ts for e in events)
    users = reg.assign("user", [e.user_id for e in events], now)
    items = reg.assign("item", [e.item_id for e in events], now)
    mirror.apply(events, users, items)


def as_edges(mirror: GraphMirror, reg: IdRegistry) -> dict[tuple[str, str, str], float]:
    g = mirror.snapshot()
    return {
        (u, i, mirror.relation_names[r]): w
        for u, i, r, w in zip(
            reg.ids("user", g.users),
            reg.ids("item", g.items),
            g.relations.tolist(),
            g.weights.tolist(),
            strict=True,
        )
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mirror_matches_the_store_after_the_same_batches(tmp_path: Path, seed: int) -> None:
    events = synthetic_stream(seed, 300)
    mirror, reg = GraphMirror(BEHAVIOURS, EPSILON), IdRegistry()
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS, epsilon=EPSILON) as store:
        offset = 0
        for start in range(0, len(events), 37):
            chunk = events[start : start + 37]
            offset += len(chunk)
            store.apply("t", [PartitionBatch(0, offset, chunk)])
            mirror_apply(mirror, reg, chunk)
            now = store.watermark()
            assert now is not None and mirror.watermark == now
            expected = {
                (e.src_id, e.dst_id, e.relation): store.edge_weight(
                    e.src_id, e.dst_id, e.relation, now
                )
                for e in store.edges()
                if e.dst_kind == ITEM
            }
            unpruned = mirror.snapshot(prune=False)  # reads the kept order, keeps nothing
            got = as_edges(mirror, reg)
            assert got.keys() == expected.keys()
            for g in (unpruned, mirror.snapshot()):  # by (user, item, relation), each once
                columns = (g.users.tolist(), g.items.tolist(), g.relations.tolist())
                triples = list(zip(*columns, strict=True))
                assert triples == sorted(set(triples))
            for key, weight in got.items():
                assert weight == pytest.approx(expected[key], rel=1e-6)
        assert any(e.relation == "follow" for e in store.edges())  # skipped, on purpose
        assert store.counts().pruned_total > 0  # the stream did exercise pruning


def test_mirror_loaded_from_the_store_equals_the_incremental_one(tmp_path: Path) -> None:
    events = synthetic_stream(5, 200)
    mirror, reg = GraphMirror(BEHAVIOURS, EPSILON), IdRegistry()
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS, epsilon=EPSILON) as store:
        store.apply("t", [PartitionBatch(0, len(events), events)])
        mirror_apply(mirror, reg, events)
        stored = list(store_user_item_edges(store))
        watermark = store.watermark()
    loaded = GraphMirror(BEHAVIOURS, EPSILON)
    loaded.load_edges(
        stored,
        reg.rows("user", [e.user_id for e in stored]),
        reg.rows("item", [e.item_id for e in stored]),
    )
    assert watermark is not None
    loaded.advance(watermark)
    a, b = mirror.snapshot(), loaded.snapshot()
    for name in ("users", "items", "relations", "weights", "times"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name  # canonical order
    assert a.now == b.now


def test_edge_batch_holds_the_mirrored_events_and_skips_the_rest() -> None:
    mirror = GraphMirror(BEHAVIOURS, EPSILON)
    events = [
        Interaction("a", "x", "click", 1_000),
        Interaction("a", "b", "follow", 1_000),  # social: not in the bipartite graph
        Interaction("b", "y", "purchase", 1_000),  # refused id (row -1) below
        Interaction("a", "x", "click", 1_000),
    ]
    batch = mirror.apply(events, torch.tensor([0, 0, -1, 0]), torch.tensor([0, 1, 1, 0]))
    assert batch.users.tolist() == [0, 0] and batch.items.tolist() == [0, 0]
    assert batch.weights.tolist() == [1.0, 2.0]  # w_ref right after each event
    assert mirror.num_edges == 1


def test_drop_rows_forgets_every_edge_of_an_evicted_row() -> None:
    mirror = GraphMirror(BEHAVIOURS, EPSILON)
    events = [Interaction(u, i, "click", 1_000) for u in "ab" for i in "xyz"]
    users = torch.tensor([0, 0, 0, 1, 1, 1])
    items = torch.tensor([0, 1, 2, 0, 1, 2])
    mirror.apply(events, users, items)
    assert mirror.drop_rows(torch.tensor([0]), torch.tensor([2])) == 4
    g = mirror.snapshot()
    assert g.users.tolist() == [1, 1] and g.items.tolist() == [0, 1]
    # a new owner of row 0 starts from nothing
    mirror.apply([Interaction("c", "x", "click", 1_000)], torch.tensor([0]), torch.tensor([0]))
    assert mirror.snapshot().weights.tolist() == [1.0, 1.0, 1.0]


def test_snapshot_without_prune_changes_nothing() -> None:
    mirror = GraphMirror(BEHAVIOURS, EPSILON)
    mirror.apply([Interaction("a", "x", "view", 0)], torch.tensor([0]), torch.tensor([0]))
    mirror.advance(100_000)  # the view edge is long dead
    assert mirror.snapshot(prune=False).num_edges == 0
    assert mirror.num_edges == 1
    mirror.snapshot()
    assert mirror.num_edges == 0


@pytest.mark.parametrize("offset", [0, 60_000], ids=["low-rows", "high-rows"])
def test_snapshot_is_in_canonical_order_with_each_edges_own_columns(offset: int) -> None:
    """Rows written in shuffled slot order come out sorted by (user, item, relation), each
    with its own weight and time (the columns are decoded from the packed slot keys, whose
    user row sits above bit 40: high rows check the decoding past 32 bits)."""
    rng = random.Random(7)
    keys = [
        (offset + u, offset + i, r)
        for u in range(40)
        for i in range(30)
        for r in range(3)
        if rng.random() < 0.3
    ]
    rng.shuffle(keys)
    names = sorted(["click", "purchase", "view"])
    events = [
        Interaction(f"u{u}", f"i{i}", names[r], 1_000 + k) for k, (u, i, r) in enumerate(keys)
    ]
    mirror = GraphMirror({n: BEHAVIOURS[n] for n in names}, EPSILON)
    users = torch.tensor([u for u, _, _ in keys])
    items = torch.tensor([i for _, i, _ in keys])
    mirror.apply(events, users, items)
    g = mirror.snapshot()
    got = list(zip(g.users.tolist(), g.items.tolist(), g.relations.tolist(), strict=True))
    assert got == sorted(keys)
    assert g.users.dtype == g.items.dtype == g.relations.dtype == torch.long
    time_of = {key: 1_000 + k for k, key in enumerate(keys)}
    assert g.times.tolist() == [time_of[key] for key in got]
    watermark = 1_000 + len(keys) - 1
    expected = [
        BEHAVIOURS[names[r]].beta
        * 2 ** (-(watermark - time_of[(u, i, r)]) / BEHAVIOURS[names[r]].half_life_ms)
        for u, i, r in got
    ]
    assert g.weights.tolist() == pytest.approx(expected, rel=1e-6)


def sorted_afresh(mirror: GraphMirror) -> BipartiteGraph:
    """The mirror's read snapshot with no order kept: every held edge sorted anew."""
    kept = mirror._order
    mirror._order = CanonicalOrder()
    mirror._order.grow(mirror._alive.numel())
    try:
        return mirror.snapshot(prune=False)
    finally:
        mirror._order = kept


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kept_order_equals_sorting_afresh_through_every_kind_of_write(seed: int) -> None:
    """Batches with late and dying events, evictions, changelog removals and both kinds of
    snapshot, interleaved: each snapshot is the one a full sort of the held edges gives
    (slots are released and handed out again with other edges throughout)."""
    rng = random.Random(seed)
    mirror, reg = GraphMirror(BEHAVIOURS, EPSILON), IdRegistry()
    events = synthetic_stream(seed, 600)
    for start in range(0, len(events), 29):
        # edges go first, so the batch after hands their slots out again
        held = mirror.edge_states()
        if held[0].numel() and rng.random() < 0.5:  # a changelog record removing an edge
            k = rng.randrange(held[0].numel())
            edge = (int(held[0][k]), int(held[1][k]), int(held[2][k]))
            mirror.set_edges({edge: None}, {edge: 0})
        if rng.random() < 0.3:  # an evicted row
            mirror.drop_rows(torch.tensor([rng.randrange(6)]), torch.tensor([rng.randrange(8)]))
        mirror_apply(mirror, reg, events[start : start + 29])
        for prune in (False, True):
            expected = sorted_afresh(mirror)
            got = mirror.snapshot(prune=prune)
            for name in ("users", "items", "relations", "weights", "times"):
                assert torch.equal(getattr(got, name), getattr(expected, name)), name
    assert mirror._free or mirror._used > mirror.num_edges  # slots were released


def test_validation() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        GraphMirror(BEHAVIOURS, 0.0)
    mirror = GraphMirror(BEHAVIOURS, EPSILON)
    with pytest.raises(ValueError, match="'share'"):
        mirror.apply([Interaction("a", "x", "share", 0)], torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="1 interactions but 2 user rows"):
        mirror.apply([Interaction("a", "x", "click", 0)], torch.tensor([0, 1]), torch.tensor([0]))
    mirror.apply([Interaction("a", "x", "click", 0)], torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="num_users 2"):
        mirror.snapshot(num_users=2)


def test_user_recency_keeps_each_users_newest_edge_and_halves_per_half_life() -> None:
    from models.base import BipartiteGraph
    from stream.learn.graph_view import user_recency

    # user 0: edges at 0, 1000, 3000; user 1: one old edge at 0
    graph = BipartiteGraph(
        2,
        3,
        torch.tensor([0, 0, 0, 1]),
        torch.tensor([0, 1, 2, 0]),
        torch.zeros(4, dtype=torch.long),
        torch.tensor([2.0, 1.0, 0.5, 4.0]),
        torch.tensor([0, 1_000, 3_000, 0]),
        10_000,
    )
    view = user_recency(graph, 1_000)
    ratio = (view.weights / graph.weights).tolist()
    assert ratio == [2.0**-3, 2.0**-2, 1.0, 1.0]  # behind the user's own newest, not now
    assert user_recency(graph, 0) is graph
    assert torch.equal(view.users, graph.users) and torch.equal(view.times, graph.times)


def test_user_recency_never_leaves_a_subnormal_weight() -> None:
    from models.base import BipartiteGraph
    from stream.learn.graph_view import RECENCY_HALVINGS, user_recency

    # one user, edges from 0 to 200 half-lives behind its newest
    ages = torch.arange(0, 201) * 1_000
    graph = BipartiteGraph(
        1,
        ages.numel(),
        torch.zeros(ages.numel(), dtype=torch.long),
        torch.arange(ages.numel()),
        torch.zeros(ages.numel(), dtype=torch.long),
        torch.full((ages.numel(),), 5.0),
        200_000 - ages,
        200_000,
    )
    weights = user_recency(graph, 1_000).weights
    tiny = torch.finfo(weights.dtype).tiny
    assert not ((weights > 0) & (weights < tiny)).any()
    assert (weights[: RECENCY_HALVINGS + 1] > 0).all() and (
        weights[RECENCY_HALVINGS + 1 :] == 0
    ).all()


def test_packed_edge_keys_never_collide_and_rows_out_of_range_are_refused() -> None:
    # the slot index packs (user, item, relation) into one int: item rows fill 32 bits, so
    # (u, 2**32 - 1) and (u + 1, 0) are neighbours in key space, never the same key
    mirror = GraphMirror(BEHAVIOURS, EPSILON)
    events = [Interaction("a", "x", "click", 1_000), Interaction("b", "y", "click", 1_000)]
    mirror.apply(events, torch.tensor([0, 1]), torch.tensor([2**32 - 1, 0]))
    assert mirror.num_edges == 2
    snapshot = mirror.snapshot(num_users=2, num_items=2**32)
    assert sorted(zip(snapshot.users.tolist(), snapshot.items.tolist(), strict=True)) == [
        (0, 2**32 - 1),
        (1, 0),
    ]
    with pytest.raises(ValueError, match="out of the slot index's range"):
        mirror.apply(events[:1], torch.tensor([0]), torch.tensor([2**32]))
    # keys are built in int64 tensors: a user row past 23 bits would wrap onto another's
    mirror.apply(events[:1], torch.tensor([2**23 - 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="out of the slot index's range"):
        mirror.apply(events[:1], torch.tensor([2**23]), torch.tensor([0]))


def test_bulk_slot_keys_find_the_edges_an_apply_indexed() -> None:
    # bench.step_cost loads its mirror's index with slot_keys: an event on a loaded edge
    # must merge into it, not add a second slot
    mirror = GraphMirror(BEHAVIOURS, EPSILON)
    users, items = torch.tensor([0, 3, 7]), torch.tensor([5, 2**32 - 1, 0])
    events = [
        Interaction(f"u{u}", f"i{i}", "click", 1_000)
        for u, i in zip(users.tolist(), items.tolist(), strict=True)
    ]
    mirror.apply(events, users, items)
    relations = torch.full_like(users, mirror.relation("click"))
    assert sorted(slot_keys(users, items, relations)) == sorted(mirror._index)
    with pytest.raises(ValueError, match="out of the slot index's range"):
        slot_keys(users, items + 2**32, relations)


def test_the_trainer_settings_cap_id_rows_where_the_mirror_keys_end() -> None:
    from stream.errors import ConfigError
    from stream.settings.training import MAX_ITEMS, MAX_USERS, TrainerSettings

    mirror = GraphMirror(BEHAVIOURS, EPSILON)
    event = [Interaction("a", "x", "click", 1_000)]
    mirror.apply(event, torch.tensor([MAX_USERS - 1]), torch.tensor([MAX_ITEMS - 1]))
    for users, items in ((MAX_USERS, 0), (0, MAX_ITEMS)):
        with pytest.raises(ValueError, match="out of the slot index's range"):
            mirror.apply(event, torch.tensor([users]), torch.tensor([items]))
    TrainerSettings(max_users=MAX_USERS, max_items=MAX_ITEMS)
    for too_many in ({"max_users": MAX_USERS + 1}, {"max_items": MAX_ITEMS + 1}):
        with pytest.raises(ConfigError, match="at most"):
            TrainerSettings(**too_many)
