"""The synthetic stream: deterministic, valid, heavy-tailed, drifting, with newcomers, late.

Share tolerances: with a fixed seed the counts are fixed, but the bounds are what a
correct generator must meet for *any* seed. A count of ``n`` independent draws with
probability ``p`` has standard deviation ``sqrt(n p (1 - p))``; five of them is a bound a
correct generator misses with probability below 1e-6.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest

from stream.errors import ConfigError
from stream.events import EventValidator, Interaction
from stream.produce import SimulatedClock, SyntheticConfig, SyntheticStream, encode_event
from stream.settings import EventSettings

START_MS = 1_700_000_000_000


def _take(config: SyntheticConfig, n: int, step_ms: int = 10) -> list[dict[str, object]]:
    events = SyntheticStream(config).events(SimulatedClock(START_MS, step_ms))
    return list(itertools.islice(events, n))


def _within_five_sigma(observed: int, n: int, p: float) -> bool:
    return abs(observed - n * p) <= 5 * math.sqrt(n * p * (1 - p))


def test_same_seed_same_events_and_ts_is_the_only_clock_dependent_field() -> None:
    config = SyntheticConfig(users=500, items=300, seed=7)
    first, again = _take(config, 3000), _take(config, 3000)
    assert first == again
    slower = _take(config, 3000, step_ms=1000)
    strip = [{k: v for k, v in e.items() if k != "ts"} for e in first]
    assert strip == [{k: v for k, v in e.items() if k != "ts"} for e in slower]
    assert _take(SyntheticConfig(users=500, items=300, seed=8), 3000) != first


def test_every_event_passes_the_contract_with_its_key() -> None:
    validator = EventValidator(EventSettings())
    kinds = Counter()
    for event in _take(SyntheticConfig(users=200, items=100, new_user_share=0.1, seed=1), 20_000):
        key, value = encode_event(event)
        parsed = validator.parse(key, value)
        assert isinstance(parsed, Interaction), (event, parsed)
        kinds[parsed.event_type] += 1
    # The funnel: more views than clicks than carts than purchases; every type occurs.
    assert kinds["view"] > kinds["click"] > kinds["cart"] > kinds["purchase"] > 0
    assert set(kinds) == set(EventSettings().behaviours)


def test_user_activity_is_heavy_tailed() -> None:
    events = _take(SyntheticConfig(users=2000, items=1000, new_user_share=0.0, seed=2), 20_000)
    counts = sorted(Counter(e["user_id"] for e in events).values(), reverse=True)
    top_share = sum(counts[:20]) / len(events)  # the top 1% of the 2000 users
    assert top_share > 0.10  # ten times what uniform activity would give them


def test_new_user_share_is_respected_and_newcomers_are_new() -> None:
    n, p = 20_000, 0.05
    events = _take(SyntheticConfig(users=1000, items=500, new_user_share=p, seed=3), n)
    newcomers = [e["user_id"] for e in events if str(e["user_id"]).startswith("new")]
    assert _within_five_sigma(len(newcomers), n, p)
    assert len(set(newcomers)) == len(newcomers)  # each one's first event


def test_late_share_is_respected_and_delays_are_bounded() -> None:
    n, p, step, max_late = 20_000, 0.1, 10, 5_000
    config = SyntheticConfig(users=500, items=300, late_share=p, max_lateness_ms=max_late, seed=4)
    events = _take(config, n, step_ms=step)
    delays = [START_MS + k * step - int(str(e["ts"])) for k, e in enumerate(events)]
    late = [d for d in delays if d != 0]
    assert _within_five_sigma(len(late), n, p)
    assert all(1 <= d <= max_late for d in late)


def _cluster_histogram(events: list[dict[str, object]], user: str, clusters: int) -> list[float]:
    mine = [e for e in events if e["user_id"] == user and e["event_type"] != "follow"]
    counts = Counter(int(str(e["item_id"])[1:]) % clusters for e in mine)
    return [counts[c] / len(mine) for c in range(clusters)]


def _total_variation(a: list[float], b: list[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / 2


@pytest.mark.parametrize(("drift_period", "drifts"), [(5_000, True), (10**9, False)])
def test_tastes_drift_between_the_first_and_last_window(drift_period: int, drifts: bool) -> None:
    """The heaviest user's item clusters: far apart after drift, close without it.

    With ``taste_focus`` 0.8 a user puts 80% of its events in its preferred cluster, so a
    moved preference changes the histogram by a total variation near 0.8; sampling noise
    over a few hundred events is a few hundredths.
    """
    clusters, n = 10, 20_000
    config = SyntheticConfig(
        users=1000, items=1000, clusters=clusters, drift_period=drift_period, seed=5
    )
    events = _take(config, n)
    user = Counter(e["user_id"] for e in events).most_common(1)[0][0]
    first = _cluster_histogram(events[:5000], str(user), clusters)
    last = _cluster_histogram(events[-5000:], str(user), clusters)
    assert (_total_variation(first, last) > 0.4) is drifts


def test_follow_events_name_another_established_user() -> None:
    config = SyntheticConfig(users=50, items=100, seed=6)
    follows = [e for e in _take(config, 20_000) if e["event_type"] == "follow"]
    assert follows
    for event in follows:
        followed = str(event["item_id"])
        assert followed.startswith("u") and 0 <= int(followed[1:]) < 50
        assert followed != event["user_id"]


def test_only_ratings_carry_a_weight_of_one_to_five() -> None:
    for event in _take(SyntheticConfig(users=50, items=50, seed=9), 5000):
        if event["event_type"] == "rating":
            assert event["weight"] in {1.0, 2.0, 3.0, 4.0, 5.0}
        else:
            assert "weight" not in event


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"users": 1}, "users"),
        ({"clusters": 0}, "clusters"),
        ({"late_share": 1.5}, "late_share"),
        ({"new_user_share": -0.1}, "new_user_share"),
        ({"user_exponent": math.nan}, "user_exponent"),
        ({"mix": {"view": 1.0, "teleport": 1.0}}, "teleport"),
        ({"mix": {"view": 0.0}}, "mix"),
    ],
)
def test_bad_configs_are_refused_naming_the_value(changes: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        SyntheticConfig(**changes)  # type: ignore[arg-type]


def test_simulated_clock_refuses_negative_values() -> None:
    with pytest.raises(ConfigError, match="step_ms"):
        SimulatedClock(0, -1)
