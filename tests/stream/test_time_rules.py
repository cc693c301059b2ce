"""Event time that producers' clocks get wrong: refused, or kept from moving stream time.

Invariants: a ts in seconds or micro/nanoseconds, before the oldest accepted time, or more
than the skew ahead of its record's clock is refused with its own reason; no record moves
its partition's watermark past the clock it came with; an accepted event that changes no
edge is counted as ignored, never as applied; the trainer's graph ages each partition's
edges by that partition's own watermark, exactly as the store does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.ids import IdRegistry
from stream.behaviours import Behaviour
from stream.events import (
    MICROS_FROM_MS,
    SECONDS_BELOW_MS,
    EventValidator,
    Interaction,
    Rejection,
    record_clock,
)
from stream.learn.graph_mirror import GraphMirror
from stream.learn.trainer import IncrementalTrainer
from stream.settings import EventSettings, TrainerSettings
from stream.state.graph_store import DecayedGraphStore, PartitionBatch

T0 = 1_700_000_000_000
SKEW = EventSettings().max_future_skew_ms
BEHAVIOURS = {"click": Behaviour(1.0, 60_000), "follow": Behaviour(1.0, 60_000)}
EPSILON = 0.01
VALIDATOR = EventValidator(EventSettings())


def _body(ts: object, weight: float = 1.0, user: str = "u", item: str = "i") -> bytes:
    event = {"user_id": user, "item_id": item, "event_type": "click", "ts": ts, "weight": weight}
    return json.dumps(event).encode()


def _reason(result: Interaction | Rejection) -> str | None:
    return result.reason if isinstance(result, Rejection) else None


@pytest.mark.parametrize(
    "ts",
    [0, 1, 1_700_000_000, SECONDS_BELOW_MS - 1, MICROS_FROM_MS, 1_700_000_000_000_000],
)
def test_seconds_and_micro_or_nanoseconds_are_refused_as_a_unit_mistake(ts: int) -> None:
    assert _reason(VALIDATOR.parse(b"u", _body(ts))) == "ts_unit"


def test_the_oldest_accepted_time_is_a_setting() -> None:
    validator = EventValidator(EventSettings(min_ts_ms=T0))
    assert _reason(validator.parse(b"u", _body(T0 - 1))) == "ts_too_old"
    assert _reason(validator.parse(b"u", _body(T0))) is None
    assert _reason(validator.parse(b"u", _body(-5))) == "bad_timestamp"


@settings(max_examples=300, deadline=None)
@given(
    clock=st.integers(SECONDS_BELOW_MS, 10**13),
    ahead=st.integers(-(10**11), 10**11),
)
def test_an_event_more_than_the_skew_ahead_of_its_clock_is_refused(clock: int, ahead: int) -> None:
    ts = clock + ahead
    result = VALIDATOR.parse(b"u", _body(ts), clock_ms=clock)
    if not SECONDS_BELOW_MS <= ts < MICROS_FROM_MS or ts > EventSettings().max_ts_ms:
        assert isinstance(result, Rejection)
    elif ahead > SKEW:
        assert _reason(result) == "ts_in_future"
    else:
        assert isinstance(result, Interaction)
        assert result.stream_ts == min(ts, clock) <= clock  # never past its clock


def test_the_record_clock_is_the_record_timestamp_unless_missing_implausible_or_ahead() -> None:
    now = T0 + 1_000
    assert record_clock(T0, now) == T0
    assert record_clock(None, now) == now
    assert record_clock(-1, now) == now  # no timestamp
    assert record_clock(-5_000, now) == now  # negative CreateTime from a broken producer
    assert record_clock(1_700_000_000, now) == now  # a producer stamping seconds
    assert record_clock(now + 10**12, now) == now  # a record from the future
    # the broker's clock (LogAppendTime) vouches for itself past a slow worker's clock ...
    assert record_clock(now + 3_600_000, now, appended=True) == now + 3_600_000
    # ... but a broker's missing or implausible timestamp does not
    assert record_clock(-1, now, appended=True) == record_clock(1_700_000_000, now, True) == now


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.integers(0, 3_600_000), st.integers(-SKEW, SKEW + 10**9)),
        min_size=1,
        max_size=30,
    )
)
def test_no_record_moves_the_watermark_past_its_clock(
    tmp_path_factory: pytest.TempPathFactory, records: list[tuple[int, int]]
) -> None:
    """Accepted events only: the watermark is the newest min(ts, clock), never a ts."""
    accepted: list[Interaction] = []
    for n, (clock_offset, ahead) in enumerate(records):
        clock = T0 + clock_offset
        parsed = VALIDATOR.parse(b"u", _body(clock + ahead, item=f"i{n}"), clock_ms=clock)
        if isinstance(parsed, Interaction):
            accepted.append(parsed)
    path = tmp_path_factory.mktemp("wm")
    with DecayedGraphStore(path, BEHAVIOURS, epsilon=EPSILON) as store:
        store.apply("t", [PartitionBatch(0, len(records), accepted)])
        position = store.position("t", 0)
    assert position is not None
    clocks = [e.clock_ms for e in accepted if e.clock_ms is not None]
    assert len(clocks) == len(accepted)
    assert position[1] == max(
        (min(e.ts, c) for e, c in zip(accepted, clocks, strict=True)), default=-1
    )
    assert position[1] <= max(clocks, default=-1)


def test_an_event_stamped_ahead_within_the_skew_prunes_nothing(tmp_path: Path) -> None:
    """The hand-tried attack: one event far ahead must not age the partition's graph."""
    old = [Interaction("u", f"i{n}", "click", T0 + n, clock_ms=T0 + n) for n in range(50)]
    ahead = VALIDATOR.parse(b"u", _body(T0 + 50 + SKEW, item="x"), clock_ms=T0 + 50)
    assert isinstance(ahead, Interaction)
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS, epsilon=EPSILON) as store:
        store.apply("t", [PartitionBatch(0, 50, old)])
        result = store.apply("t", [PartitionBatch(0, 51, [ahead])])
        assert result.pruned == 0
        assert store.counts().edges == 51
        assert store.position("t", 0) == (51, T0 + 50)


