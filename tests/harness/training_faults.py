"""Worker SIGKILLs with training and publishing on: the store stays exactly-once and the
embedding topics never regress.

:func:`run_training_crash_scenario` is :func:`tests.harness.faults.run_crash_scenario`
with the trainer switched on (small ``dim``, frequent checkpoints, private embedding
topics, checkpoint folder and version ledger), then reads what the kills left behind:
both embedding topics from the beginning, and the newest checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stream.learn.checkpoint import CheckpointStore
from stream.local_broker.broker import LocalKafkaBroker
from tests.harness.embedding_log import published_between, read_published, version_regressions
from tests.harness.faults import CrashReport, run_crash_scenario
from tests.harness.worker_process import training_env


@dataclass
class TrainingCrashReport:
    """The store's figures (``crash``) and what the publishing half left on the topics.

    ``published_after_restart[k]``: records the ``k``-th restarted worker published
    before the next kill (or the end of the run); ``idle_restarts``: the ``k`` whose worker
    started with the whole stream trained and checkpointed, so had nothing to publish.
    ``checkpoint_offsets``: the source offsets the newest checkpoint trained through
    (``None`` when none loads).
    """

    crash: CrashReport
    records: int = 0
    regressions: list[str] = field(default_factory=list)
    published_after_restart: list[int] = field(default_factory=list)
    idle_restarts: list[int] = field(default_factory=list)
    checkpoint_offsets: dict[int, int] | None = None


def run_training_crash_scenario(
    broker: LocalKafkaBroker,
    topic: str,
    events: int,
    workdir: Path,
    name: str = "worker-sigkill-training",
    worker_kills: int = 2,
    store_write_kills: int = 1,
    seed: int = 0,
    dim: int = 16,
    checkpoint_interval_s: float = 2.0,
    max_batch_records: int = 500,
    timeout_s: float = 300.0,
    extra_env: Mapping[str, str] | None = None,
) -> TrainingCrashReport:
    """Kill a training worker ``worker_kills`` times at random and ``store_write_kills``
    times right after a store write; every restarted worker with something left to train
    must publish again. ``extra_env`` adds worker settings (e.g. the changelog on)."""
    tag = f"{name}-{seed}-{time.time_ns() % 10**12}"
    env = {
        **training_env(workdir, tag, dim),
        "STREAMGNN_CHECKPOINT_INTERVAL_S": str(checkpoint_interval_s),
        **(extra_env or {}),
    }
    checkpoints = Path(env["STREAMGNN_CHECKPOINT_DIR"])
    topics = [env["STREAMGNN_USER_EMBEDDINGS_TOPIC"], env["STREAMGNN_ITEM_EMBEDDINGS_TOPIC"]]
    crash = run_crash_scenario(
        broker,
        topic,
        events,
        workdir,
        name,
        worker_kills=worker_kills,
        seed=seed,
        max_batch_records=max_batch_records,
        timeout_s=timeout_s,
        store_write_kills=store_write_kills,
        env=env,
        published_topics=topics,
        idle=lambda: _trained_through(checkpoints, topic) >= events,
    )
    log = read_published(broker.bootstrap_servers, topics)
    ends = [*crash.kills_ms, time.time_ns() // 1_000_000 + 1][1:]
    windows = list(zip(crash.restarts_ms, ends, strict=True))
    report = TrainingCrashReport(
        crash,
        records=len(log),
        regressions=version_regressions(log),
        published_after_restart=published_between(log, windows),
        idle_restarts=crash.idle_restarts,
    )
    crash.details.update(
        published=len(log),
        published_after_restart=report.published_after_restart,
        version_regressions=len(report.regressions),
    )
    payload = CheckpointStore(checkpoints).load_latest()
    if payload is not None:
        report.checkpoint_offsets = {
            int(key.rpartition(":")[2]): int(offset)
            for key, offset in payload["offsets"].items()
            if key.rpartition(":")[0] == topic
        }
    return report


def _trained_through(checkpoints: Path, topic: str) -> int:
    """Events of ``topic`` the newest checkpoint trained through (0 without one)."""
    payload = CheckpointStore(checkpoints).load_latest()
    if payload is None:
        return 0
    return sum(o for key, o in payload["offsets"].items() if key.rpartition(":")[0] == topic)
