"""Parsers that turn an option's text (a flag or its environment twin) into its value.

Each raises ``ValueError`` on text that does not parse; the loader names the option.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

_DURATION_UNITS_MS = {
    "ms": 1,
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}


def parse_bool(raw: str) -> bool:
    """``true``/``false``, ``yes``/``no``, ``1``/``0`` (any case).

    >>> parse_bool("Yes"), parse_bool("0")
    (True, False)
    """
    text = raw.strip().lower()
    if text not in {"true", "false", "1", "0", "yes", "no"}:
        raise ValueError(f"expected true or false, got {raw!r}")
    return text in {"true", "1", "yes"}


def parse_duration(text: str) -> int:
    """``90s``, ``12h``, ``1d``, ``2w`` or plain milliseconds, as milliseconds.

    >>> parse_duration("1d"), parse_duration("1500")
    (86400000, 1500)
    """
    raw = text.strip().lower()
    unit = next((u for u in ("ms", "s", "m", "h", "d", "w") if raw.endswith(u)), "ms")
    number = raw[: -len(unit)] if raw.endswith(unit) else raw
    try:
        value = float(number) * _DURATION_UNITS_MS[unit]
    except ValueError:
        raise ValueError(f"{text!r}: expected e.g. 12h, 1d, 2w, 3600s") from None
    if not value > 0:
        raise ValueError(f"{text!r}: must be > 0")
    return round(value)


def parse_half_life(text: str) -> int:
    """A half-life as :func:`parse_duration`, or ``0`` / ``never``: 0 (no decay, or off).

    >>> parse_half_life("1h"), parse_half_life("never")
    (3600000, 0)
    """
    return 0 if text.strip().lower() in {"0", "never", "off"} else parse_duration(text)


def parse_half_lives(raw: str) -> tuple[int, ...]:
    """A comma list of :func:`parse_half_life` values; empty text is an empty tuple.

    >>> parse_half_lives("1h, 1d,never"), parse_half_lives("")
    ((3600000, 86400000, 0), ())
    """
    return tuple(parse_half_life(part) for part in raw.split(",") if part.strip())


def parse_column(text: str | None) -> str | int | None:
    """A column option as typed: digits are an index, anything else a name.

    >>> parse_column("3"), parse_column("who"), parse_column("")
    (3, 'who', None)
    """
    if text is None or text == "":
        return None
    return int(text) if text.isdigit() else text


def parse_names(raw: str) -> tuple[str, ...]:
    """A comma list: ``"a, b,,c"`` is ``("a", "b", "c")``."""
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def parse_ints(raw: str) -> tuple[int, ...]:
    """A comma list of integers.

    >>> parse_ints("5, 10,20")
    (5, 10, 20)
    """
    return tuple(int(part) for part in parse_names(raw))


def parse_floats(raw: str) -> tuple[float, ...]:
    """A comma list of numbers.

    >>> parse_floats("0.1,1")
    (0.1, 1.0)
    """
    return tuple(float(part) for part in parse_names(raw))


def parse_json_object(raw: str) -> Mapping[str, Any]:
    """A JSON object, read-only.

    >>> dict(parse_json_object('{"heads": 2}'))
    {'heads': 2}
    """
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {raw!r}")
    return MappingProxyType(value)
