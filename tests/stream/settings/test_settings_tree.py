"""The one settings tree: every setting an option with its environment twin, read in one
place, shown in every command's ``--help``; ``eval`` learns with the worker's settings."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import typing
from pathlib import Path

import pytest

from stream.cli import build_parser
from stream.errors import ConfigError
from stream.evaluation.catalogue import MethodOptions, build_methods
from stream.evaluation.command import recipe
from stream.evaluation.methods import IncrementalModel
from stream.settings import OPTIONS, Settings, changelog_topic, load_settings, settings_from_args

STREAM = Path(__file__).resolve().parents[3] / "stream"


def _sections(owner: type, prefix: str = "") -> dict[str, type]:
    """Sections by dotted name, sub-sections (``kafka.security``) too."""
    found: dict[str, type] = {}
    for f in dataclasses.fields(owner):
        hint = typing.get_type_hints(owner)[f.name]
        if dataclasses.is_dataclass(hint):
            found[prefix + f.name] = hint
            found.update(_sections(hint, f"{prefix}{f.name}."))
    return found


SECTIONS = _sections(Settings)


def test_every_setting_is_an_option_with_a_streamgnn_twin() -> None:
    assert "kafka.security" in SECTIONS
    for name, section in SECTIONS.items():
        options = [o.name for o in OPTIONS if o.section == name]
        settings = [
            f.name for f in dataclasses.fields(section) if f"{name}.{f.name}" not in SECTIONS
        ]
        assert options == settings, name
    root = [f.name for f in dataclasses.fields(Settings) if f.name not in SECTIONS]
    assert [o.name for o in OPTIONS if not o.section] == root
    assert all(o.env.startswith("STREAMGNN_") for o in OPTIONS)
    assert len({o.env for o in OPTIONS}) == len(OPTIONS)  # one twin per option
    produce = [o for o in OPTIONS if o.section == "produce"]
    assert all(o.env == "STREAMGNN_PRODUCE_" + o.name.upper() for o in produce)


def test_every_command_shows_each_options_twin_in_help() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, command in commands.items():
        text = command.format_help()
        options = command.get_default("settings_options")
        assert options, f"{name} takes no options from the settings tree"
        for option in options:
            assert option.flag in text and f"[{option.env}]" in text, (name, option.env)


def test_flag_over_environment_over_default() -> None:
    env = {"STREAMGNN_PRODUCE_RATE": "50", "STREAMGNN_PRODUCE_COUNT": "9"}
    settings = load_settings({"produce.rate": "7.5", "produce.count": None}, env).produce
    assert (settings.rate, settings.count, settings.seed) == (7.5, 9, 0)
    assert load_settings({}, {"STREAMGNN_PRODUCE_NO_PROGRESS": "true"}).produce.no_progress


@pytest.mark.parametrize(
    ("values", "named"),
    [({"produce.rate": "fast"}, "--rate / STREAMGNN_PRODUCE_RATE"),
     ({"produce.rate": "-1"}, "rate"),
     ({"produce.count": "-3"}, "count"), ({"produce.late_share": "2"}, "late_share"),
     ({"training.dim": "0"}, "dim"),
     ({"data.header": "maybe"}, "--header / STREAMGNN_DATA_HEADER"),
     ({"eval.chunk_duration_ms": "soon"}, "--chunk-duration / STREAMGNN_EVAL_CHUNK_DURATION")],
)  # fmt: skip
def test_bad_values_name_the_option(values: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(values, {})


def test_a_command_reads_only_its_own_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMGNN_PRODUCE_RATE", "fast")  # not the worker's: never parsed
    monkeypatch.setenv("STREAMGNN_GROUP_ID", "from-env")
    settings = settings_from_args(build_parser().parse_args(["worker", "--dim", "8"]))
    assert (settings.kafka.group_id, settings.training.dim) == ("from-env", 8)


def test_eval_learns_with_the_workers_training_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    parse = build_parser().parse_args
    worker = settings_from_args(parse(["worker"]))
    evaluation = settings_from_args(parse(["eval", "--data", "log.csv"]))
    assert evaluation.training == worker.training
    chosen = recipe(evaluation)
    assert chosen.settings == worker.training
    options = MethodOptions(evaluation.events.behaviours, chosen)
    (incremental,) = build_methods(["incremental"], options)
    assert (
        isinstance(incremental, IncrementalModel) and incremental.recipe.settings == worker.training
    )
    # a flag moves both the same way: there is one definition of each option
    tuned = [parse(["worker", "--steps-per-batch", "3"]), parse(["eval", "--steps-per-batch", "3"])]
    assert settings_from_args(tuned[0]).training == settings_from_args(tuned[1]).training


def _streamgnn_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}:
            names.add(f"os.{node.attr}")
        if isinstance(node, ast.Constant) and str(node.value).startswith("STREAMGNN_"):
            names.add(str(node.value))
    return names


def test_the_environment_is_read_in_one_place() -> None:
    # demo.py configures its child processes through their twins (and passes the rest of
    # the environment on); jars.py reads XDG_CACHE_HOME and JAVA_HOME, platform settings;
    # learn/ranks.py reads torchrun's WORLD_SIZE and LOCAL_RANK (its rendezvous contract);
    # allocator.py writes torch's THP_MEM_ALLOC_ENABLE (read once by torch, never by us).
    allowed = {
        "settings/load.py",
        "settings/options.py",
        "demo.py",
        "local_broker/jars.py",
        "learn/ranks.py",
        "allocator.py",
    }
    readers = {
        str(path.relative_to(STREAM)): names
        for path in STREAM.rglob("*.py")
        if (names := _streamgnn_names(path))
    }
    assert readers.keys() <= allowed, {k: v for k, v in readers.items() if k not in allowed}
    assert "os.environ" in readers["settings/load.py"]
    for platform in ("local_broker/jars.py", "learn/ranks.py"):
        assert not {n for n in readers.get(platform, set()) if n.startswith("STREAM")}


def test_the_changelog_needs_an_instance_id() -> None:
    with pytest.raises(ConfigError, match="--instance-id"):
        load_settings({"store.changelog": "true"}, {})
    on = load_settings({"store.changelog": "true", "kafka.instance_id": "w1"}, {})
    assert on.store.changelog and not load_settings({}, {}).store.changelog


TOPICS = {
    "kafka.interactions_topic": "--interactions-topic",
    "kafka.dlq_topic": "--dlq-topic",
    "publish.user_topic": "--user-embeddings-topic",
    "publish.item_topic": "--item-embeddings-topic",
}


@pytest.mark.parametrize(("first", "second"), itertools.combinations(sorted(TOPICS), 2))
def test_each_topic_holds_one_kind_of_record(first: str, second: str) -> None:
    """Any two topic settings naming one topic are refused, naming both (by hand, a worker
    whose DLQ was its item topic ran on without a word, the DLQ created compacted)."""
    with pytest.raises(ConfigError, match="both topic 'shared'") as raised:
        load_settings({first: "shared", second: "shared"}, {})
    assert TOPICS[first] in str(raised.value) and TOPICS[second] in str(raised.value)


def test_an_embedding_topic_may_not_be_the_changelog() -> None:
    changelog = changelog_topic("views", "g1")
    values = {"kafka.interactions_topic": "views", "kafka.group_id": "g1"}
    with pytest.raises(ConfigError, match="--user-embeddings-topic and the changelog"):
        load_settings({**values, "publish.user_topic": changelog}, {})
    assert load_settings({**values, "publish.user_topic": "views-g2-graph-changelog"}, {})
