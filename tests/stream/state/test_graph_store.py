"""Invariants of the decayed graph store: order independence, reference formula, pruning."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.behaviours import Behaviour
from stream.errors import StoreReadError
from stream.events import Interaction
from stream.state.graph_store import DecayedGraphStore, PartitionBatch

BEHAVIOURS = {"click": Behaviour(1.0, 5_000), "purchase": Behaviour(5.0, 50_000)}

events = st.lists(
    st.builds(
        Interaction,
        user_id=st.sampled_from(["u1", "u2", "u\x00"]),
        item_id=st.sampled_from(["i1", "i2", "i3"]),
        event_type=st.sampled_from(sorted(BEHAVIOURS)),
        ts=st.integers(0, 100_000),
        weight=st.floats(0.0, 10.0),
    ),
    min_size=1,
    max_size=40,
)


def _store(epsilon: float) -> DecayedGraphStore:
    return DecayedGraphStore(Path(tempfile.mkdtemp()) / "g", BEHAVIOURS, epsilon=epsilon)


def _reference(evs: list[Interaction], now: int) -> dict[tuple[str, str, str], float]:
    """Plain-Python w(t) = sum of beta*w*2^(-(t - t_k)/h), straight from DESIGN.md."""
    out: dict[tuple[str, str, str], float] = {}
    for e in evs:
        b = BEHAVIOURS[e.event_type]
        key = (e.user_id, e.item_id, e.event_type)
        out[key] = out.get(key, 0.0) + b.beta * e.weight * 2.0 ** (-(now - e.ts) / b.half_life_ms)
    return out


def _weights(store: DecayedGraphStore, now: int) -> dict[tuple[str, str, str], float]:
    return {
        (e.src_id, e.dst_id, e.relation): store.edge_weight(e.src_id, e.dst_id, e.relation, now)
        for e in store.edges()
    }


@settings(max_examples=60, deadline=None)
@given(evs=events, order=st.randoms(use_true_random=False), cut=st.integers(1, 40))
def test_any_order_and_batching_gives_reference_weights(evs, order, cut) -> None:
    now = max(e.ts for e in evs)
    shuffled = list(evs)
    order.shuffle(shuffled)
    a, b = _store(1e-300), _store(1e-300)
    a.apply("t", [PartitionBatch(0, len(evs), evs)])
    b.apply("t", [PartitionBatch(0, cut, shuffled[:cut])])
    b.apply("t", [PartitionBatch(0, len(evs), shuffled[cut:])])
    expected = {key: w for key, w in _reference(evs, now).items() if w >= 1e-300}
    for store in (a, b):
        got = _weights(store, now)
        assert got.keys() == expected.keys()
        for key, w in expected.items():
            assert math.isclose(got[key], w, rel_tol=1e-9, abs_tol=1e-12)
        store.close()


@settings(max_examples=60, deadline=None)
@given(
    evs=st.lists(
        st.builds(
            Interaction,
            user_id=st.sampled_from(["u1", "u2"]),
            item_id=st.sampled_from(["i1", "i2"]),
            event_type=st.sampled_from(sorted(BEHAVIOURS)),
            ts=st.integers(0, 100_000),
            weight=st.floats(0.0, 10.0),
            event_id=st.none() | st.sampled_from(["e1", "e2"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_one_batch_leaves_every_record_as_one_event_per_batch_does(evs) -> None:
    """A batch reads the store once up front (a list get) and its own writes after: every
    record (edges both ways, degrees, pruning index, duplicate filter, counts) ends as
    applying the events one per batch leaves it, repeats of an edge or an id included."""
    whole, single = _store(1e-300), _store(1e-300)
    whole.apply("t", [PartitionBatch(0, len(evs), evs)])
    for i, e in enumerate(evs):
        single.apply("t", [PartitionBatch(0, i + 1, [e])])
    assert list(whole.scan(b"")) == list(single.scan(b""))
    whole.close()
    single.close()


def _pruned_reference(evs: list[Interaction], epsilon: float) -> dict[tuple[str, str, str], float]:
    """Event by event, in plain Python: the watermark moves, an edge that fell below
    epsilon by then is dropped before the event's term is added, then all are pruned."""
    terms: dict[tuple[str, str, str], list[Interaction]] = {}
    now = -1
    for e in evs:
        now = max(now, e.ts)
        key = (e.user_id, e.item_id, e.event_type)
        if key in terms and _reference(terms[key], now)[key] < epsilon:
            del terms[key]
        terms.setdefault(key, []).append(e)
        for k in list(terms):
            if _reference(terms[k], now)[k] < epsilon:
                del terms[k]
    return {k: _reference(v, now)[k] for k, v in terms.items()}


