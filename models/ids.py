"""External ids to dense rows: the one place that hands out embedding-table rows.

Users and items have separate row spaces. Only the learning path adds ids
(:meth:`IdRegistry.assign`); every read (:meth:`IdRegistry.rows`) leaves the registry
untouched, so scoring an unknown user never creates one.

Capacity is bounded per kind. When a kind is full, a new id takes the row of the least
recently seen id whose last sighting is older than ``ttl_ms`` (it has expired); when no
id has expired the new id is refused (row ``-1``) and counted, so the registry never grows
without bound. Evicted rows are reported (:meth:`IdRegistry.pop_evicted`) so the trainer
re-initialises them before the new owner trains on them.

"Now" is the stream's event-time watermark. The registry's clock is the largest ``now_ms``
it has been given, so least-recently-touched order *is* oldest-last-seen order.

>>> reg = IdRegistry(max_users=2, max_items=2, ttl_ms=100)
>>> reg.assign("user", ["a", "b", "a"], now_ms=0).tolist()
[0, 1, 0]
>>> reg.assign("user", ["c"], now_ms=50).tolist()      # full, nothing expired: refused
[-1]
>>> reg.assign("user", ["b"], now_ms=150).tolist()     # "a" last seen at 0 is now expired
[1]
>>> reg.assign("user", ["c"], now_ms=150).tolist()     # ... so "c" takes its row
[0]
>>> reg.pop_evicted("user").tolist(), reg.rows("user", ["a", "c", "zz"]).tolist()
([0], [-1, 0, -1])
>>> reg.counts("user")
RegistryCounts(live=2, evicted=1, refused=1)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from models.base import grown_size
from models.errors import ModelConfigError

KINDS = ("user", "item")
DAY_MS = 86_400_000
STATE_VERSION = 1


@dataclass(frozen=True)
class RegistryCounts:
    """One kind's live ids and the cumulative evicted / refused counts."""

    live: int
    evicted: int
    refused: int


@dataclass
class _Table:
    """One kind's id table; rows ``0 .. len(index) - 1`` are all live."""

    capacity: int
    index: OrderedDict[str, int] = field(default_factory=OrderedDict)  # LRU order
    row_ids: list[str] = field(default_factory=list)
    last_seen: list[int] = field(default_factory=list)
    pending_evicted: list[int] = field(default_factory=list)
    evicted: int = 0
    refused: int = 0


