"""Prequential ("test, then train") evaluation, driving the live store and trainer code.

The protocol (DESIGN.md, "Evaluation"):

1. Sort the stream by event time (stably) and apply a warm-up prefix to a fresh
   :class:`~stream.state.graph_store.DecayedGraphStore` (topic ``eval``, partition 0,
   sequential offsets), in write batches as the worker would; every method is shown the
   warm-up events (:meth:`Method.warmup`: a method that keeps its own view of the stream,
   or tunes itself on the warm-up) and then starts (:meth:`Method.start`: a model trains
   on the warm-up graph).
2. Split the rest into chunks (by count or by event-time duration). For each chunk:

   - **test**: every method prepares (:meth:`Method.prepare`: a full retrain happens
     here) and scores every user in the chunk who has history, over every item seen so
     far, excluding the items the user already had; the targets are the items the user
     takes in the chunk and did not have, of the target types when these are set
     (:mod:`stream.evaluation.queries`); each query's metrics are kept, so intervals
     and the cold/warm breakdown can be computed from them (:mod:`.report`);
   - **train**: the chunk goes to the store in micro-batches, and after each store write
     every method learns from the events just applied (:meth:`Method.learn`), as the
     live worker's trainer learns from each applied batch.

Every method sees the same chunks in the same order and the same store. Compute is timed
per method: ``learn`` (prepare + learn: what keeping the method current costs), ``score``
and ``warmup`` separately; ``learn`` and ``warmup`` also in CPU seconds of the calling
thread, which other processes on a shared machine do not inflate.
"""

from __future__ import annotations

import abc
import functools
import itertools
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stream.behaviours import DEFAULT_BEHAVIOURS, Behaviour
from stream.errors import ConfigError
from stream.evaluation.metrics import MetricTotals, QueryMetrics, TieBreak
from stream.evaluation.queries import History, score_queries
from stream.events import Interaction
from stream.state.graph_store import DecayedGraphStore, PartitionBatch

TOPIC = "eval"
PARTITION = 0


class Method(abc.ABC):
    """One way of producing scores, kept current on the stream; compared side by side."""

    name: str
    updates: bool = True  # False: never changes after start (no prepare/learn calls)

    def warmup(self, events: Sequence[Interaction]) -> None:  # noqa: B027 (optional hook)
        """The warm-up events in time order, shown before :meth:`start` (and timed with it)."""

    @abc.abstractmethod
    def start(self, store: DecayedGraphStore) -> None:
        """The warm-up prefix is in ``store``; get ready to score."""

    def prepare(self, store: DecayedGraphStore) -> None:  # noqa: B027 (optional hook)
        """Called before each chunk is scored (a full retrain happens here)."""

    @abc.abstractmethod
    def scores(self, users: Sequence[str], items: Sequence[str]) -> Tensor:
        """``[len(users), len(items)]`` scores; ``-inf`` where an item cannot be scored.

        A read: it must not change what the method knows.
        """

    def learn(self, store: DecayedGraphStore, batch: Sequence[Interaction]) -> None:  # noqa: B027
        """``batch`` was just applied to ``store``; learn from it (or not)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what :meth:`start` took."""

    def describe(self) -> dict[str, Any]:
        """What the method chose or ran with (a window, an epoch budget), for the report."""
        return {}


