"""Every option of the settings tree, once: its flag, its environment twin and its help.

``--help`` shows each option's twin, and the loader reads exactly these names, so the
command line, the help and the environment cannot disagree. An option's flag and twin
derive from its field name (``max_users``: ``--max-users``, ``STREAMGNN_MAX_USERS``; a
command section prefixes the twin, ``STREAMGNN_PRODUCE_RATE``) unless given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stream.behaviours import parse_behaviours
from stream.settings.commands import EVAL_METHODS
from stream.settings.secret import Secret
from stream.settings.training import encoder_defaults_text
from stream.settings.values import (
    parse_column,
    parse_duration,
    parse_floats,
    parse_half_life,
    parse_half_lives,
    parse_ints,
    parse_json_object,
    parse_names,
)

# Sections whose twins carry a prefix (they belong to one command).
_PREFIX = {"produce": "PRODUCE_", "data": "DATA_", "eval": "EVAL_", "consume": "CONSUME_"}
_PREFIX["demo"] = "DEMO_"
_PREFIX["kafka.security"] = "KAFKA_"  # STREAMGNN_KAFKA_SASL_PASSWORD, ...


@dataclass(frozen=True)
class Option:
    """One setting as the command line and the environment see it.

    ``kind``: ``value`` takes a value; ``switch`` is a bare flag meaning true;
    ``toggle`` is ``--x`` / ``--no-x``; ``secret`` is read from its environment twin only
    (no flag: a password on a command line is in ``ps`` and shell history) and never
    echoed. ``parse`` overrides the parser the field's type implies (see
    :mod:`stream.settings.load`).
    """

    section: str  # "" for the root of the tree; "kafka.security": a section's sub-section
    name: str
    flag: str
    env: str
    help: str
    kind: str = "value"
    parse: Callable[[str], object] | None = None

    @property
    def key(self) -> str:
        """``section.name`` (the root's options: ``name``), how values are passed in."""
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def dest(self) -> str:
        """The argparse destination."""
        return self.key.replace(".", "__")


def _opt(
    section: str,
    name: str,
    help: str,
    *,
    flag: str | None = None,
    env: str | None = None,
    kind: str = "value",
    parse: Callable[[str], object] | None = None,
) -> Option:
    flag = "" if kind == "secret" else flag or "--" + name.replace("_", "-")
    env = env or f"STREAMGNN_{_PREFIX.get(section, '')}{name.upper()}"
    return Option(section, name, flag, env, help, kind, parse)


_COLUMN = "csv column of the {}: name or 0-based index"

OPTIONS: tuple[Option, ...] = (
    _opt("", "metrics_address", "host:port of the Prometheus /metrics endpoint"),
    # kafka
    _opt("kafka", "bootstrap_servers", "Kafka brokers, host:port[,host:port]"),
    _opt("kafka", "interactions_topic", "topic of interaction events"),
    _opt("kafka", "dlq_topic", "dead-letter topic for rejected events"),
    _opt("kafka", "group_id", "consumer group"),
    _opt(
        "kafka",
        "instance_id",
        "static group membership id (one per worker; with --changelog, its transactional.id)",
    ),
    _opt("kafka", "max_batch_records", "records applied per store write batch at most"),
    _opt(
        "kafka",
        "batch_linger_ms",
        "ms ingest waits, after a batch's first record, for more before applying it",
    ),
    _opt("kafka", "session_timeout_ms", "consumer group session timeout"),
    _opt(
        "kafka",
        "dlq_timeout_s",
        "seconds a dead letter may go unacked before ingestion stops (exit non-zero)",
    ),
    # kafka.security: how every Kafka client connects (TLS, SASL)
    _opt("kafka.security", "security_protocol", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    _opt("kafka.security", "sasl_mechanism", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
    _opt("kafka.security", "sasl_username", "SASL login"),
    _opt("kafka.security", "sasl_password", "SASL password", kind="secret", parse=Secret),
    _opt("kafka.security", "sasl_password_file", "file holding the SASL password"),
    _opt("kafka.security", "ssl_cafile", "PEM CA file the brokers' certificates chain to"),
    _opt("kafka.security", "ssl_certfile", "PEM client certificate (mTLS)"),
    _opt("kafka.security", "ssl_keyfile", "PEM private key of the client certificate"),
    _opt(
        "kafka.security",
        "ssl_key_password",
        "password of an encrypted client key",
        kind="secret",
        parse=Secret,
    ),
    _opt("kafka.security", "ssl_key_password_file", "file holding the client key's password"),
    # store
    _opt("store", "path", "RocksDB directory", flag="--store-path", env="STREAMGNN_STORE_PATH"),
    _opt("store", "epsilon", "edges whose decayed weight falls below this are pruned"),
    _opt("store", "sync_writes", "fsync every store batch (true/false)"),
    _opt(
        "store",
        "changelog",
        "back partition state with a compacted changelog topic written in Kafka transactions "
        "(true/false; needs --instance-id)",
    ),
    # events
    _opt(
        "events",
        "behaviours",
        'JSON {"click": {"beta": 1, "half_life_ms": 2592000000}, ...} (the defaults: '
        "stream/behaviours.py, every half-life at least 30 days)",
        parse=parse_behaviours,
    ),
    _opt("events", "max_id_bytes", "longer user/item ids are dead-lettered"),
    _opt("events", "max_event_bytes", "larger records are dead-lettered unparsed"),
    _opt("events", "min_ts_ms", "the oldest event time (epoch ms) accepted; older: ts_too_old"),
    _opt("events", "max_ts_ms", "latest valid event time (epoch ms)"),
    _opt("events", "max_weight", "largest valid event weight"),
    _opt("events", "dedup_window_ms", "event-time window in which a repeated event_id counts once"),
    _opt(
        "events",
        "max_future_skew_ms",
        "events more than this ahead of their Kafka record timestamp are dead-lettered",
    ),
    # publish
    _opt(
        "publish",
        "user_topic",
        "compacted topic of user vectors (created if missing)",
        flag="--user-embeddings-topic",
        env="STREAMGNN_USER_EMBEDDINGS_TOPIC",
    ),
    _opt(
        "publish",
        "item_topic",
        "compacted topic of item vectors (created if missing)",
        flag="--item-embeddings-topic",
        env="STREAMGNN_ITEM_EMBEDDINGS_TOPIC",
    ),
    _opt(
        "publish",
        "vector_encoding",
        "json (float list) or f32le-base64 (compact little-endian float32)",
    ),
    _opt(
        "publish",
        "topic_partitions",
        "partitions of each embedding topic when the app creates it",
        flag="--embedding-partitions",
        env="STREAMGNN_EMBEDDING_PARTITIONS",
    ),
    _opt(
        "publish",
        "topic_replication_factor",
        "replication factor of each embedding topic when the app creates it",
        flag="--embedding-replication-factor",
        env="STREAMGNN_EMBEDDING_REPLICATION_FACTOR",
    ),
    _opt(
        "publish",
        "ledger_path",
        "file holding the highest model version that may be published (keep it durable)",
        flag="--version-ledger",
        env="STREAMGNN_VERSION_LEDGER",
    ),
    _opt("publish", "flush_timeout_s", "seconds a publish waits for every ack before retrying"),
    # training: how the model learns (the worker and eval alike)
    _opt(
        "training",
        "encoder",
        "lightgcn, tgn, sage, pinsage or mbgat; an encoder's own training defaults apply "
        f"where an option is not given ({encoder_defaults_text()}), the defaults shown "
        "below otherwise",
    ),
    _opt("training", "dim", "embedding dimension"),
    _opt("training", "layers", "propagation layers"),
    _opt("training", "lr", "Adam learning rate"),
    _opt("training", "steps_per_batch", "passes over each (coalesced) micro-batch"),
    _opt(
        "training",
        "max_steps_per_batch",
        "optimiser steps per (coalesced) micro-batch at most; 0: no cap",
    ),
    _opt(
        "training",
        "max_drift_reports",
        "vectors re-published per step for drift alone (largest first; 0: all)",
    ),
    _opt("training", "replay_ratio", "replayed older edges per new edge"),
    _opt(
        "training", "negatives", "negative sampler: uniform, shared, popularity, in_batch or hard"
    ),
    _opt(
        "training",
        "num_negatives",
        "negatives per positive (shared: the pool every positive of a step is scored against)",
    ),
    _opt("training", "hard_pool", "candidate pool per row for hard negatives"),
    _opt("training", "loss", "bpr or info_nce"),
    _opt("training", "temperature", "InfoNCE temperature"),
    _opt("training", "batch_size", "positives per optimiser step"),
    _opt(
        "training",
        "publish_threshold",
        "re-publish a vector once it moved more than this (L2) since its last publish",
    ),
    _opt("training", "device", "auto, cpu or cuda[:n]"),
    _opt("training", "mixed_precision", "CUDA autocast, bf16 where supported (true/false)"),
    _opt("training", "seed", "model seed (eval: also the tie-break seed)"),
    _opt(
        "training",
        "max_users",
        "user rows at most (up to 8,388,608); beyond it expired ids are evicted, else new "
        "ones refused",
    ),
    _opt("training", "max_items", "item rows at most (up to 4,294,967,296; same policy)"),
    _opt("training", "id_ttl_ms", "event time after which an unseen id may be evicted"),
    _opt(
        "training",
        "trend_half_lives_ms",
        "half-lives of the item trend features of the score prior (1h,1d,...; never: no "
        "decay; empty: no prior, vectors of --dim)",
        flag="--trend-half-lives",
        env="STREAMGNN_TREND_HALF_LIVES",
        parse=parse_half_lives,
    ),
    _opt(
        "training",
        "user_recency_half_life_ms",
        "the trainer's view weighs a user's edges by their age behind the user's newest "
        "edge with this half-life (0: off)",
        flag="--user-recency-half-life",
        env="STREAMGNN_USER_RECENCY_HALF_LIFE",
        parse=parse_half_life,
    ),
    _opt(
        "training",
        "step_scope",
        "local (lightgcn without learnt relation scales only, other encoders always take "
        "the full step): a learn step trains on the sampled neighbourhood of its batch and "
        "re-embeds what --fanout and --sweep-rows bound; full (default): the whole graph, "
        "every row re-embedded",
    ),
    _opt(
        "training",
        "fanout",
        "edges per node and hop at most in a local step (0: all); > 0 also bounds its "
        "re-embedding to its seeds (positives' and new events' rows) plus --sweep-rows, "
        "the other rows keeping their cached vectors until re-embedded",
    ),
    _opt(
        "training",
        "layer_history",
        "a local step samples one hop and reads the neighbours' deeper layers from their "
        "last embedding instead of sampling --layers hops (historical embeddings)",
    ),
    _opt(
        "training",
        "sweep_rows",
        "rows per kind a bounded local step also re-embeds per call, round robin (0: none)",
    ),
    _opt(
        "training",
        "full_refresh_every",
        "a local step re-embeds every row every this many learn calls (0: never)",
    ),
    _opt(
        "training",
        "encoder_options",
        'JSON of encoder arguments, e.g. {"num_neighbors": 10}',
        parse=parse_json_object,
    ),
    # worker
    _opt("worker", "train", "train and publish embeddings (false: ingest into the store only)"),
    _opt("worker", "torch_threads", "intra-op threads of the trainer's torch kernels (0: all)"),
    _opt(
        "worker",
        "gil_switch_interval_ms",
        "the interpreter's GIL switch interval, ms (0: 1 on CUDA, 5 on the CPU)",
    ),
    _opt(
        "worker",
        "keep_freed_memory",
        "serve the trainer's large tensors from freed heap blocks, not fresh pages (glibc)",
    ),
    _opt(
        "worker",
        "huge_pages",
        "advise transparent huge pages for the trainer's large CPU tensors (torch)",
    ),
    _opt(
        "worker",
        "pretouch_heap_mib",
        "MiB of the training thread's heap faulted in before the first event (0: none)",
    ),
    _opt(
        "worker",
        "max_backlog_events",
        "applied events waiting for the trainer before fetching pauses (backpressure)",
    ),
    _opt(
        "worker",
        "reflect_before_step",
        "publish each batch's users re-embedded from their own edges at once and take "
        "the steps behind in a learner thread (full step, LightGCN)",
    ),
    _opt("worker", "checkpoint_dir", "directory of trainer checkpoints (loaded on start)"),
    _opt(
        "worker",
        "checkpoint_interval_s",
        "seconds between checkpoints (one is also written on SIGTERM) and between checks "
        "that the embedding topics are the ones published to",
    ),
    _opt("worker", "checkpoints_kept", "complete checkpoints kept (older ones deleted)"),
    _opt(
        "worker",
        "on_checkpoint_mismatch",
        "a checkpoint written under other --encoder/--dim/--layers/--encoder-options/"
        "--behaviours or too large for --max-users/--max-items: fail (exit naming each) or "
        "discard (move the checkpoints aside, start a fresh model)",
    ),
    # produce
    _opt("produce", "rate", "events per second; 0 sends as fast as possible"),
    _opt("produce", "count", "stop after this many events; 0: no limit"),
    _opt("produce", "duration_s", "stop after this many seconds; 0: no limit"),
    _opt("produce", "seed", "synthetic stream seed (same seed, same events)"),
    _opt("produce", "users", "synthetic established users (Zipf popularity)"),
    _opt("produce", "items", "synthetic items (Zipf popularity, in taste clusters)"),
    _opt("produce", "new_user_share", "synthetic share of events from a brand-new user"),
    _opt("produce", "late_share", "synthetic share of events with ts before the clock (late)"),
    _opt("produce", "no_progress", "no progress bar", kind="switch"),
    _opt("produce", "synthetic", "the synthetic stream (default without --data)", kind="switch"),
    # data: an interaction file and its layout
    _opt("data", "path", "interaction file", flag="--data", env="STREAMGNN_DATA"),
    _opt("data", "format", "file layout: csv, movielens, retailrocket or taobao"),
    _opt("data", "sep", "csv field separator (,)"),
    _opt("data", "header", "csv header row", kind="toggle"),
    _opt("data", "user_col", _COLUMN.format("user id"), parse=parse_column),
    _opt("data", "item_col", _COLUMN.format("item id"), parse=parse_column),
    _opt("data", "time_col", _COLUMN.format("timestamp"), parse=parse_column),
    _opt("data", "weight_col", "csv column of the weight (default: weight 1)", parse=parse_column),
    _opt(
        "data",
        "event_col",
        "csv column of the event type (default: --event-type for every row)",
        parse=parse_column,
    ),
    _opt("data", "time_unit", "s or ms; guessed when absent"),
    _opt("data", "event_type", "csv event type of every row (click)"),
    # eval
    _opt(
        "eval",
        "methods",
        f"comma list of {', '.join(EVAL_METHODS)} (default: all but retrain-decayed)",
        parse=parse_names,
    ),
    _opt(
        "eval",
        "target_types",
        "only events of these types are targets, e.g. cart,purchase (default: all); "
        "every event still counts as history",
        parse=parse_names,
    ),
    _opt("eval", "warmup", "warm-up fraction of the stream"),
    _opt("eval", "chunks", "equal-count chunks (10 when --chunk-duration is not given)"),
    _opt(
        "eval",
        "chunk_duration_ms",
        "chunks by event time instead: 12h, 1d, 1w",
        flag="--chunk-duration",
        env="STREAMGNN_EVAL_CHUNK_DURATION",
        parse=parse_duration,
    ),
    _opt("eval", "micro_batch", "events per store write and learn call"),
    _opt("eval", "epochs", "epochs of the warm-up fit of static and incremental"),
    _opt(
        "eval",
        "retrain_epochs",
        "epoch budgets retrain chooses from on the warm-up (one value: no choice)",
        parse=parse_ints,
    ),
    _opt(
        "eval",
        "window_fractions",
        "popularity-recent's windows to choose from on the warm-up, as fractions of its events",
        parse=parse_floats,
    ),
    _opt("eval", "bootstrap_resamples", "bootstrap resamples of the queries per interval"),
    _opt("eval", "json", "write the JSON report here"),
    _opt("eval", "plot", "write a PNG of the metrics per chunk here"),
    _opt("eval", "no_progress", "no progress bar", kind="switch"),
    # consume
    _opt("consume", "json", "print JSON lines, not a table", kind="switch"),
    _opt("consume", "user", "read the whole table, print this user's top-k items"),
    _opt("consume", "k", "items to print for --user"),
    _opt(
        "consume",
        "from_beginning",
        "follow from the beginning of the topics (default: only new updates)",
        kind="switch",
    ),
    _opt("consume", "max_seconds", "stop after this many seconds (default: never)"),
    # demo
    _opt("demo", "rate", "events/s offered"),
    _opt("demo", "duration_s", "seconds to run"),
    _opt("demo", "user", "whose top-k to show (default: the busiest user)"),
    _opt("demo", "k", "items in the top-k"),
    _opt("demo", "every_s", "summary interval in seconds"),
    _opt("demo", "dim", "the demo worker's embedding dimension"),
    _opt(
        "demo",
        "kafka_libs",
        "folder of Kafka's jars (default: a per-user cache, filled with Maven once)",
        env="STREAMGNN_KAFKA_LIBS",
    ),
)


def select(*names: str) -> tuple[Option, ...]:
    """The options a command takes: whole sections (with their sub-sections) by name,
    single options by key.

    >>> [o.flag for o in select("kafka.group_id", "metrics_address")]
    ['--metrics-address', '--group-id']
    >>> {o.section for o in select("kafka")} == {"kafka", "kafka.security"}
    True
    """
    sections = {o.section for o in OPTIONS}
    unknown = [n for n in names if n not in sections and n not in {o.key for o in OPTIONS}]
    if unknown:
        raise ValueError(f"no such settings section or option: {unknown}")
    return tuple(o for o in OPTIONS if o.key in names or _within(o.section, names))


def _within(section: str, names: tuple[str, ...]) -> bool:
    return any(section == name or section.startswith(name + ".") for name in names)