class IdRegistry:
    """Maps external user and item ids to dense embedding rows, with bounded capacity.

    Args:
        max_users: most user ids held at once.
        max_items: most item ids held at once.
        ttl_ms: an id unseen for longer than this (event time) may be evicted when its
            kind is full.
    """

    def __init__(
        self,
        max_users: int = 1_000_000,
        max_items: int = 1_000_000,
        ttl_ms: int = 30 * DAY_MS,
    ) -> None:
        for name, value in (("max_users", max_users), ("max_items", max_items)):
            if value <= 0:
                raise ModelConfigError(f"{name} must be > 0, got {value!r}")
        if ttl_ms <= 0:
            raise ModelConfigError(f"id ttl_ms must be > 0, got {ttl_ms!r}")
        self.ttl_ms = ttl_ms
        self._tables = {"user": _Table(max_users), "item": _Table(max_items)}
        self._clock = -(2**62)

    def _table(self, kind: str) -> _Table:
        try:
            return self._tables[kind]
        except KeyError:
            raise ValueError(f"id kind must be one of {KINDS}, got {kind!r}") from None

    # -- reads (never change anything) ---------------------------------------------------

    def rows(self, kind: str, ids: Iterable[str]) -> Tensor:
        """Rows of these ids; ``-1`` for an id the registry does not hold."""
        index = self._table(kind).index
        return torch.tensor([index.get(i, -1) for i in ids], dtype=torch.long)

    def ids(self, kind: str, rows: Iterable[int] | Tensor) -> list[str]:
        """The ids holding these rows (rows must be live: ``0 <= row < live``)."""
        row_ids = self._table(kind).row_ids
        wanted = rows.tolist() if isinstance(rows, Tensor) else list(rows)
        for row in wanted:
            if not 0 <= row < len(row_ids):
                raise ValueError(f"{kind} row {row!r} is not live (0..{len(row_ids) - 1})")
        return [row_ids[r] for r in wanted]

    def live(self, kind: str) -> int:
        """Ids held now; they occupy rows ``0 .. live - 1``."""
        return len(self._table(kind).row_ids)

    def size(self, kind: str) -> int:
        """Table rows an encoder needs: :attr:`live` rounded up to a grow chunk."""
        return grown_size(self.live(kind), 0)

    def counts(self, kind: str) -> RegistryCounts:
        table = self._table(kind)
        return RegistryCounts(len(table.row_ids), table.evicted, table.refused)

    # -- the learning path --------------------------------------------------------------

    def assign(self, kind: str, ids: Sequence[str], now_ms: int) -> Tensor:
        """Rows for these ids, adding new ones; refused ids get ``-1``.

        Every id given is marked seen at ``now_ms`` (the clock never moves back). A repeated
        id gets the same row; an id refused once is refused for the whole call.
        """
        table = self._table(kind)
        self._clock = max(self._clock, int(now_ms))
        clock = self._clock
        index, last_seen = table.index, table.last_seen
        out: list[int] = []
        refused: set[str] = set()
        for id_ in ids:
            row = index.get(id_)
            if row is not None:
                index.move_to_end(id_)
                last_seen[row] = clock
            elif id_ in refused:
                row = -1
            else:
                row = self._add(table, id_, clock)
                if row < 0:
                    refused.add(id_)
            out.append(row)
        table.refused += len(refused)
        return torch.tensor(out, dtype=torch.long)

    def _add(self, table: _Table, id_: str, clock: int) -> int:
        if len(table.row_ids) < table.capacity:
            row = len(table.row_ids)
            table.row_ids.append(id_)
            table.last_seen.append(clock)
        else:
            oldest_id, row = next(iter(table.index.items()))
            if table.last_seen[row] >= clock - self.ttl_ms:
                return -1  # the least recently seen id has not expired, so none has
            del table.index[oldest_id]
            table.row_ids[row] = id_
            table.last_seen[row] = clock
            table.pending_evicted.append(row)
            table.evicted += 1
        table.index[id_] = row
        return row

    def pop_evicted(self, kind: str) -> Tensor:
        """Rows evicted (and handed to new ids) since the last call; clears the list."""
        table = self._table(kind)
        rows = sorted(set(table.pending_evicted))
        table.pending_evicted.clear()
        return torch.tensor(rows, dtype=torch.long)

    # -- checkpoint --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain, JSON-able state: ints, strings and lists of them."""
        kinds: dict[str, Any] = {}
        for kind, table in self._tables.items():
            kinds[kind] = {
                "ids": list(table.index),  # least recently seen first
                "rows": list(table.index.values()),
                "last_seen": [table.last_seen[r] for r in table.index.values()],
                "pending_evicted": list(table.pending_evicted),
                "evicted": table.evicted,
                "refused": table.refused,
            }
        return {"version": STATE_VERSION, "clock": self._clock, "kinds": kinds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the contents with a :meth:`state_dict`; capacities stay this instance's."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"id registry state version {state.get('version')!r} is not 1")
        tables = {}
        for kind in KINDS:
            spec = state["kinds"][kind]
            ids, rows, seen = list(spec["ids"]), list(spec["rows"]), list(spec["last_seen"])
            capacity = self._tables[kind].capacity
            if not len(ids) == len(rows) == len(seen):
                raise ValueError(f"{kind} registry state lists differ in length")
            if len(ids) > capacity:
                raise ModelConfigError(
                    f"checkpoint holds {len(ids)} {kind} ids, more than max {capacity}"
                )
            if sorted(rows) != list(range(len(rows))) or len(set(ids)) != len(ids):
                raise ValueError(f"{kind} registry state rows are not 0..{len(rows) - 1}, once")
            table = _Table(capacity, evicted=int(spec["evicted"]), refused=int(spec["refused"]))
            table.row_ids = [""] * len(ids)
            table.last_seen = [0] * len(ids)
            for id_, row, t in zip(ids, rows, seen, strict=True):
                table.index[str(id_)] = int(row)
                table.row_ids[row] = str(id_)
                table.last_seen[row] = int(t)
            table.pending_evicted = [int(r) for r in spec["pending_evicted"]]
            tables[kind] = table
        self._tables = tables
        self._clock = int(state["clock"])
