"""Incremental fine-tuning of an encoder on the decayed graph, one micro-batch at a time.

:class:`IncrementalTrainer` owns the learning path: the id registry, the in-memory graph
mirror, the encoder and its optimiser. Each :meth:`IncrementalTrainer.learn` call

1. hands rows to new ids (evicted rows are re-initialised first) and grows the tables,
2. merges the events into the mirror and lets the encoder observe the new edges,
3. trains on the new edges plus a replay sample of older edges drawn ∝ decayed weight,
   against sampled negatives, for a few Adam steps,
4. re-embeds and reports the ids whose vectors moved more than ``publish_threshold``
   (L2) since they were last reported, and bumps ``model_version``.
"""

from __future__ import annotations

import inspect
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from models.base import BipartiteGraph, EdgeBatch, Encoder
from models.graph import GraphMirror, store_user_item_edges
from models.ids import DAY_MS, KINDS, IdRegistry
from models.losses import bpr_loss, info_nce_loss
from models.resolver import ENCODERS, encoder_class
from models.sampling import check_sampler, sample_negatives, sample_replay
from stream.errors import ConfigError
from stream.events import Interaction
from stream.settings import SOCIAL_EVENT_TYPES, Behaviour
from stream.state.graph_store import DecayedGraphStore

LOSSES = ("bpr", "info_nce")
STATE_FORMAT = 1
_BOOTSTRAP_CHUNK = 8192


