"""The command sections of the settings tree: ``produce``, ``data``, ``eval``, ``consume``,
``demo``. Each option has its environment twin (:mod:`stream.settings.options`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from stream.errors import ConfigError

EVAL_METHODS = ("popularity", "static", "incremental", "retrain")


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
    time_unit: str | None = None
    event_type: str | None = None


@dataclass(frozen=True)
class EvalSettings:
    """The prequential protocol of ``streamgnn eval`` and where its report goes.

    ``chunks`` equal-count chunks (10 when neither is given) or chunks of
    ``chunk_duration_ms`` of event time; not both.
    """

    methods: tuple[str, ...] = EVAL_METHODS
    warmup: float = 0.5
    chunks: int | None = None
    chunk_duration_ms: int | None = None
    micro_batch: int = 1_000
    epochs: int = 20
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
