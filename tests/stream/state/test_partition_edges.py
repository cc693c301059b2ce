"""Each source partition's live edge count, the graph-size gauge's source: it must equal the
edge records naming that partition after any mix of events, pruning, partitions dropped and
restored, and a user whose events come from two partitions."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import AccessType, Options, Rdict

from stream.behaviours import Behaviour
from stream.errors import StoreError
from stream.events import Interaction
from stream.state import keys as k
from stream.state.graph_store import DecayedGraphStore, PartitionBatch
from stream.state.partition_state import drop_partition, partition_records, restore_partition

BEHAVIOURS = {"click": Behaviour(1.0, 5_000), "purchase": Behaviour(5.0, 50_000)}
PARTITIONS = range(3)

# one step: events on a partition (any user on any partition: a producer keying badly moves
# an edge between partitions), or a partition dropped and restored as an assignment does
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("events"),
            st.sampled_from(PARTITIONS),
            st.lists(
                st.builds(
                    Interaction,
                    user_id=st.sampled_from(["u1", "u2", "u3"]),
                    item_id=st.sampled_from(["i1", "i2"]),
                    event_type=st.sampled_from(sorted(BEHAVIOURS)),
                    ts=st.integers(0, 60_000),
                    weight=st.floats(0.0, 5.0),
                ),
                min_size=1,
                max_size=8,
            ),
        ),
        st.tuples(st.just("drop"), st.sampled_from(PARTITIONS), st.booleans()),
    ),
    min_size=1,
    max_size=12,
)


def _owned_edges(store: DecayedGraphStore) -> dict[int, int]:
    """Edge records by the partition each names: what the counts must say."""
    owned = {p: 0 for p in PARTITIONS}
    for _, value in store.scan(k.EDGE):
        owned[k.EDGE_VALUE.unpack(value)[2]] += 1
    return owned


@settings(max_examples=80, deadline=None)
@given(plan=steps)
def test_each_partitions_count_is_the_edges_naming_it(plan) -> None:
    store = DecayedGraphStore(Path(tempfile.mkdtemp()) / "g", BEHAVIOURS, epsilon=1e-2)
    offsets = {p: 0 for p in PARTITIONS}
    for step in plan:
        if step[0] == "events":
            _, partition, events = step
            offsets[partition] += len(events)
            store.apply("t", [PartitionBatch(partition, offsets[partition], events)])
        else:
            _, partition, restore = step
            records = partition_records(store, "t", partition)
            drop_partition(store, "t", partition)
            if restore:
                restore_partition(store, "t", partition, records)
        owned = _owned_edges(store)
        assert {p: store.partition_edges([p]) for p in PARTITIONS} == owned
        assert store.partition_edges(PARTITIONS) == store.counts().edges == sum(owned.values())
    store.close()


def test_a_store_made_before_the_counts_counts_them_once_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "g"
    with DecayedGraphStore(path, BEHAVIOURS) as store:
        store.apply("t", [PartitionBatch(0, 2, [_click("u1", "i1"), _click("u2", "i1")])])
        store.apply("t", [PartitionBatch(2, 1, [_click("u3", "i2")])])
    db = Rdict(str(path), Options(raw_mode=True))  # as the build before left it
    for key in [key for key, _ in db.items() if key.startswith(k.PARTITION_EDGES)]:
        del db[key]
    del db[k.META + b"partition_edges_kept"]
    db.close()
    with DecayedGraphStore(path, BEHAVIOURS, read_only=True) as reader:
        assert reader.partition_edges(PARTITIONS) == 0  # a reader does not write the count
    with DecayedGraphStore(path, BEHAVIOURS) as store:
        assert [store.partition_edges([p]) for p in PARTITIONS] == [2, 0, 1]
        store.apply("t", [PartitionBatch(2, 2, [_click("u3", "i1")])])
        assert store.partition_edges([2]) == 2
    raw = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
    assert k.partition_edges_key(1) not in raw  # nothing for an empty partition
    raw.close()


def _click(user: str, item: str) -> Interaction:
    return Interaction(user, item, "click", 1_000)


def _edge_value(w_ref: float, t_ref: int, partition: int) -> bytes:
    return k.EDGE_VALUE.pack(w_ref, t_ref, partition)


# one record of a partition's folded changelog spoilt, as anyone may write to its topic (an
# edge key: F, the user's node key (kind, u16 length, id), the relation byte, the item's)
SPOILT = {
    "value cut short": lambda key, value: (key, value[:7]),
    "NaN weight": lambda key, value: (key, _edge_value(float("nan"), 1_000, 0)),
    "infinite weight": lambda key, value: (key, _edge_value(float("inf"), 1_000, 0)),
    "negative weight": lambda key, value: (key, _edge_value(-1.0, 1_000, 0)),
    "time past any event's": lambda key, value: (key, _edge_value(1.0, 2**62, 0)),
    "another partition's edge": lambda key, value: (key, _edge_value(1.0, 1_000, 1)),
    "relation the store has not": lambda key, value: (key[:6] + b"\x07" + key[7:], value),
    "id not UTF-8": lambda key, value: (key[:4] + b"\xff" + key[5:], value),
    "key cut short": lambda key, value: (key[:6], value),
}


@pytest.mark.parametrize("spoil", sorted(SPOILT))
def test_a_changelog_record_no_worker_writes_is_refused_before_any_is_loaded(
    tmp_path: Path, spoil: str
) -> None:
    events = [Interaction(f"u{n}", f"i{n % 3}", "click", 1_000 + n) for n in range(5)]
    store = DecayedGraphStore(tmp_path / "g", BEHAVIOURS)
    store.apply("t", [PartitionBatch(0, len(events), events)])
    records = partition_records(store, "t", 0)
    edge = next(key for key in records if key.startswith(k.EDGE + k.USER + b"\x00\x02u1"))
    spoilt = dict(records)
    del spoilt[edge]
    key, value = SPOILT[spoil](edge, records[edge])
    spoilt[key] = value
    drop_partition(store, "t", 0)
    with pytest.raises(StoreError, match="a record no streamgnn worker writes there"):
        restore_partition(store, "t", 0, spoilt)
    assert store.counts().edges == 0 and store.position("t", 0) is None  # nothing loaded
    restore_partition(store, "t", 0, records)  # the records as the worker wrote them
    assert store.partition_edges([0]) == len(events)
    store.close()
