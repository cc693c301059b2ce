"""The trainer's checkpoint image: what :meth:`IncrementalTrainer.state_dict` holds and how
:meth:`IncrementalTrainer.load_state_dict` resumes from it.

The graph mirror is not in it: the store is the durable graph, and
:meth:`IncrementalTrainer.bootstrap` rebuilds the mirror from it after a load. The latest
vectors are: a local step re-embeds only what moved, so a resumed trainer must start from
the very vectors the saved one held to publish what it would have. Either optimiser's state
loads into the other (:mod:`stream.learn.optimiser`), so the step scope may change across a
restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from models.ids import KINDS
from stream.errors import ConfigError, model_config_errors
from stream.learn.checkpoint import cpu_copy

if TYPE_CHECKING:
    from stream.learn.trainer import IncrementalTrainer

STATE_FORMAT = 1


def trainer_state(trainer: IncrementalTrainer) -> dict[str, Any]:
    """Everything needed to resume, copied to the CPU (tensors and plain data only)."""
    t = trainer
    return {
        "format": STATE_FORMAT,
        "encoder_name": t.settings.encoder,
        "dim": t.settings.dim,
        "encoder_rows": [t.encoder.num_users, t.encoder.num_items],
        "encoder": cpu_copy(t.encoder.state_dict()),
        "optimizer": cpu_copy(t.optimizer.state_dict()),
        "scaler": cpu_copy(t._amp.scaler.state_dict()),
        "registry": t.registry.state_dict(),
        "model_version": t.model_version,
        **cpu_copy(t.publish.state_dict()),
        "score_prior": t.score_prior.state_dict() if t.score_prior else None,
        "vectors": cpu_copy(t._latest) if t._latest is not None else None,
        "sweep_cursor": dict(t.sweep_cursor),
    }


def restore_trainer(trainer: IncrementalTrainer, state: Mapping[str, Any]) -> None:
    """Resume ``trainer`` from :func:`trainer_state` (a state without vectors, from before
    they were saved, re-embeds every row on the next step)."""
    t = trainer
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"trainer state format {state.get('format')!r} is not 1")
    for key, mine in (("encoder_name", t.settings.encoder), ("dim", t.settings.dim)):
        if state[key] != mine:
            raise ConfigError(f"checkpoint {key} is {state[key]!r}, settings say {mine!r}")
    saved_prior = state.get("score_prior")
    if t.score_prior is None and saved_prior is not None:
        raise ConfigError("checkpoint has a score prior, settings have no trend half-lives")
    with model_config_errors():
        t.registry.load_state_dict(state["registry"])
    t.encoder = t._build_encoder()
    t.encoder.grow(*state["encoder_rows"])
    t.encoder.load_state_dict(state["encoder"])
    t.score_prior = t._build_prior()
    if t.score_prior is not None:
        t.score_prior.load_state_dict(saved_prior)
    t.optimizer = t._new_optimiser()
    t.optimizer.load_state_dict(state["optimizer"])
    if state["scaler"]:
        t._amp.scaler.load_state_dict(state["scaler"])
    t.model_version = int(state["model_version"])
    t.publish.load_state_dict(state)
    t.mirror = t.new_mirror()
    vectors = state.get("vectors")
    t._latest = None
    t._partial = None
    if vectors is not None and all(vectors[k].shape[0] == t.registry.live(k) for k in KINDS):
        t._latest = {k: vectors[k].to(t.device) for k in KINDS}
    t.sweep_cursor = {k: int((state.get("sweep_cursor") or {}).get(k, 0)) for k in KINDS}
    t._grow()
