"""Interaction events: parse and validate one Kafka record against the contract.

A record is either an :class:`Interaction` or a :class:`Rejection`; errors are data,
never exceptions, so a hostile record cannot stop the worker. The contract is in
DESIGN.md ("Input: interaction events").

>>> v = EventValidator(EventSettings())
>>> v.parse(b"u1", b'{"user_id": "u1", "item_id": 7, "event_type": "view", "ts": 1700000000000}')
Interaction(user_id='u1', item_id='7', event_type='view', ts=1700000000000, weight=1.0, \
event_id=None)
>>> v.parse(b"u1", b'{"user_id": "u1", "item_id": 7, "event_type": "click", "ts": true}')
Rejection(reason='bad_timestamp', detail='ts must be an integer (epoch ms), got bool')

Time is checked against the clock the record came with (``clock_ms``: its Kafka record
timestamp, or the worker's clock when that is missing or later; see :func:`record_clock`).
An event stamped in epoch seconds, or far ahead of that clock, is refused:

>>> v.parse(b"u1", b'{"user_id": "u1", "item_id": 7, "event_type": "click", "ts": 1700000000}')
Rejection(reason='ts_unit', detail='ts 1700000000 looks like epoch seconds, not milliseconds')
>>> ok = b'{"user_id": "u1", "item_id": 7, "event_type": "click", "ts": 1700000000000}'
>>> v.parse(b"u1", ok, clock_ms=1_699_000_000_000).reason
'ts_in_future'
>>> v.parse(b"u1", ok, clock_ms=1_699_999_990_000).stream_ts   # 10 s ahead: within the skew
1699999990000
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from stream.settings import EventSettings

REJECTION_REASONS = (
    "null_key",
    "key_mismatch",
    "null_value",
    "too_large",
    "bad_encoding",
    "bad_json",
    "not_object",
    "missing_field",
    "bad_id",
    "unknown_event_type",
    "bad_timestamp",
    "ts_unit",
    "ts_in_future",
    "ts_too_old",
    "bad_weight",
    "bad_event_id",
    "undecodable",
)
"""Every reason a record can be rejected for; stable, used as a metric label.

``undecodable`` is the ingest loop's own: the Kafka client could not decode the record
(e.g. a header key that is not UTF-8), so it is dead-lettered with what could be read."""

IGNORED_REASONS = ("zero_weight", "decayed")
"""Why an accepted event can leave the graph unchanged (``streamgnn_events_ignored_total``):
its weight is 0, or it is so late that its weight had decayed below epsilon at its
partition's watermark before it arrived. Such an event is never counted as applied and never
reaches the trainer."""

SECONDS_BELOW_MS = 100_000_000_000
"""A ``ts`` below this (1973-03-03 in ms; year 5138 read as seconds) is taken for epoch
seconds (the same rule as ``stream.evaluation.data.SECONDS_BELOW``)."""
MICROS_FROM_MS = 100_000_000_000_000
"""A ``ts`` from this on (year 5138 in ms) is taken for epoch micro- or nanoseconds."""

_REQUIRED = ("user_id", "item_id", "event_type", "ts")
_REQUIRED_SET = frozenset(_REQUIRED)


@dataclass(frozen=True, slots=True)
class Interaction:
    """One valid event. Ids are canonical strings (an integer id ``7`` becomes ``"7"``)."""

    user_id: str
    item_id: str
    event_type: str
    ts: int
    weight: float = 1.0
    event_id: str | None = None
    # The time the record vouches for (see :func:`record_clock`); None outside Kafka.
    # Source metadata, not part of the event: left out of equality and repr.
    clock_ms: int | None = field(default=None, compare=False, repr=False)

    @property
    def stream_ts(self) -> int:
        """How far this event may move its partition's watermark: its ``ts``, but never past
        the clock its record came with, so no single record can push stream time ahead."""
        return self.ts if self.clock_ms is None else min(self.ts, self.clock_ms)


def record_clock(record_ts_ms: int | None, now_ms: int, appended: bool = False) -> int:
    """The clock a record vouches for: its Kafka timestamp, unless that is missing, not
    plausible (negative, or before :data:`SECONDS_BELOW_MS`) or, set by its producer
    (``CreateTime``), later than the worker's clock ``now_ms``; then the worker's clock.
    A timestamp the broker set (``appended``: a ``LogAppendTime`` topic) is the broker's
    clock, which no producer sets: it vouches for itself, also when this worker's clock
    is behind it.

    >>> record_clock(1_700_000_000_000, 1_800_000_000_000), record_clock(-1, 1_800_000_000_000)
    (1700000000000, 1800000000000)
    >>> record_clock(1_800_000_000_000, 1_700_000_000_000, appended=True)
    1800000000000
    """
    if record_ts_ms is None or record_ts_ms < SECONDS_BELOW_MS:
        return now_ms
    return record_ts_ms if appended else min(record_ts_ms, now_ms)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record was refused: ``reason`` is one of :data:`REJECTION_REASONS`."""

    reason: str
    detail: str


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


def _reject_constant(name: str) -> Any:
    raise _Invalid("bad_json", f"non-finite number {name} is not allowed")


