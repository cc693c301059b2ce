"""One frozen, validated settings object; environment variables are read here only.

Settings come in sub-sections (:class:`KafkaSettings`, :class:`StoreSettings`,
:class:`EventSettings`, :class:`PublishSettings`, :class:`TrainingSettings`).
:data:`OPTIONS` lists every option once with its environment twin, so the command line,
``--help`` and the environment can never disagree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from stream.errors import ConfigError
from stream.publish.schema import ENCODINGS

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Behaviour:
    """How one event type weighs in the graph: weight ``beta``, decay ``half_life_ms``."""

    beta: float
    half_life_ms: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ConfigError(f"behaviour beta must be finite and > 0, got {self.beta!r}")
        if self.half_life_ms <= 0:
            raise ConfigError(f"behaviour half_life_ms must be > 0, got {self.half_life_ms!r}")


DEFAULT_BEHAVIOURS: Mapping[str, Behaviour] = MappingProxyType(
    {
        "view": Behaviour(0.5, 1 * DAY_MS),
        "click": Behaviour(1.0, 3 * DAY_MS),
        "favorite": Behaviour(2.0, 30 * DAY_MS),
        "cart": Behaviour(3.0, 7 * DAY_MS),
        "purchase": Behaviour(5.0, 60 * DAY_MS),
        "rating": Behaviour(1.0, 60 * DAY_MS),
        "follow": Behaviour(1.0, 180 * DAY_MS),
    }
)

# Event types whose item_id names another user (a social edge).
SOCIAL_EVENT_TYPES = frozenset({"follow"})


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

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"store epsilon must be finite and > 0, got {self.epsilon!r}")


@dataclass(frozen=True)
class KafkaSettings:
    """Brokers, topics and the consumer group."""

    bootstrap_servers: str = "127.0.0.1:19092"
    interactions_topic: str = "interactions"
    dlq_topic: str = "interactions.dlq"
    group_id: str = "streamgnn"
    instance_id: str | None = None  # static membership: a restart rejoins without a rebalance wait
    max_batch_records: int = 5_000
    session_timeout_ms: int = 10_000
    # A dead letter not acked within this long stops ingestion (the worker exits non-zero
    # with the store and checkpoint consistent) instead of retrying forever.
    dlq_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("bootstrap_servers", "interactions_topic", "dlq_topic", "group_id"):
            if not getattr(self, name):
                raise ConfigError(f"kafka {name} must not be empty")
        if self.interactions_topic == self.dlq_topic:
            raise ConfigError(f"dlq_topic must differ from interactions_topic ({self.dlq_topic!r})")
        _positive("max_batch_records", self.max_batch_records)
        _positive("session_timeout_ms", self.session_timeout_ms)
        if not (math.isfinite(self.dlq_timeout_s) and self.dlq_timeout_s > 0):
            raise ConfigError(f"dlq_timeout_s must be finite and > 0, got {self.dlq_timeout_s!r}")


@dataclass(frozen=True)
class PublishSettings:
    """The embedding topics (DESIGN.md, "Output") and how vectors are published to them.

    ``change_threshold`` is applied by the trainer: a vector is re-published when it moved
    more than this (L2) since it was last published; a vector whose node had new events in
    the step is always published, so it reflects them however little it moved.
    ``ledger_path`` holds the highest model version that may be on the topics, so a
    restarted publisher never goes below it (see ``stream.publish.ledger``).
    """

    user_topic: str = "user-embeddings"
    item_topic: str = "item-embeddings"
    vector_encoding: str = "json"
    topic_partitions: int = 1
    topic_replication_factor: int = 1
    ledger_path: Path = Path("var/publish/versions.json")
    change_threshold: float = 0.05  # L2 on unit vectors: cosine 0.99875
    flush_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.user_topic or not self.item_topic:
            raise ConfigError("embedding topic names must not be empty")
        if self.user_topic == self.item_topic:
            raise ConfigError(f"user and item embedding topics must differ ({self.user_topic!r})")
        if self.vector_encoding not in ENCODINGS:
            raise ConfigError(
                f"vector_encoding must be one of {ENCODINGS}, got {self.vector_encoding!r}"
            )
        _positive("topic_partitions", self.topic_partitions)
        _positive("topic_replication_factor", self.topic_replication_factor)
        if not (math.isfinite(self.change_threshold) and self.change_threshold >= 0):
            raise ConfigError(
                f"change_threshold must be finite and >= 0, got {self.change_threshold!r}"
            )
        if not (math.isfinite(self.flush_timeout_s) and self.flush_timeout_s > 0):
            raise ConfigError(
                f"flush_timeout_s must be finite and > 0, got {self.flush_timeout_s!r}"
            )


@dataclass(frozen=True)
class TrainingSettings:
    """How the worker trains and checkpoints (the model itself: ``models.trainer``).

    Ingestion never waits on a training step: applied events queue in a backlog that the
    trainer thread takes whole (micro-batches coalesce when it falls behind). Only when
    the backlog holds ``max_backlog_events`` does the worker pause fetching, so memory
    stays bounded and the excess waits in Kafka, visible as consumer lag.
    """

    enabled: bool = True
    encoder: str = "lightgcn"
    dim: int = 64
    layers: int = 2
    device: str = "auto"
    steps_per_batch: int = 1
    max_steps_per_batch: int = 1
    max_drift_reports: int = 500
    # Intra-op threads of the trainer's torch kernels (0: torch's default, one per core).
    # One by default: on a small machine the ingest loop, the Kafka clients and the broker
    # share the cores, and an OpenMP team that loses one of its threads to them waits at
    # every barrier (freshness p99 at 2,000 events/s on 2 cores: 1.07 s with 2 threads,
    # 0.55 s with 1; bench/freshness.py).
    torch_threads: int = 1
    max_backlog_events: int = 100_000
    max_users: int = 1_000_000
    max_items: int = 1_000_000
    id_ttl_ms: int = 30 * DAY_MS
    checkpoint_dir: Path = Path("var/checkpoints")
    checkpoint_interval_s: float = 60.0
    checkpoints_kept: int = 3

    def __post_init__(self) -> None:
        for name in ("dim", "steps_per_batch", "max_backlog_events", "max_users", "max_items"):
            _positive(name, getattr(self, name))
        _positive("id_ttl_ms", self.id_ttl_ms)
        _positive("checkpoints_kept", self.checkpoints_kept)
        for name in ("max_steps_per_batch", "max_drift_reports", "torch_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.layers < 0:
            raise ConfigError(f"layers must be >= 0, got {self.layers!r}")
        if not (math.isfinite(self.checkpoint_interval_s) and self.checkpoint_interval_s > 0):
            raise ConfigError(
                f"checkpoint_interval_s must be finite and > 0, got {self.checkpoint_interval_s!r}"
            )


@dataclass(frozen=True)
class Settings:
    """Everything a streamgnn process is configured with."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    events: EventSettings = field(default_factory=EventSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    metrics_address: str = "127.0.0.1:9464"


