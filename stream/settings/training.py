"""The ``training`` section: how the incremental trainer learns, in the worker and in eval.

One set of defaults, the live worker's: ``streamgnn eval`` runs these too, so a quality
figure is the deployed worker's figure. An encoder may replace some of them with its own
(:data:`ENCODER_DEFAULTS`), in the worker and in eval alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from models.resolver import ENCODERS
from models.sampling import check_sampler
from stream.behaviours import DAY_MS
from stream.errors import ConfigError, model_config_errors

LOSSES = ("bpr", "info_nce")
STEP_SCOPES = ("local", "full")
HOUR_MS = DAY_MS // 24
# The graph mirror packs (user row, item row, relation) into one non-negative int64 slot key
# (stream.learn.graph_mirror): 23 bits of user row, 32 of item row, 8 of relation.
MAX_USERS, MAX_ITEMS = 1 << 23, 1 << 32


# Training defaults that differ by encoder, applied by the settings loader
# (stream.settings.load) to the options not given as a flag or an environment twin; an
# encoder not listed (lightgcn) takes the field defaults below. Chosen for each encoder on
# the first half of ML-100K by time (its own warm-up and 10 chunks scored), never on the
# scored half (bench/results/eval-ml100k-encoders-validation.json, docs/evaluation.md).
ENCODER_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "sage": MappingProxyType({"lr": 0.01, "temperature": 0.3}),
        "tgn": MappingProxyType({"lr": 0.01}),
        "mbgat": MappingProxyType({"temperature": 0.3}),
    }
)


@dataclass(frozen=True)
class TrainerSettings:
    """How the trainer learns; validated on construction (errors name the bad value).

    The loss defaults (InfoNCE, uniform negatives, lr 0.05, 4096 positives per step) come
    from the ML-100K prequential runs (bench/results/eval-ml100k*.json record the settings
    of each). The step budget is the live worker's: one pass and at most one optimiser
    step per (coalesced) micro-batch, so training keeps up with the stream. The score prior
    (trend half-lives), the user recency view and 64 negatives were chosen on validation
    slices of the warm-ups of ML-100K and RetailRocket (the last 30 % of each warm-up scored
    prequentially), never on scored chunks.
    """

    encoder: str = "lightgcn"
    dim: int = 64
    layers: int = 2
    lr: float = 0.05
    steps_per_batch: int = 1  # passes over each micro-batch's positives
    # Optimiser steps per learn call at most (0: no cap). A live worker whose backlog
    # coalesced into a large batch trains on a random subset of its positives instead of
    # falling further behind; every event still enters the graph and the vectors.
    max_steps_per_batch: int = 1
    # Rows reported per call for drift alone (moved past publish_threshold with no new
    # event of their own), largest moves first; 0: no cap. The rest stay pending and are
    # reported by later calls, so one step's drift never floods the embedding topics.
    # Rows with new events are always reported.
    max_drift_reports: int = 500
    replay_ratio: float = 1.0  # replayed older edges per new edge
    negatives: str = "uniform"
    num_negatives: int = 64
    hard_pool: int = 32  # candidate pool per row for "hard" negatives
    loss: str = "info_nce"
    temperature: float = 0.2  # InfoNCE
    batch_size: int = 4096  # positives per optimiser step
    # L2 move since the last report that counts as changed (on unit vectors, 0.05 is a
    # cosine of 0.99875); a row with new events is reported however little it moved.
    publish_threshold: float = 0.05
    device: str = "auto"
    mixed_precision: bool = True  # CUDA autocast (bf16 where supported, else fp16)
    seed: int = 0
    max_users: int = 1_000_000
    max_items: int = 1_000_000
    id_ttl_ms: int = 30 * DAY_MS
    # What is rising now, in the score (models/prior.py): half-lives (ms, 0: never decays)
    # of the item trend features whose learnt mix is added to the dot product and
    # published as one extra vector component. Empty: no prior, vectors of ``dim``.
    trend_half_lives_ms: tuple[int, ...] = (HOUR_MS, DAY_MS, 3 * DAY_MS, 7 * DAY_MS)
    # A user's latest items matter most: in the trainer's view of the graph an edge's
    # weight also halves per this much time it lies behind its user's newest edge
    # (stream.learn.graph_view.user_recency); 0: off.
    user_recency_half_life_ms: int = HOUR_MS
    # What a learn call trains and re-embeds. "local": the sampled ``layers``-hop
    # neighbourhood of its positives and negatives, row-wise Adam on the rows it holds, then
    # a re-embedding bounded by ``fanout`` and ``sweep_rows`` (stream/learn/local_step.py);
    # "full": the whole graph, dense Adam, every row re-embedded. Encoders without a local
    # step (models.base.Encoder.local_step: only lightgcn without learnt relation scales
    # has one) always take the full one. Default "full": the bounded local step's quality
    # is inside the full step's 95 % interval on ML-100K validation
    # (bench/results/eval-ml100k-validation-local-bounded.json vs -full.json), but with 64
    # uniform negatives per positive it measured dearer than the full step up to 1M edges
    # (bench/results/step_cost.json, docs/worker.md, "A learn step"). The cheap candidate chosen on
    # the warm-ups (local, 64 shared negatives, a 2,048-row sweep) lost to the best baseline
    # on ML-100K's scored chunks (docs/worker.md, "A cheaper default step, tried").
    step_scope: str = "full"
    # Edges per node and hop at most in a local step's neighbourhood (0: all, exact). Also
    # bounds the re-embedding: with fanout > 0 a local step re-embeds and publishes only
    # its seeds (the rows of its positives and new events, on a capped tree) plus the
    # sweep below; other rows keep their cached vectors until they are seeds again, swept,
    # or fully refreshed (stream/learn/local_step.py). 0: every row within ``layers`` hops
    # of a moved row, exactly.
    fanout: int = 10
    # A local step samples one hop around its seeds and reads their neighbours' deeper
    # layers from those neighbours' last embedding (historical embeddings, GNNAutoScale;
    # models.base.Encoder.forward_historical) instead of sampling ``layers`` hops: a step
    # and a re-embedding cost the seeds' edges (~fanout each), not their trees
    # (~fanout^layers). Off by default: see docs/worker.md, "A cheaper default step, tried".
    layer_history: bool = False
    # A bounded local step also re-embeds this many rows of each kind per learn call, round
    # robin over the live rows, so a cached vector is at most live / sweep_rows calls old
    # (0: no sweep).
    sweep_rows: int = 1024
    # A local step re-embeds every row every this many learn calls (0: never; freshness
    # never needs it, it only republishes the slow drift of rows far from any batch).
    full_refresh_every: int = 0
    encoder_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ConfigError(
                f"unknown encoder {self.encoder!r}; valid names: {', '.join(sorted(ENCODERS))}"
            )
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; valid names: {', '.join(LOSSES)}")
        with model_config_errors():
            check_sampler(self.negatives)
        for name in ("dim", "layers", "steps_per_batch", "num_negatives", "hard_pool"):
            if getattr(self, name) <= 0 and not (name == "layers" and self.layers == 0):
                raise ConfigError(f"trainer {name} must be > 0, got {getattr(self, name)!r}")
        if self.step_scope not in STEP_SCOPES:
            raise ConfigError(
                f"unknown step scope {self.step_scope!r}; valid: {', '.join(STEP_SCOPES)}"
            )
        for name in (
            "max_steps_per_batch",
            "max_drift_reports",
            "fanout",
            "sweep_rows",
            "full_refresh_every",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("batch_size", "max_users", "max_items", "id_ttl_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"trainer {name} must be > 0, got {getattr(self, name)!r}")
        for name, most in (("max_users", MAX_USERS), ("max_items", MAX_ITEMS)):
            if getattr(self, name) > most:
                raise ConfigError(
                    f"trainer {name} must be at most {most:,} (the graph mirror's edge keys "
                    f"hold rows below that), got {getattr(self, name)!r}"
                )
        for name in ("lr", "temperature"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"trainer {name} must be finite and > 0, got {value!r}")
        for name in ("replay_ratio", "publish_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"trainer {name} must be finite and >= 0, got {value!r}")
        if any(not h >= 0 for h in self.trend_half_lives_ms):
            raise ConfigError(f"trend half-lives must be >= 0 ms, got {self.trend_half_lives_ms}")
        if self.negatives == "hard" and self.hard_pool < self.num_negatives:
            raise ConfigError(f"hard_pool {self.hard_pool} < num_negatives {self.num_negatives}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda[:n], got {self.device!r}")

    @property
    def out_dim(self) -> int:
        """Components of a published vector: ``dim``, plus one when the prior is on."""
        return self.dim + (1 if self.trend_half_lives_ms else 0)


def encoder_defaults(given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` training values completed, where absent, by the defaults of the encoder
    they name (the default encoder has none of its own).

    >>> encoder_defaults({"lr": 0.1})
    {'lr': 0.1}
    """
    encoder = str(given.get("encoder", TrainerSettings.encoder))
    return {**ENCODER_DEFAULTS.get(encoder, {}), **given}


def encoder_defaults_text() -> str:
    """The encoders' own defaults for ``--help``: ``tgn: lr 0.01, ...``."""
    return "; ".join(
        f"{name}: " + ", ".join(f"{key} {value}" for key, value in table.items())
        for name, table in sorted(ENCODER_DEFAULTS.items())
    )
