"""The scale-out commands' command lines: ``streamgnn ingest`` requires an instance id (the
changelog is always on) and takes no training options; ``streamgnn train`` takes the
trainer's options and no store path."""

from __future__ import annotations

import logging
import socket

import pytest

from stream.cli import build_parser, main


def _flags(command: str) -> set[str]:
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    return {o.flag for o in commands[command].get_default("settings_options")}


def test_ingest_without_an_instance_id_exits_2_naming_the_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STREAMGNN_INSTANCE_ID", raising=False)
    assert main(["ingest", "--bootstrap-servers", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "--instance-id" in err and len(err.strip().splitlines()) == 1


def test_ingest_takes_the_ingest_options_only() -> None:
    flags = _flags("ingest")
    assert {"--instance-id", "--group-id", "--store-path", "--behaviours"} <= flags
    assert not flags & {"--changelog", "--train", "--dim", "--checkpoint-dir"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ingest", "--changelog", "false"])


def test_train_takes_the_trainers_options_and_no_store() -> None:
    flags = _flags("train")
    assert {"--group-id", "--dim", "--checkpoint-dir", "--user-embeddings-topic"} <= flags
    assert {"--behaviours", "--epsilon", "--max-backlog-events"} <= flags
    assert not flags & {"--store-path", "--changelog", "--train"}


def test_worker_with_the_changelog_and_no_instance_id_exits_2_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STREAMGNN_INSTANCE_ID", raising=False)
    assert main(["worker", "--bootstrap-servers", "127.0.0.1:9", "--changelog", "true"]) == 2
    err = capsys.readouterr().err
    assert "--instance-id" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["worker", "ingest", "train"])
def test_a_metrics_address_taken_exits_2_in_one_line_before_any_client(
    command: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process listens on the port (or a restart raced a client onto it)."""
    monkeypatch.setenv("STREAMGNN_INSTANCE_ID", "a")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        # 127.0.0.1:9: nothing listens there, so a client started first would not return 2
        args = [command, "--bootstrap-servers", "127.0.0.1:9", "--metrics-address", address]
        assert main(args) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and address in errors[0] and "\n" not in errors[0]
