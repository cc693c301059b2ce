"""Per-item trend features for the score prior (:mod:`models.prior`), from the stream.

.. math::

    f_k(i) = \\log\\Big(1 + \\frac{c_k(i)}{\\bar c_k}\\Big)

``c_k(i)`` is the item's interaction mass (behaviour weight times event weight) decayed
with half-life ``h_k`` (0: never decays), and ``c̄_k`` its mean over the items: a share,
so the feature is the same whatever the stream's rate, and it does not move while no event
arrives (every count decays alike).

Counts use forward decay (Cormode et al., "Forward Decay", ICDE 2009): an event of mass
``m`` at time ``t`` adds ``m 2^{(t - L)/h}`` for a landmark ``L``, so an update costs
O(batch), a late event lands exactly where it belongs, and the result does not depend on
arrival order. The landmark moves forward (rescaling every count once) before the
exponent could overflow. The counts' sum is kept beside them, so the mean costs O(1).

A :class:`TrendSnapshot` is the features as they were at one moment (what a step trains
against: the trend before its batch), computed for the rows it is asked for: before changing
a row the trend hands the row's mass to its live snapshots (copy on write), so taking one
costs O(1) and reading it O(rows read), not a table over the whole catalogue.

>>> trend = ItemTrend([1_000, 0])
>>> trend.add(torch.tensor([0, 0, 1]), torch.tensor([0, 1_000, 1_000]), torch.ones(3))
>>> f = trend.features(3)   # half-life 1 s: masses 0.5 + 1, 1, 0 (mean 5/6)
>>> [round(x, 4) for x in f[:, 0].tolist()], [round(x, 4) for x in f[:, 1].tolist()]
([1.0296, 0.7885, 0.0], [1.0986, 0.6931, 0.0])
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from models.base import BipartiteGraph, grown_size

_MAX_EXPONENT = 512.0  # 2^512 leaves float64 ample room for sums and products
# the kept sum is counted again, exactly, once it falls below this share of its last exact
# count (evictions took most of it): its rounding stays this share of the sum at most
_RECOUNT_BELOW = 2.0**-10
# a snapshot holding this share of its rows' old mass becomes a table: reading it stays cheap
_DENSE_SHARE = 8
# a read of more rows than this share of a snapshot's makes it a table first: a gather from
# it costs a quarter of the read's own work per row
_DENSE_READ = 4
_MAX_CHANGES = 8  # a snapshot's changes merged into one past this many: reads stay cheap


class ItemTrend:
    """Per-item interaction mass decayed at several half-lives (forward decay).

    Args:
        half_lives_ms: one feature per half-life, in milliseconds; 0 never decays.
    """

    def __init__(self, half_lives_ms: Sequence[float]) -> None:
        if not half_lives_ms:
            raise ValueError("an item trend needs at least one half-life")
        if any(not (math.isfinite(h) and h >= 0) for h in half_lives_ms):
            raise ValueError(f"half-lives must be finite and >= 0 ms, got {list(half_lives_ms)}")
        self.half_lives_ms = tuple(float(h) for h in half_lives_ms)
        self._rate = torch.tensor(
            [1.0 / h if h > 0 else 0.0 for h in self.half_lives_ms], dtype=torch.float64
        )
        self.mass = torch.zeros(0, len(self.half_lives_ms), dtype=torch.float64)
        self.landmark: int | None = None  # ms; None until the first event
        self._total = torch.zeros(len(self.half_lives_ms), dtype=torch.float64)
        self._exact_total = self._total.clone()  # the last exact count of it
        self._rows_counted = 0  # every row with mass is below this
        self._snapshots: weakref.WeakSet[TrendSnapshot] = weakref.WeakSet()
        # which change (a count) last changed each row while a snapshot lived: a snapshot
        # looks up only the rows changed after it was taken
        self._changes = 0
        self._changed_at = torch.zeros(0, dtype=torch.long)
        # a step behind (stream.learn.behind) reads a snapshot while the ingest side counts
        self._lock = threading.Lock()

    @property
    def num_features(self) -> int:
        return len(self.half_lives_ms)

    def grow(self, num_items: int) -> None:
        """Room for at least ``num_items`` rows (new rows hold no mass)."""
        size = grown_size(num_items, self.mass.shape[0])
        if size > self.mass.shape[0]:
            extra = self.mass.new_zeros(size - self.mass.shape[0], self.num_features)
            self.mass = torch.cat([self.mass, extra])
            more = self._changed_at.new_zeros(size - self._changed_at.numel())
            self._changed_at = torch.cat([self._changed_at, more])

    def add(self, items: Tensor, times: Tensor, mass: Tensor) -> None:
        """Count events: item rows (``-1`` is skipped), event times (ms) and masses."""
        keep = items >= 0
        items, times = items[keep].cpu(), times[keep].cpu()
        mass = mass[keep].cpu().to(torch.float64)
        if items.numel() == 0:
            return
        with self._lock:
            self.grow(int(items.max()) + 1)
            newest = int(times.max())
            if self.landmark is None:
                self.landmark = newest
            if (newest - self.landmark) * float(self._rate.max()) > _MAX_EXPONENT:
                self._move_landmark(newest)
            exponent = (times - self.landmark).to(torch.float64)[:, None] * self._rate[None, :]
            added = mass[:, None] * torch.exp2(exponent)
            self._before_change(torch.unique(items))
            self.mass.index_add_(0, items, added)
            self._total += added.sum(dim=0)
            self._rows_counted = max(self._rows_counted, int(items.max()) + 1)

    def _move_landmark(self, landmark: int) -> None:
        assert self.landmark is not None
        for snapshot in list(self._snapshots):  # their mass is in the old landmark's units
            self._make_dense(snapshot)
        self.mass *= torch.exp2(-(landmark - self.landmark) * self._rate)[None, :]
        self.landmark = landmark
        self._recount()

    def features(self, num_items: int, items: Tensor | None = None) -> Tensor:
        """``[num_items, K]`` float32 features ``log(1 + c_k(i) / mean_j c_k(j))``, the mean
        over the first ``num_items`` rows (every counted row among them); ``items``: only
        these rows' (``[len(items), K]``, in their order), at O(len(items))."""
        with self._lock:
            mean = self._mean(num_items)
            rows = torch.arange(num_items) if items is None else items.cpu()
            return _log_share(_gathered(self.mass, rows), mean)

    def snapshot(self, num_items: int) -> TrendSnapshot:
        """The features of the first ``num_items`` rows as they are now, read later
        (:class:`TrendSnapshot`); rows past them had nothing counted."""
        with self._lock:
            taken = TrendSnapshot(self, num_items, self._mean(num_items), self._changes)
            self._snapshots.add(taken)
            return taken

    def reset_rows(self, items: Tensor) -> None:
        """Forget the mass of these (evicted) item rows."""
        if not items.numel():
            return
        rows = torch.unique(items.cpu())
        with self._lock:
            self.grow(int(rows.max()) + 1)
            self._before_change(rows)
            self._total -= self.mass.index_select(0, rows).sum(dim=0)
            self.mass[rows] = 0.0
            if bool((self._total < self._exact_total * _RECOUNT_BELOW).any()):
                self._recount()

    def is_empty(self) -> bool:
        return self.landmark is None

    def state_dict(self) -> dict[str, Any]:
        return {
            "half_lives_ms": list(self.half_lives_ms),
            "mass": self.mass.clone(),
            "landmark": self.landmark,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if [float(h) for h in state["half_lives_ms"]] != list(self.half_lives_ms):
            raise ValueError(
                f"checkpoint trend half-lives {state['half_lives_ms']} differ from the "
                f"settings' {list(self.half_lives_ms)}"
            )
        mass = state["mass"]
        if mass.dim() != 2 or mass.shape[1] != self.num_features:
            raise ValueError(f"trend mass of shape {tuple(mass.shape)} does not fit")
        with self._lock:
            for snapshot in list(self._snapshots):
                self._make_dense(snapshot)
            self.mass = mass.to(torch.float64).clone()
            self._changed_at = torch.zeros(self.mass.shape[0], dtype=torch.long)
            self.landmark = None if state["landmark"] is None else int(state["landmark"])
            held = (self.mass != 0).any(dim=1).nonzero()
            self._rows_counted = int(held.max()) + 1 if held.numel() else 0
            self._recount()

    # -- internals (under the lock) --------------------------------------------------------

    def _mean(self, num_items: int) -> Tensor:
        """``[1, K]``: the mean mass over the first ``num_items`` rows."""
        if num_items < self._rows_counted:
            raise ValueError(
                f"a mean over {num_items} items leaves out counted rows up to "
                f"{self._rows_counted - 1}"
            )
        if not num_items:
            return torch.ones(1, self.num_features, dtype=torch.float64)
        return (self._total / num_items)[None, :]

    def _recount(self) -> None:
        self._total = self.mass.sum(dim=0)
        self._exact_total = self._total.clone()

    def _before_change(self, rows: Tensor) -> None:
        """Hand these (sorted, distinct) rows' mass to every live snapshot."""
        snapshots = list(self._snapshots)
        if not snapshots:
            return
        self._changes += 1
        self._changed_at[rows] = self._changes
        for snapshot in snapshots:
            snapshot.changed_rows.append(rows)
            snapshot.old_mass.append(_gathered(self.mass, rows))
            saved = sum(int(changed.numel()) for changed in snapshot.changed_rows)
            if saved * _DENSE_SHARE > max(snapshot.num_items, 1024):
                self._make_dense(snapshot)
            elif len(snapshot.changed_rows) > _MAX_CHANGES:
                _merge_changes(snapshot)

    def _snapshot_mass(self, snapshot: TrendSnapshot, rows: Tensor) -> Tensor:
        """The mass ``rows`` had when ``snapshot`` was taken."""
        mass = _gathered(self.mass, rows)
        since = (_gathered(self._changed_at, rows) > snapshot.changes).nonzero().flatten()
        if since.numel():
            changed = rows.index_select(0, since)
            then = mass.index_select(0, since)
            # the earliest change of a row holds its mass then: applied last
            changes = zip(snapshot.changed_rows, snapshot.old_mass, strict=True)
            for rows_then, old in reversed(list(changes)):
                at = torch.searchsorted(rows_then, changed).clamp(max=rows_then.numel() - 1)
                hit = rows_then.index_select(0, at) == changed
                then[hit] = old.index_select(0, at[hit])
            mass.index_copy_(0, since, then)
        beyond = rows >= snapshot.num_items
        if bool(beyond.any()):
            mass[beyond] = 0.0
        return mass

    def _make_dense(self, snapshot: TrendSnapshot) -> None:
        rows = torch.arange(snapshot.num_items)
        snapshot.dense = _log_share(self._snapshot_mass(snapshot, rows), snapshot.mean)
        snapshot.changed_rows, snapshot.old_mass = [], []
        self._snapshots.discard(snapshot)

    def _read(self, snapshot: TrendSnapshot, rows: Tensor) -> Tensor:
        with self._lock:
            if snapshot.dense is None:
                if rows.numel() * _DENSE_READ <= snapshot.num_items:
                    return _log_share(self._snapshot_mass(snapshot, rows), snapshot.mean)
                self._make_dense(snapshot)  # as cheap, and kept for the next read
            table = snapshot.dense
            assert table is not None
        return _gathered(table, rows)  # its rows are the snapshot's items


class TrendSnapshot:
    """:meth:`ItemTrend.features` as they were when :meth:`ItemTrend.snapshot` took it,
    computed for the rows read (:class:`models.prior.TrendFeatures`, one moment). It holds
    the old mass of the rows counted since (a table of its features instead once that
    passes an eighth of its rows, a read asks for more than a quarter of them, or the
    trend's landmark moves); its trend stops handing it rows once it is garbage."""

    def __init__(self, trend: ItemTrend, num_items: int, mean: Tensor, changes: int) -> None:
        self.trend = trend
        self.num_items = num_items
        self.mean = mean  # [1, K] then
        self.changes = changes  # the trend's change count then
        self.changed_rows: list[Tensor] = []  # sorted distinct rows of each change since
        self.old_mass: list[Tensor] = []  # their mass before that change
        self.dense: Tensor | None = None  # [num_items, K] features, once made a table

    def at(self, moments: Tensor, items: Tensor) -> Tensor:
        """``[N, K]`` float32 features of ``items`` then (``moments``: all 0, its one)."""
        del moments
        return self.trend._read(self, items.cpu()).to(items.device)


def _merge_changes(snapshot: TrendSnapshot) -> None:
    """One change in place of a snapshot's several: each row with its earliest old mass."""
    rows = torch.cat(snapshot.changed_rows)
    old = torch.cat(snapshot.old_mass)
    rows, order = torch.sort(rows, stable=True)  # a row's changes stay earliest first
    first = torch.ones(rows.numel(), dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]
    snapshot.changed_rows = [rows[first]]
    snapshot.old_mass = [old.index_select(0, order[first])]


def _gathered(table: Tensor, rows: Tensor) -> Tensor:
    """``table``'s rows ``rows``, zero for those past its end."""
    inside = rows < table.shape[0]
    if bool(inside.all()):
        return table.index_select(0, rows)
    out = table.new_zeros(rows.numel(), *table.shape[1:])
    out[inside] = table.index_select(0, rows[inside])
    return out


def _log_share(mass: Tensor, mean: Tensor) -> Tensor:
    scaled = mass / torch.where(mean > 0, mean, torch.ones_like(mean))
    # log1p in float32: a quarter of float64's time over a large catalogue, and what the
    # features are kept in anyway (within one float32 rounding of the float64 result)
    return torch.log1p(scaled.to(torch.float32))


def trend_history(
    half_lives_ms: Sequence[float],
    edges: tuple[Tensor, Tensor, Tensor],
    num_items: int,
    moments: int,
) -> tuple[Tensor, Tensor]:
    """Trend features as the stream was: ``(table [T, num_items, K], moment of each edge)``.

    ``edges`` are ``(item rows, times ms, masses)``. They are cut by time into ``moments``
    slices of equal count; moment ``b`` holds the features counting the slices before
    ``b`` (moment 0: nothing yet), and each edge belongs to its slice's moment. A fit
    scores each edge against what was rising before it, as the live path does.
    """
    items, times, mass = edges
    order = torch.argsort(times.cpu(), stable=True)
    moment_of = torch.zeros(times.numel(), dtype=torch.long)
    trend = ItemTrend(half_lives_ms)
    tables = []
    for moment, part in enumerate(torch.tensor_split(order, max(moments, 1))):
        tables.append(trend.features(num_items))
        moment_of[part] = moment
        trend.add(items.cpu()[part], times.cpu()[part], mass.cpu()[part])
    return torch.stack(tables), moment_of


_FIT_MOMENTS = 16  # time slices of a fit's trend history, at most
_FIT_TREND_FLOATS = 2**24  # and at most this many features held for it


def graph_trend_history(
    half_lives_ms: Sequence[float], graph: BipartiteGraph, relation_half_lives_ms: Sequence[float]
) -> tuple[Tensor, Tensor]:
    """:func:`trend_history` of a decayed graph's edges (a fit replays the graph, not the
    events): each edge counts its weight at its own newest event time, which is what its
    events added live (``relation_half_lives_ms``: the store's half-life of each relation).
    """
    features = len(half_lives_ms)
    moments = min(_FIT_MOMENTS, max(1, _FIT_TREND_FLOATS // max(graph.num_items * features, 1)))
    decay = torch.tensor(relation_half_lives_ms, dtype=torch.float64, device=graph.times.device)
    age = (graph.now - graph.times).clamp(min=0).to(torch.float64)
    mass = graph.weights.double() * torch.exp2(age / decay[graph.relations])
    edges = (graph.items, graph.times, mass)
    return trend_history(half_lives_ms, edges, graph.num_items, moments)
