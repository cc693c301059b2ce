"""``streamgnn train``: the trainer alone, its graph folded from the graph changelog.

Beside ``streamgnn ingest`` workers (which write each partition's edge state to the
compacted changelog in Kafka transactions, :mod:`stream.ingest.changelog`), one trainer
reads every partition of that changelog ``read_committed`` (:mod:`stream.ingest.changelog_follow`),
folds its edge records into its graph mirror (:mod:`stream.learn.changelog_fold`: edges
set as stored, tombstones remove) and trains on the edges each new batch of records sets,
through the worker's own :class:`~stream.training.TrainingLoop` and
:class:`~stream.publish.publisher.EmbeddingPublisher`.

- Cold start (no checkpoint): the changelog is folded to its end first, then the trainer
  trains on the whole folded graph in backlog-sized chunks, publishing every node (as the
  worker does from its store), then on what follows.
- Restart: the checkpoint holds the changelog offsets it trained through. The changelog is
  folded from the beginning (the mirror is not in the checkpoint); records before those
  offsets are folded only, records from them on are trained on: nothing is trained twice or
  skipped. A stop during the cold start's training writes no checkpoint (the next start is
  a cold start again).
- Backpressure: while the trainer's backlog is full the changelog waits in Kafka
  (``streamgnn_changelog_lag``).

SIGTERM/SIGINT stop it within seconds with a checkpoint (exit 0); a checkpoint that does not
fit the settings exits 2; a changelog that cannot be read exits 1. On stop it logs its
graph's size and, up to ``DIGEST_MAX_EDGES`` edges, its digest
(:func:`stream.learn.changelog_fold.log_graph`).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from stream.cli import service_logging
from stream.errors import (
    BrokersUnreachable,
    ChangelogError,
    ConfigError,
    GroupShared,
    PublishError,
    RebalanceError,
)
from stream.ingest import AppliedBatch
from stream.ingest.changelog_follow import ChangelogFollower, ChangelogRecord
from stream.kafka.access import wait_for_access
from stream.learn.changelog_fold import Folded, log_graph
from stream.learn.compatibility import CheckpointMismatchError
from stream.learn.device import resolve_device
from stream.learn.ranks import Ranks
from stream.metrics import PipelineMetrics, serve_metrics
from stream.publish.publisher import EmbeddingPublisher
from stream.settings import Settings, add_options, changelog_topic, select, settings_from_args
from stream.train_ranks import rank_metrics_address, rank_settings, run_ranked
from stream.training import PendingEvents, TrainingLoop, checkpoint_offsets

log = logging.getLogger("streamgnn.train")

POLL_S = 0.2
MAX_POLL_RECORDS = 10_000


@dataclass
class TrainTotals:
    """What one run of the trainer read and trained on."""

    records: int = 0  # changelog records folded
    trained_edges: int = 0  # edge updates handed to the trainer (bootstrap included)
    edges: int = 0  # edges in the trainer's graph at the end
    digest: str = ""  # graph_digest of that graph


class ChangelogTraining(TrainingLoop):
    """The worker's training loop over a graph folded from the changelog: no store; the
    checkpoint's offsets are the changelog's; on a cold start, the whole folded graph is
    the catch-up."""

    def __init__(
        self,
        settings: Settings,
        metrics: PipelineMetrics,
        stop: threading.Event,
        ranks: Ranks | None = None,
    ):
        super().__init__(settings, None, metrics, on_failure=lambda exc: stop.set(), ranks=ranks)
        k = settings.kafka
        self.source_topic = changelog_topic(k.interactions_topic, k.group_id)
        self.applied_in_graph = True
        self.cold = True  # no checkpoint: train on the whole folded graph first
        self._fold_only: dict[int, int] = {}  # records below these offsets: trained on before
        self._trained_topic_id: str | None = None  # the changelog's id in the checkpoint

    def resume(self) -> None:
        """Load the newest checkpoint that fits the settings (the graph is folded after)."""
        payload = self._load_checkpoint()
        if payload is not None:
            self.cold = False
            self.trained_through = checkpoint_offsets(payload, self.source_topic)
            self._fold_only = dict(self.trained_through)
            self._trained_topic_id = payload.get("source_topic_id")
            log.info(
                "checkpoint loaded: model version %d, trained through changelog offsets %s",
                self.trainer.model_version,
                self.trained_through,
            )

    def follow(self, topic_id: str | None) -> None:
        """The changelog is the one with Kafka id ``topic_id``: when the checkpoint's was
        another (the topic deleted and created again, its offsets from 0), none of its
        offsets mean anything here, and every record is trained on."""
        self.source_topic_id = topic_id
        trained = self._trained_topic_id
        if trained is not None and topic_id is not None and trained != topic_id:
            log.warning(
                "changelog %s is not the one the checkpoint trained on (topic id %s, now %s: "
                "deleted and created again): training on every record of it",
                self.source_topic,
                trained,
                topic_id,
            )
            self._fold_only, self.trained_through = {}, {}

    def log_began_again(self, partition: int, topic_id: str | None) -> None:
        """``partition`` of the changelog reads from a new log (the topic was deleted and
        created again): none of its records was trained on, whatever its offsets."""
        log.warning(
            "changelog %s[%d] began again (the topic deleted and created again, id now %s): "
            "training on every record of it",
            self.source_topic,
            partition,
            topic_id,
        )
        self.source_topic_id = topic_id
        self._fold_only.pop(partition, None)
        # The trainer thread may still set the old log's offset from a step in flight;
        # the partition's next trained batch sets the new log's.
        self.trained_through[partition] = 0

    def fold_records(self, records: Sequence[ChangelogRecord]) -> tuple[Folded, dict[int, int]]:
        """Fold ``records`` (log order) into the graph: those below the checkpoint's offsets
        were trained on before the restart and are folded only. Returns the edges the rest
        set, to train on, and the changelog positions those reach."""
        topic = self._settings.kafka.interactions_topic
        below = self._fold_only
        old = [(r.key, r.value) for r in records if r.offset < below.get(r.partition, 0)]
        new = [r for r in records if r.offset >= below.get(r.partition, 0)]
        if old:
            self.trainer.fold(old, topic)
        if not new:
            return Folded(), {}
        folded = self.trainer.fold([(r.key, r.value) for r in new], topic)
        return folded, {r.partition: r.offset + 1 for r in new}  # log order: last wins

    def bootstrap_on(self, positions: dict[int, int]) -> None:
        """Train first on the whole graph folded through ``positions``, in the thread."""
        self.untrained = {p: (0, offset) for p, offset in positions.items()}
        if not self.untrained:  # the changelog held nothing yet: its batches come as they land
            log.info("cold start done: the changelog held nothing to train on yet")

    def _catch_up(self) -> bool:
        size = self._settings.worker.max_backlog_events
        edges = self.trainer.stored_edges(None)
        log.info("cold start: training on the %d folded edges", len(edges))
        for start in range(0, len(edges), size):
            if self._stopping.is_set():
                self._abandoned = True  # no checkpoint: the next start is a cold one
                return False
            self._train(PendingEvents(list(edges[start : start + size])), in_graph=True)
        self.trained_through.update({p: end for p, (_, end) in self.untrained.items()})
        self.untrained = {}
        log.info("cold start done: trained through changelog offsets %s", self.trained_through)
        return True


def run_trainer(
    settings: Settings, stop: threading.Event, metrics: PipelineMetrics | None = None
) -> TrainTotals:
    """Fold the changelog and train until ``stop`` is set; returns what it did.

    A broker must answer first, as for the worker (:func:`stream.worker.run_worker`).
    """
    metrics = metrics if metrics is not None else PipelineMetrics()
    ranks = Ranks.from_env(resolve_device(settings.training.device))
    if ranks is not None:
        settings = rank_settings(settings, ranks)
    training = ChangelogTraining(settings, metrics, stop, ranks)
    try:
        return _train(settings, stop, metrics, training, ranks)
    finally:  # however it ended: an in-process run must not keep the directory
        training.checkpoints.release()


def _train(
    settings: Settings,
    stop: threading.Event,
    metrics: PipelineMetrics,
    training: ChangelogTraining,
    ranks: Ranks | None,
) -> TrainTotals:
    training.checkpoints.hold()  # one process a directory: not another's model
    training.resume()  # before any client: a mismatch fails fast
    if not asyncio.run(wait_for_access(settings.kafka, stop.is_set)):
        return TrainTotals()
    if ranks is not None:  # under torchrun: every rank in lockstep (stream.train_ranks)
        totals = TrainTotals()
        poll = (MAX_POLL_RECORDS, POLL_S)
        totals.records, totals.trained_edges = run_ranked(settings, stop, metrics, training, poll)
        return _logged_graph(training, totals)
    publisher = EmbeddingPublisher(settings.kafka, settings.publish, metrics)
    follower = ChangelogFollower(settings.kafka, metrics)
    totals = TrainTotals()
    try:
        if not follower.start(stop):
            return totals
        log.info("trainer following %s", follower.topic)
        training.follow(follower.topic_id)
        if not training.cold:
            training.start(publisher)
        if not _follow(metrics, training, follower, publisher, stop, totals):
            return totals  # stopped while folding to the end on a cold start: nothing trained
        training.stop()
        if training.failure is not None:
            raise training.failure
        return _logged_graph(training, totals)
    finally:
        follower.close()
        publisher.close()


def _logged_graph(training: ChangelogTraining, totals: TrainTotals) -> TrainTotals:
    """``totals`` with the graph's size and, up to ``DIGEST_MAX_EDGES``, digest; logged."""
    totals.edges, totals.digest = log_graph(training.trainer)
    return totals