@dataclass(frozen=True)
class ProtocolSettings:
    """Args:
    warmup: fraction of the stream (by count) applied before scoring starts.
    chunks: number of equal-count chunks after the warm-up (when no duration is set).
    chunk_duration_ms: split by event time instead (empty windows are skipped).
    micro_batch: events per store write / learn call inside a chunk.
    warmup_batch: events per store write during the warm-up.
    behaviours, epsilon: the graph store's configuration.
    seed: the tie-break order of items.
    target_types: only events of these types are targets (None: every type); every
        event still counts as history.
    """

    warmup: float = 0.5
    chunks: int = 10
    chunk_duration_ms: int | None = None
    micro_batch: int = 1_000
    warmup_batch: int = 5_000
    behaviours: Mapping[str, Behaviour] = field(default_factory=lambda: DEFAULT_BEHAVIOURS)
    epsilon: float = 1e-3
    seed: int = 0
    target_types: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.warmup) and 0.0 < self.warmup < 1.0):
            raise ConfigError(f"warmup must be a fraction in (0, 1), got {self.warmup!r}")
        if self.chunks < 1:
            raise ConfigError(f"chunks must be >= 1, got {self.chunks!r}")
        if self.chunk_duration_ms is not None and self.chunk_duration_ms <= 0:
            raise ConfigError(f"chunk duration must be > 0 ms, got {self.chunk_duration_ms!r}")
        for name in ("micro_batch", "warmup_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        unknown = sorted((self.target_types or frozenset()) - set(self.behaviours))
        if self.target_types is not None and (unknown or not self.target_types):
            raise ConfigError(
                f"target types {unknown or '(none)'} are not behaviours; "
                f"valid: {', '.join(sorted(self.behaviours))}"
            )


@dataclass
class MethodChunk:
    """One method's result on one chunk."""

    metrics: MetricTotals
    learn_seconds: float
    score_seconds: float
    per_query: list[QueryMetrics] = field(default_factory=list)  # the chunk's query order
    learn_cpu_seconds: float = 0.0


@dataclass
class ChunkInfo:
    index: int
    events: int
    start_ts: int
    end_ts: int
    queries: int  # users scored
    new_users: int  # users in the chunk without history (not scored)
    unseen_targets: int  # targets first seen in this chunk (never a hit)


@dataclass
class MethodResult:
    name: str
    warmup_seconds: float = 0.0
    warmup_cpu_seconds: float = 0.0
    chunks: list[MethodChunk] = field(default_factory=list)

    @property
    def learn_seconds(self) -> float:
        return sum(c.learn_seconds for c in self.chunks)

    @property
    def learn_cpu_seconds(self) -> float:
        return sum(c.learn_cpu_seconds for c in self.chunks)

    @property
    def score_seconds(self) -> float:
        return sum(c.score_seconds for c in self.chunks)

    def totals(self) -> MetricTotals:
        out = MetricTotals()
        for chunk in self.chunks:
            out.merge(chunk.metrics)
        return out

    def per_query(self) -> list[QueryMetrics]:
        """Every query's metrics, chunk after chunk (the order of ``prior_events``)."""
        return [q for chunk in self.chunks for q in chunk.per_query]


@dataclass
class PrequentialResult:
    warmup_events: int
    chunks: list[ChunkInfo]
    methods: dict[str, MethodResult]
    prior_events: list[int] = field(default_factory=list)  # per query, all chunks in order
    described: dict[str, dict[str, Any]] = field(default_factory=dict)  # Method.describe()


def split_stream(
    stream: Sequence[Interaction], settings: ProtocolSettings
) -> tuple[list[Interaction], list[list[Interaction]]]:
    """``(warm-up prefix, chunks)``; the stream must already be sorted by time.

    >>> evs = [Interaction("u", "i", "click", ts) for ts in range(10)]
    >>> warm, chunks = split_stream(evs, ProtocolSettings(warmup=0.4, chunks=4))
    >>> len(warm), [len(c) for c in chunks]
    (4, [2, 2, 1, 1])
    """
    if any(a.ts > b.ts for a, b in itertools.pairwise(stream)):
        raise ValueError("the stream must be sorted by event time")
    cut = int(len(stream) * settings.warmup)
    if cut == 0 or cut == len(stream):
        raise ConfigError(
            f"warm-up {settings.warmup} of {len(stream)} events leaves no warm-up or no test"
        )
    warm, rest = list(stream[:cut]), list(stream[cut:])
    if settings.chunk_duration_ms is None:
        n = min(settings.chunks, len(rest))
        size, extra = divmod(len(rest), n)
        bounds = [0]
        for i in range(n):
            bounds.append(bounds[-1] + size + (1 if i < extra else 0))
        return warm, [rest[a:b] for a, b in itertools.pairwise(bounds)]
    chunks: dict[int, list[Interaction]] = {}
    start = rest[0].ts
    for event in rest:
        chunks.setdefault((event.ts - start) // settings.chunk_duration_ms, []).append(event)
    return warm, [chunks[k] for k in sorted(chunks)]


def run_prequential(
    stream: Sequence[Interaction],
    methods: Sequence[Method],
    settings: ProtocolSettings,
    store_dir: Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> PrequentialResult:
    """Run the protocol over a time-sorted stream; see the module docstring.

    ``progress(done, total, what)`` is called after each step (a method started, a
    method scored a chunk, a chunk learnt).
    """
    names = [m.name for m in methods]
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"methods must be given once each, got {names}")
    warm, chunks = split_stream(stream, settings)
    steps = len(methods) + len(chunks) * (len(methods) + 1)
    done = 0

    def step(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, steps, what)

    results = {m.name: MethodResult(m.name) for m in methods}
    infos: list[ChunkInfo] = []
    prior_events: list[int] = []
    with tempfile.TemporaryDirectory(dir=store_dir) as tmp:
        store = DecayedGraphStore(Path(tmp) / "graph", settings.behaviours, settings.epsilon)
        try:
            history = History(settings.target_types)
            offset = apply_events(store, warm, settings.warmup_batch, 0)
            history.add(warm)
            for method in methods:
                meter = _Meter()
                meter.run(functools.partial(method.warmup, warm))
                meter.run(functools.partial(method.start, store))
                results[method.name].warmup_seconds = meter.wall
                results[method.name].warmup_cpu_seconds = meter.cpu
                step(f"{method.name} warm-up")
            tie_break = TieBreak(settings.seed)
            updating = [m for m in methods if m.updates]
            for index, chunk in enumerate(chunks):
                queries = history.queries(chunk)
                infos.append(
                    ChunkInfo(
                        index,
                        len(chunk),
                        chunk[0].ts,
                        chunk[-1].ts,
                        len(queries),
                        len({e.user_id for e in chunk} - history.users.keys()),
                        history.unseen_targets(queries),
                    )
                )
                prior_events.extend(q.prior_events for q in queries)
                upkeep = {name: _Meter() for name in names}
                for method in methods:
                    if method.updates:
                        upkeep[method.name].run(functools.partial(method.prepare, store))
                    began = time.perf_counter()
                    per_query = score_queries(
                        method.name, method.scores, queries, history, tie_break
                    )
                    scored = time.perf_counter() - began
                    totals = MetricTotals()
                    for q in per_query:
                        totals.add(q)
                    results[method.name].chunks.append(MethodChunk(totals, 0.0, scored, per_query))
                    step(f"chunk {index + 1}/{len(chunks)} {method.name} scored")
                for start in range(0, len(chunk), settings.micro_batch):
                    batch = chunk[start : start + settings.micro_batch]
                    offset += len(batch)
                    # As the worker: only what the store applied is learnt (no duplicates).
                    kept = store_batch(store, batch, offset)
                    for method in updating:
                        upkeep[method.name].run(functools.partial(method.learn, store, kept))
                history.add(chunk)
                for method in methods:
                    results[method.name].chunks[-1].learn_seconds = upkeep[method.name].wall
                    results[method.name].chunks[-1].learn_cpu_seconds = upkeep[method.name].cpu
                step(f"chunk {index + 1}/{len(chunks)} learnt")
            described = {m.name: m.describe() for m in methods}
        finally:
            for method in methods:
                method.close()
            store.close()
    return PrequentialResult(len(warm), infos, results, prior_events, described)


class _Meter:
    """Wall seconds and CPU seconds of the calling thread, added up over calls.

    Model code runs torch on this thread (one intra-op thread in the evaluation runs), so
    its CPU seconds are the method's own; RocksDB's background threads are not counted.
    """

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def run(self, action: Callable[[], object]) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        action()
        self.wall += time.perf_counter() - wall
        self.cpu += time.thread_time() - cpu


def apply_events(
    store: DecayedGraphStore, events: Sequence[Interaction], batch_size: int, offset: int
) -> int:
    """Write events to the store as the worker does; returns the next offset."""
    for start in range(0, len(events), max(batch_size, 1)):
        batch = events[start : start + batch_size]
        offset += len(batch)
        store_batch(store, batch, offset)
    return offset


def store_batch(
    store: DecayedGraphStore, batch: Sequence[Interaction], offset: int
) -> list[Interaction]:
    """Apply one batch at ``offset``; returns the events the store kept, in order."""
    result = store.apply(TOPIC, [PartitionBatch(PARTITION, offset, batch)])
    kept = result.kept[0] if result.kept else ()
    return [batch[i] for i in kept]


def score_matrix(users: Tensor, items: Tensor, known_items: Tensor) -> Tensor:
    """Dot-product scores, ``-inf`` for items without a vector (``known_items`` False)."""
    scores = users.float() @ items.float().T
    return scores.masked_fill(~known_items.to(scores.device)[None, :], -math.inf).cpu()


def empty_scores(users: int, items: int) -> Tensor:
    return torch.full((users, items), -math.inf)
