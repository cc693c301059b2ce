"""Does a checkpoint fit the settings? Which settings give the vectors their meaning.

A checkpoint is a trained model: parameters that turn the graph into vectors. A setting
is part of the vectors' *meaning* when the same parameters would compute something else,
or could not load, under another value. Every checkpoint records these
(:func:`recorded_settings`) and a loaded one must match them (:func:`conflicts`):

- ``--encoder``, ``--dim``, ``--encoder-options``: another architecture or width.
- ``--layers``: LightGCN has the same parameters at any depth, so a change would load
  without a complaint, yet each vector would average another neighbourhood.
- ``--trend-half-lives``: the score prior's learnt mix weighs one trend feature per
  half-life, and whether the vectors carry the prior component at all (``--dim`` + 1).
- ``--user-recency-half-life``: like ``--layers``, the same parameters would average
  another neighbourhood (a user's older edges weigh differently).
- the encoder's revision (:attr:`models.base.Encoder.revision`, not a setting): this
  build's forward of ``--encoder`` may compute other vectors from the same parameters
  than the build that wrote the checkpoint did (a checkpoint without one: revision 1).
- the stream (``--interactions-topic``, or a changelog of it, which ``streamgnn train``
  reads; the worker and ``streamgnn train`` may take turns on one checkpoint directory):
  a checkpoint that trained through offsets of other topics only holds another stream's
  ids and vectors (a checkpoint directory kept when the topic
  setting changed); resumed, they would stay in the registry and be trained on again.
- ``--behaviours``: relation ``r`` is the ``r``-th behaviour by name (relation-typed
  encoders hold parameters per relation), and beta and half-life weigh the edges every
  encoder propagates over. The store refuses a change too; this catches a fresh store
  beside an old checkpoint.

``--max-users`` / ``--max-items`` are capacities, not meaning: a checkpoint fits while it
holds no more ids than they allow.

Everything else is *tuning* and may change across a restart: how the model learns from
here (lr, loss, temperature, negatives, steps, batch size, replay ratio, step scope and
fan-out: either optimiser's state loads into the other), what is published
(publish threshold, drift cap), eviction (id TTL), where it runs (device, mixed precision)
and the seed (it only initialises a fresh model). A new loss or temperature fine-tunes the
same parameters toward another objective, as any further training does: the vectors keep
their meaning and drift.

A checkpoint written before settings were recorded is checked on what its trainer state
holds (encoder and dim) and loaded with a warning naming what could not be checked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from models.resolver import encoder_class
from stream.errors import ConfigError
from stream.settings import OPTIONS, Settings, of_stream

log = logging.getLogger(__name__)

MEANING: tuple[str, ...] = (
    "training.encoder",
    "training.dim",
    "training.layers",
    "training.encoder_options",
    "training.trend_half_lives_ms",
    "training.user_recency_half_life_ms",
    "events.behaviours",
)
"""Option keys whose values a checkpoint must have been written under."""

REVISION = "encoder_revision"
"""The record's key of :attr:`models.base.Encoder.revision`, beside the option keys."""

CAPACITY: Mapping[str, str] = {"training.max_users": "user", "training.max_items": "item"}
"""Option keys bounding how many ids (of a kind) a checkpoint may hold."""

_OPTIONS = {option.key: option for option in OPTIONS}


@dataclass(frozen=True)
class Conflict:
    """One way a checkpoint does not fit: the option (flag and twin) and both values."""

    setting: str
    detail: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.detail}"


class CheckpointMismatchError(ConfigError):
    """The newest checkpoint was written under other meaning settings; names each one."""

    def __init__(self, path: Path | None, found: Sequence[Conflict]) -> None:
        listed = "\n".join(f"  {conflict}" for conflict in found)
        super().__init__(
            f"checkpoint {path} does not match the settings:\n{listed}\n"
            "Run with the checkpoint's values, or pass --on-checkpoint-mismatch discard "
            "(STREAMGNN_ON_CHECKPOINT_MISMATCH=discard) to move the checkpoints aside and "
            "train a fresh model."
        )
        self.conflicts = tuple(found)


def recorded_settings(settings: Settings) -> dict[str, str | int]:
    """What a checkpoint records: each meaning setting as canonical text, the capacities."""
    record: dict[str, str | int] = {key: _canonical(_value(settings, key)) for key in MEANING}
    for key in CAPACITY:
        record[key] = int(_value(settings, key))
    record[REVISION] = encoder_class(settings.training.encoder).revision
    return record


def conflicts(payload: Mapping[str, Any], settings: Settings) -> list[Conflict]:
    """Every way the checkpoint ``payload`` does not fit ``settings`` (empty: it fits)."""
    current = recorded_settings(settings)
    recorded = payload.get("settings")
    if not isinstance(recorded, Mapping):
        recorded = _from_trainer_state(payload)
        unchecked = [_named(key) for key in MEANING if key not in recorded]
        log.warning(
            "checkpoint records no settings (written by an older version); not checked: %s",
            ", ".join(unchecked),
        )
    found = [
        Conflict(_named(key), f"checkpoint {recorded[key]}, settings {current[key]}")
        for key in MEANING
        if key in recorded and recorded[key] != current[key]
    ]
    revision = int(recorded.get(REVISION, 1))
    if recorded.get("training.encoder") == current["training.encoder"] and (
        revision != current[REVISION]
    ):
        found.append(
            Conflict(
                _named("training.encoder"),
                f"checkpoint {current['training.encoder']} revision {revision}, this build "
                f"computes revision {current[REVISION]} (other vectors from the same parameters)",
            )
        )
    topic = settings.kafka.interactions_topic
    trained_on = sorted({str(key).rpartition(":")[0] for key in payload.get("offsets") or {}})
    if trained_on and not any(of_stream(t, topic) for t in trained_on):  # another stream's
        found.append(
            Conflict(
                _named("kafka.interactions_topic"),
                f"checkpoint trained on topic {', '.join(trained_on)}, settings {topic} (or "
                "a changelog of it)",
            )
        )
    for key, kind in CAPACITY.items():
        held = _ids_held(payload, kind)
        if held > int(current[key]):
            written = f" (written with {recorded[key]})" if key in recorded else ""
            found.append(
                Conflict(
                    _named(key),
                    f"checkpoint holds {held} {kind} ids{written}, settings {current[key]}",
                )
            )
    return found


def _value(settings: Settings, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(settings, section), name)


def _canonical(value: Any) -> str:
    """Text that compares equal exactly when the values mean the same."""
    if isinstance(value, Mapping):
        plain = {
            str(k): asdict(v) if is_dataclass(v) and not isinstance(v, type) else v
            for k, v in value.items()
        }
        return json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return str(value)


def _named(key: str) -> str:
    option = _OPTIONS[key]
    return f"{option.flag} ({option.env})"


def _from_trainer_state(payload: Mapping[str, Any]) -> dict[str, str]:
    """The meaning settings an older checkpoint's trainer state holds."""
    state = payload.get("trainer")
    if not isinstance(state, Mapping):
        return {}
    found = {"training.encoder": state.get("encoder_name"), "training.dim": state.get("dim")}
    return {key: str(value) for key, value in found.items() if value is not None}


def _ids_held(payload: Mapping[str, Any], kind: str) -> int:
    try:
        return len(payload["trainer"]["registry"]["kinds"][kind]["ids"])
    except (KeyError, TypeError):
        return 0  # not a registry this build reads: loading it fails and says why