class EventValidator:
    """Turns raw ``(key, value)`` bytes into an :class:`Interaction` or a :class:`Rejection`."""

    def __init__(self, settings: EventSettings) -> None:
        self._settings = settings
        self._event_types = frozenset(settings.behaviours)
        self._decoder = json.JSONDecoder(parse_constant=_reject_constant)

    def parse(
        self, key: bytes | None, value: bytes | None, clock_ms: int | None = None
    ) -> Interaction | Rejection:
        """Validate one record; never raises for any input bytes.

        ``clock_ms`` is the record's clock (:func:`record_clock`): an event more than
        ``max_future_skew_ms`` ahead of it is refused, and it caps the event's
        :attr:`Interaction.stream_ts`. None skips the check (no Kafka record, e.g. a file).
        """
        try:
            event = self._parse(key, value, clock_ms)
        except _Invalid as invalid:
            return invalid.rejection
        skew = self._settings.max_future_skew_ms
        if clock_ms is not None and event.ts > clock_ms + skew:
            return Rejection(
                "ts_in_future",
                f"ts {event.ts} is {event.ts - clock_ms} ms ahead of the record's clock "
                f"{clock_ms} (allowed skew {skew} ms)",
            )
        return event

    def _parse(self, key: bytes | None, value: bytes | None, clock_ms: int | None) -> Interaction:
        s = self._settings
        if value is None:
            raise _Invalid("null_value", "record has no value")
        if len(value) > s.max_event_bytes:
            raise _Invalid("too_large", f"value is {len(value)} bytes, limit {s.max_event_bytes}")
        if key is None:
            raise _Invalid("null_key", "record has no key; the key must be the user id")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Invalid("bad_encoding", f"value is not UTF-8: {exc.reason}") from None
        try:
            obj = self._decoder.decode(text)
        except RecursionError:
            raise _Invalid("bad_json", "JSON nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, int digit limit
            raise _Invalid("bad_json", f"invalid JSON: {exc}"[:200]) from None
        if not isinstance(obj, dict):
            raise _Invalid("not_object", f"value must be a JSON object, got {type(obj).__name__}")
        if not obj.keys() >= _REQUIRED_SET:  # one C-level check; the names only on failure
            missing = [name for name in _REQUIRED if name not in obj]
            raise _Invalid("missing_field", f"missing required field(s) {', '.join(missing)}")
        user_id = self._node_id("user_id", obj["user_id"])
        item_id = self._node_id("item_id", obj["item_id"])
        if key != user_id.encode("utf-8"):
            raise _Invalid("key_mismatch", "record key must equal user_id")
        event_type = obj["event_type"]
        if not isinstance(event_type, str) or event_type not in self._event_types:
            raise _Invalid("unknown_event_type", f"unknown event_type {_short(event_type)}")
        return Interaction(
            user_id=user_id,
            item_id=item_id,
            event_type=event_type,
            ts=self._timestamp(obj["ts"]),
            weight=self._weight(obj.get("weight", 1.0)),
            event_id=self._event_id(obj.get("event_id")),
            clock_ms=clock_ms,  # built once: dataclasses.replace showed in the ingest profile
        )

    def _node_id(self, field: str, raw: object) -> str:
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise _Invalid(
                "bad_id", f"{field} must be a string or integer, got {type(raw).__name__}"
            )
        text = raw if isinstance(raw, str) else str(raw)
        self._check_text(field, text, "bad_id")
        return text

    def _check_text(self, field: str, text: str, reason: str) -> None:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise _Invalid(reason, f"{field} is not valid Unicode (lone surrogate)") from None
        if not 1 <= size <= self._settings.max_id_bytes:
            raise _Invalid(
                reason, f"{field} must be 1..{self._settings.max_id_bytes} bytes, got {size}"
            )

    def _timestamp(self, raw: object) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _Invalid(
                "bad_timestamp", f"ts must be an integer (epoch ms), got {type(raw).__name__}"
            )
        s = self._settings
        if raw < 0:
            raise _Invalid("bad_timestamp", f"ts {_short(raw)} is negative")
        if raw < SECONDS_BELOW_MS:
            raise _Invalid("ts_unit", f"ts {raw} looks like epoch seconds, not milliseconds")
        if raw >= MICROS_FROM_MS:
            raise _Invalid(
                "ts_unit", f"ts {_short(raw)} looks like epoch micro- or nanoseconds, not ms"
            )
        if raw < s.min_ts_ms:
            raise _Invalid("ts_too_old", f"ts {raw} is before the oldest accepted {s.min_ts_ms}")
        if raw > s.max_ts_ms:
            raise _Invalid("bad_timestamp", f"ts {raw} is after the latest accepted {s.max_ts_ms}")
        return raw

    def _weight(self, raw: object) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise _Invalid("bad_weight", f"weight must be a number, got {type(raw).__name__}")
        try:
            weight = float(raw)
        except OverflowError:
            raise _Invalid("bad_weight", "weight is too large") from None
        if not (math.isfinite(weight) and 0.0 <= weight <= self._settings.max_weight):
            raise _Invalid(
                "bad_weight", f"weight {weight!r} outside [0, {self._settings.max_weight}]"
            )
        return weight

    def _event_id(self, raw: object) -> str | None:
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise _Invalid("bad_event_id", f"event_id must be a string, got {type(raw).__name__}")
        self._check_text("event_id", raw, "bad_event_id")
        return raw


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