def test_events_that_change_no_edge_are_ignored_not_applied(tmp_path: Path) -> None:
    live = Interaction("u", "a", "click", T0, clock_ms=T0)
    zero = Interaction("u", "b", "click", T0, weight=0.0, clock_ms=T0)
    first = Interaction("u", "c", "click", T0 + 1, event_id="e1", clock_ms=T0 + 1)
    copy = Interaction("u", "c", "click", T0 + 1, event_id="e1", clock_ms=T0 + 1)
    # 20 half-lives before the watermark: below epsilon before it arrived
    late = Interaction("u", "d", "click", T0 - 20 * 60_000, clock_ms=T0)
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS, epsilon=EPSILON) as store:
        result = store.apply("t", [PartitionBatch(0, 5, [live, zero, first, copy, late])])
        assert result.kept == ((0, 2),)
        assert (result.applied, result.duplicates) == (2, 1)
        assert dict(result.ignored) == {"zero_weight": 1, "decayed": 1}
        assert {e.dst_id for e in store.edges()} == {"a", "c"}


def _partitioned_stream() -> tuple[list[Interaction], list[Interaction]]:
    """Partition 0 lives in the past, partition 1 a hundred half-lives later."""
    slow = [Interaction(f"s{n % 5}", f"i{n % 7}", "click", T0 + 1_000 * n) for n in range(40)]
    fast = [
        Interaction(f"f{n % 5}", f"i{n % 7}", "click", T0 + 6_000_000 + 1_000 * n)
        for n in range(40)
    ]
    return slow, fast


def test_the_mirror_ages_each_partition_by_its_own_watermark(tmp_path: Path) -> None:
    slow, fast = _partitioned_stream()
    mirror, reg = GraphMirror(BEHAVIOURS, EPSILON), IdRegistry()
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS, epsilon=EPSILON) as store:
        for chunk in range(0, 40, 10):
            batches = [
                PartitionBatch(0, chunk + 10, slow[chunk : chunk + 10]),
                PartitionBatch(1, chunk + 10, fast[chunk : chunk + 10]),
            ]
            store.apply("t", batches)
            events = slow[chunk : chunk + 10] + fast[chunk : chunk + 10]
            now = max(e.ts for e in events)
            users = reg.assign("user", [e.user_id for e in events], now)
            items = reg.assign("item", [e.item_id for e in events], now)
            mirror.apply(events, users, items, [0] * 10 + [1] * 10)
        marks = {p: wm for (_, p), (_, wm) in store.positions().items()}
        expected = {
            (e.src_id, e.dst_id): store.edge_weight(e.src_id, e.dst_id, "click", marks[e.partition])
            for e in store.edges()
        }
        trainer = IncrementalTrainer(TrainerSettings(dim=4, device="cpu"), BEHAVIOURS, EPSILON)
        trainer.bootstrap(store)
    snapshot = mirror.snapshot()
    got = {
        (u, i): w
        for u, i, w in zip(
            reg.ids("user", snapshot.users),
            reg.ids("item", snapshot.items),
            snapshot.weights.tolist(),
            strict=True,
        )
    }
    assert got.keys() == expected.keys()
    assert any(user.startswith("s") for user, _ in got)  # one global "now" would prune these
    for key, weight in got.items():
        assert weight == pytest.approx(expected[key], rel=1e-6)
    assert trainer.mirror.watermarks == mirror.watermarks  # a restart rebuilds the same times
    assert trainer.mirror.snapshot().num_edges == snapshot.num_edges


def test_social_and_refused_events_are_not_reported_as_reflected() -> None:
    trainer = IncrementalTrainer(
        TrainerSettings(dim=4, device="cpu", max_users=1), BEHAVIOURS, EPSILON
    )
    events = [
        Interaction("u1", "u2", "follow", T0),
        Interaction("u1", "i1", "click", T0),
        Interaction("u2", "i1", "click", T0),  # a second user: the registry refuses it
    ]
    report = trainer.learn(events, [0, 0, 0])
    assert report.reflected == [1]
    assert torch.count_nonzero(trainer.vectors("user", ["u2"])) == 0
