"""``streamgnn train`` as ranks of one ``torchrun`` job (:mod:`stream.learn.ranks`).

``torchrun --nproc-per-node 2 -m stream.train ...`` (or ``-m stream.cli train``) starts the
ranks; :func:`stream.train.run_trainer` hands over here when ``WORLD_SIZE`` > 1. Rank 0
follows the changelog; each round it polls, and every rank gets its records
(:meth:`Ranks.broadcast_records`) with rank 0's flags (stop, caught up, checkpoint due; a
stop on any rank stops all), folds them and trains on them in lockstep, in this thread:
no backlog coalescing, so every rank learns the same batches. Each rank publishes its own
keys; its checkpoints and version ledger live under ``rank-<n>`` beside the configured
ones (every rank writes the same state at the same version). At start the ranks take the
highest model version any of them holds (a ledger floor may differ by a step after a
crash) and check that they hold the same settings and parameters.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from stream.ingest.changelog_follow import ChangelogFollower, ChangelogRecord
from stream.learn.ranks import Ranks, Record, local_rank
from stream.metrics import PipelineMetrics
from stream.publish.publisher import EmbeddingPublisher
from stream.settings import Settings
from stream.training import PendingEvents

if TYPE_CHECKING:
    from stream.train import ChangelogTraining

log = logging.getLogger("streamgnn.train")


def rank_settings(settings: Settings, ranks: Ranks) -> Settings:
    """Checkpoints and the version ledger in a folder of this rank's own."""
    part = f"rank-{ranks.rank}"
    worker = dataclasses.replace(
        settings.worker, checkpoint_dir=settings.worker.checkpoint_dir / part
    )
    ledger = settings.publish.ledger_path
    publish = dataclasses.replace(settings.publish, ledger_path=ledger.parent / part / ledger.name)
    return dataclasses.replace(settings, worker=worker, publish=publish)


def rank_metrics_address(address: str) -> str:
    """The metrics address of this local rank: the port plus ``LOCAL_RANK`` (torchrun's),
    so ranks on one machine do not collide."""
    host, _, port = address.rpartition(":")
    return f"{host}:{int(port) + local_rank()}"


def run_ranked(
    settings: Settings,
    stop: threading.Event,
    metrics: PipelineMetrics,
    training: ChangelogTraining,
    poll: tuple[int, float],
) -> tuple[int, int]:
    """Follow (rank 0), fold and train in lockstep until a stop on any rank; returns
    ``(records folded, edge updates trained)``. ``training`` is resumed, with ranks."""
    ranks = training.trainer.ranks
    assert ranks is not None
    training.trainer.check_ranks()
    publisher = EmbeddingPublisher(settings.kafka, settings.publish, metrics)
    follower = ChangelogFollower(settings.kafka, metrics) if ranks.rank == 0 else None
    records_folded = trained = 0
    try:
        ready = follower.start(stop) if follower is not None else True
        training.follow(ranks.broadcast_text(follower.topic_id if follower is not None else None))
        training.attach(publisher)
        training.warm_heap()  # this thread trains (train_now)
        version = torch.tensor([training.trainer.model_version], dtype=torch.long)
        dist.all_reduce(version, op=dist.ReduceOp.MAX, group=ranks.group)
        training.trainer.model_version = int(version)
        started = not training.cold
        reached: dict[int, int] = {}
        while True:
            polled: list[Record] = []
            caught_up = due = False
            began: list[int] = []
            if follower is not None and ready and not stop.is_set():
                polled = [(r.partition, r.offset, r.key, r.value) for r in follower.poll(*poll)]
                began = follower.take_begun_again()
                follower.export_lag()
                caught_up, due = follower.caught_up, training.checkpoint_due()
            stopping = stop.is_set() or not ready
            flags = torch.tensor([stopping, caught_up, due, bool(began)], dtype=torch.long)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=ranks.group)
            shared = ranks.broadcast_records(polled if ranks.rank == 0 else None)
            if flags[3]:  # the changelog made again: every rank's training hears it
                began_again(
                    ranks, training, began, follower.topic_id if follower is not None else None
                )
            records = [ChangelogRecord(*record) for record in shared]
            folded, positions = training.fold_records(records)
            if started and folded.interactions:
                batch = PendingEvents(folded.interactions, [], positions, folded.partitions)
                training.train_now(batch)
                trained += len(folded.interactions)
            for record in records:
                reached[record.partition] = record.offset + 1
            records_folded += len(records)
            metrics.changelog_folded.inc(len(records))
            if flags[0]:
                break
            if not started and flags[1]:
                training.bootstrap_on(dict(reached))
                trained += training.trainer.mirror.num_edges
                training.catch_up_now()
                started = True
            if flags[2] and started:
                training.checkpoint()
        if started:
            training.checkpoint()
        return records_folded, trained
    finally:
        if follower is not None:
            follower.close()
        publisher.close()


def began_again(
    ranks: Ranks, training: ChangelogTraining, partitions: list[int], topic_id: str | None
) -> None:
    """Rank 0's changelog ``partitions`` that began again (the topic deleted and created
    again, its id now ``topic_id``; the other ranks pass anything) told to every rank's
    ``training`` (:meth:`ChangelogTraining.log_began_again`), as the one-process trainer
    tells its own: none of their records was trained on, whatever their offsets."""
    text = ranks.broadcast_text(json.dumps({"partitions": partitions, "topic_id": topic_id}))
    assert text is not None  # rank 0 sent one
    told = json.loads(text)
    for partition in told["partitions"]:
        training.log_began_again(int(partition), told["topic_id"])
