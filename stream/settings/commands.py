"""The command sections of the settings tree: ``produce``, ``data``, ``eval``, ``consume``,
``demo``. Each option has its environment twin (:mod:`stream.settings.options`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from stream.errors import ConfigError

# The methods ``streamgnn eval`` knows (built by :mod:`stream.evaluation.catalogue`): the
# baselines, then the model; ``retrain-decayed`` runs only when asked for.
EVAL_BASELINES = ("popularity", "popularity-recent", "popularity-all", "itemknn", "cooccur-recent")
EVAL_MODELS = ("static", "incremental", "retrain")
EVAL_DEFAULT_METHODS = EVAL_BASELINES + EVAL_MODELS
EVAL_METHODS = (*EVAL_DEFAULT_METHODS, "retrain-decayed")
RETRAIN_EPOCHS = (5, 10, 20, 40)  # the epoch budgets retrain chooses from on the warm-up
# popularity-recent's windows to choose from, as fractions of the warm-up's event count
WINDOW_FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
BOOTSTRAP_RESAMPLES = 1_000


@dataclass(frozen=True)
class ProduceSettings:
    """How much to send, how fast, and the synthetic stream's shape.

    ``count`` and ``duration_s`` of 0 mean no limit. The default rate is a demo's trickle
    (the compose ``producer`` service runs with the defaults); benchmarks pass their own.
    """

    rate: float = 100.0
    count: int = 0
    duration_s: float = 0.0
    seed: int = 0
    users: int = 10_000
    items: int = 5_000
    new_user_share: float = 0.01
    late_share: float = 0.01
    no_progress: bool = False
    synthetic: bool = False  # the synthetic stream, said explicitly (the default without data)

    def __post_init__(self) -> None:
        for name in ("rate", "duration_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"produce {name} must be finite and >= 0, got {value!r}")
        if self.count < 0:
            raise ConfigError(f"produce count must be >= 0, got {self.count!r}")
        for name in ("new_user_share", "late_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"produce {name} must be in [0, 1], got {value!r}")


@dataclass(frozen=True)
class DataSettings:
    """An interaction file and its layout (``eval``, ``produce --data``, ``demo --data``).

    The readers (:func:`stream.evaluation.data.table_format`) validate the layout and name
    a bad value; ``None`` means the format's default.
    """

    path: Path | None = None
    format: str = "csv"
    sep: str | None = None
    header: bool | None = None
    user_col: str | int | None = None
    item_col: str | int | None = None
    time_col: str | int | None = None
    weight_col: str | int | None = None
    event_col: str | int | None = None
    time_unit: str | None = None
    event_type: str | None = None


@dataclass(frozen=True)
class EvalSettings:
    """The prequential protocol of ``streamgnn eval`` and where its report goes.

    ``chunks`` equal-count chunks (10 when neither is given) or chunks of
    ``chunk_duration_ms`` of event time; not both. ``target_types`` None: every event is a
    target. ``epochs`` is the warm-up fit of ``static``/``incremental``; ``retrain`` and
    ``popularity-recent`` choose from their grids on the warm-up (one value: no choice).
    """

    methods: tuple[str, ...] = EVAL_DEFAULT_METHODS
    target_types: tuple[str, ...] | None = None
    warmup: float = 0.5
    chunks: int | None = None
    chunk_duration_ms: int | None = None
    micro_batch: int = 1_000
    epochs: int = 20
    retrain_epochs: tuple[int, ...] = RETRAIN_EPOCHS
    window_fractions: tuple[float, ...] = WINDOW_FRACTIONS
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES
    json: Path | None = None
    plot: Path | None = None
    no_progress: bool = False

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in EVAL_METHODS]
        if unknown or not self.methods:
            raise ConfigError(
                f"--methods: unknown {unknown or list(self.methods)}; "
                f"valid: {', '.join(EVAL_METHODS)}"
            )
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"--methods: give each method once, got {list(self.methods)}")
        if self.target_types is not None and not self.target_types:
            raise ConfigError("--target-types: name at least one event type (or leave it out)")
        if not self.retrain_epochs or min(self.retrain_epochs) < 1:
            raise ConfigError(
                f"--retrain-epochs: epoch budgets must be >= 1, got {list(self.retrain_epochs)}"
            )
        if not self.window_fractions or not all(0 < f <= 1 for f in self.window_fractions):
            raise ConfigError(
                f"--window-fractions must be in (0, 1], got {list(self.window_fractions)}"
            )
        if self.bootstrap_resamples < 1:
            raise ConfigError(
                f"--bootstrap-resamples must be >= 1, got {self.bootstrap_resamples!r}"
            )
        if self.chunks is not None and self.chunk_duration_ms is not None:
            raise ConfigError("--chunks and --chunk-duration exclude each other; pass one")
        if self.chunk_duration_ms is not None and self.chunk_duration_ms <= 0:
            raise ConfigError(f"--chunk-duration must be > 0, got {self.chunk_duration_ms!r}")

    @property
    def chunk_count(self) -> int:
        """Equal-count chunks to use (10 unless given)."""
        return self.chunks if self.chunks is not None else 10


@dataclass(frozen=True)
class ConsumeSettings:
    """``streamgnn consume``: follow the embedding topics, or print one user's top-k."""

    json: bool = False
    user: str | None = None
    k: int = 10
    from_beginning: bool = False
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"--k must be >= 1, got {self.k}")
        if self.max_seconds is not None and not self.max_seconds >= 0:
            raise ConfigError(f"--max-seconds must be >= 0, got {self.max_seconds}")


@dataclass(frozen=True)
class DemoSettings:
    """``streamgnn demo``: how long, how fast, whose top-k, and the local broker's jars."""

    rate: float = 500.0
    duration_s: float = 60.0
    user: str | None = None
    k: int = 5
    every_s: float = 2.0
    dim: int = 32  # the demo worker's embedding size: small, so a laptop keeps up
    kafka_libs: Path | None = None  # Kafka's jars (default: a per-user cache)

    def __post_init__(self) -> None:
        for name in ("rate", "duration_s", "every_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"demo {name} must be finite and > 0, got {value!r}")
        for name in ("k", "dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"demo {name} must be >= 1, got {getattr(self, name)!r}")
