"""What one training call did: the trainer's report to the worker and its metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.base import EdgeBatch
from models.prior import TrendTable


@dataclass(frozen=True)
class TrainReport:
    """What one :meth:`~IncrementalTrainer.learn` or :meth:`~IncrementalTrainer.fit` did."""

    events: int  # interactions given
    edges: int  # of them, edges merged into the graph (the new positives)
    replayed: int  # older edges replayed as positives
    steps: int  # optimiser steps
    loss: float  # mean loss over the steps (nan when no step ran)
    seconds: float
    changed_users: list[str]  # ids whose vectors moved > publish_threshold: publish these
    changed_items: list[str]
    model_version: int
    watermark: int | None  # newest event time the vectors reflect
    evicted_users: int = 0
    evicted_items: int = 0
    refused_users: int = 0
    refused_items: int = 0
    # Newest event time (ms) of each changed id's own events, aligned with changed_*.
    changed_user_event_ms: list[int] = field(default_factory=list)
    changed_item_event_ms: list[int] = field(default_factory=list)
    # Indices (into the interactions given to learn) of the events the published vectors
    # reflect: merged into the graph with a row for both ids. Only these count for
    # freshness; social events and events of refused ids are not reflected.
    reflected: list[int] = field(default_factory=list)


@dataclass
class Absorbed:
    """A micro-batch :meth:`~IncrementalTrainer.absorb` merged into the graph, for
    :meth:`~IncrementalTrainer.step` to train on."""

    events: int  # interactions given
    batch: EdgeBatch  # the edges merged (the new positives)
    reflected: list[int]  # see TrainReport.reflected
    trend: TrendTable | None  # the prior's trend table before the batch was counted
    before: dict[str, Any]  # the registry's counts before the batch
    start: float  # perf_counter at the absorb's start
    # The fold-in's report (absorb with fold_in), published before the step; None: none
    folded: TrainReport | None = None
