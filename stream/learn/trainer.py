"""Incremental fine-tuning of an encoder on the decayed graph, one micro-batch at a time.

:class:`IncrementalTrainer` owns the learning path: the id registry, the in-memory graph
mirror, the encoder and its optimiser. Each :meth:`IncrementalTrainer.learn` call

1. hands rows to new ids (evicted rows are re-initialised first) and grows the tables,
2. merges the events into the mirror,
3. trains on the new edges plus a replay sample of older edges drawn ∝ decayed weight
   (a call with more than its steps can take: a share of each, in proportion),
   against sampled negatives, for a few Adam steps: on each step's sampled neighbourhood
   with row-wise Adam (``step_scope`` ``local``, :mod:`stream.learn.local_step`), or on the
   whole graph with dense Adam (``full``), then lets the encoder observe the new edges,
4. re-embeds the rows that can have moved (``local``: those within ``layers`` hops of a
   moved row; ``full``: all), reports those that moved more than ``publish_threshold``
   (L2) since they were last reported, and bumps ``model_version``.

Steps 1-2 are :meth:`IncrementalTrainer.reflect`'s first half and 3-4
:meth:`IncrementalTrainer.step` (or :meth:`IncrementalTrainer.step_behind`, its compute
outside the lock): a worker with ``reflect_before_step`` publishes the batch's users
re-embedded from their own edges between the two (:mod:`stream.learn.reflect`).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from models.base import BipartiteGraph, EdgeBatch, Encoder, PartialSums
from models.ids import KINDS, IdRegistry, RegistryCounts
from models.prior import TrendFeatures
from models.resolver import encoder_class
from models.sampling import sample_replay
from stream.behaviours import SOCIAL_EVENT_TYPES, Behaviour
from stream.errors import model_config_errors
from stream.events import Interaction
from stream.learn.behind import step_behind
from stream.learn.bootstrap import rebuild_mirror, stored_interactions
from stream.learn.changelog_fold import Change, Folded, fold_changes
from stream.learn.device import MixedPrecision, resolve_device
from stream.learn.graph_mirror import GraphMirror
from stream.learn.graph_view import user_recency
from stream.learn.local_step import LocalStep
from stream.learn.objective import Objective, Trend
from stream.learn.optimiser import grown_optimiser, new_optimiser
from stream.learn.publish_policy import PublishPolicy
from stream.learn.reflect import reflect_rows
from stream.learn.refresh import embed_all, refresh
from stream.learn.report import TrainReport
from stream.learn.score_prior import TrendPrior
from stream.learn.trainer_state import restore_trainer, trainer_state
from stream.settings.training import TrainerSettings
from stream.state.graph_store import DecayedGraphStore

if TYPE_CHECKING:
    from stream.learn.ranks import Ranks


# Edges per observe call when fit replays the graph into an encoder's streaming state.
FIT_OBSERVE_EDGES = 1000


def _seed(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % (2**63 - 1)
    return value


@contextlib.contextmanager
def _drawing_from(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's global generators (this device's too) seeded here, and restored after.

    Encoders draw their layer weights from them when built and when reset (PyG's
    ``reset_parameters``); seeded, a trainer depends on its settings alone, never on what
    ran before it in the process (an evaluation's other methods, another trainer).
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


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
        ranks: the ``torch.distributed`` job this trainer is a rank of (None: alone);
            see :mod:`stream.learn.ranks`.
    """

    def __init__(
        self,
        settings: TrainerSettings,
        behaviours: Mapping[str, Behaviour],
        epsilon: float,
        ranks: Ranks | None = None,
    ) -> None:
        self.settings = settings
        self.behaviours = MappingProxyType(dict(behaviours))
        self.epsilon = epsilon
        self.device = resolve_device(settings.device)
        self._amp = MixedPrecision(self.device, settings.mixed_precision)
        self._objective = Objective(settings, self._amp, self.device)
        self._lock = threading.RLock()
        # The encoder's parameters and the optimiser: held with the lock by every step, and
        # without it by the compute of a step behind (stream.learn.behind), which reflects
        # run beside. Taken after the lock, never before it.
        self._params_lock = threading.RLock()
        with model_config_errors():
            self.registry = IdRegistry(settings.max_users, settings.max_items, settings.id_ttl_ms)
        self.mirror = self.new_mirror()
        self.encoder = self._build_encoder()
        self.score_prior = self._build_prior()
        self.optimizer = self._new_optimiser()
        self.model_version = 0
        self.publish = PublishPolicy(
            settings.out_dim, self.device, settings.publish_threshold, settings.max_drift_reports
        )
        self._latest: dict[str, Tensor] | None = None  # vectors after the last learn/fit
        # Keep each full propagation's partial sums for :meth:`reflect` (two more tables
        # of every row; the worker sets it with reflect_before_step). None after a local
        # re-embedding, a restore or a rebuilt mirror: no reflect until the next.
        self.keep_partial_sums = False
        self._partial: PartialSums | None = None
        # users reflected while a step behind computes (stream.learn.behind), else None
        self.reflected_behind: list[Tensor] | None = None
        self._reset_rows: dict[str, list[Tensor]] = {k: [] for k in KINDS}  # since then
        # rows the last refresh re-embedded, by kind (None: all)
        self.reembedded: dict[str, Tensor | None] = {k: None for k in KINDS}
        self.last_step: LocalStep | None = None  # the last learn call's, if local
        self.sweep_cursor = {k: 0 for k in KINDS}  # next row a bounded refresh sweeps
        self.ranks = ranks
        self._objective.ranks = ranks
        self.check_ranks()

    def new_mirror(self) -> GraphMirror:
        """An empty graph mirror whose index sees the graph as this trainer does."""
        return GraphMirror(self.behaviours, self.epsilon, self.settings.user_recency_half_life_ms)

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
        with model_config_errors(), _drawing_from(s.seed, torch.device("cpu")):
            encoder = cls(len(self.behaviours), dim=s.dim, **kwargs)
        return encoder.to(self.device)

    def _build_prior(self) -> TrendPrior | None:
        """The score prior (:mod:`models.prior`), when trend half-lives are set."""
        if not self.settings.trend_half_lives_ms:
            return None
        decay = [self.behaviours[name].half_life_ms for name in self.mirror.relation_names]
        prior = TrendPrior(self.settings.trend_half_lives_ms, decay, self.device)
        self._objective.prior = prior.prior
        return prior

    @property
    def scope(self) -> str:
        """The step scope in force: ``local`` only where the encoder has a local step."""
        return self.settings.step_scope if self.encoder.local_step else "full"

    def _new_optimiser(self) -> torch.optim.Optimizer:
        rows = self.encoder.row_parameters()
        return new_optimiser(self.scope, self._parameters(), rows, self.settings.lr)

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
            rebuild_mirror(self, store)

    def fold(self, changes: Sequence[Change], topic: str) -> Folded:
        """Fold graph changelog records into the mirror (``streamgnn train``); returns the
        edges set, to :meth:`learn` with ``in_graph`` (:mod:`stream.learn.changelog_fold`)."""
        with self._lock:
            return fold_changes(self, changes, topic)

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
            return self._step(self._absorb(interactions, partitions, in_graph))

    def reflect(
        self,
        interactions: Sequence[Interaction],
        partitions: Sequence[int] | None = None,
        in_graph: bool = False,
    ) -> tuple[Absorbed, TrainReport | None]:
        """:meth:`learn`'s first half, and its rows' vectors before the step: absorb the
        events, then re-embed the rows with new events from their own edges and the last
        full propagation's partial sums (:mod:`stream.learn.reflect`). Returns the absorbed
        events, to train on with :meth:`step`, and the report of the rows to publish now
        (None: no partial sums to read, nothing was re-embedded)."""
        with self._lock:
            absorbed = self._absorb(interactions, partitions, in_graph)
            batch = absorbed.batch
            changed = reflect_rows(self, batch.users) if len(batch) else None
            if changed is None:
                return absorbed, None
            absorbed = replace(absorbed, unpublished_users=_NO_ROWS)
            self.model_version += 1
            report = self._report(
                absorbed, changed, replayed=0, steps=0, loss=math.nan, with_vectors=True
            )
            return absorbed, report

    def step(self, absorbed: Absorbed) -> TrainReport:
        """:meth:`learn`'s second half: fine-tune on events :meth:`reflect` absorbed."""
        with self._lock:
            return self._step(absorbed)

    def step_behind(
        self, absorbed: Absorbed, deliver: Callable[[TrainReport], object] = lambda r: None
    ) -> TrainReport:
        """:meth:`step`, its optimiser steps and propagation computed outside the lock, so
        :meth:`reflect` runs meanwhile (:mod:`stream.learn.behind`; a full step of an
        encoder with partial sums, alone, else :meth:`step`); ``deliver`` gets the report
        as its version is taken."""
        return step_behind(self, absorbed, deliver)

    def seed_of(self, version: int) -> int:
        """The seed of the draws of the step taken at model ``version``."""
        return _seed(self.settings.seed, version)

    def _absorb(
        self,
        interactions: Sequence[Interaction],
        partitions: Sequence[int] | None,
        in_graph: bool,
    ) -> Absorbed:
        """Hand rows to the events' ids and merge their edges into the mirror."""
        start = time.perf_counter()
        before = {k: self.registry.counts(k) for k in KINDS}
        chosen = [k for k, e in enumerate(interactions) if e.event_type not in SOCIAL_EVENT_TYPES]
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
            known = ((users >= 0) & (items >= 0)).tolist()
            reflected = [k for k, ok in zip(chosen, known, strict=True) if ok]
        # Trained against what was rising before this batch came (no self-counting),
        # published with the batch counted. Events read back after a restart were
        # counted by bootstrap when it rebuilt the trend from the store.
        prior = self.score_prior
        trend = prior.snapshot(self.encoder.num_items) if prior is not None else None
        if events and prior is not None and not (in_graph and prior.from_store):
            mass = torch.tensor([self.behaviours[e.event_type].beta * e.weight for e in events])
            prior.count(items, torch.tensor([e.ts for e in events]), mass)
        return Absorbed(
            len(interactions), batch, reflected, before, trend, self.model_version, start
        )

    def _step(self, absorbed: Absorbed) -> TrainReport:
        """Train on the absorbed events plus replay, re-embed, report what to publish."""
        with self._params_lock:
            return self._step_holding(absorbed)

    def _step_holding(self, absorbed: Absorbed) -> TrainReport:
        batch, trend = absorbed.batch, absorbed.trend
        graph = _Once(self._graph)  # the whole view: only a full step or refresh builds it
        generator = torch.Generator().manual_seed(self.seed_of(absorbed.version))
        positives, replayed = self._positives(batch, graph, generator)
        local = self._local_step(graph, generator, positives, absorbed.version)
        loss, steps = self._train(
            graph,
            positives,
            self.settings.steps_per_batch,
            generator,
            None if trend is None else (trend, torch.zeros_like(positives[0])),
            local=local,
        )
        if self.ranks is not None and local is not None:
            self.ranks.merge_moved(local)  # re-embed what any rank's share moved
        # Streaming state absorbs the batch after the step that trained on it (TGN's
        # order): observed before, a positive's own event would be in the memory that
        # scores it. The re-embedding below sees it.
        if len(batch):
            self.encoder.observe(batch.to(self.device))
        touched = {"user": batch.users, "item": batch.items}
        changed = (
            self._refresh(graph, touched, local)
            if steps or len(batch)
            else {k: _NO_ROWS for k in KINDS}
        )
        self.model_version += 1
        return self._report(absorbed, changed, replayed, steps, loss, absorbed.reflected)

    def _positives(
        self, batch: EdgeBatch, graph: Callable[[], BipartiteGraph], generator: torch.Generator
    ) -> tuple[tuple[Tensor, Tensor], int]:
        """The step's positives: the batch's edges, then older ones replayed (their count).

        A call that trains on fewer positives than that (``max_steps_per_batch`` steps of
        ``batch_size``: a batch coalesced under load) keeps only those, new and replayed in
        the same proportion: a uniform share of the new edges, and only as many replay
        draws, not a draw per new edge of which most would go untrained (the new edges'
        rows are re-embedded and published all the same)."""
        s = self.settings
        new_users, new_items = batch.users, batch.items
        replay_users = replay_items = _NO_ROWS
        if len(batch):
            wanted = round(s.replay_ratio * len(batch))
            room = s.max_steps_per_batch * s.batch_size
            if room and len(batch) + wanted > room:
                kept = max(1, round(room * len(batch) / (len(batch) + wanted)))
                chosen = torch.randperm(len(batch), generator=generator)[:kept]
                new_users, new_items = new_users[chosen], new_items[chosen]
                wanted = room - kept
            older_than = int(batch.times.min())
            replay_users, replay_items = self._replay(graph, wanted, generator, older_than)
        users = torch.cat([new_users, replay_users]).to(self.device)
        items = torch.cat([new_items, replay_items]).to(self.device)
        return (users, items), int(replay_users.numel())

    def _report(
        self,
        absorbed: Absorbed,
        changed: Mapping[str, Tensor],
        replayed: int,
        steps: int,
        loss: float,
        reflected: list[int] | None = None,
        with_vectors: bool = False,
    ) -> TrainReport:
        """The call's report; ids evicted and refused count once, with ``reflected`` (the
        step's report, not :meth:`reflect`'s); ``with_vectors``: the changed ids' vectors
        in it (read now, under the lock: a step behind may move them before a publish)."""
        before = absorbed.before
        after = {k: self.registry.counts(k) for k in KINDS}
        ids = {k: self.registry.ids(k, changed[k]) for k in KINDS}
        counted = reflected is not None
        return TrainReport(
            events=absorbed.events,
            edges=len(absorbed.batch),
            replayed=replayed,
            steps=steps,
            loss=loss,
            seconds=time.perf_counter() - absorbed.start,
            changed_users=ids["user"],
            changed_items=ids["item"],
            model_version=self.model_version,
            watermark=self.mirror.watermark,
            evicted_users=after["user"].evicted - before["user"].evicted if counted else 0,
            evicted_items=after["item"].evicted - before["item"].evicted if counted else 0,
            refused_users=after["user"].refused - before["user"].refused if counted else 0,
            refused_items=after["item"].refused - before["item"].refused if counted else 0,
            live_users=after["user"].live,
            live_items=after["item"].live,
            changed_user_event_ms=self.publish.event_times("user", changed["user"]),
            changed_item_event_ms=self.publish.event_times("item", changed["item"]),
            reflected=absorbed.reflected if reflected is None else reflected,
            vectors={k: self._rows_vectors(k, changed[k]) for k in KINDS} if with_vectors else None,
        )

    def stored_edges(self, newer_than_ms: int | None = None) -> list[Interaction]:
        """The mirror's edges whose newest event is after ``newer_than_ms`` (all: ``None``),
        one interaction each at that event's time, for :meth:`learn` with ``in_graph``."""
        with self._lock:
            return stored_interactions(self, newer_than_ms)

    def fit(self, epochs: int) -> TrainReport:
        """Train from freshly reset parameters over every edge of the current graph."""
        if epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {epochs!r}")
        with self._lock:
            start = time.perf_counter()
            with _drawing_from(_seed(self.settings.seed, self.model_version), self.device):
                self.encoder.reset_parameters()
            self.encoder.reset_state()
            if self.score_prior is not None:
                self.score_prior.prior.reset_parameters()
            self.optimizer = self._new_optimiser()
            graph = self._graph()
            # Streaming state (TGN's memory) sees the graph in time order, in slices the size
            # of a live micro-batch: one observe of every edge would keep only each node's
            # last message, so every memory would start from one step of zeros.
            order = torch.argsort(graph.times, stable=True)
            for part in torch.split(order, FIT_OBSERVE_EDGES):
                self.encoder.observe(
                    EdgeBatch(
                        graph.users[part],
                        graph.items[part],
                        graph.relations[part],
                        graph.weights[part],
                        graph.times[part],
                    )
                )
            generator = torch.Generator().manual_seed(_seed(self.settings.seed, self.model_version))
            positives = (graph.users, graph.items)
            history = None
            if self.score_prior is not None:  # the same edges, unweighted by user recency
                history = self.score_prior.history(self._snapshot(prune=False))
            loss, steps = self._train(
                lambda: graph, positives, epochs, generator, history, capped=False
            )
            changed = self._refresh(lambda: graph)
            self.model_version += 1
            return TrainReport(
                events=0,
                edges=0,
                replayed=graph.num_edges,
                steps=steps,
                loss=loss,
                seconds=time.perf_counter() - start,
                changed_users=self.registry.ids("user", changed["user"]),
                changed_items=self.registry.ids("item", changed["item"]),
                model_version=self.model_version,
                watermark=self.mirror.watermark,
                live_users=self.registry.live("user"),
                live_items=self.registry.live("item"),
            )

    def _note_event_times(self, users: Tensor, items: Tensor, times: Tensor) -> None:
        """Raise each row's newest own event time (refused ids, row -1, are skipped)."""
        self._grow()
        self.publish.note_event_times("user", users, times)
        self.publish.note_event_times("item", items, times)

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
        self._reset_rows["user"].append(users)
        self._reset_rows["item"].append(items)
        with self._params_lock:  # a step behind computing: after it
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
            with self._params_lock:  # a step behind computing: after it
                self.encoder.grow(users, items)
                self.optimizer = grown_optimiser(
                    self.optimizer,
                    self.scope,
                    self._parameters(),
                    self.encoder.row_parameters(),
                    self.settings.lr,
                )
        self.publish.grow("user", self.encoder.num_users)
        self.publish.grow("item", self.encoder.num_items)

    def _train(
        self,
        graph: Callable[[], BipartiteGraph],
        positives: tuple[Tensor, Tensor],
        passes: int,
        generator: torch.Generator,
        trend: Trend | None,
        capped: bool = True,
        local: LocalStep | None = None,
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
            local,
        )

    def _replay(
        self,
        graph: Callable[[], BipartiteGraph],
        wanted: int,
        generator: torch.Generator,
        older_than: int,
    ) -> tuple[Tensor, Tensor]:
        """``(users, items)`` of older edges drawn ∝ their weight in the trainer's view.

        A full step draws over the whole view it builds anyway, in its canonical order, so a
        resumed trainer draws exactly what one run straight through does; a local step
        draws from the mirror's index without touching every edge (the same distribution;
        the draw follows slot order, which a restart may change).
        """
        if self.scope == "local":
            return self.mirror.sample_replay(wanted, generator, older_than=older_than)
        whole = graph()
        replay = sample_replay(whole, wanted, generator, older_than=older_than)
        return whole.users[replay].cpu(), whole.items[replay].cpu()

    def _local_step(
        self,
        graph: Callable[[], BipartiteGraph],
        generator: torch.Generator,
        positives: tuple[Tensor, Tensor],
        version: int,
    ) -> LocalStep | None:
        """This learn call's local step (its positives seed a bounded re-embedding), or
        None: a full one (by settings, by encoder, or a periodic full refresh, by the
        ``version`` the call's events were absorbed at)."""
        s = self.settings
        every = s.full_refresh_every
        self.last_step = None
        if self.scope != "local" or (every and (version + 1) % every == 0):
            return None
        hops = int(getattr(self.encoder, "num_layers", s.layers))
        view = self.mirror.view(self.encoder.num_users, self.encoder.num_items)
        if self.ranks is not None:  # neighbourhoods sampled per rank
            generator = self.ranks.own_generator(generator, salt=2)
        if s.layer_history:
            self.encoder.keep_layer_history()  # filled by the next embedding of every row
        self.last_step = LocalStep(
            view,
            graph,
            self.mirror.num_edges,
            hops,
            s.fanout,
            generator,
            positives,
            history=s.layer_history,
        )
        return self.last_step

    def _refresh(
        self,
        graph: Callable[[], BipartiteGraph],
        touched: Mapping[str, Tensor] | None = None,
        local: LocalStep | None = None,
    ) -> dict[str, Tensor]:
        """Re-embed what can have moved and the rows to publish
        (:func:`stream.learn.refresh.refresh`); in a job, this rank's keys of those."""
        changed = refresh(self, graph, touched, local)
        if self.ranks is not None:  # each key is published by one rank
            changed = {
                kind: rows[
                    torch.tensor(
                        self.ranks.owned(self.registry.ids(kind, rows)),
                        dtype=torch.long,
                        device=rows.device,
                    )
                ]
                for kind, rows in changed.items()
            }
        return changed

    def check_ranks(self) -> None:
        """In a job: fail (:class:`stream.learn.ranks.RanksDiverged`) unless every rank
        holds the same settings (but the device) and parameters (a collective: every rank
        calls it)."""
        if self.ranks is not None:
            with self._lock:
                self.ranks.check_model(self.settings, self._parameters())

    # -- read paths (never change anything) ------------------------------------------------

    def _current(self) -> dict[str, Tensor]:
        if self._latest is not None:
            return self._latest
        return embed_all(self, self._graph(prune=False))[0]  # not cached: reads never write

    def vectors(self, kind: str, ids: Sequence[str]) -> Tensor:
        """``[len(ids), dim]`` float32 vectors on the CPU, as of the last learn or fit.

        An id the registry does not hold (never seen, evicted or refused) gets a row of
        zeros; real vectors are unit length, so ``v.norm(dim=1) == 0`` marks the unknown.
        """
        with self._lock:
            rows = self.registry.rows(kind, ids)
            out = torch.zeros(len(rows), self.settings.out_dim)
            known = rows >= 0
            out[known] = self._rows_vectors(kind, rows[known])
            return out

    def reported_again(self, kind: str) -> tuple[list[str], Tensor, list[int]]:
        """Every id of ``kind`` whose vector was reported (this rank's, in a job), with its
        vector as of the last learn and its newest own event time; marked reported with
        that vector. For an embedding topic that lost what was published (deleted and
        created again): the ids never reported are on their way already."""
        with self._lock:
            rows = self.publish.reported_rows(kind, self.registry.live(kind))
            ids = self.registry.ids(kind, rows)
            if self.ranks is not None:
                owned = self.ranks.owned(ids)
                rows, ids = rows[owned], [ids[k] for k in owned]
            vectors = self._rows_vectors(kind, rows)
            self.publish.mark_reported(kind, rows, vectors)
            return ids, vectors, self.publish.event_times(kind, rows)

    def _rows_vectors(self, kind: str, rows: Tensor) -> Tensor:
        """:meth:`vectors` of live rows (float32, on the CPU)."""
        table = self._current()[kind]
        return table.index_select(0, rows.to(table.device)).float().cpu()

    # -- checkpoint --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, copied to the CPU (tensors and plain data only);
        see :func:`stream.learn.trainer_state.trainer_state`."""
        with self._lock, self._params_lock:
            return trainer_state(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; then call :meth:`bootstrap` to rebuild the graph."""
        with self._lock:
            restore_trainer(self, state)


