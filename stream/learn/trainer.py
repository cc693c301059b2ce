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
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from models.base import BipartiteGraph, EdgeBatch, Encoder
from models.ids import KINDS, IdRegistry
from models.resolver import encoder_class
from models.sampling import sample_replay
from stream.behaviours import SOCIAL_EVENT_TYPES, Behaviour
from stream.errors import ConfigError, model_config_errors
from stream.events import Interaction
from stream.learn.checkpoint import cpu_copy
from stream.learn.device import MixedPrecision, resolve_device
from stream.learn.graph_mirror import GraphMirror, store_user_item_edges, user_recency
from stream.learn.objective import Objective, Trend
from stream.learn.optimiser import grown_adam
from stream.learn.publish_policy import PublishPolicy
from stream.learn.report import TrainReport
from stream.learn.score_prior import TrendPrior
from stream.settings.training import TrainerSettings
from stream.state.graph_store import DecayedGraphStore

STATE_FORMAT = 1
_BOOTSTRAP_CHUNK = 8192


def _seed(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % (2**63 - 1)
    return value


class IncrementalTrainer:
    """Fine-tunes an encoder incrementally on the decayed graph; see the module docstring.

    Meant to run in a worker thread beside the asyncio ingest loop: the heavy work is in
    torch kernels, which release the GIL, so ingestion keeps flowing while a step runs.
    Every public method takes one lock, so a reader (``vectors``) called
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
        self._amp = MixedPrecision(self.device, settings.mixed_precision)
        self._objective = Objective(settings, self._amp, self.device)
        self._lock = threading.RLock()
        with model_config_errors():
            self.registry = IdRegistry(settings.max_users, settings.max_items, settings.id_ttl_ms)
        self.mirror = GraphMirror(self.behaviours, epsilon)
        self.encoder = self._build_encoder()
        self.score_prior = self._build_prior()
        self.optimizer = torch.optim.Adam(self._parameters(), lr=settings.lr)
        self.model_version = 0
        self.publish = PublishPolicy(
            settings.out_dim, self.device, settings.publish_threshold, settings.max_drift_reports
        )
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
        with model_config_errors():
            return cls(len(self.behaviours), dim=s.dim, **kwargs).to(self.device)

    def _build_prior(self) -> TrendPrior | None:
        """The score prior (:mod:`models.prior`), when trend half-lives are set."""
        if not self.settings.trend_half_lives_ms:
            return None
        decay = [self.behaviours[name].half_life_ms for name in self.mirror.relation_names]
        prior = TrendPrior(self.settings.trend_half_lives_ms, decay, self.device)
        self._objective.prior = prior.prior
        return prior

    def _parameters(self) -> list[torch.nn.Parameter]:
        """What the optimiser moves: the encoder's parameters, then the prior's."""
        prior = self.score_prior.prior.parameters() if self.score_prior is not None else []
        return [*self.encoder.parameters(), *prior]

    # -- start-up ----------------------------------------------------------------------

    def bootstrap(self, store: DecayedGraphStore) -> None:
        """Rebuild the graph mirror from the store (one scan), registering unknown ids.

        Ids the registry already holds (e.g. from a loaded checkpoint) keep their rows and
        last-seen times; new ones are added oldest edge first. Call after
        :meth:`load_state_dict`, which discards the mirror.
        """
        with self._lock:
            self.mirror = GraphMirror(self.behaviours, self.epsilon)
            # No trend yet (no checkpoint): each stored edge counts its weight at its time.
            prior = self.score_prior
            counting = prior is not None and prior.trend.is_empty()
            edges = sorted(store_user_item_edges(store), key=lambda e: e.state[1])
            for chunk in _chunks(edges, _BOOTSTRAP_CHUNK):
                now = chunk[-1].state[1]
                users = self._rows_or_assign("user", [e.user_id for e in chunk], now)
                items = self._rows_or_assign("item", [e.item_id for e in chunk], now)
                self._absorb_evictions()
                self.mirror.load_edges(chunk, users, items)
                times = torch.tensor([e.state[1] for e in chunk], dtype=torch.long)
                self._note_event_times(users, items, times)
                if counting and prior is not None:
                    mass = torch.tensor([e.state[0] for e in chunk], dtype=torch.float64)
                    prior.count(items, times, mass)
            if counting and prior is not None:
                prior.from_store = True
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
        self,
        interactions: Sequence[Interaction],
        partitions: Sequence[int] | None = None,
        in_graph: bool = False,
    ) -> TrainReport:
        """Absorb one (possibly coalesced) micro-batch of applied events and fine-tune.

        ``partitions`` holds each event's source partition (None: all partition 0); the
        graph ages each partition's edges by that partition's own stream time.
        ``in_graph``: the events' edges are in the mirror already (:meth:`bootstrap` loaded
        them from the store, e.g. events read back after a restart): they are trained on
        and their nodes reported, but not merged a second time.
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
                if in_graph:
                    batch = self.mirror.positives(events, users, items)
                else:
                    parts = None if partitions is None else [partitions[k] for k in chosen]
                    batch = self.mirror.apply(events, users, items, parts)
                self.encoder.observe(batch.to(self.device))
                known = ((users >= 0) & (items >= 0)).tolist()
                reflected = [k for k, ok in zip(chosen, known, strict=True) if ok]
            # Trained against what was rising before this batch came (no self-counting),
            # published with the batch counted. Events read back after a restart were
            # counted by bootstrap when it rebuilt the trend from the store.
            prior = self.score_prior
            trend = prior.table(self.encoder.num_items) if prior is not None else None
            if events and prior is not None and not (in_graph and prior.from_store):
                mass = torch.tensor([self.behaviours[e.event_type].beta * e.weight for e in events])
                prior.count(items, torch.tensor([e.ts for e in events]), mass)
            graph = self._graph()
            generator = torch.Generator().manual_seed(_seed(self.settings.seed, self.model_version))
            replay = torch.zeros(0, dtype=torch.long, device=self.device)
            if len(batch):
                wanted = round(self.settings.replay_ratio * len(batch))
                older_than = int(batch.times.min())
                replay = sample_replay(graph, wanted, generator, older_than=older_than)
            pos_users = torch.cat([batch.users.to(self.device), graph.users[replay]])
            pos_items = torch.cat([batch.items.to(self.device), graph.items[replay]])
            positives = (pos_users, pos_items)
            loss, steps = self._train(
                graph,
                positives,
                self.settings.steps_per_batch,
                generator,
                None if trend is None else (trend, torch.zeros_like(pos_users)),
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

    def stored_edges(self, newer_than_ms: int | None = None) -> list[Interaction]:
        """The mirror's edges whose newest event is after ``newer_than_ms`` (all: ``None``),
        one interaction each at that event's time, for :meth:`learn` with ``in_graph``."""
        with self._lock:
            users, items, relations, times = self.mirror.edges_since(newer_than_ms)
            names = self.mirror.relation_names
            return [
                Interaction(user, item, names[r], t)
                for user, item, r, t in zip(
                    self.registry.ids("user", users),
                    self.registry.ids("item", items),
                    relations.tolist(),
                    times.tolist(),
                    strict=True,
                )
            ]

    def fit(self, epochs: int) -> TrainReport:
        """Train from freshly reset parameters over every edge of the current graph."""
        if epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {epochs!r}")
        with self._lock:
            start = time.perf_counter()
            self.encoder.reset_parameters()
            self.encoder.reset_state()
            if self.score_prior is not None:
                self.score_prior.prior.reset_parameters()
            self.optimizer = torch.optim.Adam(self._parameters(), lr=self.settings.lr)
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
            positives = (graph.users, graph.items)
            history = None
            if self.score_prior is not None:  # the same edges, unweighted by user recency
                history = self.score_prior.history(self._snapshot(prune=False))
            loss, steps = self._train(graph, positives, epochs, generator, history, capped=False)
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
        self.publish.note_event_times("user", users, times)
        self.publish.note_event_times("item", items, times)

    def _event_times(self, kind: str, ids: Sequence[str]) -> list[int]:
        return self.publish.event_times(kind, self.registry.rows(kind, ids))

    def _graph(self, prune: bool = True) -> BipartiteGraph:
        """The decayed graph as the encoder sees it (a user's latest edges weigh more)."""
        graph = self._snapshot(prune)
        return user_recency(graph, self.settings.user_recency_half_life_ms)

    def _snapshot(self, prune: bool = True) -> BipartiteGraph:
        """The decayed graph as the store holds it, on the device."""
        graph = self.mirror.snapshot(self.encoder.num_users, self.encoder.num_items, prune=prune)
        return graph.to(self.device)

    def _absorb_evictions(self) -> None:
        """Rows evicted to make room for new ids: forget their edges and their vectors."""
        self._grow()
        users, items = self.registry.pop_evicted("user"), self.registry.pop_evicted("item")
        if users.numel() == 0 and items.numel() == 0:
            return
        self.mirror.drop_rows(users, items)
        self.encoder.reset_rows(users.to(self.device), items.to(self.device))
        if self.score_prior is not None:
            self.score_prior.trend.reset_rows(items)
        # Adam moments of the row are not reset: an evicted row went unseen for a TTL, so
        # its first moment has decayed to ~0 and no gradient history carries over.
        self.publish.forget("user", users)
        self.publish.forget("item", items)

    def _grow(self) -> None:
        users, items = self.registry.size("user"), self.registry.size("item")
        if users > self.encoder.num_users or items > self.encoder.num_items:
            self.encoder.grow(users, items)
            self.optimizer = grown_adam(self.optimizer, self._parameters(), self.settings.lr)
        self.publish.grow("user", self.encoder.num_users)
        self.publish.grow("item", self.encoder.num_items)

    def _train(
        self,
        graph: BipartiteGraph,
        positives: tuple[Tensor, Tensor],
        passes: int,
        generator: torch.Generator,
        trend: Trend | None,
        capped: bool = True,
    ) -> tuple[float, int]:
        num_items = self.registry.live("item")
        return self._objective.train(
            self.encoder,
            self.optimizer,
            graph,
            positives,
            num_items,
            passes,
            generator,
            trend,
            capped,
        )

    def _embed_all(self, graph: BipartiteGraph) -> dict[str, Tensor]:
        users = torch.arange(self.registry.live("user"), device=self.device)
        items = torch.arange(self.registry.live("item"), device=self.device)
        with self._amp.autocast():
            user_vec, item_vec = self.encoder.embed(graph, users, items)
        prior = self.score_prior
        table = prior.table(self.encoder.num_items) if prior is not None else None
        with torch.no_grad():
            user_vec, item_vec = self._objective.with_prior(
                user_vec.float(),
                item_vec.float(),
                items,
                None if table is None else (table, torch.zeros_like(items)),
            )
        return {"user": user_vec, "item": item_vec}

    def _refresh(
        self, graph: BipartiteGraph, touched: Mapping[str, Tensor] | None = None
    ) -> dict[str, list[str]]:
        """Re-embed every live row and report what :class:`PublishPolicy` selects: the
        ``touched`` rows (those with new events) always, others once they moved past the
        threshold.

        Re-embedding everything (one propagation, the cost of one training forward) is the
        simplest exact rule: Adam's momentum moves rows that got no gradient this step,
        and new edges and decay renormalise LightGCN's adjacency around every touched
        node, so "L hops of a touched node" would miss real changes.
        """
        self._latest = self._embed_all(graph)
        return {
            kind: self.registry.ids(
                kind,
                self.publish.select(kind, vectors, None if touched is None else touched[kind]),
            )
            for kind, vectors in self._latest.items()
        }

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
            out = torch.zeros(len(rows), self.settings.out_dim)
            known = rows >= 0
            out[known] = table[rows[known]]
            return out

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
                "encoder": cpu_copy(self.encoder.state_dict()),
                "optimizer": cpu_copy(self.optimizer.state_dict()),
                "scaler": cpu_copy(self._amp.scaler.state_dict()),
                "registry": self.registry.state_dict(),
                "model_version": self.model_version,
                **cpu_copy(self.publish.state_dict()),
                "score_prior": self.score_prior.state_dict() if self.score_prior else None,
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; then call :meth:`bootstrap` to rebuild the graph."""
        with self._lock:
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"trainer state format {state.get('format')!r} is not 1")
            for key, mine in (("encoder_name", self.settings.encoder), ("dim", self.settings.dim)):
                if state[key] != mine:
                    raise ConfigError(f"checkpoint {key} is {state[key]!r}, settings say {mine!r}")
            saved_prior = state.get("score_prior")
            if self.score_prior is None and saved_prior is not None:
                raise ConfigError("checkpoint has a score prior, settings have no trend half-lives")
            with model_config_errors():
                self.registry.load_state_dict(state["registry"])
            self.encoder = self._build_encoder()
            self.encoder.grow(*state["encoder_rows"])
            self.encoder.load_state_dict(state["encoder"])
            self.score_prior = self._build_prior()
            if self.score_prior is not None:
                self.score_prior.load_state_dict(saved_prior)
            self.optimizer = torch.optim.Adam(self._parameters(), lr=self.settings.lr)
            self.optimizer.load_state_dict(state["optimizer"])
            if state["scaler"]:
                self._amp.scaler.load_state_dict(state["scaler"])
            self.model_version = int(state["model_version"])
            self.publish.load_state_dict(state)
            self.mirror = GraphMirror(self.behaviours, self.epsilon)
            self._latest = None
            self._grow()


def _empty_batch() -> EdgeBatch:
    long = torch.zeros(0, dtype=torch.long)
    return EdgeBatch(long, long, long, torch.zeros(0), long)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
