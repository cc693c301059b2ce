"""The default behaviours remember a returning user: no edge of theirs is pruned for months."""

from __future__ import annotations

from stream.behaviours import DAY_MS, DEFAULT_BEHAVIOURS, parse_behaviours
from stream.settings.sections import StoreSettings
from stream.state.decay import is_dead

T0 = 1_700_000_000_000


def test_a_single_event_of_any_default_behaviour_outlives_three_months() -> None:
    epsilon = StoreSettings().epsilon
    for name, behaviour in DEFAULT_BEHAVIOURS.items():
        edge = (behaviour.beta, T0)  # one event of weight 1
        assert not is_dead(edge, T0 + 90 * DAY_MS, behaviour.half_life_ms, epsilon), name


def test_no_default_behaviour_forgets_faster_than_a_thirty_day_half_life() -> None:
    assert min(b.half_life_ms for b in DEFAULT_BEHAVIOURS.values()) >= 30 * DAY_MS


def test_configured_behaviours_keep_their_own_half_lives() -> None:
    """The floor is the defaults' choice, not a rule on what an operator configures."""
    behaviours = parse_behaviours('{"view": {"beta": 0.5, "half_life_ms": 3600000}}')
    assert behaviours["view"].half_life_ms == 3_600_000
