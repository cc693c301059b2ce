"""Settings of ``streamgnn produce``, each with its environment twin (``STREAMGNN_PRODUCE_*``).

Like :func:`stream.settings.load_settings`, the environment is passed in, never read
here, and an explicit value wins over its environment twin, which wins over the default.

>>> s = load_produce_settings({"rate": "500"}, {"STREAMGNN_PRODUCE_LATE_SHARE": "0.1"})
>>> (s.rate, s.late_share, s.count)
(500.0, 0.1, 0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from stream.errors import ConfigError
from stream.settings import Option, coerce_value


@dataclass(frozen=True)
class ProduceSettings:
    """How much to send, how fast, and the synthetic stream's shape.

    ``count`` and ``duration_s`` of 0 mean no limit. The default rate is a demo's trickle
    (the compose ``producer`` service runs with the defaults); benchmarks pass their own.
    """

    rate: float = 100.0
    count: int = 0
    duration_s: float = 0.0
    seed: int = 0
    users: int = 10_000
    items: int = 5_000
    new_user_share: float = 0.01
    late_share: float = 0.01
    no_progress: bool = False

    def __post_init__(self) -> None:
        for name in ("rate", "duration_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"produce {name} must be finite and >= 0, got {value!r}")
        if self.count < 0:
            raise ConfigError(f"produce count must be >= 0, got {self.count!r}")
        for name in ("new_user_share", "late_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"produce {name} must be in [0, 1], got {value!r}")


def _option(name: str, help: str) -> Option:
    flag = "--" + name.replace("_", "-")
    return Option(flag, f"STREAMGNN_PRODUCE_{name.upper()}", "produce", name, help)


PRODUCE_OPTIONS: tuple[Option, ...] = (
    _option("rate", "events per second; 0 sends as fast as possible"),
    _option("count", "stop after this many events; 0: no limit"),
    _option("duration_s", "stop after this many seconds; 0: no limit"),
    _option("seed", "synthetic stream seed (same seed, same events)"),
    _option("users", "synthetic established users (Zipf popularity)"),
    _option("items", "synthetic items (Zipf popularity, in taste clusters)"),
    _option("new_user_share", "synthetic share of events from a brand-new user"),
    _option("late_share", "synthetic share of events with ts before the clock (late)"),
    _option("no_progress", "no progress bar (true/false)"),
)


def load_produce_settings(
    values: Mapping[str, str | None], environ: Mapping[str, str]
) -> ProduceSettings:
    """:class:`ProduceSettings` from option values (by name) over the environment."""
    defaults = ProduceSettings()
    chosen: dict[str, object] = {}
    for option in PRODUCE_OPTIONS:
        raw = values.get(option.name)
        if raw is None:
            raw = environ.get(option.env)
        if raw is None:
            continue
        try:
            chosen[option.name] = coerce_value(raw, getattr(defaults, option.name))
        except ValueError:
            raise ConfigError(f"{option.flag} / {option.env}: invalid value {raw!r}") from None
    return ProduceSettings(**chosen)  # type: ignore[arg-type]
