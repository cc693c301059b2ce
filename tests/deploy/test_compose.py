"""docker-compose.yml follows the Compose Specification and agrees with the files it uses.

The Compose Specification's JSON schema (Apache-2.0, compose-spec/compose-spec) comes
from the ``check-jsonschema`` package, which vendors it with its licence; it is read as a
data file, never imported.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_files import (
    COMPOSE,
    DOCKERFILE,
    GRAFANA_DIR,
    PROMETHEUS_CONFIG,
    ROOT,
    load_yaml,
)

from stream.cli import build_parser
from stream.settings import OPTIONS, Settings


def _compose_schema() -> dict[str, Any]:
    dist = importlib.metadata.distribution("check-jsonschema")
    path = Path(str(dist.locate_file("check_jsonschema/builtin_schemas/vendor/compose-spec.json")))
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


COMPOSE_DOC: dict[str, Any] = load_yaml(COMPOSE)
SERVICES: dict[str, Any] = COMPOSE_DOC["services"]


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    return {str(k): str(v) for k, v in env.items()}


def _bind_mounts(service: str) -> dict[str, Path]:
    """Container path -> host path of each bind mount (host paths start with ./)."""
    mounts = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = (COMPOSE.parent / source).resolve()
    return mounts


def _dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema = _compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(COMPOSE_DOC)]
    assert errors == []
    # The schema does catch mistakes (guards against validating against nothing).
    broken = {"services": {"worker": {"image": "x", "restart": 3, "bogus": True}}}
    assert not validator.is_valid(broken)


def test_the_stack_has_every_service_of_the_design() -> None:
    assert {"kafka", "worker", "producer", "prometheus", "grafana"} <= set(SERVICES)
    assert SERVICES["kafka"]["image"] == "apache/kafka:3.9.1"


def test_images_are_pinned_and_ports_are_on_loopback() -> None:
    for name, service in SERVICES.items():
        image = service.get("image", "")
        if "build" not in service and image != "streamgnn:local":
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_every_bind_mount_exists_in_the_repo() -> None:
    for name in SERVICES:
        for target, source in _bind_mounts(name).items():
            assert source.exists(), f"{name}: {source} (mounted at {target})"
            assert ROOT in source.parents, source


def test_containers_reach_kafka_on_an_advertised_listener() -> None:
    advertised = _env("kafka")["KAFKA_ADVERTISED_LISTENERS"].split(",")
    addresses = {listener.split("://", 1)[1] for listener in advertised}
    for name in ("worker", "producer"):
        bootstrap = _env(name)["STREAMGNN_BOOTSTRAP_SERVERS"]
        assert set(bootstrap.split(",")) <= addresses, name
        assert all(host.split(":")[0] in SERVICES for host in bootstrap.split(",")), name


def test_every_streamgnn_variable_is_an_option_env_twin() -> None:
    twins = {option.env for option in OPTIONS}
    used = {k for s in SERVICES for k in _env(s) if k.startswith("STREAMGNN_")}
    used |= {k for k in _dockerfile_env() if k.startswith("STREAMGNN_")}
    assert used, "the worker must be configured through STREAMGNN_* variables"
    assert used <= twins


def test_prometheus_scrapes_the_port_the_worker_serves_metrics_on() -> None:
    port = _dockerfile_env()["STREAMGNN_METRICS_ADDRESS"].rpartition(":")[2]
    assert _env("worker").get("STREAMGNN_METRICS_ADDRESS", f"0.0.0.0:{port}").endswith(f":{port}")
    assert _dockerfile_env()["STREAMGNN_METRICS_ADDRESS"].startswith("0.0.0.0:")
    config = load_yaml(PROMETHEUS_CONFIG)
    targets = [
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert targets == [f"worker:{port}"]
    assert f"EXPOSE {port}" in DOCKERFILE.read_text()


def test_prometheus_mounts_its_config_and_rule_files() -> None:
    mounts = _bind_mounts("prometheus")
    config_flag = next(
        a for a in SERVICES["prometheus"]["command"] if a.startswith("--config.file=")
    )
    config_in_container = Path(config_flag.split("=", 1)[1])
    host_dir = mounts[str(config_in_container.parent)]
    assert (host_dir / config_in_container.name).resolve() == PROMETHEUS_CONFIG.resolve()
    for rule_file in load_yaml(PROMETHEUS_CONFIG)["rule_files"]:
        assert (host_dir / rule_file).is_file(), rule_file


def test_grafana_provisions_the_datasource_and_the_dashboard_it_mounts() -> None:
    mounts = _bind_mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA_DIR / "provisioning").resolve()
    providers = [
        p
        for f in (GRAFANA_DIR / "provisioning" / "dashboards").glob("*.yml")
        for p in load_yaml(f)["providers"]
    ]
    assert providers
    for provider in providers:
        host_dir = mounts[provider["options"]["path"]]
        assert list(host_dir.glob("*.json")), host_dir
    home = Path(_env("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (mounts[str(home.parent)] / home.name).is_file()
    sources = [
        s
        for f in (GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml")
        for s in load_yaml(f)["datasources"]
    ]
    listen = next(
        a for a in SERVICES["prometheus"]["command"] if a.startswith("--web.listen-address=")
    )
    port = listen.rpartition(":")[2]
    assert [s["url"] for s in sources if s["type"] == "prometheus"] == [f"http://prometheus:{port}"]


def test_dockerfile_builds_the_worker_image() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert "pip install" in text and re.search(r"pip install[^\n]* \.", text)
    cmd = re.findall(r"^CMD (.+)$", text, re.MULTILINE)
    assert [json.loads(c) for c in cmd] == [["streamgnn", "worker"]]
    assert _dockerfile_env()["STREAMGNN_METRICS_ADDRESS"] == "0.0.0.0:9464"
    copied = re.findall(r"^COPY (\S+)", text, re.MULTILINE)
    for source in copied:
        assert (ROOT / source).exists(), source


def _commands() -> dict[str, str]:
    found = {"Dockerfile": "worker"}
    for name, service in SERVICES.items():
        command = service.get("command")
        if isinstance(command, list) and command[:1] == ["streamgnn"]:
            found[name] = command[1]
    return found


_PENDING: dict[str, str] = {}


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=_PENDING[c]))
        if c in _PENDING
        else c
        for c in sorted(set(_commands().values()))
    ],
)
def test_every_streamgnn_command_the_stack_runs_exists(command: str) -> None:
    parser = build_parser()
    choices = next(a.choices for a in parser._actions if a.dest == "command")
    assert command in choices


def test_the_compose_file_parses_as_plain_yaml_without_anchors_surprises() -> None:
    # Every service is a mapping and no key is duplicated (PyYAML keeps the last one).
    class Strict(yaml.SafeLoader):
        pass

    def no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [loader.construct_object(k) for k, _ in node.value]
        assert len(keys) == len(set(keys)), keys
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, no_duplicates)
    assert yaml.load(COMPOSE.read_text(), Loader=Strict) == COMPOSE_DOC


def _state_path_twins() -> set[str]:
    """Twins of the worker's path settings that hold state (not the TLS files it reads)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    twins = set()
    for option in commands["worker"].get_default("settings_options"):
        if not option.section or option.section == "kafka.security":
            continue
        owner = type(getattr(Settings(), option.section))
        hint = typing.get_type_hints(owner)[option.name]
        if hint is Path or Path in typing.get_args(hint):
            twins.add(option.env)
    return twins


