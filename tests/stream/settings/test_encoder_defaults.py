"""An encoder's own training defaults: applied where an option is not given, never over a
flag or an environment twin, never to lightgcn."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from models.resolver import ENCODERS
from stream.cli import build_parser
from stream.settings import OPTIONS, load_settings, settings_from_args
from stream.settings import training as training_module
from stream.settings.training import ENCODER_DEFAULTS, TrainerSettings

TABLE = MappingProxyType({"tgn": MappingProxyType({"lr": 0.01, "num_negatives": 16})})


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training_module, "ENCODER_DEFAULTS", TABLE)


@pytest.mark.usefixtures("table")
def test_an_encoders_defaults_fill_what_is_not_given() -> None:
    tgn = load_settings({"training.encoder": "tgn"}, {}).training
    assert (tgn.lr, tgn.num_negatives) == (0.01, 16)
    assert tgn.temperature == TrainerSettings().temperature  # not in its table
    flag = load_settings({"training.encoder": "tgn", "training.lr": "0.3"}, {}).training
    assert (flag.lr, flag.num_negatives) == (0.3, 16)
    env = load_settings({}, {"STREAMGNN_ENCODER": "tgn", "STREAMGNN_NUM_NEGATIVES": "8"})
    assert (env.training.lr, env.training.num_negatives) == (0.01, 8)
    # lightgcn (the default encoder) and an encoder without a table keep the field defaults
    assert load_settings({}, {}).training == TrainerSettings()
    sage = load_settings({"training.encoder": "sage"}, {}).training
    assert sage == dataclasses.replace(TrainerSettings(), encoder="sage")


@pytest.mark.usefixtures("table")
def test_worker_and_eval_take_the_same_encoder_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    parse = build_parser().parse_args
    worker = settings_from_args(parse(["worker", "--encoder", "tgn"])).training
    evaluation = settings_from_args(parse(["eval", "--data", "x", "--encoder", "tgn"])).training
    assert worker == evaluation and worker.lr == 0.01


def test_the_table_names_valid_settings_of_known_encoders_but_lightgcn() -> None:
    assert TrainerSettings.encoder not in ENCODER_DEFAULTS
    fields = {f.name for f in dataclasses.fields(TrainerSettings)}
    for name, table in ENCODER_DEFAULTS.items():
        assert name in ENCODERS and set(table) <= fields - {"encoder"}, name
        settings = load_settings({"training.encoder": name}, {}).training  # validates
        assert all(getattr(settings, key) == value for key, value in table.items())


def test_help_lists_each_encoders_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    shown = " ".join(commands["eval"].format_help().split())
    for name, table in ENCODER_DEFAULTS.items():
        listed = ", ".join(f"{key} {value}" for key, value in table.items())
        assert f"{name}: {listed}" in shown, name
    monkeypatch.setattr(training_module, "ENCODER_DEFAULTS", TABLE)
    assert training_module.encoder_defaults_text() == "tgn: lr 0.01, num_negatives 16"
