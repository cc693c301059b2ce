"""A worker started while no broker answers (worker processes and the wait itself).

It waits, saying so once, before any Kafka client is built (a client's own bootstrap held
a SIGTERM for half a minute and ended in a traceback); it starts once a broker answers,
ends within seconds with exit 0 on a SIGTERM meanwhile, and gives up in one line with exit
status 1 when none answered in :data:`stream.kafka.access.START_WAIT_S`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from pathlib import Path

import pytest

from stream import worker
from stream.errors import BrokersUnreachable
from stream.events import Interaction
from stream.kafka import access
from stream.local_broker.broker import LocalKafkaBroker, free_ports
from stream.settings import KafkaSettings, load_settings
from stream.state.graph_store import DecayedGraphStore, PartitionBatch
from tests.harness.hostile import SIGTERM_LIMIT_S
from tests.harness.proxy import TcpProxy
from tests.harness.worker_process import WorkerProcess, training_env, wait_for, worker_env

pytestmark = pytest.mark.integration

WAITING = "no Kafka broker answers"


def _env(tmp_path: Path, bootstrap: str, topic: str = "interactions") -> dict[str, str]:
    env = worker_env(bootstrap, topic, f"group-{tmp_path.name}", tmp_path / "graph", 500)
    return env | training_env(tmp_path, tmp_path.name, dim=8) | {"STREAMGNN_DEVICE": "cpu"}


def test_no_broker_within_the_wait_raises_naming_the_address() -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_ports(1)[0]}")
    start = time.monotonic()
    with pytest.raises(BrokersUnreachable, match=kafka.bootstrap_servers):
        asyncio.run(access.wait_for_access(kafka, lambda: False, wait_s=1.0))
    assert 1.0 <= time.monotonic() - start < 10.0


def test_stopping_ends_the_wait_with_false_even_mid_attempt() -> None:
    """A listener that never answers holds an attempt for its whole timeout (15 s): the
    stop does not wait for it."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never replies
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        for servers in (f"127.0.0.1:{free_ports(1)[0]}", address):
            kafka = KafkaSettings(bootstrap_servers=servers)
            start = time.monotonic()
            stopping = functools.partial(lambda at: time.monotonic() >= at, start + 0.5)
            stopped = asyncio.run(access.wait_for_access(kafka, stopping, wait_s=60.0))
            assert stopped is False
            assert time.monotonic() - start < 2.0, servers


def test_a_broker_that_answers_ends_the_wait_with_true(kafka_broker: LocalKafkaBroker) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{free_ports(1)[0]},{kafka_broker.bootstrap_servers}"
    )
    assert asyncio.run(access.wait_for_access(kafka, lambda: False, wait_s=30.0)) is True


def test_sigterm_while_waiting_for_a_broker_exits_0_within_seconds(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    process = WorkerProcess(_env(tmp_path, f"127.0.0.1:{free_ports(1)[0]}"), log)
    process.start()
    try:
        wait_for(lambda: WAITING in log.read_text(), 120, f"the wait ({log})")
        start = time.monotonic()
        status = process.terminate(60)
        elapsed = time.monotonic() - start
    finally:
        if process.exit_status() is None:
            process.kill()
    text = log.read_text()
    assert status == 0, text
    assert elapsed <= SIGTERM_LIMIT_S
    assert "Traceback" not in text


def test_a_broker_that_comes_up_during_the_wait_is_consumed_from(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    """The first address answers only once the proxy in front of the broker listens."""
    port = free_ports(1)[0]
    log = tmp_path / "worker.log"
    process = WorkerProcess(_env(tmp_path, f"127.0.0.1:{port}", f"late-{tmp_path.name}"), log)
    process.start()
    try:
        wait_for(lambda: WAITING in log.read_text(), 120, f"the wait ({log})")
        assert not process.consuming()
        with TcpProxy(target_port=kafka_broker.port, port=port):
            wait_for(process.consuming, 120, f"consuming ({log})")
        assert process.terminate(60) == 0
    finally:
        if process.exit_status() is None:
            process.kill()


def test_no_broker_in_the_wait_exits_1_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(access, "START_WAIT_S", 1.0)
    address = f"127.0.0.1:{free_ports(1)[0]}"
    settings = load_settings({}, _env(tmp_path, address))
    with caplog.at_level(logging.INFO):
        assert worker.serve(settings) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.name for r in errors] == ["streamgnn.worker"]
    assert address in errors[0].getMessage() and errors[0].exc_info is None


@pytest.mark.parametrize("train", [False, True])
def test_a_store_of_another_topic_is_refused_before_any_broker_exit_2(
    tmp_path: Path, train: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A store holds one topic's graph: kept when the topic setting changed, its edges
    would be trained on with the new topic's, for ever."""
    address = f"127.0.0.1:{free_ports(1)[0]}"  # nothing answers: the check comes first
    env = _env(tmp_path, address, topic="clicks") | {"STREAMGNN_TRAIN": str(train).lower()}
    settings = load_settings({}, env)
    events = [Interaction(f"u{n}", f"i{n}", "click", 1_700_000_000_000 + n) for n in range(20)]
    with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
        store.apply("views", [PartitionBatch(0, len(events), events)])
    start = time.monotonic()
    with caplog.at_level(logging.INFO):
        assert worker.serve(settings) == 2
    assert time.monotonic() - start < 10.0  # no wait for a broker
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "holds the graph of topic views, not of 'clicks'" in errors[0]
    assert WAITING not in caplog.text
    with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
        assert store.counts().edges == len(events)  # refused, not changed


def test_a_checkpoint_directory_it_cannot_make_ends_the_start_in_one_line_exit_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """By hand, a --checkpoint-dir naming a file: a bare FileExistsError traceback."""
    address = f"127.0.0.1:{free_ports(1)[0]}"  # nothing answers: the check comes first
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a directory")
    env = _env(tmp_path, address) | {"STREAMGNN_CHECKPOINT_DIR": str(in_the_way)}
    with caplog.at_level(logging.INFO):
        assert worker.serve(load_settings({}, env)) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"cannot use checkpoint directory {in_the_way}: File exists; give --checkpoint-dir "
        "(STREAMGNN_CHECKPOINT_DIR) a directory this process may create and write"
    ]
    assert WAITING not in caplog.text