@settings(max_examples=60, deadline=None)
@given(evs=events, epsilon=st.floats(1e-3, 2.0))
def test_pruning_keeps_every_edge_above_epsilon_and_counts_match(evs, epsilon) -> None:
    store = _store(epsilon)
    for i, e in enumerate(evs):  # one event per batch: the most prune passes
        store.apply("t", [PartitionBatch(0, i + 1, [e])])
    now = store.watermark()
    assert now == max(e.ts for e in evs)
    weights = _weights(store, now)
    expected = _pruned_reference(evs, epsilon)
    for key, w in expected.items():
        if w >= epsilon * (1 + 1e-9):
            assert key in weights, f"edge {key} with weight {w} >= {epsilon} was pruned"
            assert math.isclose(weights[key], w, rel_tol=1e-9)
    assert all(w >= epsilon * (1 - 1e-9) for w in weights.values())
    counts = store.counts()
    assert counts.edges == len(weights)
    nodes = {("u", u) for u, _, _ in weights} | {("i", i) for _, i, _ in weights}
    assert counts.nodes == len(nodes)
    for kind, node in nodes:
        side = store.out_edges if kind == "u" else store.in_edges
        assert store.degree(kind.encode(), node) == sum(1 for _ in side(kind.encode(), node))
    store.close()


def test_offsets_and_watermark_are_stored_with_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "g"
    with DecayedGraphStore(path, BEHAVIOURS) as store:
        store.apply("t", [PartitionBatch(3, 17, [Interaction("u", "i", "click", 99)])])
    with DecayedGraphStore(path, BEHAVIOURS) as store:
        assert store.position("t", 3) == (17, 99)
        assert store.position("t", 0) is None


def test_a_new_incarnation_of_a_topic_moves_its_offsets_back_to_0_only(tmp_path: Path) -> None:
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS) as store:
        store.apply("t", [PartitionBatch(3, 17, [Interaction("u", "i", "click", 99)])])
        store.apply("t", [PartitionBatch(5, 4, [Interaction("v", "i", "click", 42)])])
        store.apply("other", [PartitionBatch(0, 9, [Interaction("w", "i", "click", 7)])])
        before = store.positions()
        assert store.begin_incarnation("t", "id-1") == []  # the first id: nothing to move
        assert store.begin_incarnation("t", "id-1") == []
        assert (store.incarnation("t"), store.positions()) == ("id-1", before)
        assert store.begin_incarnation("t", "id-2") == [3, 5]
        assert store.incarnation("t") == "id-2" and store.incarnation("other") is None
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS) as store:  # durable
        assert store.positions() == {("t", 3): (0, 99), ("t", 5): (0, 42), ("other", 0): (9, 7)}
        assert store.incarnation("t") == "id-2"


def test_a_rewound_partition_reads_from_0_keeping_its_watermark_and_edges(tmp_path: Path) -> None:
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS) as store:
        store.apply("t", [PartitionBatch(3, 17, [Interaction("u", "i", "click", 99)])])
        store.apply("t", [PartitionBatch(5, 4, [Interaction("v", "i", "click", 42)])])
        edges = store.counts().edges
        store.rewind("t", 3)
        store.rewind("t", 8)  # never read: no watermark yet
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS) as store:  # durable
        assert store.positions() == {("t", 3): (0, 99), ("t", 5): (4, 42), ("t", 8): (0, -1)}
        assert store.counts().edges == edges


def test_duplicate_event_ids_apply_once_within_window(tmp_path: Path) -> None:
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS, dedup_window_ms=1_000) as store:
        dup = Interaction("u", "i", "click", 10, 1.0, "e1")
        r = store.apply("t", [PartitionBatch(0, 2, [dup, dup])])
        assert (r.applied, r.duplicates) == (1, 1)
        late = Interaction("u", "i2", "click", 5_000, 1.0, "x")
        r = store.apply("t", [PartitionBatch(0, 4, [late, dup])])  # window has passed
        assert (r.applied, r.duplicates) == (2, 0)


