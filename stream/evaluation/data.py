"""Timestamped interaction files in, validated :class:`Interaction` events out, by time.

Layouts:

- ``movielens``: MovieLens ``u.data`` (``user<TAB>item<TAB>rating<TAB>seconds``) or the
  ``::``-separated ``ratings.dat``; the rating is the weight, the event type ``rating``.
- ``retailrocket``: RetailRocket ``events.csv`` (``timestamp,visitorid,event,itemid,
  transactionid``, milliseconds); ``view`` → ``view``, ``addtocart`` → ``cart``,
  ``transaction`` → ``purchase``.
- ``taobao``: Taobao UserBehavior (``user,item,category,behaviour,seconds``, no header);
  ``pv`` → ``view``, ``fav`` → ``favorite``, ``cart`` → ``cart``, ``buy`` → ``purchase``.
- ``csv``: any delimited text. Columns are named (with a header) or 0-based indices;
  left out, the usual names are tried (``user_id``/``userId``/``user``, ...) or, without
  a header, columns 0, 1, 2 (user, item, time). An event-type column is optional.

Every row goes through the live worker's :class:`~stream.events.EventValidator`, so the
evaluation stream obeys exactly the contract Kafka events do. Rows that fail are counted
by reason (with a few examples), exact duplicate rows are counted and dropped, and
neither stops the load. Times become epoch milliseconds; the unit is guessed when not
given (:func:`guess_time_unit`). The result is sorted by time, stably.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "log.csv"
>>> rows = "a,x,1700000003\\nb,y,1700000001\\nb,y,1700000001\\nc,,1700000002\\n"
>>> _ = path.write_text("user,item,ts\\n" + rows)
>>> loaded = read_interactions(path, TableFormat())
>>> [(e.user_id, e.item_id, e.ts) for e in loaded.interactions]
[('b', 'y', 1700000001000), ('a', 'x', 1700000003000)]
>>> loaded.duplicates, dict(loaded.bad_rows), loaded.time_unit
(1, {'bad_id': 1}, 's')
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stream.errors import ConfigError
from stream.events import EventValidator, Interaction, Rejection
from stream.settings import DataSettings, EventSettings

FORMATS = ("csv", "movielens", "retailrocket", "taobao")
TIME_UNITS = {"s": 1000, "ms": 1}
SECONDS_BELOW = 1e11
"""A stream whose largest time is below this is in seconds (1e11 s is year 5138; 1e11 ms
is 1973), so the guess is right for any real log from 1973 on."""

_USER_NAMES = ("user_id", "userid", "user", "uid", "visitorid", "customer_id")
_ITEM_NAMES = ("item_id", "itemid", "item", "iid", "movieid", "product_id", "productid")
_TIME_NAMES = ("ts", "timestamp", "time", "event_time", "datetime")
_EXAMPLES = 5

Column = str | int | None


@dataclass(frozen=True)
class TableFormat:
    """How to read a delimited file; see the module docstring for the defaults.

    Args:
        sep: field separator (several characters split literally, e.g. ``::``).
        header: the first line names the columns.
        user_col, item_col, time_col, weight_col: a header name or a 0-based index
            (a string of digits counts as an index when no column has that name).
            ``weight_col`` None means weight 1.
        time_unit: ``s`` or ``ms``; None guesses from the data.
        event_type: the event type every row gets (must be a configured behaviour),
            unless ``event_col`` names a column holding each row's type.
        event_map: ``(value in the file, behaviour)`` pairs; when given, a value of
            ``event_col`` not in it is refused (``unknown_event_type``).
    """

    sep: str = ","
    header: bool = True
    user_col: Column = None
    item_col: Column = None
    time_col: Column = None
    weight_col: Column = None
    time_unit: str | None = None
    event_type: str = "click"
    event_col: Column = None
    event_map: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.sep or "\n" in self.sep or "\r" in self.sep:
            raise ConfigError(f"sep must be a non-empty, single-line string, got {self.sep!r}")
        if self.time_unit is not None and self.time_unit not in TIME_UNITS:
            raise ConfigError(f"time unit must be one of s, ms; got {self.time_unit!r}")
        for name in ("user_col", "item_col", "time_col", "weight_col", "event_col"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 0:
                raise ConfigError(f"{name} index must be >= 0, got {value!r}")


MOVIELENS = TableFormat(
    sep="\t", header=False, user_col=0, item_col=1, weight_col=2, time_col=3, time_unit="s",
    event_type="rating",
)  # fmt: skip
RETAILROCKET = TableFormat(
    user_col="visitorid", item_col="itemid", time_col="timestamp", time_unit="ms",
    event_col="event",
    event_map=(("view", "view"), ("addtocart", "cart"), ("transaction", "purchase")),
)  # fmt: skip
TAOBAO = TableFormat(
    header=False, user_col=0, item_col=1, time_col=4, time_unit="s", event_col=3,
    event_map=(("pv", "view"), ("fav", "favorite"), ("cart", "cart"), ("buy", "purchase")),
)  # fmt: skip
PRESETS = {"movielens": MOVIELENS, "retailrocket": RETAILROCKET, "taobao": TAOBAO}


@dataclass(frozen=True)
class LoadedInteractions:
    """What :func:`read_interactions` read and what it made of it."""

    interactions: list[Interaction]
    rows: int  # data rows read (header and blank lines excluded)
    duplicates: int  # exact repeats of an earlier row, dropped
    bad_rows: Counter[str]  # rows refused, by reason
    bad_examples: list[str] = field(default_factory=list)  # "line N: why", the first few
    time_unit: str = "ms"
    time_unit_guessed: bool = False

    def summary(self) -> str:
        bad = sum(self.bad_rows.values())
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.bad_rows.items())) or "none"
        guessed = " (guessed)" if self.time_unit_guessed else ""
        return (
            f"{self.rows} rows: {len(self.interactions)} events, {self.duplicates} exact "
            f"duplicates dropped, {bad} bad rows ({reasons}); time unit {self.time_unit}{guessed}"
        )


def table_format(name: str, **options: object) -> TableFormat:
    """The :class:`TableFormat` of a named layout; csv ``options`` override the defaults."""
    if name in PRESETS:
        return PRESETS[name]
    if name == "csv":
        return TableFormat(**{k: v for k, v in options.items() if v is not None})  # type: ignore[arg-type]
    raise ConfigError(f"unknown data format {name!r}; valid: {', '.join(FORMATS)}")


def data_format(data: DataSettings) -> TableFormat:
    """The :class:`TableFormat` the ``data`` section asks for (``eval``, ``produce``)."""
    csv_only = (data.sep, data.header, data.user_col, data.item_col, data.time_col,
                data.weight_col, data.event_col, data.time_unit, data.event_type)  # fmt: skip
    if data.format != "csv" and any(v is not None for v in csv_only):
        raise ConfigError(
            f"--format {data.format} has a fixed layout; the csv options need --format csv"
        )
    return table_format(
        data.format,
        sep=data.sep,
        header=data.header,
        user_col=data.user_col,
        item_col=data.item_col,
        time_col=data.time_col,
        weight_col=data.weight_col,
        event_col=data.event_col,
        time_unit=data.time_unit,
        event_type=data.event_type,
    )


def guess_time_unit(times: Sequence[float]) -> str:
    """``s`` when the largest timestamp is below :data:`SECONDS_BELOW`, else ``ms``.

    >>> guess_time_unit([881250949, 893286638]), guess_time_unit([1_700_000_000_000])
    ('s', 'ms')
    """
    return "s" if not times or max(abs(t) for t in times) < SECONDS_BELOW else "ms"


def read_interactions(
    path: Path, fmt: TableFormat, events: EventSettings | None = None
) -> LoadedInteractions:
    """Read, validate, de-duplicate and time-sort the interactions in ``path``."""
    events = events or EventSettings()
    mapped = sorted({b for _, b in fmt.event_map} - set(events.behaviours))
    if mapped:
        raise ConfigError(f"event map targets {mapped} are not configured behaviours")
    if fmt.event_col is None and fmt.event_type not in events.behaviours:
        raise ConfigError(
            f"event type {fmt.event_type!r} is not a configured behaviour "
            f"({', '.join(sorted(events.behaviours))})"
        )
    sep = "::" if fmt is MOVIELENS and _first_line(path).count("::") >= 3 else fmt.sep
    bad: Counter[str] = Counter()
    examples: list[str] = []

    def refuse(line: int, reason: str, detail: str) -> None:
        bad[reason] += 1
        if len(examples) < _EXAMPLES:
            examples.append(f"line {line}: {reason}: {detail}")

    seen: set[tuple[str, ...]] = set()
    parsed: list[tuple[int, str, str, float, float, str]] = []
    event_map = dict(fmt.event_map)
    rows = duplicates = 0
    columns: _Columns | None = None
    for line, fields in _records(path, sep):
        if columns is None:
            if fmt.header:
                columns = _resolve_columns(fmt, fields, path)
                continue
            columns = _resolve_columns(fmt, None, path)
        rows += 1
        key = tuple(fields)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        user_at, item_at, time_at, weight_at, event_at = columns
        if max(user_at, item_at, time_at, weight_at or 0, event_at or 0) >= len(fields):
            refuse(line, "missing_field", f"{len(fields)} fields")
            continue
        event_type = fmt.event_type if event_at is None else fields[event_at]
        if event_map and event_at is not None:
            if event_type not in event_map:
                refuse(line, "unknown_event_type", f"event {event_type[:40]!r} is not mapped")
                continue
            event_type = event_map[event_type]
        time = _number(fields[time_at])
        if time is None:
            refuse(line, "bad_timestamp", f"time {fields[time_at][:40]!r} is not a number")
            continue
        weight = 1.0 if weight_at is None else _number(fields[weight_at])
        if weight is None:
            refuse(line, "bad_weight", f"weight {fields[weight_at or 0][:40]!r} is not a number")
            continue
        parsed.append((line, fields[user_at], fields[item_at], time, weight, event_type))

    unit = fmt.time_unit or guess_time_unit([p[3] for p in parsed])
    scale = TIME_UNITS[unit]
    validator = EventValidator(events)
    out: list[Interaction] = []
    for line, user, item, time, weight, event_type in parsed:
        record = {
            "user_id": user,
            "item_id": item,
            "event_type": event_type,
            "ts": round(time * scale),
            "weight": weight,
        }
        result = validator.parse(user.encode("utf-8", "surrogatepass"), json.dumps(record).encode())
        if isinstance(result, Rejection):
            refuse(line, result.reason, result.detail)
        else:
            out.append(result)
    out.sort(key=lambda e: e.ts)
    return LoadedInteractions(
        out, rows, duplicates, bad, examples, unit, time_unit_guessed=fmt.time_unit is None
    )


def _first_line(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as handle:
        return handle.readline()


def _records(path: Path, sep: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` for each non-blank line; fields are stripped."""
    try:
        handle = path.open(encoding="utf-8", errors="surrogateescape", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot read interaction file {path}: {exc}") from exc
    with handle:
        if len(sep) == 1:
            reader = csv.reader(handle, delimiter=sep)
            try:
                for fields in reader:
                    if any(f.strip() for f in fields):
                        yield reader.line_num, [f.strip() for f in fields]
            except csv.Error as exc:  # a field past the csv module's limit, say
                raise ConfigError(
                    f"{path} line {reader.line_num}: {exc}; is it a {sep!r}-separated "
                    "text file of interactions?"
                ) from None
        else:
            for number, text in enumerate(handle, start=1):
                if text.strip():
                    yield number, [f.strip() for f in text.rstrip("\r\n").split(sep)]


_Columns = tuple[int, int, int, int | None, int | None]  # user, item, time, weight, event


def _resolve_columns(fmt: TableFormat, header: list[str] | None, path: Path) -> _Columns:
    names = {name.lower(): i for i, name in reversed(list(enumerate(header or [])))}

    def find(option: str, given: Column, candidates: tuple[str, ...], fallback: int | None) -> int:
        if given is None:
            for name in candidates:
                if name in names:
                    return names[name]
            if header is None and fallback is not None:
                return fallback
            raise ConfigError(
                f"{path}: no {option} given and none of the columns {_shown(header)} is one "
                f"of {', '.join(candidates)}; pass --{option.replace('_', '-')}"
            )
        if isinstance(given, str) and given.lower() in names:
            return names[given.lower()]
        if isinstance(given, int) or given.isdigit():
            return int(given)
        raise ConfigError(
            f"{path}: {option} {given!r} is not a column ({_shown(header) or 'no header'}) "
            "nor a 0-based index"
        )

    user = find("user_col", fmt.user_col, _USER_NAMES, 0)
    item = find("item_col", fmt.item_col, _ITEM_NAMES, 1)
    time = find("time_col", fmt.time_col, _TIME_NAMES, 2)
    weight = None if fmt.weight_col is None else find("weight_col", fmt.weight_col, (), None)
    event = None if fmt.event_col is None else find("event_col", fmt.event_col, (), None)
    return user, item, time, weight, event


def _shown(header: list[str] | None) -> str:
    """The header as a message shows it: a binary file's "header" can be megabytes."""
    text = "" if header is None else repr(header)
    return text if len(text) <= 200 else f"{text[:200]}... ({len(header or ())} columns)"


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
