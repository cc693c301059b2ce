"""The settings of an all-in-one worker under test: one source topic and its DLQ on the
suite's broker, a store, embedding topics and checkpoints of its own under ``tmp_path``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream.settings import KafkaSettings, Settings, StoreSettings, TrainerSettings, WorkerSettings
from tests.harness.embedding_topics import unique_settings


def worker_settings(
    bootstrap_servers: str,
    source: str,
    dlq: str,
    tmp_path: Path,
    dim: int,
    kafka: dict[str, Any] | None = None,
    worker: dict[str, Any] | None = None,
) -> Settings:
    """``kafka`` and ``worker``: options on top (e.g. ``max_batch_records``,
    ``reflect_before_step``); the group is named after the source topic."""
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap_servers,
            interactions_topic=source,
            dlq_topic=dlq,
            group_id=f"g-{source}",
            **(kafka or {}),
        ),
        store=StoreSettings(path=tmp_path / "graph"),
        publish=unique_settings(tmp_path / "ledger"),
        training=TrainerSettings(dim=dim, device="cpu"),
        worker=WorkerSettings(checkpoint_dir=tmp_path / "ckpt", **(worker or {})),
    )
