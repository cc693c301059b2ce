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
exponent could overflow.

>>> trend = ItemTrend([1_000, 0])
>>> trend.add(torch.tensor([0, 0, 1]), torch.tensor([0, 1_000, 1_000]), torch.ones(3))
>>> f = trend.features(3)   # half-life 1 s: masses 0.5 + 1, 1, 0 (mean 5/6)
>>> [round(x, 4) for x in f[:, 0].tolist()], [round(x, 4) for x in f[:, 1].tolist()]
([1.0296, 0.7885, 0.0], [1.0986, 0.6931, 0.0])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from models.base import BipartiteGraph, grown_size

_MAX_EXPONENT = 512.0  # 2^512 leaves float64 ample room for sums and products


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

    @property
    def num_features(self) -> int:
        return len(self.half_lives_ms)

    def grow(self, num_items: int) -> None:
        """Room for at least ``num_items`` rows (new rows hold no mass)."""
        size = grown_size(num_items, self.mass.shape[0])
        if size > self.mass.shape[0]:
            extra = self.mass.new_zeros(size - self.mass.shape[0], self.num_features)
            self.mass = torch.cat([self.mass, extra])

    def add(self, items: Tensor, times: Tensor, mass: Tensor) -> None:
        """Count events: item rows (``-1`` is skipped), event times (ms) and masses."""
        keep = items >= 0
        items, times = items[keep].cpu(), times[keep].cpu()
        mass = mass[keep].cpu().to(torch.float64)
        if items.numel() == 0:
            return
        self.grow(int(items.max()) + 1)
        newest = int(times.max())
        if self.landmark is None:
            self.landmark = newest
        if (newest - self.landmark) * float(self._rate.max()) > _MAX_EXPONENT:
            self._move_landmark(newest)
        exponent = (times - self.landmark).to(torch.float64)[:, None] * self._rate[None, :]
        self.mass.index_add_(0, items, mass[:, None] * torch.exp2(exponent))

    def _move_landmark(self, landmark: int) -> None:
        assert self.landmark is not None
        self.mass *= torch.exp2(-(landmark - self.landmark) * self._rate)[None, :]
        self.landmark = landmark

    def features(self, num_items: int, items: Tensor | None = None) -> Tensor:
        """``[num_items, K]`` float32 features ``log(1 + c_k(i) / mean_j c_k(j))``, the mean
        over the first ``num_items`` rows; ``items``: only these rows' (``[len(items), K]``,
        in their order), at the cost of the mean alone."""
        self.grow(num_items)
        mass = self.mass[:num_items]
        mean = mass.mean(dim=0, keepdim=True) if num_items else mass.new_ones(1, 1)
        if items is not None:
            mass = mass.index_select(0, items.cpu())
        scaled = mass / torch.where(mean > 0, mean, torch.ones_like(mean))
        # log1p in float32: a quarter of float64's time over a large catalogue, and what the
        # features are kept in anyway (within one float32 rounding of the float64 result)
        return torch.log1p(scaled.to(torch.float32))

    def reset_rows(self, items: Tensor) -> None:
        """Forget the mass of these (evicted) item rows."""
        if items.numel():
            self.grow(int(items.max()) + 1)
            self.mass[items.cpu()] = 0.0

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
        self.mass = mass.to(torch.float64).clone()
        self.landmark = None if state["landmark"] is None else int(state["landmark"])


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
