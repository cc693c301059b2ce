"""A seeded synthetic interaction stream that looks like a shop, not like uniform noise.

What makes it realistic enough to exercise the pipeline:

- **Power-law popularity.** Users and items are drawn from Zipf laws (rank ``r`` has
  weight ``1 / (r + 1) ** s``): a few heavy users and blockbuster items, a long tail.
- **Several behaviours** in a funnel-shaped mix (view > click > cart > purchase, some
  favorite and rating, a few follow). A ``rating`` carries ``weight`` 1..5; a ``follow``
  names another user as its ``item_id`` (a social edge).
- **Drifting tastes.** Items fall in ``clusters`` (item ``i`` is in cluster
  ``i % clusters``). Each user prefers one cluster and draws most items from it; the
  preferred cluster moves on every ``drift_period`` events, each user at its own phase, so
  what a user wants now is not what it wanted an hour ago.
- **Brand-new users.** A ``new_user_share`` of events come from a user never seen before
  (``new0``, ``new1``, ...), the cold-start case.
- **Late events.** A ``late_share`` of events carry a ``ts`` earlier than the clock by a
  random delay of 1..``max_lateness_ms``, the out-of-order case.

Generation is kept apart from time: everything but ``ts`` is a function of the seed
alone, and ``ts`` is read from the clock the caller passes, when the event is taken from
the iterator. A live producer passes :func:`wall_clock_ms`, so an on-time event's ``ts`` is
its send time; a replay passes a :class:`SimulatedClock`, so the whole stream is
reproducible bit for bit.

>>> stream = SyntheticStream(SyntheticConfig(users=100, items=50, seed=1))
>>> events = stream.events(SimulatedClock(start_ms=1_700_000_000_000, step_ms=10))
>>> first = next(events)
>>> sorted(first)[:4], first["ts"]
(['event_type', 'item_id', 'ts', 'user_id'], 1700000000000)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from stream.behaviours import DEFAULT_BEHAVIOURS, SOCIAL_EVENT_TYPES
from stream.errors import ConfigError

Clock = Callable[[], int]
"""Returns "now" in epoch milliseconds; called once per event, when it is taken."""

Event = dict[str, object]

DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {
        "view": 0.55,
        "click": 0.25,
        "cart": 0.07,
        "favorite": 0.05,
        "purchase": 0.03,
        "rating": 0.03,
        "follow": 0.02,
    }
)
"""Share of each behaviour among established users' events (a shop's funnel)."""

_BLOCK = 1024  # events drawn per vectorised numpy call: keeps the per-event cost small


def wall_clock_ms() -> int:
    """The wall clock in epoch milliseconds (live mode: ``ts`` is the send time)."""
    return time.time_ns() // 1_000_000


class SimulatedClock:
    """A clock for replays: ``start_ms``, then ``step_ms`` later on each call.

    >>> clock = SimulatedClock(start_ms=1_000, step_ms=5)
    >>> clock(), clock(), clock()
    (1000, 1005, 1010)
    """

    def __init__(self, start_ms: int, step_ms: int = 1) -> None:
        if start_ms < 0:
            raise ConfigError(f"start_ms must be >= 0 (epoch ms), got {start_ms!r}")
        if step_ms < 0:
            raise ConfigError(f"step_ms must be >= 0, got {step_ms!r}")
        self._next = start_ms
        self._step = step_ms

    def __call__(self) -> int:
        now = self._next
        self._next += self._step
        return now


@dataclass(frozen=True)
class SyntheticConfig:
    """The shape of a :class:`SyntheticStream`; see the module docstring for each idea.

    Args:
        users: established users (ids ``u0`` .. ``u{users-1}``, ``u0`` the most active).
        items: items (ids ``i0`` .. ``i{items-1}``, ``i0`` the most popular).
        clusters: taste clusters the items fall in.
        user_exponent, item_exponent: Zipf exponents ``s`` of user and item popularity.
        taste_focus: share of a user's events drawn from its preferred cluster.
        drift_period: events after which each user's preferred cluster moves on.
        new_user_share: share of events from a brand-new user.
        late_share: share of events whose ``ts`` is earlier than the clock.
        max_lateness_ms: the largest delay of a late event.
        mix: share of each behaviour (normalised; names must be event types).
        seed: everything except ``ts`` is a function of this.
    """

    users: int = 10_000
    items: int = 5_000
    clusters: int = 20
    user_exponent: float = 0.8
    item_exponent: float = 0.9
    taste_focus: float = 0.8
    drift_period: int = 50_000
    new_user_share: float = 0.01
    late_share: float = 0.01
    max_lateness_ms: int = 60_000
    mix: Mapping[str, float] = field(default_factory=lambda: DEFAULT_MIX)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.users < 2:
            raise ConfigError(
                f"users must be >= 2 (a follow needs another user), got {self.users!r}"
            )
        if self.items < 1:
            raise ConfigError(f"items must be >= 1, got {self.items!r}")
        if not 1 <= self.clusters <= self.items:
            raise ConfigError(f"clusters must be 1..items ({self.items}), got {self.clusters!r}")
        for name in ("user_exponent", "item_exponent"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be finite and > 0, got {value!r}")
        for name in ("taste_focus", "new_user_share", "late_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value!r}")
        if self.drift_period < 1:
            raise ConfigError(f"drift_period must be >= 1 event, got {self.drift_period!r}")
        if self.max_lateness_ms < 1:
            raise ConfigError(f"max_lateness_ms must be >= 1, got {self.max_lateness_ms!r}")
        unknown = sorted(set(self.mix) - set(DEFAULT_BEHAVIOURS))
        if unknown:
            raise ConfigError(
                f"mix names unknown event types {unknown}; valid: {', '.join(DEFAULT_BEHAVIOURS)}"
            )
        shares = list(self.mix.values())
        if not all(math.isfinite(s) and s >= 0 for s in shares) or not sum(shares) > 0:
            raise ConfigError(
                f"mix shares must be finite, >= 0 and not all 0, got {dict(self.mix)}"
            )


def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    cdf: np.ndarray = np.cumsum(weights)
    normalised: np.ndarray = cdf / cdf[-1]
    return normalised


class SyntheticStream:
    """An endless, seeded stream of interaction events (dicts that follow the contract).

    Each call to :meth:`events` starts the same sequence again from the seed.
    """

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config = config or SyntheticConfig()
        self._user_cdf = _zipf_cdf(config.users, config.user_exponent)
        self._item_cdf = _zipf_cdf(config.items, config.item_exponent)
        per_cluster = -(-config.items // config.clusters)  # the largest cluster's size
        self._cluster_cdf = _zipf_cdf(per_cluster, config.item_exponent)
        self._cluster_sizes = np.array(
            [len(range(c, config.items, config.clusters)) for c in range(config.clusters)]
        )
        self._types = list(config.mix)
        shares = np.array([config.mix[t] for t in self._types], dtype=np.float64)
        self._type_cdf = np.cumsum(shares) / shares.sum()
        self._social = np.array([t in SOCIAL_EVENT_TYPES for t in self._types])
        self._rating = self._types.index("rating") if "rating" in self._types else -1

    def events(self, clock: Clock) -> Iterator[Event]:
        """Events forever; each one's ``ts`` comes from ``clock()`` as it is taken."""
        rng = np.random.default_rng(self.config.seed)
        c = self.config
        home = rng.integers(c.clusters, size=c.users)  # each user's cluster at event 0
        phase = rng.integers(c.drift_period, size=c.users)  # when each user's taste moves
        newcomers = 0
        start = 0
        while True:
            block = self._draw_block(rng, start, home, phase)
            for user, newcomer, item, kind, weight, delay in zip(*block, strict=True):
                if newcomer:
                    user_id = f"new{newcomers}"
                    newcomers += 1
                else:
                    user_id = f"u{user}"
                event: Event = {
                    "user_id": user_id,
                    "item_id": item,
                    "event_type": kind,
                    "ts": max(clock() - delay, 0),
                }
                if weight:
                    event["weight"] = float(weight)
                yield event
            start += _BLOCK

    def _draw_block(
        self, rng: np.random.Generator, start: int, home: np.ndarray, phase: np.ndarray
    ) -> tuple[list[int], list[bool], list[str], list[str], list[int], list[int]]:
        """One block of events as parallel lists (user, newcomer, item, type, weight, delay)."""
        c = self.config
        n = _BLOCK
        users = np.searchsorted(self._user_cdf, rng.random(n), side="right")
        newcomer = rng.random(n) < c.new_user_share
        kinds = np.searchsorted(self._type_cdf, rng.random(n), side="right")
        # Preferred cluster now: the home cluster, moved on once per drift period.
        step = start + np.arange(n)
        taste = (home[users] + (step + phase[users]) // c.drift_period) % c.clusters
        taste = np.where(newcomer, rng.integers(c.clusters, size=n), taste)
        within = np.searchsorted(self._cluster_cdf, rng.random(n), side="right")
        within = within % self._cluster_sizes[taste]
        focused = taste + c.clusters * within
        anywhere = np.searchsorted(self._item_cdf, rng.random(n), side="right")
        items = np.where(rng.random(n) < c.taste_focus, focused, anywhere)
        followed = np.searchsorted(self._user_cdf, rng.random(n), side="right")
        followed = np.where(followed == users, (followed + 1) % c.users, followed)
        social = self._social[kinds]
        ratings = np.where(kinds == self._rating, rng.integers(1, 6, size=n), 0)
        late = rng.random(n) < c.late_share
        delays = np.where(late, rng.integers(1, c.max_lateness_ms + 1, size=n), 0)
        item_ids = [
            f"u{i}" if s else f"i{i}"
            for i, s in zip(
                np.where(social, followed, items).tolist(), social.tolist(), strict=True
            )
        ]
        type_names = [self._types[k] for k in kinds.tolist()]
        return (
            users.tolist(),
            newcomer.tolist(),
            item_ids,
            type_names,
            ratings.tolist(),
            delays.tolist(),
        )
