"""ItemTrend and trend_history against the decay rule written out directly."""

from __future__ import annotations

import random

import pytest
import torch

from stream.learn.trend import ItemTrend, trend_history

HOUR = 3_600_000


def direct_features(events: list[tuple[int, int, float]], half_lives: list[float], n: int):
    """log(1 + c/mean) with c the mass decayed to the newest event, summed in Python."""
    now = max(t for _, t, _ in events)
    out = torch.zeros(n, len(half_lives), dtype=torch.float64)
    for item, t, m in events:
        for k, h in enumerate(half_lives):
            out[item, k] += m * (2.0 ** (-(now - t) / h) if h > 0 else 1.0)
    mean = out.mean(dim=0, keepdim=True)
    return torch.log1p(out / torch.where(mean > 0, mean, torch.ones_like(mean)))


def random_events(seed: int, n: int, items: int, span_ms: int) -> list[tuple[int, int, float]]:
    rng = random.Random(seed)
    return [
        (rng.randrange(items), rng.randrange(span_ms), rng.choice([0.5, 1.0, 3.0]))
        for _ in range(n)
    ]


def fed(trend: ItemTrend, events: list[tuple[int, int, float]], batch: int) -> ItemTrend:
    for start in range(0, len(events), batch):
        part = events[start : start + batch]
        trend.add(
            torch.tensor([e[0] for e in part]),
            torch.tensor([e[1] for e in part]),
            torch.tensor([e[2] for e in part]),
        )
    return trend


@pytest.mark.parametrize("span_days", [1, 400])  # 400 days of 1 h half-life moves the landmark
def test_features_match_the_decay_rule_in_any_arrival_order(span_days: int) -> None:
    half_lives = [HOUR, 24 * HOUR, 0]
    events = random_events(0, 300, 25, span_days * 24 * HOUR)
    expected = direct_features(events, half_lives, 25)
    in_order = fed(ItemTrend(half_lives), sorted(events, key=lambda e: e[1]), 7)
    shuffled = list(events)
    random.Random(1).shuffle(shuffled)
    late = fed(ItemTrend(half_lives), shuffled, 50)
    for trend in (in_order, late):
        got = trend.features(25).double()
        assert torch.isfinite(got).all()
        assert torch.allclose(got, expected, atol=1e-5)
        # some rows only (repeated, out of order): the same features, against every row's mean
        rows = torch.tensor([24, 3, 3, 0, 17])
        assert torch.allclose(trend.features(25, rows).double(), expected[rows], atol=1e-5)


def test_features_ignore_the_streams_rate_and_the_passing_of_time() -> None:
    half_lives = [HOUR, 0]
    events = random_events(2, 100, 10, 48 * HOUR)
    base = fed(ItemTrend(half_lives), events, 10).features(10)
    heavier = fed(ItemTrend(half_lives), [(i, t, 7 * m) for i, t, m in events], 10).features(10)
    assert torch.allclose(base, heavier, atol=1e-6)
    # a quiet day later every count has decayed alike: same shares, same features
    shifted = [(i, t + 24 * HOUR, m) for i, t, m in events]
    assert torch.allclose(base, fed(ItemTrend(half_lives), shifted, 10).features(10), atol=1e-6)


def test_recent_mass_outranks_old_mass_only_at_short_half_lives() -> None:
    trend = ItemTrend([HOUR, 0])
    # item 0: three events a day ago; item 1: two events now
    trend.add(torch.tensor([0, 0, 0]), torch.tensor([0, 0, 0]), torch.ones(3))
    trend.add(torch.tensor([1, 1]), torch.tensor([24 * HOUR] * 2), torch.ones(2))
    short, never = trend.features(2).T
    assert short[1] > short[0] and never[0] > never[1]