@dataclass(frozen=True)
class Absorbed:
    """Events :meth:`IncrementalTrainer.reflect` merged into the graph, not trained on yet."""

    events: int  # interactions given
    batch: EdgeBatch  # their edges (the positives)
    reflected: list[int]  # indices of the events with a row for both ids
    before: dict[str, RegistryCounts]  # the registry's counts before them
    trend: TrendFeatures | None  # the score prior's features before them (trained against)
    # the model version then: seeds the step's draws, as in a learn call, whether or not
    # a reflect published in between
    version: int
    start: float  # time.perf_counter() when absorbing began
    # users the step must publish: the batch's (None), unless a reflect published them
    unpublished_users: Tensor | None = None

    @property
    def users_to_publish(self) -> Tensor:
        return self.batch.users if self.unpublished_users is None else self.unpublished_users


def merged(absorbed: Sequence[Absorbed]) -> Absorbed:
    """Batches absorbed one after another, as one (for one step: a slow step coalesces)."""
    first = absorbed[0]
    if len(absorbed) == 1:
        return first
    batch = EdgeBatch.concat([a.batch for a in absorbed])
    events = sum(a.events for a in absorbed)
    unpublished = torch.cat([a.users_to_publish for a in absorbed])
    # the trend before all of them
    return Absorbed(
        events, batch, [], first.before, first.trend, first.version, first.start, unpublished
    )


_NO_ROWS = torch.zeros(0, dtype=torch.long)


class _Once:
    """A value computed on first call, then kept (the whole graph view, per learn call)."""

    def __init__(self, make: Callable[[], BipartiteGraph]) -> None:
        self._make = make
        self._value: BipartiteGraph | None = None

    def __call__(self) -> BipartiteGraph:
        if self._value is None:
            self._value = self._make()
        return self._value


def _empty_batch() -> EdgeBatch:
    long = torch.zeros(0, dtype=torch.long)
    return EdgeBatch(long, long, long, torch.zeros(0), long)