def test_every_state_path_is_on_the_worker_volume() -> None:
    twins = _state_path_twins()
    assert {"STREAMGNN_STORE_PATH", "STREAMGNN_CHECKPOINT_DIR", "STREAMGNN_VERSION_LEDGER"} <= twins
    volumes = re.findall(r'^VOLUME \["([^"]+)"\]', DOCKERFILE.read_text(), re.MULTILINE)
    assert volumes == ["/var/lib/streamgnn"]
    mounted = {v.split(":")[1] for v in SERVICES["worker"]["volumes"] if not v.startswith(".")}
    assert mounted == set(volumes)
    for source, env in (("Dockerfile", _dockerfile_env()), ("compose worker", _env("worker"))):
        for twin in twins:
            assert twin in env, f"{source} leaves {twin} at its default (not on the volume)"
            assert Path(volumes[0]) in Path(env[twin]).parents, (source, twin, env[twin])


SCALE = {name: s for name, s in SERVICES.items() if "scale" in s.get("profiles", [])}


def test_the_scale_profile_runs_two_ingest_workers_and_one_trainer_of_one_group() -> None:
    commands = sorted(SCALE[name]["command"][1] for name in SCALE)
    assert commands == ["ingest", "ingest", "train"]
    assert all(s.get("profiles") == ["scale"] for s in SCALE.values())
    groups = {_env(name)["STREAMGNN_GROUP_ID"] for name in SCALE}
    assert len(groups) == 1 and groups != {_env("worker").get("STREAMGNN_GROUP_ID")}
    ingest = [name for name in SCALE if SCALE[name]["command"][1] == "ingest"]
    assert len({_env(name)["STREAMGNN_INSTANCE_ID"] for name in ingest}) == len(ingest)
    # Its own embedding space: not on the all-in-one worker's topics.
    (trainer,) = [name for name in SCALE if SCALE[name]["command"][1] == "train"]
    defaults = Settings().publish
    own = {
        _env(trainer)["STREAMGNN_USER_EMBEDDINGS_TOPIC"],
        _env(trainer)["STREAMGNN_ITEM_EMBEDDINGS_TOPIC"],
    }
    assert own.isdisjoint({defaults.user_topic, defaults.item_topic})
    advertised = {
        listener.split("://", 1)[1]
        for listener in _env("kafka")["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for name in SCALE:
        assert set(_env(name)["STREAMGNN_BOOTSTRAP_SERVERS"].split(",")) <= advertised, name


def test_every_state_path_of_a_scale_service_is_on_its_own_volume() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    named_volumes = []
    for name, service in SCALE.items():
        options = commands[service["command"][1]].get_default("settings_options")
        twins = set()
        for option in options:
            if option.section and option.section != "kafka.security":
                owner = type(getattr(Settings(), option.section))
                hint = typing.get_type_hints(owner)[option.name]
                if hint is Path or Path in typing.get_args(hint):
                    twins.add(option.env)
        assert twins, name
        (mount,) = [v.split(":") for v in service["volumes"] if not v.startswith(".")]
        named_volumes.append(mount[0])
        for twin in twins:
            assert Path(mount[1]) in Path(_env(name)[twin]).parents, (name, twin)
    assert len(set(named_volumes)) == len(SCALE)
    assert set(named_volumes) <= set(COMPOSE_DOC["volumes"])
