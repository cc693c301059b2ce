"""The worker's training half: a thread that fine-tunes on applied events and publishes.

The ingest loop hands every store write to :meth:`TrainingLoop.on_applied`, which only
appends to a :class:`TrainingBacklog` and returns: ingestion never waits on a training
step. The trainer thread takes the *whole* backlog at once, so when a step is slower
than the stream the micro-batches coalesce into one larger batch instead of queueing
up. The backlog is bounded: once it holds ``max_backlog_events`` the ingest loop stops
fetching (:meth:`TrainingLoop.has_room`) and the excess waits in Kafka as consumer lag.

After each step the vectors that moved are published (``EmbeddingPublisher.publish``
returns once every record is acked; a broker outage is retried, never dropped), then a
checkpoint is written when ``checkpoint_interval_s`` has passed, and always on
:meth:`TrainingLoop.stop`. A checkpoint holds the trainer's complete state and the
source offsets it has trained through. On start the newest good checkpoint is loaded,
the graph mirror is rebuilt from the store, and when the store holds events the
checkpoint never trained on, their vectors are re-embedded and published at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from models.checkpoint import CheckpointStore
from models.trainer import IncrementalTrainer, TrainerSettings, TrainReport
from stream.errors import PublishError, PublishInterrupted
from stream.events import Interaction
from stream.ingest import AppliedBatch
from stream.metrics import PipelineMetrics
from stream.publish.publisher import EmbeddingPublisher, NodeVectors
from stream.settings import Settings
from stream.state.graph_store import DecayedGraphStore

log = logging.getLogger("streamgnn.training")

PUBLISH_RETRY_SECONDS = 1.0
# On stop, how long the last publish may wait for acks before it is interrupted: the
# worker must end within 10 s of SIGTERM whatever the brokers do.
STOP_GRACE_S = 2.0


@dataclass
class PendingEvents:
    """Applied events not trained on yet, coalesced across store writes."""

    interactions: list[Interaction] = field(default_factory=list)
    append_times_ms: list[int] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)  # each interaction's partition
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset

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


def trainer_settings(settings: Settings) -> TrainerSettings:
    """The model settings the worker trains with (the rest keep the trainer's defaults)."""
    t = settings.training
    return TrainerSettings(
        encoder=t.encoder,
        dim=t.dim,
        layers=t.layers,
        device=t.device,
        steps_per_batch=t.steps_per_batch,
        max_steps_per_batch=t.max_steps_per_batch,
        max_drift_reports=t.max_drift_reports,
        max_users=t.max_users,
        max_items=t.max_items,
        id_ttl_ms=t.id_ttl_ms,
        publish_threshold=settings.publish.change_threshold,
    )


class TrainingLoop:
    """Trains on applied events in its own thread and publishes what changed.

    Args:
        settings: the process settings (training, publish, store, Kafka topic names).
        store: the worker's graph store; read once on :meth:`start` to rebuild the graph.
        publisher: where changed vectors go.
        metrics: training, backlog and id-registry metrics.
        on_failure: called from the trainer thread when a step fails unexpectedly (the
            worker then stops and exits non-zero); the exception is also in :attr:`failure`.
    """

    def __init__(
        self,
        settings: Settings,
        store: DecayedGraphStore,
        publisher: EmbeddingPublisher,
        metrics: PipelineMetrics,
        on_failure: Callable[[BaseException], object] = lambda exc: None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._on_failure = on_failure
        t = settings.training
        if t.torch_threads:
            torch.set_num_threads(t.torch_threads)  # process-wide: only the trainer uses torch
        self.backlog = TrainingBacklog(t.max_backlog_events)
        self.checkpoints = CheckpointStore(t.checkpoint_dir, keep=t.checkpoints_kept)
        self.trainer = IncrementalTrainer(
            trainer_settings(settings), settings.events.behaviours, settings.store.epsilon
        )
        self.trained_through: dict[int, int] = {}  # partition -> next offset trained
        self.failure: BaseException | None = None
        self._abandoned = False  # a publish was interrupted by stop(): no final checkpoint
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamgnn-trainer", daemon=True)
        self._last_checkpoint = time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Load the newest good checkpoint, rebuild the graph, catch up, start the thread."""
        payload = self.checkpoints.load_latest()
        if payload is not None:
            self.trainer.load_state_dict(payload["trainer"])
            topic = self._settings.kafka.interactions_topic
            self.trained_through = {
                int(key.rpartition(":")[2]): int(offset)
                for key, offset in payload["offsets"].items()
                if key.rpartition(":")[0] == topic
            }
            log.info(
                "checkpoint loaded: model version %d, trained through %s",
                self.trainer.model_version,
                self.trained_through,
            )
        self.trainer.bootstrap(self._store)
        # Continue above anything already on the topics (the ledger's floor), even when
        # the checkpoint is older than the last publish.
        self.trainer.model_version = max(
            self.trainer.model_version, self._publisher.min_version - 1
        )
        stored = {
            partition: offset
            for (topic, partition), (offset, _) in self._store.positions().items()
            if topic == self._settings.kafka.interactions_topic
        }
        if any(offset > self.trained_through.get(p, 0) for p, offset in stored.items()):
            report = self.trainer.refresh()  # events stored but never trained: publish them
            try:
                self._publish(report, [])
            except PublishInterrupted:  # stopped while starting: stop() writes no checkpoint
                self._abandoned = True
                return
            self.trained_through = stored
        self._thread.start()

    def on_applied(self, batch: AppliedBatch) -> None:
        """The ingest loop's hook: queue and return at once."""
        self.backlog.put(batch)
        self._metrics.train_backlog.set(len(self.backlog))

    def has_room(self) -> bool:
        """False while the backlog is full: the ingest loop should stop fetching."""
        return self.backlog.has_room()

    def stop(self, timeout_s: float = 300.0, grace_s: float = STOP_GRACE_S) -> None:
        """Train and publish what is queued, write a checkpoint, end the thread.

        A publish still unacked after ``grace_s`` (brokers refusing or away) is interrupted
        so the process stops within seconds; then no checkpoint is written: the previous
        one and the store stay consistent, and the events after its offsets are taken up
        again on the next start.
        """
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(grace_s)
        if self._thread.is_alive():
            self._publisher.interrupt()
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

    def checkpoint(self) -> None:
        topic = self._settings.kafka.interactions_topic
        offsets = {f"{topic}:{p}": offset for p, offset in sorted(self.trained_through.items())}
        path = self.checkpoints.save({"trainer": self.trainer.state_dict(), "offsets": offsets})
        self._last_checkpoint = time.monotonic()
        log.info("checkpoint %s (model version %d)", path.name, self.trainer.model_version)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                pending = self.backlog.take(timeout_s=0.05)
                if pending is None:
                    if self._stopping.is_set():
                        return
                    continue
                self._train(pending)
                interval = self._settings.training.checkpoint_interval_s
                if time.monotonic() - self._last_checkpoint >= interval:
                    self.checkpoint()
        except PublishInterrupted:
            self._abandoned = True
        except BaseException as exc:
            log.exception("trainer thread failed")
            self.failure = exc
            self._on_failure(exc)

    def _train(self, pending: PendingEvents) -> None:
        self._metrics.train_backlog.set(len(self.backlog))
        report = self.trainer.learn(pending.interactions, pending.partitions)
        # Freshness counts only what the published vectors reflect.
        self._publish(report, [pending.append_times_ms[k] for k in report.reflected])
        self.trained_through.update(pending.positions)
        m = self._metrics
        m.train_steps.inc(report.steps)
        m.train_step_seconds.observe(report.seconds)
        if not math.isnan(report.loss):
            m.train_loss.set(report.loss)
        for kind, evicted, refused in (
            ("user", report.evicted_users, report.refused_users),
            ("item", report.evicted_items, report.refused_items),
        ):
            m.ids_evicted.labels(kind=kind).inc(evicted)
            m.ids_refused.labels(kind=kind).inc(refused)

    def _publish(self, report: TrainReport, append_times_ms: list[int]) -> None:
        """Publish the changed vectors at the report's version; retry until acked."""
        batches = [
            NodeVectors(
                "user",
                report.changed_users,
                self.trainer.vectors("user", report.changed_users),
                report.changed_user_event_ms,
            ),
            NodeVectors(
                "item",
                report.changed_items,
                self.trainer.vectors("item", report.changed_items),
                report.changed_item_event_ms,
            ),
        ]
        while True:
            try:
                self._publisher.publish(
                    batches, model_version=report.model_version, append_times_ms=append_times_ms
                )
                return
            except PublishError as exc:
                # A version regression is a bug, not an outage; an interruption is a stop.
                if isinstance(exc, ValueError | PublishInterrupted):
                    raise
                log.warning("publish not acked (%s); retrying", exc)
                time.sleep(PUBLISH_RETRY_SECONDS)  # an interrupt() meanwhile ends the retries
