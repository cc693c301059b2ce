"""Behaviours: the event types of the domain, and how each weighs and decays in the graph.

A behaviour (``click``, ``purchase``, ...) is an event type with a weight ``beta`` and a
half-life; the graph store merges ``beta * weight`` into an edge and decays it with the
half-life (:mod:`stream.state.decay`). Relation ``r`` is the ``r``-th behaviour in sorted
order. ``follow`` is social: its ``item_id`` names another user.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType

from stream.errors import ConfigError

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Behaviour:
    """How one event type weighs in the graph: weight ``beta``, decay ``half_life_ms``."""

    beta: float
    half_life_ms: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ConfigError(f"behaviour beta must be finite and > 0, got {self.beta!r}")
        if self.half_life_ms <= 0:
            raise ConfigError(f"behaviour half_life_ms must be > 0, got {self.half_life_ms!r}")


# No behaviour forgets faster than a 30-day half-life: an edge outlives its last event by
# about ten half-lives (beta 1 decays below the default epsilon in ~10), so a user who comes
# back within months still has a graph. Recency is the user-recency view's (a user's edges
# weigh by their age behind the user's own newest) and the trend prior's; with view, click
# and cart at 1, 3 and 7 days, RetailRocket's warm-up stretched to 30x its span (a user back
# weeks later instead of hours) lost half its Recall@20 to pruning, below co-occurrence
# (bench/results/eval-levers-half-lives.json). The price: a graph that holds more edges.
DEFAULT_BEHAVIOURS: Mapping[str, Behaviour] = MappingProxyType(
    {
        "view": Behaviour(0.5, 30 * DAY_MS),
        "click": Behaviour(1.0, 30 * DAY_MS),
        "favorite": Behaviour(2.0, 30 * DAY_MS),
        "cart": Behaviour(3.0, 30 * DAY_MS),
        "purchase": Behaviour(5.0, 60 * DAY_MS),
        "rating": Behaviour(1.0, 60 * DAY_MS),
        "follow": Behaviour(1.0, 180 * DAY_MS),
    }
)

# Event types whose item_id names another user (a social edge).
SOCIAL_EVENT_TYPES = frozenset({"follow"})


def parse_behaviours(raw: str) -> Mapping[str, Behaviour]:
    """Parse ``{"name": {"beta": float, "half_life_ms": int}}`` into behaviours.

    >>> parse_behaviours('{"click": {"beta": 2, "half_life_ms": 1000}}')["click"]
    Behaviour(beta=2.0, half_life_ms=1000)
    """
    try:
        spec = json.loads(raw)
        behaviours = {
            str(name): Behaviour(float(b["beta"]), int(b["half_life_ms"]))
            for name, b in spec.items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"invalid behaviours JSON {raw!r}: {exc}") from exc
    return MappingProxyType(behaviours)


def behaviours_option(behaviours: Mapping[str, Behaviour]) -> str:
    """Behaviours as ``--behaviours`` takes them (the inverse of :func:`parse_behaviours`).

    >>> behaviours_option({"click": Behaviour(2.0, 1000)})
    '{"click": {"beta": 2.0, "half_life_ms": 1000}}'
    """
    return json.dumps({str(name): asdict(b) for name, b in behaviours.items()})