def _follow(
    metrics: PipelineMetrics,
    training: ChangelogTraining,
    follower: ChangelogFollower,
    publisher: EmbeddingPublisher,
    stop: threading.Event,
    totals: TrainTotals,
) -> bool:
    """Fold what the changelog holds and hand each batch's edges to the trainer until
    ``stop``; returns whether the trainer was started."""
    started = not training.cold
    while not stop.is_set():
        if started and not training.has_room():
            follower.export_lag()
            time.sleep(0.05)
            continue
        records = follower.poll(MAX_POLL_RECORDS, POLL_S)
        for partition in follower.take_begun_again():
            training.log_began_again(partition, follower.topic_id)
        folded, positions = training.fold_records(records)
        if started and folded.interactions:
            batch = AppliedBatch(folded.interactions, [], positions, folded.partitions)
            training.on_applied(batch)
            totals.trained_edges += len(folded.interactions)
        totals.records += len(records)
        metrics.changelog_folded.inc(len(records))
        follower.export_lag()
        if not started and follower.caught_up:
            training.bootstrap_on(dict(follower.positions))
            totals.trained_edges += training.trainer.mirror.num_edges
            training.start(publisher)
            started = True
    return started


# The trainer's options: Kafka, the events' meaning, publishing, training, checkpoints.
TRAIN_OPTIONS = select(
    "metrics_address",
    "kafka",
    "events",
    "store.epsilon",
    "publish",
    "training",
    "worker.torch_threads",
    "worker.gil_switch_interval_ms",
    "worker.keep_freed_memory",
    "worker.huge_pages",
    "worker.max_backlog_events",
    "worker.reflect_before_step",
    "worker.checkpoint_dir",
    "worker.checkpoint_interval_s",
    "worker.checkpoints_kept",
    "worker.on_checkpoint_mismatch",
)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "train",
        help="train on the graph changelog the ingest workers write, publish (until SIGTERM)",
        description="One trainer for a group of `streamgnn ingest` workers: it folds their "
        "graph changelog (all partitions, read_committed) and trains and publishes as the "
        "worker does. Every option falls back to its environment variable, then a default.",
    )
    add_options(parser, TRAIN_OPTIONS)
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    faulthandler.enable()
    service_logging()
    metrics = PipelineMetrics()
    try:
        settings = settings_from_args(args)
        serve_metrics(metrics, rank_metrics_address(settings.metrics_address))
    except ConfigError as exc:  # a setting that cannot work, or a metrics port taken
        log.error("%s", exc)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        totals = run_trainer(settings, stop, metrics)
    except (CheckpointMismatchError, ConfigError, GroupShared) as exc:  # a directory in use too
        log.error("%s", exc)
        return 2
    except (ChangelogError, BrokersUnreachable, PublishError, RebalanceError) as exc:
        log.error("%s", exc)
        return 1
    log.info("stopped: %s", totals)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m stream.train")
    add_options(parser, TRAIN_OPTIONS)
    sys.exit(main(parser.parse_args()))
