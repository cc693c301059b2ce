"""A checkpoint must fit the settings that give its vectors their meaning: each conflict is
named with both values, ``discard`` moves the checkpoints aside (never deletes them), and
tuning settings may change freely across a restart."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from models.lightgcn import LightGCNEncoder
from models.sage import PinSAGEEncoder
from stream.errors import ConfigError
from stream.events import Interaction
from stream.learn.checkpoint import CheckpointStore, load_checkpoint
from stream.learn.compatibility import (
    MEANING,
    REVISION,
    CheckpointMismatchError,
    conflicts,
    recorded_settings,
)
from stream.metrics import PipelineMetrics
from stream.settings import OPTIONS, Settings, changelog_topic, load_settings
from stream.state.graph_store import DecayedGraphStore
from stream.train import ChangelogTraining
from stream.training import TrainingLoop

USERS = 5
EVENTS = [
    Interaction(f"u{k % USERS}", f"i{k % 7}", "click", 1_700_000_000_000 + k) for k in range(40)
]
CHANGED = {  # a meaning setting -> (its twin, a value other than the base's)
    "training.encoder": ("STREAMGNN_ENCODER", "sage"),
    "training.dim": ("STREAMGNN_DIM", "16"),
    "training.layers": ("STREAMGNN_LAYERS", "3"),
    "training.encoder_options": ("STREAMGNN_ENCODER_OPTIONS", '{"relation_scale": true}'),
    "training.trend_half_lives_ms": ("STREAMGNN_TREND_HALF_LIVES", "2h,1d"),
    "training.user_recency_half_life_ms": ("STREAMGNN_USER_RECENCY_HALF_LIFE", "0"),
    "events.behaviours": (
        "STREAMGNN_BEHAVIOURS",
        json.dumps(
            {"click": {"beta": 1, "half_life_ms": 1000}, "view": {"beta": 1, "half_life_ms": 9}}
        ),
    ),
}


def settings(tmp_path: Path, **env: str) -> Settings:
    base = {
        "STREAMGNN_DIM": "8",
        "STREAMGNN_DEVICE": "cpu",
        "STREAMGNN_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "STREAMGNN_STORE_PATH": str(tmp_path / "graph"),
    }
    return load_settings({}, base | env)


def resumed(s: Settings) -> TrainingLoop:
    with DecayedGraphStore(s.store.path, s.events.behaviours, s.store.epsilon) as store:
        loop = TrainingLoop(s, store, PipelineMetrics())
        loop.resume()
        return loop


def write_checkpoint(s: Settings, legacy: bool = False, unrevised: bool = False) -> Path:
    """A checkpoint trained on :data:`EVENTS` under ``s`` (``legacy``: no settings record;
    ``unrevised``: settings without the encoder's revision, as before revisions existed)."""
    loop = resumed(s)
    loop.trainer.learn(EVENTS)
    loop.checkpoint()
    path = loop.checkpoints.paths()[-1]
    if legacy or unrevised:
        payload = load_checkpoint(path)
        if legacy:
            del payload["settings"]
        else:
            del payload["settings"][REVISION]
        path.unlink()
        path = loop.checkpoints.save(payload)
    return path


def test_a_checkpoint_fits_the_settings_it_was_written_under(tmp_path: Path) -> None:
    base = settings(tmp_path)
    path = write_checkpoint(base)
    assert conflicts(load_checkpoint(path), base) == []
    assert resumed(base).trainer.model_version == load_checkpoint(path)["trainer"]["model_version"]


def test_every_meaning_setting_has_a_changed_value_here() -> None:
    assert set(CHANGED) == set(MEANING)


@pytest.mark.parametrize("key", sorted(CHANGED))
def test_a_changed_meaning_setting_stops_the_start_naming_it_and_both_values(
    tmp_path: Path, key: str
) -> None:
    base = settings(tmp_path)
    path = write_checkpoint(base)
    twin, value = CHANGED[key]
    # The store refuses other behaviours itself; a fresh store beside the old checkpoint.
    changed = settings(tmp_path, **{twin: value, "STREAMGNN_STORE_PATH": str(tmp_path / "g2")})
    with pytest.raises(CheckpointMismatchError) as raised:
        resumed(changed)
    option = next(o for o in OPTIONS if o.key == key)
    (conflict,) = raised.value.conflicts
    recorded = load_checkpoint(path)["settings"][key]
    assert conflict.setting == f"{option.flag} ({option.env})"
    assert f"checkpoint {recorded}, settings {recorded_settings(changed)[key]}" in conflict.detail
    assert str(conflicts(load_checkpoint(path), changed)[0]) == str(conflict)
    message = str(raised.value)
    assert option.flag in message and str(path) in message
    assert "--on-checkpoint-mismatch discard" in message
    assert [p.name for p in CheckpointStore(base.worker.checkpoint_dir).paths()] == [path.name]


def test_a_checkpoint_of_another_encoder_revision_is_refused_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pinsage's forward changed since revision 1; a checkpoint from before revisions is one
    pinsage = settings(tmp_path, STREAMGNN_ENCODER="pinsage")
    write_checkpoint(pinsage, unrevised=True)
    with pytest.raises(CheckpointMismatchError) as raised:
        resumed(pinsage)
    (conflict,) = raised.value.conflicts
    assert conflict.setting == "--encoder (STREAMGNN_ENCODER)"
    expected = f"pinsage revision 1, this build computes revision {PinSAGEEncoder.revision}"
    assert expected in str(conflict)
    # lightgcn's forward did not change: its checkpoints from before revisions still fit ...
    base = settings(tmp_path / "lightgcn")
    path = write_checkpoint(base, unrevised=True)
    assert conflicts(load_checkpoint(path), base) == []
    # ... until a build's lightgcn computes other vectors
    monkeypatch.setattr(LightGCNEncoder, "revision", LightGCNEncoder.revision + 1)
    with pytest.raises(CheckpointMismatchError, match="lightgcn revision 1, this build"):
        resumed(base)


def test_every_conflict_is_named_at_once(tmp_path: Path) -> None:
    write_checkpoint(settings(tmp_path))
    with pytest.raises(CheckpointMismatchError) as raised:
        resumed(settings(tmp_path, STREAMGNN_DIM="16", STREAMGNN_LAYERS="1"))
    assert sorted(c.setting.split()[0] for c in raised.value.conflicts) == ["--dim", "--layers"]


@pytest.mark.parametrize(
    "tuning",
    [
        {"STREAMGNN_LR": "0.5"},
        {"STREAMGNN_LOSS": "bpr"},
        {"STREAMGNN_TEMPERATURE": "0.9"},
        {"STREAMGNN_NEGATIVES": "popularity", "STREAMGNN_NUM_NEGATIVES": "3"},
        {"STREAMGNN_PUBLISH_THRESHOLD": "0.5", "STREAMGNN_MAX_DRIFT_REPORTS": "1"},
        {"STREAMGNN_SEED": "9", "STREAMGNN_ID_TTL_MS": "5000", "STREAMGNN_EPSILON": "0.01"},
        {"STREAMGNN_MAX_USERS": str(USERS)},  # room for exactly the ids it holds
    ],
)
def test_tuning_settings_may_change_across_a_restart(
    tmp_path: Path, tuning: dict[str, str]
) -> None:
    path = write_checkpoint(settings(tmp_path))
    loop = resumed(settings(tmp_path, **tuning))
    assert loop.trainer.model_version == load_checkpoint(path)["trainer"]["model_version"]


def test_a_checkpoint_with_more_ids_than_the_capacity_names_it(tmp_path: Path) -> None:
    write_checkpoint(settings(tmp_path))
    with pytest.raises(CheckpointMismatchError) as raised:
        resumed(settings(tmp_path, STREAMGNN_MAX_USERS=str(USERS - 1)))
    (conflict,) = raised.value.conflicts
    assert conflict.setting.startswith("--max-users")
    assert f"holds {USERS} user ids" in conflict.detail
    assert f"settings {USERS - 1}" in conflict.detail


def test_discard_moves_the_checkpoints_aside_and_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = settings(tmp_path)
    write_checkpoint(base)
    old = {p.name: p.read_bytes() for p in CheckpointStore(base.worker.checkpoint_dir).paths()}
    changed = settings(tmp_path, STREAMGNN_DIM="16", STREAMGNN_ON_CHECKPOINT_MISMATCH="discard")
    with caplog.at_level(logging.WARNING):
        loop = resumed(changed)
    assert loop.trainer.model_version == 0 and loop.trained_through == {}
    assert loop.trainer.settings.dim == 16
    (aside,) = [p for p in base.worker.checkpoint_dir.iterdir() if p.is_dir()]
    assert aside.name.startswith("discarded-")
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == old
    assert loop.checkpoints.paths() == []
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(all(name in r.getMessage() for name in old) for r in warned)
    loop.checkpoint()  # the fresh model's checkpoints record the new settings
    assert resumed(settings(tmp_path, STREAMGNN_DIM="16")).trainer.settings.dim == 16


def test_an_older_checkpoint_is_checked_on_what_it_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_checkpoint(settings(tmp_path), legacy=True)
    with pytest.raises(CheckpointMismatchError, match="--dim"):
        resumed(settings(tmp_path, STREAMGNN_DIM="16"))
    with caplog.at_level(logging.WARNING):
        resumed(settings(tmp_path, STREAMGNN_LAYERS="3"))  # not recorded: loads, with a warning
    assert any("--layers" in r.getMessage() for r in caplog.records)


def test_a_trainer_state_that_does_not_load_is_a_mismatch_too(tmp_path: Path) -> None:
    # Unrecorded in an older checkpoint, so only loading the parameters can find it.
    write_checkpoint(settings(tmp_path), legacy=True)
    changed = settings(tmp_path, STREAMGNN_ENCODER_OPTIONS='{"relation_scale": true}')
    with pytest.raises(CheckpointMismatchError, match="trainer state"):
        resumed(changed)
    discard = settings(
        tmp_path,
        STREAMGNN_ENCODER_OPTIONS='{"relation_scale": true}',
        STREAMGNN_ON_CHECKPOINT_MISMATCH="discard",
    )
    assert resumed(discard).trainer.model_version == 0


def test_the_policy_is_fail_or_discard_from_flag_or_twin(tmp_path: Path) -> None:
    assert settings(tmp_path).worker.on_checkpoint_mismatch == "fail"
    with pytest.raises(ConfigError, match="on_checkpoint_mismatch"):
        settings(tmp_path, STREAMGNN_ON_CHECKPOINT_MISMATCH="delete")


def with_offsets(s: Settings, offsets: dict[str, int]) -> None:
    """Rewrite the newest checkpoint of ``s`` as if it had trained through ``offsets``."""
    store = CheckpointStore(s.worker.checkpoint_dir)
    path = store.paths()[-1]
    payload = load_checkpoint(path)
    payload["offsets"] = offsets
    path.unlink()
    store.save(payload)


def test_a_checkpoint_of_another_topic_is_refused_naming_both(tmp_path: Path) -> None:
    """A checkpoint directory kept when the topic setting changed: another stream's ids."""
    views = settings(tmp_path, STREAMGNN_INTERACTIONS_TOPIC="views")
    write_checkpoint(views)
    with_offsets(views, {"views:0": len(EVENTS)})
    assert resumed(views).trained_through == {0: len(EVENTS)}  # its own topic: fits
    clicks = settings(tmp_path, STREAMGNN_INTERACTIONS_TOPIC="clicks")
    with pytest.raises(CheckpointMismatchError) as raised:
        resumed(clicks)
    (conflict,) = raised.value.conflicts
    assert conflict.setting == "--interactions-topic (STREAMGNN_INTERACTIONS_TOPIC)"
    assert (
        conflict.detail
        == "checkpoint trained on topic views, settings clicks (or a changelog of it)"
    )
    with_offsets(clicks, {f"{changelog_topic('views', clicks.kafka.group_id)}:0": 7})
    with pytest.raises(CheckpointMismatchError, match="trained on topic views-"):
        resumed(clicks)  # nor a changelog of another topic


def test_the_worker_and_streamgnn_train_take_turns_on_one_checkpoint(tmp_path: Path) -> None:
    """Offsets of a changelog of the stream (streamgnn train's, any group's) fit a worker
    that ingests the stream, and the other way round: the same ids; neither's offsets are
    the other's. By hand: a trainer of group g21 resumed a worker of g20's checkpoint, and
    the worker of g20 resumed the trainer's in turn."""
    s = settings(tmp_path, STREAMGNN_INTERACTIONS_TOPIC="views")
    write_checkpoint(s)
    with_offsets(s, {f"{changelog_topic('views', s.kafka.group_id)}:0": 7})
    loop = resumed(s)
    assert loop.trainer.model_version > 0 and loop.trained_through == {}
    trainer = ChangelogTraining(s, PipelineMetrics(), threading.Event())
    with_offsets(s, {"views:0": 7})
    trainer.resume()
    assert not trainer.cold and trainer.trained_through == {}
    with_offsets(s, {f"{changelog_topic('views', 'other-group')}:0": 7})
    assert resumed(s).trained_through == {}  # another group's changelog: the same stream