@dataclass(frozen=True)
class Option:
    """One setting as the command line and the environment see it."""

    flag: str
    env: str
    section: str
    name: str
    help: str


OPTIONS: tuple[Option, ...] = (
    Option(
        "--bootstrap-servers",
        "STREAMGNN_BOOTSTRAP_SERVERS",
        "kafka",
        "bootstrap_servers",
        "Kafka brokers, host:port[,host:port]",
    ),
    Option(
        "--interactions-topic",
        "STREAMGNN_INTERACTIONS_TOPIC",
        "kafka",
        "interactions_topic",
        "topic of interaction events",
    ),
    Option(
        "--dlq-topic",
        "STREAMGNN_DLQ_TOPIC",
        "kafka",
        "dlq_topic",
        "dead-letter topic for rejected events",
    ),
    Option("--group-id", "STREAMGNN_GROUP_ID", "kafka", "group_id", "consumer group"),
    Option(
        "--instance-id",
        "STREAMGNN_INSTANCE_ID",
        "kafka",
        "instance_id",
        "static group membership id (one per worker)",
    ),
    Option(
        "--max-batch-records",
        "STREAMGNN_MAX_BATCH_RECORDS",
        "kafka",
        "max_batch_records",
        "records applied per store write batch at most",
    ),
    Option(
        "--session-timeout-ms",
        "STREAMGNN_SESSION_TIMEOUT_MS",
        "kafka",
        "session_timeout_ms",
        "consumer group session timeout",
    ),
    Option(
        "--dlq-timeout-s",
        "STREAMGNN_DLQ_TIMEOUT_S",
        "kafka",
        "dlq_timeout_s",
        "seconds a dead letter may go unacked before ingestion stops (exit non-zero)",
    ),
    Option("--store-path", "STREAMGNN_STORE_PATH", "store", "path", "RocksDB directory"),
    Option(
        "--epsilon",
        "STREAMGNN_EPSILON",
        "store",
        "epsilon",
        "edges whose decayed weight falls below this are pruned",
    ),
    Option(
        "--sync-writes",
        "STREAMGNN_SYNC_WRITES",
        "store",
        "sync_writes",
        "fsync every store batch (true/false)",
    ),
    Option(
        "--behaviours",
        "STREAMGNN_BEHAVIOURS",
        "events",
        "behaviours",
        'JSON {"click": {"beta": 1, "half_life_ms": 259200000}, ...}',
    ),
    Option(
        "--dedup-window-ms",
        "STREAMGNN_DEDUP_WINDOW_MS",
        "events",
        "dedup_window_ms",
        "event-time window in which a repeated event_id is applied once",
    ),
    Option(
        "--max-future-skew-ms",
        "STREAMGNN_MAX_FUTURE_SKEW_MS",
        "events",
        "max_future_skew_ms",
        "events more than this ahead of their Kafka record timestamp are dead-lettered",
    ),
    Option(
        "--min-event-ts-ms",
        "STREAMGNN_MIN_EVENT_TS_MS",
        "events",
        "min_ts_ms",
        "the oldest event time (epoch ms) accepted; older events are dead-lettered",
    ),
    Option(
        "--max-event-bytes",
        "STREAMGNN_MAX_EVENT_BYTES",
        "events",
        "max_event_bytes",
        "larger records are dead-lettered unparsed",
    ),
    Option(
        "--user-embeddings-topic",
        "STREAMGNN_USER_EMBEDDINGS_TOPIC",
        "publish",
        "user_topic",
        "compacted topic of user vectors (created if missing)",
    ),
    Option(
        "--item-embeddings-topic",
        "STREAMGNN_ITEM_EMBEDDINGS_TOPIC",
        "publish",
        "item_topic",
        "compacted topic of item vectors (created if missing)",
    ),
    Option(
        "--vector-encoding",
        "STREAMGNN_VECTOR_ENCODING",
        "publish",
        "vector_encoding",
        "json (float list) or f32le-base64 (compact little-endian float32)",
    ),
    Option(
        "--embedding-partitions",
        "STREAMGNN_EMBEDDING_PARTITIONS",
        "publish",
        "topic_partitions",
        "partitions of each embedding topic when the app creates it",
    ),
    Option(
        "--embedding-replication-factor",
        "STREAMGNN_EMBEDDING_REPLICATION_FACTOR",
        "publish",
        "topic_replication_factor",
        "replication factor of each embedding topic when the app creates it",
    ),
    Option(
        "--version-ledger",
        "STREAMGNN_VERSION_LEDGER",
        "publish",
        "ledger_path",
        "file holding the highest model version that may be published (keep it durable)",
    ),
    Option(
        "--publish-threshold",
        "STREAMGNN_PUBLISH_THRESHOLD",
        "publish",
        "change_threshold",
        "re-publish a vector once it moved more than this (L2) since its last publish",
    ),
    Option(
        "--train",
        "STREAMGNN_TRAIN",
        "training",
        "enabled",
        "train and publish embeddings (false: ingest into the store only)",
    ),
    Option(
        "--encoder",
        "STREAMGNN_ENCODER",
        "training",
        "encoder",
        "lightgcn, tgn, sage, pinsage or mbgat",
    ),
    Option("--dim", "STREAMGNN_DIM", "training", "dim", "embedding dimension"),
    Option("--layers", "STREAMGNN_LAYERS", "training", "layers", "propagation layers"),
    Option("--device", "STREAMGNN_DEVICE", "training", "device", "auto, cpu or cuda[:n]"),
    Option(
        "--steps-per-batch",
        "STREAMGNN_STEPS_PER_BATCH",
        "training",
        "steps_per_batch",
        "passes over each (coalesced) micro-batch",
    ),
    Option(
        "--max-steps-per-batch",
        "STREAMGNN_MAX_STEPS_PER_BATCH",
        "training",
        "max_steps_per_batch",
        "optimiser steps per (coalesced) micro-batch at most; 0: no cap",
    ),
    Option(
        "--max-drift-reports",
        "STREAMGNN_MAX_DRIFT_REPORTS",
        "training",
        "max_drift_reports",
        "vectors re-published per step for drift alone (largest first; 0: all)",
    ),
    Option(
        "--torch-threads",
        "STREAMGNN_TORCH_THREADS",
        "training",
        "torch_threads",
        "intra-op threads of the trainer's torch kernels (0: one per core)",
    ),
    Option(
        "--max-backlog-events",
        "STREAMGNN_MAX_BACKLOG_EVENTS",
        "training",
        "max_backlog_events",
        "applied events waiting for the trainer before fetching pauses (backpressure)",
    ),
    Option(
        "--max-users",
        "STREAMGNN_MAX_USERS",
        "training",
        "max_users",
        "user rows at most; beyond it expired ids are evicted, else new ones refused",
    ),
    Option(
        "--max-items",
        "STREAMGNN_MAX_ITEMS",
        "training",
        "max_items",
        "item rows at most (same policy as users)",
    ),
    Option(
        "--id-ttl-ms",
        "STREAMGNN_ID_TTL_MS",
        "training",
        "id_ttl_ms",
        "event time after which an unseen id may be evicted",
    ),
    Option(
        "--checkpoint-dir",
        "STREAMGNN_CHECKPOINT_DIR",
        "training",
        "checkpoint_dir",
        "directory of trainer checkpoints (loaded on start)",
    ),
    Option(
        "--checkpoint-interval-s",
        "STREAMGNN_CHECKPOINT_INTERVAL_S",
        "training",
        "checkpoint_interval_s",
        "seconds between checkpoints (one is also written on SIGTERM)",
    ),
    Option(
        "--metrics-address",
        "STREAMGNN_METRICS_ADDRESS",
        "",
        "metrics_address",
        "host:port of the Prometheus /metrics endpoint",
    ),
)


