"""The score prior's state in the trainer: the items' trend counts and their learnt mix.

:class:`TrendPrior` holds the :class:`~stream.learn.trend.ItemTrend` counts the stream
feeds and the :class:`~models.prior.ScorePrior` the optimiser moves, and hands the
objective the features each positive is scored at: now (the live path, before the batch
is counted) or as the graph's history was (a fit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from models.base import BipartiteGraph
from models.prior import ScorePrior, TrendTable
from stream.errors import ConfigError
from stream.learn.checkpoint import cpu_copy
from stream.learn.objective import Trend
from stream.learn.trend import ItemTrend, TrendSnapshot, graph_trend_history


class TrendPrior:
    """Trend counts plus the learnt mix of :mod:`models.prior`.

    Args:
        half_lives_ms: one trend feature per half-life (0: never decays).
        relation_half_lives_ms: the store's half-life of each relation, by relation index.
        device: where the mix and the features live.
    """

    def __init__(
        self,
        half_lives_ms: Sequence[int],
        relation_half_lives_ms: Sequence[float],
        device: torch.device,
    ) -> None:
        self.half_lives_ms = tuple(half_lives_ms)
        self.trend = ItemTrend(half_lives_ms)
        self.prior = ScorePrior(self.trend.num_features).to(device)
        self.device = device
        self._relation_half_lives = list(relation_half_lives_ms)
        self.from_store = False  # the counts were rebuilt from the store's edges (no checkpoint)

    def count(self, items: Tensor, times: Tensor, mass: Tensor) -> None:
        """Count events (item rows, times in ms, masses); ``-1`` rows are skipped."""
        self.trend.add(items, times, mass)

    def table(self, num_items: int, items: Tensor) -> TrendTable:
        """These items' features now, as the table's only moment (its row ``j`` being
        ``items[j]``; see :meth:`ItemTrend.features`)."""
        return TrendTable(self.trend.features(num_items, items).to(self.device)[None])

    def snapshot(self, num_items: int) -> TrendSnapshot:
        """The items' features now, read later (see :class:`TrendSnapshot`)."""
        return self.trend.snapshot(num_items)

    def history(self, graph: BipartiteGraph) -> Trend:
        """Features through the graph's history, and each edge's moment in it."""
        table, moment_of = graph_trend_history(self.half_lives_ms, graph, self._relation_half_lives)
        return TrendTable(table.to(self.device)), moment_of.to(self.device)

    def state_dict(self) -> dict[str, Any]:
        return {
            "half_lives_ms": list(self.half_lives_ms),
            "prior": cpu_copy(self.prior.state_dict()),
            "trend": self.trend.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Resume; a checkpoint with other half-lives (or none) is refused."""
        saved = None if state is None else list(state["half_lives_ms"])
        if saved != list(self.half_lives_ms):
            raise ConfigError(
                f"checkpoint trend half-lives are {saved}, settings say {list(self.half_lives_ms)}"
            )
        assert state is not None
        self.prior.load_state_dict(state["prior"])
        self.trend.load_state_dict(state["trend"])