def test_changed_behaviours_are_refused_naming_the_stored_ones_as_the_option_takes_them(
    tmp_path: Path,
) -> None:
    import pytest

    from stream.behaviours import parse_behaviours
    from stream.errors import StoreError

    DecayedGraphStore(tmp_path / "g", BEHAVIOURS).close()
    with pytest.raises(StoreError, match="behaviours") as refused:
        DecayedGraphStore(tmp_path / "g", {"click": Behaviour(1.0, 1)})
    # what the message offers for --behaviours opens the store again
    stored = str(refused.value).split("built with behaviours ", 1)[1].split(", the ", 1)[0]
    assert parse_behaviours(stored) == BEHAVIOURS
    DecayedGraphStore(tmp_path / "g", parse_behaviours(stored)).close()


def _table_property(store: DecayedGraphStore, name: str) -> int:
    """One figure of RocksDB's aggregated properties of the store's table files."""
    text = store._db.property_value("rocksdb.aggregated-table-properties") or ""
    fields = dict(part.strip().rsplit("=", 1) for part in text.split(";") if "=" in part)
    return int(fields[name])


def test_table_files_carry_a_bloom_filter_of_every_key(tmp_path: Path) -> None:
    evs = [Interaction(f"u{n % 7}", f"i{n}", "click", 1_000 + n) for n in range(50)]
    answers = []
    for bits in (10, 0):
        with DecayedGraphStore(tmp_path / f"g{bits}", BEHAVIOURS, bloom_bits_per_key=bits) as s:
            s.apply("t", [PartitionBatch(0, len(evs), evs)])
            s._db.flush()  # the memtable into a table file
            entries = _table_property(s, "# entries")
            assert entries > len(evs)  # edges both ways, nodes, the pruning index, offsets
            filtered = _table_property(s, "# entries for filter")
            assert filtered == (entries if bits else 0)
            answers.append(_weights(s, 2_000))
    assert answers[0] == answers[1]  # a filter changes how fast a miss is, never an answer


def test_a_store_written_without_filters_opens_with_them_and_reads_the_same(
    tmp_path: Path,
) -> None:
    first = [Interaction(f"u{n % 5}", f"i{n}", "click", 1_000 + n) for n in range(30)]
    then = [Interaction(f"u{n % 5}", f"i{n % 40}", "purchase", 2_000 + n) for n in range(30)]
    with DecayedGraphStore(tmp_path / "old", BEHAVIOURS, bloom_bits_per_key=0) as store:
        store.apply("t", [PartitionBatch(0, 30, first)])
        store._db.flush()
    with DecayedGraphStore(tmp_path / "old", BEHAVIOURS) as store:  # filters from now on
        store.apply("t", [PartitionBatch(0, 60, then)])
        store._db.flush()
        mixed = _weights(store, 3_000)
    with DecayedGraphStore(tmp_path / "new", BEHAVIOURS) as store:
        store.apply("t", [PartitionBatch(0, 30, first)])
        store.apply("t", [PartitionBatch(0, 60, then)])
        assert _weights(store, 3_000) == mixed


def _damage_edge_blocks(store_dir: Path) -> None:
    """Flip a byte every 512 through the first fifth of each table file: its first data
    blocks, which hold the edge records (keys sort dedup, edges, meta, nodes, ...; the
    index, filters and footer come last), so the store still opens."""
    for table in store_dir.glob("*.sst"):
        data = bytearray(table.read_bytes())
        for at in range(0, len(data) // 5, 512):
            data[at] ^= 0xFF
        table.write_bytes(bytes(data))


def test_a_damaged_table_file_fails_each_read_naming_the_way_out(tmp_path: Path) -> None:
    evs = [Interaction(f"u{n % 50}", f"i{n}", "click", 1_000 + n) for n in range(3_000)]
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS) as store:
        store.apply("t", [PartitionBatch(0, len(evs), evs)])
        store._db.flush()
        assert sum(1 for _ in store.edges()) == len(evs)
    _damage_edge_blocks(tmp_path / "g")
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS) as store:
        # an iterator stopped by the damage used to end as if at the last edge
        with pytest.raises(StoreReadError, match=r"graph store at .*g: Corruption"):
            sum(1 for _ in store.edges())
        with pytest.raises(StoreReadError, match="moving its directory aside"):
            store.apply("t", [PartitionBatch(0, 2 * len(evs), evs)])  # reads those edges