def load_settings(
    values: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build :class:`Settings` from option values (by ``Option.name``) over the environment.

    An explicit value wins over its environment twin, which wins over the default.

    >>> s = load_settings({"group_id": "g1"}, {"STREAMGNN_EPSILON": "0.01"})
    >>> (s.kafka.group_id, s.store.epsilon)
    ('g1', 0.01)
    """
    values = values or {}
    environ = environ or {}
    sections: dict[str, dict[str, object]] = {
        "kafka": {},
        "store": {},
        "events": {},
        "publish": {},
        "training": {},
        "": {},
    }
    defaults = Settings()
    for option in OPTIONS:
        raw = values.get(option.name)
        if raw is None:
            raw = environ.get(option.env)
        if raw is None:
            continue
        target = getattr(defaults, option.section) if option.section else defaults
        sections[option.section][option.name] = _coerce(option, raw, getattr(target, option.name))
    return Settings(
        kafka=KafkaSettings(**sections["kafka"]),  # type: ignore[arg-type]
        store=StoreSettings(**sections["store"]),  # type: ignore[arg-type]
        events=EventSettings(**sections["events"]),  # type: ignore[arg-type]
        publish=PublishSettings(**sections["publish"]),  # type: ignore[arg-type]
        training=TrainingSettings(**sections["training"]),  # type: ignore[arg-type]
        **sections[""],  # type: ignore[arg-type]
    )


def coerce_value(raw: str, default: object) -> object:
    """``raw`` parsed as the type of ``default`` (bool, int, float, Path or str).

    Raises ``ValueError`` when it does not parse.

    >>> coerce_value("yes", False), coerce_value("3", 0), coerce_value("0.5", 1.0)
    (True, 3, 0.5)
    """
    if isinstance(default, bool):
        if raw.lower() not in {"true", "false", "1", "0", "yes", "no"}:
            raise ValueError(raw)
        return raw.lower() in {"true", "1", "yes"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, Path):
        return Path(raw)
    return raw


def _coerce(option: Option, raw: str, default: object) -> object:
    try:
        if option.name == "behaviours":
            return parse_behaviours(raw)
        return coerce_value(raw, default)
    except ValueError as exc:
        raise ConfigError(f"{option.flag} / {option.env}: invalid value {raw!r}") from exc


def parse_behaviours(raw: str) -> Mapping[str, Behaviour]:
    """Parse ``{"name": {"beta": float, "half_life_ms": int}}`` into behaviours."""
    try:
        spec = json.loads(raw)
        behaviours = {
            str(name): Behaviour(float(b["beta"]), int(b["half_life_ms"]))
            for name, b in spec.items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"invalid behaviours JSON {raw!r}: {exc}") from exc
    return MappingProxyType(behaviours)


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
