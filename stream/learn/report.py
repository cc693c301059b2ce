"""What one training call did: the trainer's report to the worker and its metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


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
    live_users: int = 0  # ids the registry holds after the call
    live_items: int = 0
    # Newest event time (ms) of each changed id's own events, aligned with changed_*.
    changed_user_event_ms: list[int] = field(default_factory=list)
    changed_item_event_ms: list[int] = field(default_factory=list)
    # Indices (into the interactions given to learn) of the events the published vectors
    # reflect: merged into the graph with a row for both ids. Only these count for
    # freshness; social events and events of refused ids are not reflected.
    reflected: list[int] = field(default_factory=list)
    # The changed ids' vectors (kind -> [ids, out_dim], aligned with changed_*), taken with
    # the report when a step runs beside the publishing thread; None: read them after.
    vectors: dict[str, Tensor] | None = None
