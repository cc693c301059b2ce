"""The worker's training half: a thread that fine-tunes on applied events and publishes.

The ingest loop hands every store write to :meth:`TrainingLoop.on_applied`, which only
appends to a :class:`TrainingBacklog` and returns: ingestion never waits on a training
step. The trainer thread takes the *whole* backlog at once, so when a step is slower
than the stream the micro-batches coalesce into one larger batch instead of queueing
up. The backlog is bounded: once it holds ``max_backlog_events`` the ingest loop stops
fetching (:meth:`TrainingLoop.has_room`) and the excess waits in Kafka as consumer lag.

After each step the vectors that moved are published (``EmbeddingPublisher.publish``
returns once every record is acked; a broker outage is retried, never dropped); with
``reflect_before_step`` the users of each batch's events are published first, re-embedded
from their own edges (:mod:`stream.learn.reflect`), and the step runs behind in a learner
thread (:mod:`stream.learner`) whose reports this thread publishes. Then a
checkpoint is written when ``checkpoint_interval_s`` has passed, and always on
:meth:`TrainingLoop.stop`. A checkpoint holds the trainer's complete state, the source
offsets it has trained through and the settings that give its vectors their meaning.

On start (:meth:`TrainingLoop.resume`) the newest good checkpoint is checked against the
settings (:mod:`stream.learn.compatibility`: a mismatch stops the worker naming each
setting, or with ``on_checkpoint_mismatch=discard`` moves the checkpoints aside) and
loaded, and the graph mirror is rebuilt from the store. When the store holds events
beyond the checkpoint's offsets, the trainer thread first reads them back from the topic
(:mod:`stream.catch_up`) and trains on them in backlog-sized chunks, publishing every
node they touch, before it takes the live backlog (which meanwhile fills and pauses
ingestion, as a slow step would).

On :meth:`TrainingLoop.stop` a publish still unacked after ``STOP_GRACE_S`` (brokers
refusing or away) is interrupted, in the catch-up too, so the worker ends within seconds
of SIGTERM; then no checkpoint is written (the previous one and the store stay consistent).

An embedding topic deleted under the worker is created again (compacted, as at start), and
a topic that is not the one the vectors were published to (Kafka's topic id: deleted and
created again by anyone, also while the worker was down; checked every checkpoint interval
and on start against the checkpoint's) is given every vector reported so far again, at the
current model version: a consumer that reads it from the beginning finds every live id.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from stream.allocator import pretouch_heap, worker_heap
from stream.catch_up import UntrainedEvents
from stream.errors import (
    EmbeddingTopicGone,
    KafkaAccessError,
    PublishError,
    PublishInterrupted,
    PublishStopped,
    StreamGNNError,
)
from stream.events import Interaction
from stream.ingest import AppliedBatch
from stream.learn.checkpoint import CheckpointStore, Payload
from stream.learn.compatibility import (
    CheckpointMismatchError,
    Conflict,
    conflicts,
    recorded_settings,
)
from stream.learn.ranks import Ranks
from stream.learn.report import TrainReport
from stream.learn.trainer import IncrementalTrainer
from stream.learner import Handed, Learner
from stream.metrics import PipelineMetrics
from stream.publish.publisher import EmbeddingPublisher, NodeVectors
from stream.publish.schema import NodeKind
from stream.settings import Settings
from stream.state.graph_store import DecayedGraphStore

log = logging.getLogger("streamgnn.training")

PUBLISH_RETRY_SECONDS = 1.0
REPUBLISH_CHUNK = 20_000  # records per publish when a topic gets every vector again
# On stop, how long the last publish may wait for acks before it is interrupted: the
# worker must end within 10 s of SIGTERM whatever the brokers do.
STOP_GRACE_S = 2.0


@dataclass
class PendingEvents:
    """Applied events not trained on yet, coalesced across store writes."""

    interactions: list[Interaction] = field(default_factory=list)
    append_times_ms: list[int] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset
    partitions: list[int] = field(default_factory=list)  # each interaction's partition

    def add(self, batch: AppliedBatch) -> None:
        self.interactions.extend(batch.interactions)
        self.append_times_ms.extend(batch.append_times_ms)
        self.partitions.extend(batch.partitions or [0] * len(batch.interactions))
        for partition, offset in batch.positions.items():
            self.positions[partition] = max(offset, self.positions.get(partition, 0))


class TrainingBacklog:
    """Thread-safe hand-off from the ingest loop to the trainer thread.

    >>> backlog = TrainingBacklog(max_events=2)
    >>> backlog.put(AppliedBatch([], [], {0: 5})); backlog.put(AppliedBatch([], [], {0: 9}))
    >>> backlog.take(timeout_s=0).positions
    {0: 9}
    >>> backlog.take(timeout_s=0) is None
    True
    """

    def __init__(self, max_events: int) -> None:
        if max_events <= 0:
            raise ValueError(f"max_events must be > 0, got {max_events!r}")
        self.max_events = max_events
        self._pending = PendingEvents()
        self._batches = 0
        self._ready = threading.Condition()

    def put(self, batch: AppliedBatch) -> None:
        """Queue one store write's events; never blocks on the trainer."""
        with self._ready:
            self._pending.add(batch)
            self._batches += 1
            self._ready.notify()

    def take(self, timeout_s: float) -> PendingEvents | None:
        """Everything queued so far (coalesced), or None if nothing came within the timeout."""
        with self._ready:
            if not self._batches:
                self._ready.wait(timeout_s)
            if not self._batches:
                return None
            taken, self._pending, self._batches = self._pending, PendingEvents(), 0
            return taken

    def __len__(self) -> int:
        with self._ready:
            return len(self._pending.interactions)

    def has_room(self) -> bool:
        return len(self) < self.max_events