def test_refused_rows_reset_rows_and_state_round_trip() -> None:
    trend = ItemTrend([HOUR])
    trend.add(torch.tensor([0, -1, 2]), torch.tensor([0, 0, 0]), torch.ones(3))
    assert trend.features(3)[:, 0].tolist()[1] == 0.0  # the refused row counted nothing
    copy = ItemTrend([HOUR])
    copy.load_state_dict(trend.state_dict())
    assert torch.equal(copy.features(3), trend.features(3))
    trend.reset_rows(torch.tensor([2]))
    assert float(trend.features(3)[2, 0]) == 0.0 and float(copy.features(3)[2, 0]) > 0.0
    with pytest.raises(ValueError, match="half-lives"):
        ItemTrend([2 * HOUR]).load_state_dict(copy.state_dict())
    with pytest.raises(ValueError):
        ItemTrend([-1.0])


def test_history_scores_each_edge_against_the_slices_before_it() -> None:
    events = random_events(3, 120, 12, 10 * 24 * HOUR)
    items = torch.tensor([e[0] for e in events])
    times = torch.tensor([e[1] for e in events])
    mass = torch.tensor([e[2] for e in events], dtype=torch.float64)
    table, moment = trend_history([HOUR, 0], (items, times, mass), 12, 4)
    assert table.shape == (4, 12, 2) and moment.shape == (120,)
    assert float(table[0].abs().sum()) == 0.0  # nothing before the first slice
    for b in range(1, 4):
        assert int(times[moment == b].min()) >= int(times[moment == b - 1].max())
        before = [e for e, m in zip(events, moment.tolist(), strict=True) if m < b]
        expected = direct_features(before, [HOUR, 0], 12)
        assert torch.allclose(table[b].double(), expected, atol=1e-5)


def test_features_after_evictions_match_the_remaining_items_decay_rule() -> None:
    half_lives = [HOUR, 0]
    events = random_events(4, 400, 25, 30 * 24 * HOUR)
    trend = fed(ItemTrend(half_lives), events, 40)
    # most of the mass forgotten: the kept sum is counted again, not left to its roundings
    evicted = [i for i in range(25) if i % 6]
    trend.reset_rows(torch.tensor(evicted))
    kept = [e for e in events if e[0] not in evicted]
    # the decay rule's "now" is the newest event seen, evicted or not
    now = max(t for _, t, _ in events)
    expected = direct_features([*kept, (0, now, 0.0)], half_lives, 25)
    assert torch.allclose(trend.features(25).double(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="counted rows"):
        trend.features(20)  # a mean that would leave counted rows out


@pytest.mark.parametrize(
    ("batch", "span_days", "evict"),
    [
        (3, 1, False),  # many small changes: merged
        (60, 1, False),  # changes of most rows: a table then
        (7, 400, False),  # the landmark moves: a table then
        (5, 2, True),  # evictions
    ],
)
def test_a_snapshot_reads_the_features_as_they_were_when_taken(
    batch: int, span_days: int, evict: bool
) -> None:
    half_lives = [HOUR, 24 * HOUR, 0]
    events = sorted(random_events(5, 600, 40, span_days * 24 * HOUR), key=lambda e: e[1])
    num_items = 30  # rows 30..39 are first counted after the snapshot
    trend = fed(ItemTrend(half_lives), [e for e in events[:200] if e[0] < num_items], 10)
    rows = torch.randperm(45, generator=torch.Generator().manual_seed(0)).repeat(2)
    then = torch.zeros(45, 3)
    then[:num_items] = trend.features(num_items)
    snapshot = trend.snapshot(num_items)
    few = rows[:7]  # a read of a quarter of its rows at most: each row's mass looked up
    for start in range(200, 600, 100):
        # read while the trend changes, as a step behind does beside the ingest
        assert torch.equal(snapshot.at(torch.zeros_like(few), few), then[few])
        fed(trend, events[start : start + 100], batch)
        if evict:
            trend.reset_rows(torch.tensor([1, 2, 3, 35]))
    assert not torch.equal(trend.features(45)[rows], then[rows])  # it did change
    assert torch.equal(snapshot.at(torch.zeros_like(few), few), then[few])
    assert snapshot.dense is not None or len(snapshot.changed_rows) <= 8  # merged
    assert torch.equal(snapshot.at(torch.zeros_like(rows), rows), then[rows])  # a table now
    assert snapshot.dense is not None