@dataclass(frozen=True)
class TrainerSettings:
    """How the trainer learns; validated on construction (errors name the bad value).

    The defaults (InfoNCE, 16 uniform negatives, lr 0.05, 4096 positives per step) are the
    settings of the committed ML-100K prequential run (bench/results/eval-ml100k.json);
    BPR with popularity negatives finished below decayed popularity there.
    """

    encoder: str = "lightgcn"
    dim: int = 64
    layers: int = 2
    lr: float = 0.05
    steps_per_batch: int = 2  # passes over each micro-batch's positives
    # Optimiser steps per learn call at most (0: no cap). A live worker whose backlog
    # coalesced into a large batch trains on a random subset of its positives instead of
    # falling further behind; every event still enters the graph and the vectors.
    max_steps_per_batch: int = 0
    # Rows reported per call for drift alone (moved past publish_threshold with no new
    # event of their own), largest moves first; 0: no cap. The rest stay pending and are
    # reported by later calls, so one step's drift never floods the embedding topics.
    # Rows with new events are always reported.
    max_drift_reports: int = 0
    replay_ratio: float = 1.0  # replayed older edges per new edge
    negatives: str = "uniform"
    num_negatives: int = 16
    hard_pool: int = 32  # candidate pool per row for "hard" negatives
    loss: str = "info_nce"
    temperature: float = 0.2  # InfoNCE
    batch_size: int = 4096  # positives per optimiser step
    publish_threshold: float = 1e-3  # L2 move since last report that counts as changed
    device: str = "auto"
    mixed_precision: bool = True  # CUDA autocast (bf16 where supported, else fp16)
    seed: int = 0
    max_users: int = 1_000_000
    max_items: int = 1_000_000
    id_ttl_ms: int = 30 * DAY_MS
    encoder_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ConfigError(
                f"unknown encoder {self.encoder!r}; valid names: {', '.join(sorted(ENCODERS))}"
            )
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; valid names: {', '.join(LOSSES)}")
        check_sampler(self.negatives)
        for name in ("dim", "layers", "steps_per_batch", "num_negatives", "hard_pool"):
            if getattr(self, name) <= 0 and not (name == "layers" and self.layers == 0):
                raise ConfigError(f"trainer {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_steps_per_batch", "max_drift_reports"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("batch_size", "max_users", "max_items", "id_ttl_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"trainer {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("lr", "temperature"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"trainer {name} must be finite and > 0, got {value!r}")
        for name in ("replay_ratio", "publish_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"trainer {name} must be finite and >= 0, got {value!r}")
        if self.hard_pool < self.num_negatives:
            raise ConfigError(f"hard_pool {self.hard_pool} < num_negatives {self.num_negatives}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda[:n], got {self.device!r}")


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


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; an unavailable CUDA is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available")
    return torch.device(name)


def _seed(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % (2**63 - 1)
    return value


def _detached_cpu(obj: Any) -> Any:
    """A deep copy of nested state with every tensor cloned to the CPU."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, Mapping):
        return {key: _detached_cpu(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_detached_cpu(value) for value in obj)
    return obj


class IncrementalTrainer:
    """Fine-tunes an encoder incrementally on the decayed graph; see the module docstring.

    Meant to run in a worker thread beside the asyncio ingest loop: the heavy work is in
    torch kernels, which release the GIL, so ingestion keeps flowing while a step runs.
    Every public method takes one lock, so a reader (``vectors``, ``recommend``) called
    from another thread waits for a running ``learn`` rather than seeing it half done.

    Args:
        settings: how to learn.
        behaviours: the store's behaviours (event type -> weight, half-life); relation
            ``r`` is the ``r``-th in sorted order, as in the store.
        epsilon: the store's pruning threshold.
    """

    def __init__(
        self, settings: TrainerSettings, behaviours: Mapping[str, Behaviour], epsilon: float
    ) -> None:
        self.settings = settings
        self.behaviours = MappingProxyType(dict(behaviours))
        self.epsilon = epsilon
        self.device = resolve_device(settings.device)
        amp = settings.mixed_precision and self.device.type == "cuda"
        bf16 = amp and torch.cuda.is_bf16_supported()
        self._amp_dtype = (torch.bfloat16 if bf16 else torch.float16) if amp else None
        self._scaler = torch.amp.GradScaler("cuda", enabled=self._amp_dtype == torch.float16)
        self._lock = threading.RLock()
        self.registry = IdRegistry(settings.max_users, settings.max_items, settings.id_ttl_ms)
        self.mirror = GraphMirror(self.behaviours, epsilon)
        self.encoder = self._build_encoder()
        self.optimizer = torch.optim.Adam(self.encoder.parameters(), lr=settings.lr)
        self.model_version = 0
        # The vectors last reported as changed (what downstream holds), and which rows
        # have been reported at all since their id took the row.
        self._reported = {k: torch.zeros(0, settings.dim, device=self.device) for k in KINDS}
        self._published = {k: torch.zeros(0, dtype=torch.bool, device=self.device) for k in KINDS}
        # Per row: the newest event time among the row's own events (0: none yet).
        self._event_ms = {k: torch.zeros(0, dtype=torch.long) for k in KINDS}
        self._latest: dict[str, Tensor] | None = None  # vectors after the last learn/fit

    def _build_encoder(self) -> Encoder:
        s = self.settings
        cls = encoder_class(s.encoder)
        accepted = inspect.signature(cls.__init__).parameters
        kwargs: dict[str, Any] = {
            key: value
            for key, value in (("num_layers", s.layers), ("seed", s.seed))
            if key in accepted
        }
        kwargs.update(s.encoder_options)
        return cls(len(self.behaviours), dim=s.dim, **kwargs).to(self.device)

    # -- start-up ----------------------------------------------------------------------

    def bootstrap(self, store: DecayedGraphStore) -> None:
        """Rebuild the graph mirror from the store (one scan), registering unknown ids.

        Ids the registry already holds (e.g. from a loaded checkpoint) keep their rows and
        last-seen times; new ones are added oldest edge first. Call after
        :meth:`load_state_dict`, which discards the mirror.
        """
        with self._lock:
            self.mirror = GraphMirror(self.behaviours, self.epsilon)
            edges = sorted(store_user_item_edges(store), key=lambda e: e.state[1])
            for chunk in _chunks(edges, _BOOTSTRAP_CHUNK):
                now = chunk[-1].state[1]
                users = self._rows_or_assign("user", [e.user_id for e in chunk], now)
                items = self._rows_or_assign("item", [e.item_id for e in chunk], now)
                self._absorb_evictions()
                self.mirror.load_edges(chunk, users, items)
                times = torch.tensor([e.state[1] for e in chunk], dtype=torch.long)
                self._note_event_times(users, items, times)
            for (_, partition), (_, watermark) in store.positions().items():
                if watermark >= 0:  # each partition's own stream time, never the newest one
                    self.mirror.advance(watermark, [partition])
            self._grow()
            self._latest = None

    def _rows_or_assign(self, kind: str, ids: list[str], now: int) -> Tensor:
        rows = self.registry.rows(kind, ids)
        missing = (rows < 0).nonzero().flatten()
        if missing.numel():
            rows[missing] = self.registry.assign(kind, [ids[i] for i in missing.tolist()], now)
        return rows

    # -- the learning path ---------------------------------------------------------------

    def learn(
        self, interactions: Sequence[Interaction], partitions: Sequence[int] | None = None
    ) -> TrainReport:
        """Absorb one (possibly coalesced) micro-batch of applied events and fine-tune.

        ``partitions`` holds each event's source partition (None: all partition 0); the
        graph ages each partition's edges by that partition's own stream time.
        """
        with self._lock:
            start = time.perf_counter()
            before = {k: self.registry.counts(k) for k in KINDS}
            chosen = [
                k for k, e in enumerate(interactions) if e.event_type not in SOCIAL_EVENT_TYPES
            ]
            events = [interactions[k] for k in chosen]
            for event in events:
                self.mirror.relation(event.event_type)  # unknown event type: ValueError
            batch = _empty_batch()
            reflected: list[int] = []
            if events:
                now = max(e.stream_ts for e in events)
                users = self.registry.assign("user", [e.user_id for e in events], now)
                items = self.registry.assign("item", [e.item_id for e in events], now)
                self._absorb_evictions()
                self._note_event_times(users, items, torch.tensor([e.ts for e in events]))
                parts = None if partitions is None else [partitions[k] for k in chosen]
                batch = self.mirror.apply(events, users, items, parts)
                self.encoder.observe(batch.to(self.device))
                known = ((users >= 0) & (items >= 0)).tolist()
                reflected = [k for k, ok in zip(chosen, known, strict=True) if ok]
            graph = self._graph()
            generator = torch.Generator().manual_seed(_seed(self.settings.seed, self.model_version))
            replay = torch.zeros(0, dtype=torch.long, device=self.device)
            if len(batch):
                wanted = round(self.settings.replay_ratio * len(batch))
                older_than = int(batch.times.min())
                replay = sample_replay(graph, wanted, generator, older_than=older_than)
            pos_users = torch.cat([batch.users.to(self.device), graph.users[replay]])
            pos_items = torch.cat([batch.items.to(self.device), graph.items[replay]])
            loss, steps = self._train(
                graph, pos_users, pos_items, self.settings.steps_per_batch, generator
            )
            touched = {"user": batch.users, "item": batch.items}
            changed = (
                self._refresh(graph, touched) if steps or len(batch) else {k: [] for k in KINDS}
            )
            self.model_version += 1
            after = {k: self.registry.counts(k) for k in KINDS}
            return TrainReport(
                events=len(interactions),
                edges=len(batch),
                replayed=int(replay.numel()),
                steps=steps,
                loss=loss,
                seconds=time.perf_counter() - start,
                changed_users=changed["user"],
                changed_items=changed["item"],
                model_version=self.model_version,
                watermark=self.mirror.watermark,
                evicted_users=after["user"].evicted - before["user"].evicted,
                evicted_items=after["item"].evicted - before["item"].evicted,
                refused_users=after["user"].refused - before["user"].refused,
                refused_items=after["item"].refused - before["item"].refused,
                changed_user_event_ms=self._event_times("user", changed["user"]),
                changed_item_event_ms=self._event_times("item", changed["item"]),
                reflected=reflected,
            )

    def refresh(self) -> TrainReport:
        """Re-embed without training and report what moved (e.g. after a restart, when the
        store holds edges the checkpoint never trained on); bumps ``model_version``."""
        with self._lock:
            start = time.perf_counter()
            changed = self._refresh(self._graph())
            self.model_version += 1
            return TrainReport(
                events=0,
                edges=0,
                replayed=0,
                steps=0,
                loss=math.nan,
                seconds=time.perf_counter() - start,
                changed_users=changed["user"],
                changed_items=changed["item"],
                model_version=self.model_version,
                watermark=self.mirror.watermark,
                changed_user_event_ms=self._event_times("user", changed["user"]),
                changed_item_event_ms=self._event_times("item", changed["item"]),
            )

    def fit(self, epochs: int) -> TrainReport:
        """Train from freshly reset parameters over every edge of the current graph."""
        if epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {epochs!r}")
        with self._lock:
            start = time.perf_counter()
            self.encoder.reset_parameters()
            self.encoder.reset_state()
            self.optimizer = torch.optim.Adam(self.encoder.parameters(), lr=self.settings.lr)
            graph = self._graph()
            order = torch.argsort(graph.times, stable=True)  # streaming state in time order
            self.encoder.observe(
                EdgeBatch(
                    graph.users[order],
                    graph.items[order],
                    graph.relations[order],
                    graph.weights[order],
                    graph.times[order],
                )
            )
            generator = torch.Generator().manual_seed(_seed(self.settings.seed, self.model_version))
            loss, steps = self._train(graph, graph.users, graph.items, epochs, generator)
            changed = self._refresh(graph)
            self.model_version += 1
            return TrainReport(
                events=0,
                edges=0,
                replayed=graph.num_edges,
                steps=steps,
                loss=loss,
                seconds=time.perf_counter() - start,
                changed_users=changed["user"],
                changed_items=changed["item"],
                model_version=self.model_version,
                watermark=self.mirror.watermark,
            )

    def _note_event_times(self, users: Tensor, items: Tensor, times: Tensor) -> None:
        """Raise each row's newest own event time (refused ids, row -1, are skipped)."""
        self._grow()
        for kind, rows in (("user", users), ("item", items)):
            known = rows >= 0
            self._event_ms[kind].scatter_reduce_(0, rows[known].cpu(), times[known], "amax")

    def _event_times(self, kind: str, ids: Sequence[str]) -> list[int]:
        rows = self.registry.rows(kind, ids)
        return self._event_ms[kind][rows.clamp(min=0)].tolist() if len(ids) else []

    def _graph(self, prune: bool = True) -> BipartiteGraph:
        return self.mirror.snapshot(self.encoder.num_users, self.encoder.num_items, prune=prune).to(
            self.device
        )

    def _absorb_evictions(self) -> None:
        """Rows evicted to make room for new ids: forget their edges and their vectors."""
        self._grow()
        users, items = self.registry.pop_evicted("user"), self.registry.pop_evicted("item")
        if users.numel() == 0 and items.numel() == 0:
            return
        self.mirror.drop_rows(users, items)
        self.encoder.reset_rows(users.to(self.device), items.to(self.device))
        # Adam moments of the row are not reset: an evicted row went unseen for a TTL, so
        # its first moment has decayed to ~0 and no gradient history carries over.
        for kind, rows in (("user", users), ("item", items)):
            self._published[kind][rows.to(self.device)] = False
            self._event_ms[kind][rows] = 0

    def _grow(self) -> None:
        users, items = self.registry.size("user"), self.registry.size("item")
        if users > self.encoder.num_users or items > self.encoder.num_items:
            self.encoder.grow(users, items)
            self._carry_optimizer()
        for kind, size in (("user", self.encoder.num_users), ("item", self.encoder.num_items)):
            missing = size - self._event_ms[kind].numel()
            if missing > 0:
                times = self._event_ms[kind]
                self._event_ms[kind] = torch.cat([times, times.new_zeros(missing)])
            extra = size - self._published[kind].numel()
            if extra > 0:
                reported = self._reported[kind]
                self._reported[kind] = torch.cat(
                    [reported, reported.new_zeros(extra, reported.shape[1])]
                )
                self._published[kind] = torch.cat(
                    [self._published[kind], self._published[kind].new_zeros(extra)]
                )

    def _carry_optimizer(self) -> None:
        """A new Adam over the grown tables, keeping the moments (zero for new rows)."""
        state = self.optimizer.state_dict()
        params = list(self.encoder.parameters())
        self.optimizer = torch.optim.Adam(params, lr=self.settings.lr)
        if sum(len(g["params"]) for g in state["param_groups"]) != len(params):
            return  # the encoder's parameter set changed shape: start the moments afresh
        for index, moments in state["state"].items():
            shape = params[index].shape
            for key in ("exp_avg", "exp_avg_sq"):
                old = moments.get(key)
                if old is not None and old.shape != shape and old.shape[1:] == shape[1:]:
                    moments[key] = torch.cat(
                        [old, old.new_zeros(shape[0] - old.shape[0], *shape[1:])]
                    )
        self.optimizer.load_state_dict(state)

    def _autocast(self) -> AbstractContextManager[Any]:
        if self._amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)

    def _train(
        self,
        graph: BipartiteGraph,
        pos_users: Tensor,
        pos_items: Tensor,
        passes: int,
        generator: torch.Generator,
    ) -> tuple[float, int]:
        """``passes`` shuffled passes over the positives in ``batch_size`` steps."""
        s = self.settings
        num_items = self.registry.live("item")
        if pos_users.numel() == 0 or num_items == 0:
            return math.nan, 0
        self.encoder.train()
        losses: list[Tensor] = []
        cap = s.max_steps_per_batch or math.inf
        for _ in range(passes):
            order = torch.randperm(pos_users.numel(), generator=generator).to(self.device)
            for chunk in torch.split(order, s.batch_size):
                if len(losses) >= cap:
                    break
                users, items = pos_users[chunk], pos_items[chunk]
                losses.append(self._step(graph, users, items, num_items, generator))
        return float(torch.stack(losses).mean()), len(losses)

    def _step(
        self,
        graph: BipartiteGraph,
        users: Tensor,
        items: Tensor,
        num_items: int,
        generator: torch.Generator,
    ) -> Tensor:
        s = self.settings
        in_batch_softmax = s.loss == "info_nce" and s.negatives == "in_batch"
        neg = torch.zeros(users.numel(), 0, dtype=torch.long, device=self.device)
        if not in_batch_softmax:
            neg = sample_negatives(
                s.negatives,
                users,
                items,
                num_items=num_items,
                generator=generator,
                graph=graph,
                num_negatives=s.num_negatives,
                score=lambda u, pool: self._score(graph, u, pool),
                pool_size=s.hard_pool,
            )
        with self._autocast():
            user_vec, item_vec = self.encoder(graph, users, torch.cat([items, neg.flatten()]))
            pos_vec = item_vec[: users.numel()]
            neg_vec = item_vec[users.numel() :].reshape(
                users.numel(), neg.shape[1], item_vec.shape[1]
            )
            if s.loss == "bpr":
                loss = bpr_loss(user_vec, pos_vec, neg_vec)
            else:
                loss = info_nce_loss(
                    user_vec, pos_vec, None if in_batch_softmax else neg_vec, s.temperature
                )
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(self._scaler.scale(loss))
        self._scaler.step(self.optimizer)
        self._scaler.update()
        return loss.detach().float()

    def _score(self, graph: BipartiteGraph, users: Tensor, pool: Tensor) -> Tensor:
        user_vec, item_vec = self.encoder.embed(graph, users, pool.flatten())
        return (user_vec.unsqueeze(1) * item_vec.view(*pool.shape, -1)).sum(-1)

    def _embed_all(self, graph: BipartiteGraph) -> dict[str, Tensor]:
        users = torch.arange(self.registry.live("user"), device=self.device)
        items = torch.arange(self.registry.live("item"), device=self.device)
        with self._autocast():
            user_vec, item_vec = self.encoder.embed(graph, users, items)
        return {"user": user_vec.float(), "item": item_vec.float()}

    def _refresh(
        self, graph: BipartiteGraph, touched: Mapping[str, Tensor] | None = None
    ) -> dict[str, list[str]]:
        """Re-embed every live row and report those that moved past the threshold, and
        always the ``touched`` rows (those with new events: their vectors must be
        republished to reflect them, however little they moved).

        Re-embedding everything (one propagation, the cost of one training forward) is the
        simplest exact rule: Adam's momentum moves rows that got no gradient this step,
        and new edges and decay renormalise LightGCN's adjacency around every touched
        node, so "L hops of a touched node" would miss real changes.
        """
        self._latest = self._embed_all(graph)
        changed: dict[str, list[str]] = {}
        for kind, vectors in self._latest.items():
            n = vectors.shape[0]
            reported, published = self._reported[kind][:n], self._published[kind][:n]
            distance = (vectors - reported).norm(dim=1)
            distance[~published] = math.inf  # never reported: first in line
            report = distance > self.settings.publish_threshold
            cap = self.settings.max_drift_reports
            if cap and int(report.sum()) > cap:
                keep = distance.topk(cap).indices
                report = torch.zeros_like(report)
                report[keep] = True
            if touched is not None and touched[kind].numel():
                report[touched[kind].to(self.device)] = True
            rows = report.nonzero().flatten()
            reported[rows] = vectors[rows]
            published[rows] = True
            changed[kind] = self.registry.ids(kind, rows.cpu())
        return changed

    # -- read paths (never change anything) ------------------------------------------------

    def _current(self) -> dict[str, Tensor]:
        if self._latest is not None:
            return self._latest
        return self._embed_all(self._graph(prune=False))  # not cached: reads never write

    def vectors(self, kind: str, ids: Sequence[str]) -> Tensor:
        """``[len(ids), dim]`` float32 vectors on the CPU, as of the last learn or fit.

        An id the registry does not hold (never seen, evicted or refused) gets a row of
        zeros; real vectors are unit length, so ``v.norm(dim=1) == 0`` marks the unknown.
        """
        with self._lock:
            rows = self.registry.rows(kind, ids)
            table = self._current()[kind].cpu()
            out = torch.zeros(len(rows), self.settings.dim)
            known = rows >= 0
            out[known] = table[rows[known]]
            return out

    def recommend(
        self, user_ids: Sequence[str], k: int, exclude_seen: bool = True
    ) -> tuple[list[list[str]], Tensor]:
        """Top-``k`` items for each user by dot product, over every live item.

        Returns ``(item_ids, scores)``: ``item_ids[b]`` holds at most ``k`` ids, best
        first; ``scores`` is ``[len(user_ids), min(k, live items)]`` on the CPU, padded with
        ``-inf`` where a user has fewer candidates. An unknown user gets no items;
        ``exclude_seen`` leaves out items the user has a live edge to.
        """
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k!r}")
        with self._lock:
            current = self._current()
            rows = self.registry.rows("user", user_ids).to(self.device)
            known = rows >= 0
            if current["user"].shape[0]:
                scores = current["user"][rows.clamp(min=0)] @ current["item"].T
                scores[~known] = float("-inf")
            else:
                scores = torch.full((rows.numel(), current["item"].shape[0]), -math.inf)
            if exclude_seen and scores.numel():
                graph = self._graph(prune=False)
                pos, items = _seen(graph, rows)
                scores[pos, items] = float("-inf")
            top = scores.topk(min(k, scores.shape[1]), dim=1)
            values, indices = top.values.cpu(), top.indices.cpu()
            names = self.registry.ids("item", range(scores.shape[1]))
            picks = [
                [names[i] for i, v in zip(idx.tolist(), val.tolist(), strict=True) if v > -math.inf]
                for idx, val in zip(indices, values, strict=True)
            ]
            return picks, values

    # -- checkpoint --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, copied to the CPU (tensors and plain data only).

        The graph mirror is not in it: the store is the durable graph, and
        :meth:`bootstrap` rebuilds the mirror from it after :meth:`load_state_dict`.
        """
        with self._lock:
            return {
                "format": STATE_FORMAT,
                "encoder_name": self.settings.encoder,
                "dim": self.settings.dim,
                "encoder_rows": [self.encoder.num_users, self.encoder.num_items],
                "encoder": _detached_cpu(self.encoder.state_dict()),
                "optimizer": _detached_cpu(self.optimizer.state_dict()),
                "scaler": _detached_cpu(self._scaler.state_dict()),
                "registry": self.registry.state_dict(),
                "model_version": self.model_version,
                "reported": _detached_cpu(self._reported),
                "published": _detached_cpu(self._published),
                "event_ms": _detached_cpu(self._event_ms),
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; then call :meth:`bootstrap` to rebuild the graph."""
        with self._lock:
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"trainer state format {state.get('format')!r} is not 1")
            for key, mine in (("encoder_name", self.settings.encoder), ("dim", self.settings.dim)):
                if state[key] != mine:
                    raise ConfigError(f"checkpoint {key} is {state[key]!r}, settings say {mine!r}")
            self.registry.load_state_dict(state["registry"])
            self.encoder = self._build_encoder()
            self.encoder.grow(*state["encoder_rows"])
            self.encoder.load_state_dict(state["encoder"])
            self.optimizer = torch.optim.Adam(self.encoder.parameters(), lr=self.settings.lr)
            self.optimizer.load_state_dict(state["optimizer"])
            if state["scaler"]:
                self._scaler.load_state_dict(state["scaler"])
            self.model_version = int(state["model_version"])
            self._reported = {k: state["reported"][k].to(self.device) for k in KINDS}
            self._published = {k: state["published"][k].to(self.device) for k in KINDS}
            event_ms = state.get("event_ms") or {}
            self._event_ms = {
                k: event_ms[k].clone() if k in event_ms else torch.zeros(0, dtype=torch.long)
                for k in KINDS
            }
            self.mirror = GraphMirror(self.behaviours, self.epsilon)
            self._latest = None
            self._grow()


def _seen(graph: BipartiteGraph, rows: Tensor) -> tuple[Tensor, Tensor]:
    """``(position, item)`` pairs for every edge of each requested user row.

    The snapshot is sorted by user, so each user's edges are one contiguous range.
    """
    start = torch.searchsorted(graph.users, rows)
    end = torch.searchsorted(graph.users, rows, right=True)
    counts = torch.where(rows >= 0, end - start, torch.zeros_like(start))
    positions = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)
    first = torch.repeat_interleave(start - (counts.cumsum(0) - counts), counts)
    edge = torch.arange(int(counts.sum()), device=rows.device) + first
    return positions, graph.items[edge]


def _empty_batch() -> EdgeBatch:
    long = torch.zeros(0, dtype=torch.long)
    return EdgeBatch(long, long, long, torch.zeros(0), long)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