class TrainingLoop:
    """Trains on applied events in its own thread and publishes what changed.

    :meth:`resume` (no Kafka: a checkpoint that does not fit fails fast), then
    :meth:`start` with the publisher, then :meth:`on_applied` from the ingest loop, and
    :meth:`stop`.

    Args:
        settings: the process settings (training, publish, store, Kafka topic names).
        store: the worker's graph store; read once on :meth:`resume` to rebuild the graph
            (None for a trainer whose graph comes from elsewhere: ``streamgnn train``'s
            changelog, :mod:`stream.train`, which overrides :meth:`resume`).
        metrics: training, backlog and id-registry metrics.
        on_failure: called from the trainer thread when a step fails unexpectedly (the
            worker then stops and exits non-zero); the exception is also in :attr:`failure`.
    """

    def __init__(
        self,
        settings: Settings,
        store: DecayedGraphStore | None,
        metrics: PipelineMetrics,
        on_failure: Callable[[BaseException], object] = lambda exc: None,
        ranks: Ranks | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._ranks = ranks  # the torchrun job the trainer is a rank of (stream.train_ranks)
        # The topic whose offsets trained_through and the checkpoint hold.
        self.source_topic = settings.kafka.interactions_topic
        # Kafka's id of source_topic when the subclass follows its incarnations (None: not)
        self.source_topic_id: str | None = None
        # Whether the events handed to on_applied are in the trainer's graph already
        # (folded from the changelog by streamgnn train) rather than to be merged.
        self.applied_in_graph = False
        self._metrics = metrics
        self._on_failure = on_failure
        w = settings.worker
        if w.torch_threads:
            torch.set_num_threads(w.torch_threads)  # process-wide: only the trainer uses torch
        self._heap = worker_heap(w)  # process-wide too: the trainer's tensors are its large blocks
        self.backlog = TrainingBacklog(w.max_backlog_events)
        self.checkpoints = CheckpointStore(w.checkpoint_dir, keep=w.checkpoints_kept)
        self.trainer = self._new_trainer()
        # process-wide too: the ingest threads' share of the GIL against the trainer's
        sys.setswitchinterval(switch_interval_s(w.gil_switch_interval_ms, self.trainer.device))
        self.trained_through: dict[int, int] = {}  # partition -> next offset trained
        # partition -> [trained, stored) offsets: in the store, not trained on yet
        self.untrained: dict[int, tuple[int, int]] = {}
        # Newest event time trained as of trained_through: what the store alone can show
        # of untrained events is the edges with a newer event (see _catch_up).
        self._trained_watermark: int | None = None
        self._store_watermark: int | None = None
        self._publisher: EmbeddingPublisher | None = None
        # the embedding topics' ids the checkpoint's reported vectors were published to
        self._published_to: dict[str, str | None] = {}
        self._republish: set[NodeKind] = set()  # kinds whose topic lost the vectors published
        self._topics_checked = time.monotonic()
        self.failure: BaseException | None = None
        self._abandoned = False  # a publish was interrupted by stop(): no final checkpoint
        self._stopping = threading.Event()
        self._heap_warm = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamgnn-trainer", daemon=True)
        self._last_checkpoint = time.monotonic()

    def _new_trainer(self) -> IncrementalTrainer:
        s = self._settings
        trainer = IncrementalTrainer(s.training, s.events.behaviours, s.store.epsilon, self._ranks)
        trainer.keep_partial_sums = s.worker.reflect_before_step
        return trainer

    # -- lifecycle ----------------------------------------------------------------------

    def resume(self) -> None:
        """Load the newest good checkpoint that fits the settings, rebuild the graph mirror
        from the store, and note what the store holds beyond the checkpoint's offsets.

        Raises:
            CheckpointMismatchError: the checkpoint was written under other meaning
                settings (:mod:`stream.learn.compatibility`) and ``on_checkpoint_mismatch``
                is ``fail``; with ``discard`` the checkpoints are moved aside instead.
        """
        if self._store is None:
            raise RuntimeError("TrainingLoop.resume needs the worker's store")
        payload = self._load_checkpoint()
        topic = self.source_topic
        if payload is not None:
            self.trained_through = checkpoint_offsets(payload, topic)
            watermark = payload.get("watermark")
            self._trained_watermark = None if watermark is None else int(watermark)
            log.info(
                "checkpoint loaded: model version %d, trained through %s",
                self.trainer.model_version,
                self.trained_through,
            )
        self.trainer.bootstrap(self._store)
        self._store_watermark = self._store.watermark()
        for (stored_topic, partition), (offset, _) in self._store.positions().items():
            trained = self.trained_through.get(partition, 0)
            if stored_topic == topic and offset > trained:
                self.untrained[partition] = (trained, offset)

    def start(self, publisher: EmbeddingPublisher, ready_timeout_s: float = 60.0) -> None:
        """Start the trainer thread: it trains on :attr:`untrained` first, then the backlog.
        Returns once the thread has warmed its heap (:meth:`warm_heap`), so events come
        after it."""
        self.attach(publisher)
        self._thread.start()
        self._heap_warm.wait(ready_timeout_s)

    def warm_heap(self) -> None:
        """Fault the calling thread's heap allowance in (``pretouch_heap_mib``), once: the
        thread that trains calls it before its first event (stream/allocator.py)."""
        mib = self._settings.worker.pretouch_heap_mib
        try:
            if mib and self._heap["keep_freed_memory"] and not self._heap_warm.is_set():
                seconds = pretouch_heap(mib)
                log.info("heap pretouched: %d MiB in %.2f s", mib, seconds)
        finally:  # start() waits for it, even when it failed (the thread reports that)
            self._heap_warm.set()

    def attach(self, publisher: EmbeddingPublisher) -> None:
        """Publish through ``publisher``, continuing above anything already on the topics
        (the ledger's floor), even when the checkpoint is older than the last publish.
        Without :meth:`start`: the caller trains (:meth:`train_now`, ranks in lockstep)."""
        self._publisher = publisher
        self.trainer.model_version = max(self.trainer.model_version, publisher.min_version - 1)
        recorded = self._published_to
        self._lost(k for k, now in publisher.topic_ids.items() if recorded.get(k, now) != now)

    def train_now(self, pending: PendingEvents) -> None:
        """Train on ``pending`` and publish, in the caller's thread (no backlog)."""
        self._train(pending, in_graph=self.applied_in_graph)
        self._check_topics_when_due()
        self._republish_lost()

    def catch_up_now(self) -> bool:
        """The start's catch-up (:attr:`untrained`) in the caller's thread."""
        return self._catch_up()

    def _load_checkpoint(self) -> Payload | None:
        """The newest good checkpoint, loaded into the trainer, if it fits the settings."""
        payload = self.checkpoints.load_latest()
        if payload is None:
            return None
        found = conflicts(payload, self._settings)
        if not found:
            try:
                self.trainer.load_state_dict(payload["trainer"])
                self._published_to = dict(payload.get("embedding_topics") or {})
                return payload
            except (StreamGNNError, ValueError, RuntimeError, KeyError, TypeError) as exc:
                detail = f"does not load into the model the settings build: {exc}"
                found = [Conflict("trainer state", detail[:600])]
        path = self.checkpoints.loaded
        if self._settings.worker.on_checkpoint_mismatch == "fail":
            raise CheckpointMismatchError(path, found)
        aside, moved = self.checkpoints.set_aside()
        log.warning(
            "checkpoint %s does not match the settings (%s); --on-checkpoint-mismatch "
            "discard: moved %s to %s; training a fresh model",
            path,
            "; ".join(map(str, found)),
            ", ".join(p.name for p in moved),
            aside,
        )
        self.trainer = self._new_trainer()
        return None

    def on_applied(self, batch: AppliedBatch) -> None:
        """The ingest loop's hook: queue and return at once."""
        self.backlog.put(batch)
        self._metrics.train_backlog.set(len(self.backlog))

    def on_restored(self, records: dict[bytes, bytes]) -> None:
        """The ingest worker's hook for a partition restored from the graph changelog:
        fold its edges into the graph (built from the store before the partition was
        checked); their vectors come with the next steps that touch them."""
        self.trainer.fold(list(records.items()), self._settings.kafka.interactions_topic)

    def has_room(self) -> bool:
        """False while the backlog is full: the ingest loop should stop fetching."""
        return self.backlog.has_room()

    def stop(self, timeout_s: float = 300.0, grace_s: float = STOP_GRACE_S) -> None:
        """Train and publish what is queued, write a checkpoint, end the thread.

        During the catch-up only the chunk in progress is finished: the checkpoint then
        covers what was caught up, and the next start reads the rest back.

        A publish still unacked after ``grace_s`` (brokers refusing or away) is interrupted
        so the process stops within seconds; then no checkpoint is written: the previous
        one and the store stay consistent, and the events after its offsets are taken up
        again on the next start.
        """
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(grace_s)
        if self._thread.is_alive() and self._publisher is not None:
            self._publisher.interrupt()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"trainer thread did not finish within {timeout_s} s")
        if self._abandoned:
            log.warning(
                "stopped before the last vectors were published: no checkpoint written; the "
                "store's events after %s are trained on at the next start",
                self.trained_through,
            )
        elif self.failure is None:
            self.checkpoint()

    def checkpoint(self) -> bool:
        """Write a checkpoint; True when it was written.

        A write the disk refuses (full, failing, gone) is logged and counted
        (``streamgnn_checkpoint_failures_total``) and training goes on: the previous
        checkpoint and the store stay consistent (a restart trains again on the store's
        events after that checkpoint's offsets, read back from the topic), and the next
        one is tried ``checkpoint_interval_s`` later.
        """
        topic = self.source_topic
        offsets = {f"{topic}:{p}": offset for p, offset in sorted(self.trained_through.items())}
        payload = {
            "trainer": self.trainer.state_dict(),
            "offsets": offsets,
            "watermark": self._trained_watermark,
            "settings": recorded_settings(self._settings),
            "embedding_topics": {} if self._publisher is None else self._publisher.topic_ids,
            "source_topic_id": self.source_topic_id,
        }
        self._last_checkpoint = time.monotonic()
        try:
            path = self.checkpoints.save(payload)
        except OSError as exc:
            self._metrics.checkpoint_failures.inc()
            then = (
                "a restart starts from the previous one and trains again on the events after it"
                if self._stopping.is_set()
                else "training goes on; the next try in "
                f"{self._settings.worker.checkpoint_interval_s:.0f} s"
            )
            log.error(
                "checkpoint of model version %d not written (%s): %s",
                self.trainer.model_version,
                exc,
                then,
            )
            return False
        log.info("checkpoint %s (model version %d)", path.name, self.trainer.model_version)
        return True

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.warm_heap()
            if self.untrained and not self._catch_up():
                return  # stopped first: the next start reads the rest back
            if self._settings.worker.reflect_before_step:
                self._run_behind()
                return
            while True:
                pending = self.backlog.take(timeout_s=0.05)
                if pending is not None:
                    self._train(pending, in_graph=self.applied_in_graph)
                    self._checkpoint_when_due()
                elif self._stopping.is_set():
                    return
                self._check_topics_when_due()
                self._republish_lost()
        except PublishInterrupted:
            self._abandoned = True
        except BaseException as exc:
            said = KafkaAccessError | PublishStopped  # by the command: no traceback
            if isinstance(exc, said):
                log.error("trainer thread stopped: %s", exc)
            else:
                log.exception("trainer thread failed")
            self.failure = exc
            self._on_failure(exc)

    def _checkpoint_when_due(self) -> None:
        if self.checkpoint_due():
            self.checkpoint()

    def checkpoint_due(self) -> bool:
        """Whether ``checkpoint_interval_s`` has passed since the last checkpoint."""
        interval = self._settings.worker.checkpoint_interval_s
        return time.monotonic() - self._last_checkpoint >= interval

    def _catch_up(self) -> bool:
        """Train on the events the store holds beyond the checkpoint, publishing every node
        they touch; False when stopped first (what was trained is checkpointed on stop)."""
        spans, size = self.untrained, self._settings.worker.max_backlog_events
        log.info("catch-up: training on stored events at offsets %s", spans)
        source = UntrainedEvents(self._settings, spans)
        for chunk in source.chunks(size, self._stopping):
            # No append times: a killed worker may have published these events already,
            # and the freshness histogram counts each event once.
            self._train(PendingEvents(chunk.interactions, [], chunk.positions), in_graph=True)
            self._checkpoint_when_due()
        if not source.complete:
            return False
        if source.missed:
            edges = self.trainer.stored_edges(self._trained_watermark)
            log.warning(
                "catch-up could not read back offsets %s; training instead on the %d stored "
                "edges with an event after %s (late events there are not trained on)",
                source.missed,
                len(edges),
                self._trained_watermark,
            )
            for start in range(0, len(edges), size):
                if self._stopping.is_set():
                    return False
                self._train(PendingEvents(list(edges[start : start + size])), in_graph=True)
                self._checkpoint_when_due()
        self.trained_through.update({p: end for p, (_, end) in spans.items()})
        self._trained_watermark = _newest(self._trained_watermark, self._store_watermark)
        self.untrained = {}
        log.info("catch-up done: trained through %s", self.trained_through)
        return True

    def _run_behind(self) -> None:
        """The live loop with ``reflect_before_step``: reflect and publish each batch's
        users here, step in the learner thread (:mod:`stream.learner`), publish its steps
        here (one thread publishes: versions go up in publish order)."""
        learner = Learner(self.trainer)
        learner.start()
        try:
            while True:
                self._publish_steps(learner)
                pending = self.backlog.take(timeout_s=0.05)
                self._check_topics_when_due()
                if pending is None:
                    if self._stopping.is_set() and learner.idle():
                        return
                    self._republish_lost()
                    continue
                self._metrics.train_backlog.set(len(self.backlog))
                learner.hand(self._reflect(pending, self.applied_in_graph, learner))
                self._checkpoint_when_due()  # waits for a step computing
        finally:
            learner.close()

    def _reflect(self, pending: PendingEvents, in_graph: bool, learner: Learner) -> Handed:
        """Absorb ``pending`` and publish its users' reflected vectors, in version order
        with the steps finished meanwhile; what to step on."""
        partitions = pending.partitions or None
        absorbed, early = self.trainer.reflect(pending.interactions, partitions, in_graph)
        times = pending.append_times_ms
        reflected = [times[k] for k in absorbed.reflected] if times else []
        if early is not None:
            steps = learner.finished()  # each below or above the reflect's version
            below = [done for done in steps if done[0].model_version < early.model_version]
            self._publish_finished(below)
            self._publish(early, reflected)
            self._publish_finished(steps[len(below) :])
            reflected = []  # counted once, with the first vectors that reflect them
        newest = None
        if not in_graph and pending.interactions:
            newest = max(e.ts for e in pending.interactions)
        return Handed([absorbed], dict(pending.positions), reflected, newest)

    def _publish_steps(self, learner: Learner) -> None:
        self._publish_finished(learner.finished())

    def _publish_finished(self, steps: list[tuple[TrainReport, Handed]]) -> None:
        for report, handed in steps:
            self._publish(report, handed.append_times_ms)
            self._settle(report, handed.positions, handed.newest_ts)

    def _train(self, pending: PendingEvents, in_graph: bool = False) -> None:
        self._metrics.train_backlog.set(len(self.backlog))
        partitions = pending.partitions or None
        report = self.trainer.learn(pending.interactions, partitions, in_graph=in_graph)
        # Freshness counts only what the published vectors reflect (catch-up: nothing).
        times = pending.append_times_ms
        self._publish(report, [times[k] for k in report.reflected] if times else [])
        newest = None
        if not in_graph and pending.interactions:
            newest = max(e.ts for e in pending.interactions)
        self._settle(report, pending.positions, newest)

    def _settle(self, report: TrainReport, positions: dict[int, int], newest: int | None) -> None:
        """A published step: its offsets are trained through; its metrics."""
        self.trained_through.update(positions)
        if newest is not None:
            self._trained_watermark = _newest(self._trained_watermark, newest)
        m = self._metrics
        m.train_steps.inc(report.steps)
        m.train_step_seconds.observe(report.seconds)
        if not math.isnan(report.loss):
            m.train_loss.set(report.loss)
        for kind, evicted, refused, live in (
            ("user", report.evicted_users, report.refused_users, report.live_users),
            ("item", report.evicted_items, report.refused_items, report.live_items),
        ):
            m.ids_evicted.labels(kind=kind).inc(evicted)
            m.ids_refused.labels(kind=kind).inc(refused)
            m.ids_live.labels(kind=kind).set(live)

    def _publish(self, report: TrainReport, append_times_ms: list[int]) -> None:
        """Publish the changed vectors at the report's version; retry until acked."""
        vectors = report.vectors or {
            kind: self.trainer.vectors(kind, ids)
            for kind, ids in (("user", report.changed_users), ("item", report.changed_items))
        }
        batches = [
            NodeVectors(
                "user", report.changed_users, vectors["user"], report.changed_user_event_ms
            ),
            NodeVectors(
                "item", report.changed_items, vectors["item"], report.changed_item_event_ms
            ),
        ]
        self._send(batches, report.model_version, append_times_ms)
        self._republish_lost()

    def _send(self, batches: list[NodeVectors], version: int, append_times_ms: list[int]) -> None:
        """Publish until acked; an embedding topic found deleted is created again first."""
        if self._publisher is None:
            raise RuntimeError("TrainingLoop.start was not called")
        while True:
            try:
                self._publisher.publish(
                    batches, model_version=version, append_times_ms=append_times_ms
                )
                return
            except EmbeddingTopicGone as exc:
                log.warning("%s: creating it again", exc)
                self._check_topics()
                time.sleep(PUBLISH_RETRY_SECONDS)  # the producer learns of it meanwhile
            except PublishError as exc:
                # A version regression is a bug, not an outage; an interruption is a stop.
                if isinstance(exc, ValueError | PublishInterrupted | PublishStopped):
                    raise
                log.warning("publish not acked (%s); retrying", exc)
                time.sleep(PUBLISH_RETRY_SECONDS)  # an interrupt() meanwhile ends the retries

    def _check_topics_when_due(self) -> None:
        if time.monotonic() - self._topics_checked >= self._settings.worker.checkpoint_interval_s:
            self._check_topics()

    def _check_topics(self) -> None:
        """Note the embedding topics that are not the ones published to (their ids); a
        missing one is created again."""
        self._topics_checked = time.monotonic()
        if self._publisher is None:
            return
        try:
            self._lost(self._publisher.replaced_topics())
        except PublishError as exc:  # brokers away: the next check, or the next publish
            log.warning("embedding topics not checked: %s", exc)

    def _lost(self, kinds: Iterable[NodeKind]) -> None:
        for kind in sorted(set(kinds) - self._republish):
            log.warning(
                "embedding topic of %s vectors is not the one they were published to (deleted "
                "and created again): every %s vector reported so far is published again",
                kind,
                kind,
            )
            self._republish.add(kind)
            self._metrics.embedding_topics_lost.labels(kind=kind).inc()

    def _republish_lost(self) -> None:
        """Give a topic that lost them every vector reported so far, at the current version
        (or the publisher's floor, just after a restart: the next step publishes there too)."""
        while self._republish and self._publisher is not None:
            kind = self._republish.pop()
            ids, vectors, times = self.trainer.reported_again(kind)
            version = max(self.trainer.model_version, self._publisher.min_version)
            for start in range(0, len(ids), REPUBLISH_CHUNK):
                end = start + REPUBLISH_CHUNK
                batch = NodeVectors(kind, ids[start:end], vectors[start:end], times[start:end])
                self._send([batch], version, [])
            log.info("%d %s vectors published again at model version %d", len(ids), kind, version)


# The GIL switch interval by the trainer's device when the setting is 0 (seconds): on CUDA
# an op computes for microseconds and waits for the GIL most of a learn call, so 1 ms; on
# the CPU the ops are long and ingest is the bound, so CPython's own 5 ms.
SWITCH_INTERVAL_S = {"cuda": 0.001, "cpu": 0.005}


def switch_interval_s(setting_ms: float, device: torch.device) -> float:
    """The interpreter's GIL switch interval for the worker: the setting, or by device."""
    if setting_ms:
        return setting_ms / 1000
    return SWITCH_INTERVAL_S.get(device.type, SWITCH_INTERVAL_S["cpu"])


def checkpoint_offsets(payload: Payload, topic: str) -> dict[int, int]:
    """The offsets of ``topic`` a checkpoint trained through, by partition."""
    return {
        int(key.rpartition(":")[2]): int(offset)
        for key, offset in payload["offsets"].items()
        if key.rpartition(":")[0] == topic
    }


def _newest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
