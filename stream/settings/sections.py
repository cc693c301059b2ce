"""The pipeline's sections of the settings tree: Kafka, store, events, publish, worker.

Each section is a frozen dataclass validated on construction (a :class:`ConfigError`
names the bad value). :class:`Settings` is the root of the one tree; the loader
(:mod:`stream.settings.load`) fills it from flags and their environment twins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stream.behaviours import DAY_MS, DEFAULT_BEHAVIOURS, Behaviour
from stream.errors import ConfigError
from stream.publish.schema import ENCODINGS
from stream.settings.commands import (
    ConsumeSettings,
    DataSettings,
    DemoSettings,
    EvalSettings,
    ProduceSettings,
)
from stream.settings.security import SecuritySettings
from stream.settings.training import TrainerSettings

CHECKPOINT_MISMATCH_POLICIES = ("fail", "discard")


# The accepted range of WorkerSettings.gil_switch_interval_ms (milliseconds).
GIL_SWITCH_MS = (0.01, 1000.0)


@dataclass(frozen=True)
class EventSettings:
    """The event contract (DESIGN.md, "Input"): what counts as a valid interaction."""

    behaviours: Mapping[str, Behaviour] = field(default_factory=lambda: DEFAULT_BEHAVIOURS)
    max_id_bytes: int = 256
    max_event_bytes: int = 65_536
    min_ts_ms: int = 0  # the oldest event time accepted (ts_too_old below it)
    max_ts_ms: int = 32_503_680_000_000  # 3000-01-01: later is a unit mistake, not a time
    max_weight: float = 1e6
    dedup_window_ms: int = 1 * DAY_MS
    # How far an event's ts may be ahead of its Kafka record timestamp (or the worker's
    # clock): producers' clocks drift, but an event from the future is refused.
    max_future_skew_ms: int = 600_000

    def __post_init__(self) -> None:
        if not self.behaviours:
            raise ConfigError("at least one behaviour (event type) must be configured")
        if len(self.behaviours) > 255:
            raise ConfigError(f"at most 255 behaviours, got {len(self.behaviours)}")
        for name in self.behaviours:
            if not name or len(name.encode()) > 64:
                raise ConfigError(f"behaviour names must be 1..64 bytes, got {name!r}")
        _positive("max_id_bytes", self.max_id_bytes)
        _positive("max_event_bytes", self.max_event_bytes)
        _positive("dedup_window_ms", self.dedup_window_ms)
        if self.max_future_skew_ms < 0:
            raise ConfigError(f"max_future_skew_ms must be >= 0, got {self.max_future_skew_ms!r}")
        if not 0 <= self.min_ts_ms < self.max_ts_ms:
            raise ConfigError(
                f"need 0 <= min_ts_ms < max_ts_ms, got {self.min_ts_ms}, {self.max_ts_ms}"
            )
        if not (math.isfinite(self.max_weight) and self.max_weight > 0):
            raise ConfigError(f"max_weight must be finite and > 0, got {self.max_weight!r}")


@dataclass(frozen=True)
class StoreSettings:
    """Where the graph lives and when an edge is weak enough to prune."""

    path: Path = Path("var/graph")
    epsilon: float = 1e-3
    sync_writes: bool = False  # fsync each batch: survives power loss, not just a crash
    # Back each partition's state with a compacted changelog topic written in Kafka
    # transactions (stream.ingest.changelog); the store becomes a cache of it.
    changelog: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"store epsilon must be finite and > 0, got {self.epsilon!r}")


@dataclass(frozen=True)
class KafkaSettings:
    """Brokers, topics, the consumer group, and how every client connects (``security``)."""

    bootstrap_servers: str = "127.0.0.1:19092"
    interactions_topic: str = "interactions"
    dlq_topic: str = "interactions.dlq"
    group_id: str = "streamgnn"
    instance_id: str | None = None  # static membership: a restart rejoins without a rebalance wait
    max_batch_records: int = 5_000
    # After a batch's first record, how long ingest waits for more (up to max_batch_records)
    # before applying it: each batch costs the event loop three thread hand-offs, a commit
    # and the store's fixed work per write, all under the GIL the trainer shares.
    batch_linger_ms: float = 10.0
    session_timeout_ms: int = 10_000
    # A dead letter not acked within this long stops ingestion (the worker exits non-zero
    # with the store and checkpoint consistent) instead of retrying forever.
    dlq_timeout_s: float = 60.0
    security: SecuritySettings = field(default_factory=SecuritySettings)

    def __post_init__(self) -> None:
        for name in ("bootstrap_servers", "interactions_topic", "dlq_topic", "group_id"):
            if not getattr(self, name):
                raise ConfigError(f"kafka {name} must not be empty")
        _positive("max_batch_records", self.max_batch_records)
        if not (math.isfinite(self.batch_linger_ms) and 0 <= self.batch_linger_ms <= 1_000):
            raise ConfigError(f"batch_linger_ms must be 0..1000, got {self.batch_linger_ms!r}")
        _positive("session_timeout_ms", self.session_timeout_ms)
        if not (math.isfinite(self.dlq_timeout_s) and self.dlq_timeout_s > 0):
            raise ConfigError(f"dlq_timeout_s must be finite and > 0, got {self.dlq_timeout_s!r}")


@dataclass(frozen=True)
class PublishSettings:
    """The embedding topics (DESIGN.md, "Output") and how vectors are published to them.

    Which vectors are published after a step is the trainer's rule
    (``TrainerSettings.publish_threshold``, :mod:`stream.learn.publish_policy`).
    ``ledger_path`` holds the highest model version that may be on the topics, so a
    restarted publisher never goes below it (see ``stream.publish.ledger``).
    """

    user_topic: str = "user-embeddings"
    item_topic: str = "item-embeddings"
    vector_encoding: str = "json"
    topic_partitions: int = 1
    topic_replication_factor: int = 1
    ledger_path: Path = Path("var/publish/versions.json")
    flush_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.user_topic or not self.item_topic:
            raise ConfigError("embedding topic names must not be empty")
        if self.vector_encoding not in ENCODINGS:
            raise ConfigError(
                f"vector_encoding must be one of {ENCODINGS}, got {self.vector_encoding!r}"
            )
        _positive("topic_partitions", self.topic_partitions)
        _positive("topic_replication_factor", self.topic_replication_factor)
        if not (math.isfinite(self.flush_timeout_s) and self.flush_timeout_s > 0):
            raise ConfigError(
                f"flush_timeout_s must be finite and > 0, got {self.flush_timeout_s!r}"
            )


@dataclass(frozen=True)
class WorkerSettings:
    """The worker process around the trainer: on or off, threads, backpressure, checkpoints.

    Ingestion never waits on a training step: applied events queue in a backlog that the
    trainer thread takes whole (micro-batches coalesce when it falls behind). Only when
    the backlog holds ``max_backlog_events`` does the worker pause fetching, so memory
    stays bounded and the excess waits in Kafka, visible as consumer lag.
    """

    train: bool = True
    # Intra-op threads of the trainer's torch kernels (0: torch's default, one per core).
    # One by default: on a small machine the ingest loop, the Kafka clients and the broker
    # share the cores, and an OpenMP team that loses one of its threads to them waits at
    # every barrier (bench/results/torch-threads.json has the freshness figures).
    torch_threads: int = 1
    # The interpreter's GIL switch interval (sys.setswitchinterval; process-wide), or 0: by
    # the trainer's device (stream.training.switch_interval_s: 1 ms on CUDA, CPython's own
    # 5 ms on the CPU). Every torch op releases the GIL and takes it back from an ingest
    # thread running Python only after this interval, so a short one speeds the trainer
    # (a GPU learn call beside a busy thread: 13.7x its time alone at 5 ms, 2.75x at 1 ms;
    # bench/results/gil_switch.json, gpu.json) and slows ingest, which on a small CPU is
    # the bound (the 2-core runs at 1 ms applied fewer events/s: docs/benchmarks.md, "GIL switch").
    gil_switch_interval_ms: float = 0.0
    # Large tensors from freed heap blocks, not fresh mmap'd pages (stream/allocator.py:
    # learn calls 17-38 % faster at 210k-1M edges, RSS 130-330 MB higher). Process-wide.
    keep_freed_memory: bool = True
    # Huge-page advice for the trainer's large CPU tensors (stream/allocator.py: learn calls
    # 11-13 % faster at 1M-10M edges). Process-wide.
    huge_pages: bool = True
    # MiB of the training thread's heap faulted in before the first event (0: none), with
    # keep_freed_memory on (stream/allocator.py: a fresh worker's first seconds went to
    # page faults). Below the 256 MiB the heap keeps free: more would be returned at once.
    pretouch_heap_mib: int = 240
    max_backlog_events: int = 100_000
    # Publish the users of each taken batch's events at once, re-embedded from their own
    # edges (stream/learn/reflect.py), while a learner thread takes the steps behind
    # (stream/learn/behind.py): an event need not wait for a step. Off: on this 2-core
    # machine p99 fell at 2,000 events/s and rose at 10,000 (docs/worker.md, "Reflect before the
    # step").
    reflect_before_step: bool = False
    checkpoint_dir: Path = Path("var/checkpoints")
    checkpoint_interval_s: float = 60.0
    checkpoints_kept: int = 3
    # A checkpoint written under other meaning settings (stream.learn.compatibility):
    # "fail" stops the worker naming each one; "discard" moves the checkpoints aside.
    on_checkpoint_mismatch: str = "fail"

    def __post_init__(self) -> None:
        if self.on_checkpoint_mismatch not in CHECKPOINT_MISMATCH_POLICIES:
            raise ConfigError(
                f"on_checkpoint_mismatch must be one of {', '.join(CHECKPOINT_MISMATCH_POLICIES)}"
                f", got {self.on_checkpoint_mismatch!r}"
            )
        _positive("max_backlog_events", self.max_backlog_events)
        _positive("checkpoints_kept", self.checkpoints_kept)
        if not 0 <= self.pretouch_heap_mib < 256:
            raise ConfigError(
                f"pretouch_heap_mib must be 0 to 255 (the heap keeps 256 MiB free at most), "
                f"got {self.pretouch_heap_mib!r}"
            )
        if self.torch_threads < 0:
            raise ConfigError(f"torch_threads must be >= 0, got {self.torch_threads!r}")
        # CPython keeps whole microseconds: below one it would switch without pause, and a
        # huge value wraps around to 0 in its conversion.
        switch_ms = self.gil_switch_interval_ms
        low, high = GIL_SWITCH_MS
        if switch_ms != 0 and not (math.isfinite(switch_ms) and low <= switch_ms <= high):
            raise ConfigError(
                f"gil_switch_interval_ms must be 0 (by device) or between {low} and {high}, "
                f"got {switch_ms!r}"
            )
        if not (math.isfinite(self.checkpoint_interval_s) and self.checkpoint_interval_s > 0):
            raise ConfigError(
                f"checkpoint_interval_s must be finite and > 0, got {self.checkpoint_interval_s!r}"
            )


@dataclass(frozen=True)
class Settings:
    """Everything a streamgnn command is configured with: the root of the one tree.

    ``training`` is how the model learns, for the worker and for ``streamgnn eval`` alike,
    so an evaluation measures the deployed worker's settings.
    """

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    events: EventSettings = field(default_factory=EventSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
    training: TrainerSettings = field(default_factory=TrainerSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    produce: ProduceSettings = field(default_factory=ProduceSettings)
    data: DataSettings = field(default_factory=DataSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    consume: ConsumeSettings = field(default_factory=ConsumeSettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    metrics_address: str = "127.0.0.1:9464"

    def __post_init__(self) -> None:
        _one_kind_a_topic(self.kafka, self.publish)
        if self.store.changelog and not self.kafka.instance_id:
            raise ConfigError(
                "the changelog needs an instance id (--instance-id): it is the stable part "
                "of the worker's transactional.id"
            )


_CHANGELOG = "-graph-changelog"  # a changelog topic's name ends so


def changelog_topic(interactions_topic: str, group_id: str) -> str:
    """One changelog per source topic and consumer group: another group is another
    application with a state of its own."""
    return f"{interactions_topic}-{group_id}{_CHANGELOG}"


def of_stream(topic: str, interactions_topic: str) -> bool:
    """Whether ``topic`` carries the events of ``interactions_topic``: it is that topic, or
    a changelog of it (any group's: each holds the same stream's edges).

    >>> of_stream("views", "views"), of_stream(changelog_topic("views", "g2"), "views")
    (True, True)
    >>> of_stream("clicks", "views"), of_stream(changelog_topic("clicks", "g"), "views")
    (False, False)
    """
    prefix = f"{interactions_topic}-"
    group = topic.removeprefix(prefix).removesuffix(_CHANGELOG)
    changelog = topic.startswith(prefix) and topic.endswith(_CHANGELOG) and group != ""
    return topic == interactions_topic or changelog


def _one_kind_a_topic(kafka: KafkaSettings, publish: PublishSettings) -> None:
    """Each topic holds one kind of record: events, dead letters, user or item vectors, or
    the changelog's state. Shared, each reader meets the other kind's records (a worker
    that dead-letters into its input loops; a DLQ that is a vector topic is compacted)."""
    changelog = changelog_topic(kafka.interactions_topic, kafka.group_id)
    named = {
        "--interactions-topic": kafka.interactions_topic,
        "--dlq-topic": kafka.dlq_topic,
        "--user-embeddings-topic": publish.user_topic,
        "--item-embeddings-topic": publish.item_topic,
        "the changelog (of --interactions-topic and --group-id)": changelog,
    }
    seen: dict[str, str] = {}
    for setting, topic in named.items():
        if topic in seen:
            raise ConfigError(
                f"{seen[topic]} and {setting} are both topic {topic!r}: each topic holds one "
                "kind of record"
            )
        seen[topic] = setting


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
