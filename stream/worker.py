"""``streamgnn worker``: the long-running process (ingest, store, train, publish).

One process: the asyncio ingest loop applies events to the graph store, and a trainer
thread (:mod:`stream.training`) fine-tunes on them and publishes the vectors that moved;
``--train false`` runs the ingest half alone.

Wiring only: settings come from :func:`stream.settings.settings_from_args` (flags over
their environment twins), metrics are served on ``--metrics-address``, SIGTERM/SIGINT end
the worker within seconds wherever it is (the batch in flight lands in the store or is
left for the next start; the trainer checkpoints what it published) and exit 0, and any
unhandled error exits non-zero so an orchestrator restarts the worker (which then resumes
from the store's offsets). A metrics address it cannot listen on (the port taken) exits 2
in one line, before any client starts. Brokers that do not answer are waited for up to 30
s (:func:`stream.kafka.access.wait_for_access`), then the worker exits 1 in one line. A
group it may not share (a training worker is alone in its group:
:mod:`stream.kafka.group`) exits 2 in one line. A checkpoint that does not match the
settings exits 2 at once, naming each setting (see :mod:`stream.learn.compatibility` and
``--on-checkpoint-mismatch``). A dead-letter topic that is missing and cannot be created,
or that refuses a letter for ``--dlq-timeout-s``, stops the worker with exit status 1.
With ``--changelog``, a worker fenced by another one with its transactional.id (same group
and ``--instance-id``) logs it and exits 0: restarting it would fence the other in turn;
any other changelog failure (its transaction aborted, a restore that cannot finish) exits
1. A right the brokers' ACLs do not grant (a topic, the group, the transactional id) exits 2
in one line naming it (:func:`stream.kafka.access.not_authorized`): the clients would
report it and go on for ever.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import signal
import sys
from collections.abc import Callable

from stream.cli import service_logging
from stream.errors import (
    BrokersUnreachable,
    ChangelogError,
    ChangelogFenced,
    ConfigError,
    DeadLetterError,
    GroupLeft,
    GroupShared,
    PublishError,
    RebalanceError,
    StoreError,
    StoreWriteError,
)
from stream.ingest import IngestTotals, IngestWorker
from stream.kafka.access import wait_for_access
from stream.kafka.group import Role, refuse_a_shared_group
from stream.learn.changelog_fold import log_graph
from stream.learn.compatibility import CheckpointMismatchError
from stream.metrics import PipelineMetrics, serve_metrics
from stream.publish.publisher import EmbeddingPublisher
from stream.settings import Settings, add_options, select, settings_from_args
from stream.state.graph_store import DecayedGraphStore
from stream.training import TrainingLoop

log = logging.getLogger("streamgnn.worker")


async def run_worker(
    settings: Settings, stop: asyncio.Event, metrics: PipelineMetrics | None = None
) -> IngestTotals:
    """Run until ``stop`` is set; returns what was ingested.

    The store and the checkpoint are checked first (a mismatch fails fast, brokers or
    not); then a broker must answer (:func:`~stream.kafka.access.wait_for_access`) before
    any client starts: a refused login or TLS handshake raises
    :class:`~stream.errors.KafkaAccessError` (the clients would retry it for ever), no
    answer within half a minute :class:`~stream.errors.BrokersUnreachable`, and ``stop``
    meanwhile returns at once with nothing ingested.
    """
    metrics = metrics if metrics is not None else PipelineMetrics()
    store = DecayedGraphStore(
        settings.store.path,
        settings.events.behaviours,
        settings.store.epsilon,
        dedup_window_ms=settings.events.dedup_window_ms,
        sync_writes=settings.store.sync_writes,
        log_changes=settings.store.changelog,
    )
    training: TrainingLoop | None = None
    try:
        _refuse_another_topics_store(store, settings.kafka.interactions_topic)
        if not settings.worker.train:
            if not await _may_join(settings, stop):
                return IngestTotals()
            ingest = IngestWorker(settings, store, metrics)
            await _ingest(ingest, stop)
            return ingest.totals
        loop = asyncio.get_running_loop()
        training = TrainingLoop(
            settings, store, metrics, on_failure=lambda exc: loop.call_soon_threadsafe(stop.set)
        )
        training.checkpoints.hold()  # one process a directory: not another's model
        await asyncio.to_thread(training.resume)  # before any client: a mismatch fails fast
        if not await _may_join(settings, stop):
            return IngestTotals()
        publisher = await asyncio.to_thread(
            EmbeddingPublisher, settings.kafka, settings.publish, metrics
        )
        try:
            # off the loop: start waits for the trainer thread's heap pretouch (a second),
            # and a SIGTERM meanwhile must still set ``stop``
            await asyncio.to_thread(training.start, publisher)
            ingest = IngestWorker(
                settings,
                store,
                metrics,
                training.on_applied,
                has_room=training.has_room,
                on_restored=training.on_restored,
            )
            await _ingest(ingest, stop, then=training.stop)
            if training.failure is not None:
                raise training.failure
            if settings.store.changelog:  # what restores folded in, comparable with the log
                await asyncio.to_thread(log_graph, training.trainer)
            return ingest.totals
        finally:
            publisher.close()
    finally:
        if training is not None:  # however it ended: an in-process run must not keep it
            training.checkpoints.release()
        store.close()


def _refuse_another_topics_store(store: DecayedGraphStore, topic: str) -> None:
    """A store holds one interactions topic's graph: opened for another topic (a volume
    kept when the topic setting changed), its edges would be trained on with the new
    topic's, for ever (by hand on 2026-12-07: 347,356 edges of one topic under 3,000
    events of another, no word said)."""
    held = sorted({source for source, _ in store.positions()} - {topic})
    if held:
        raise StoreError(
            f"the graph store at {store.path} holds the graph of topic {', '.join(held)}, "
            f"not of {topic!r} (--interactions-topic): a store is one topic's; give "
            "--store-path an empty directory or that topic's store, or move this one aside"
        )


async def _may_join(settings: Settings, stop: asyncio.Event) -> bool:
    """Wait for a broker, then check the group's members; False when stopped meanwhile."""
    if not await wait_for_access(settings.kafka, stop.is_set):
        return False
    role: Role = "worker" if settings.worker.train else "ingest"
    return await refuse_a_shared_group(settings.kafka, role, stop.is_set)


async def _ingest(
    ingest: IngestWorker, stop: asyncio.Event, then: Callable[[], None] | None = None
) -> None:
    """Run ``ingest`` until ``stop``; then close it and run ``then`` (the trainer's stop,
    which needs no more input) side by side, so their bounded waits on brokers that are
    away add up to the longer one, not the sum."""
    try:
        if not await ingest.start(stop):
            return
        log.info("worker consuming %s", ingest.topic)
        await ingest.run(stop)
    finally:
        closing = [ingest.stop()]
        if then is not None:
            closing.append(asyncio.to_thread(then))
        results = await asyncio.gather(*closing, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


# The worker's options: the pipeline's sections of the settings tree.
WORKER_OPTIONS = select(
    "metrics_address", "kafka", "store", "events", "publish", "training", "worker"
)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "worker",
        help="consume interactions into the graph store (until SIGTERM)",
        description="Every option falls back to its environment variable, then a default.",
    )
    add_options(parser, WORKER_OPTIONS)
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:  # a setting that cannot work: one line, as ingest and train
        print(f"streamgnn worker: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


def serve(settings: Settings) -> int:
    """Run the worker (``streamgnn ingest`` too) until SIGTERM; returns the exit status."""
    # A crash in native code (a client library, torch) leaves every thread's Python stack
    # on stderr, the worker's log, instead of a bare exit status.
    faulthandler.enable()
    service_logging()
    metrics = PipelineMetrics()
    try:
        serve_metrics(metrics, settings.metrics_address)
    except ConfigError as exc:  # e.g. the port is taken: say so and exit 2, as settings do
        log.error("%s", exc)
        return 2
    try:
        totals = asyncio.run(_serve(settings, metrics))
    except StoreWriteError as exc:  # a full or failing disk: a restart once it is fixed
        log.error("%s", exc)
        return 1
    except (CheckpointMismatchError, ConfigError, StoreError, GroupShared) as exc:
        log.error("%s", exc)  # each with a way out, in its message (a directory in use too)
        return 2
    except DeadLetterError as exc:  # the DLQ is missing or refuses letters: say so, exit 1
        log.error("%s", exc)
        return 1
    except (BrokersUnreachable, PublishError, RebalanceError) as exc:  # a restart may do: exit 1
        log.error("%s", exc)
        return 1
    except ChangelogFenced as exc:  # a restart would fence the other worker in turn: exit 0
        log.error("%s", exc)
        return 0
    except (ChangelogError, GroupLeft) as exc:  # the next start restores what the store wrote ahead
        log.error("%s", exc)
        return 1
    log.info("stopped: %s", totals)
    return 0


async def _serve(settings: Settings, metrics: PipelineMetrics) -> IngestTotals:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return await run_worker(settings, stop, metrics)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m stream.worker")
    add_options(parser, WORKER_OPTIONS)
    sys.exit(main(parser.parse_args()))
