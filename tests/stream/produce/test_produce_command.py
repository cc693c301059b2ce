"""``streamgnn produce`` against the real broker: what was sent is on the topic, valid.

Each run is read back from the topic: the count equals what was sent, every key is the
user id, every value passes the worker's validator. A file replay keeps the file's times
in time order; a synthetic run is the seeded stream; SIGTERM flushes and exits 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from stream.cli import main
from stream.events import EventValidator, Interaction
from stream.local_broker.broker import LocalKafkaBroker
from stream.produce import SimulatedClock, SyntheticConfig, SyntheticStream
from stream.settings import EventSettings

pytestmark = pytest.mark.integration


def _read_back(bootstrap: str, topic: str, expected: int) -> list[Interaction]:
    """Every record on ``topic``, parsed; fails if any is invalid or its key is not its user.

    Reads until ``expected`` records arrived (or 30 s passed), then one more poll, so that a
    record beyond the expected count would be seen too.
    """
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    validator = EventValidator(EventSettings())
    out: list[Interaction] = []
    deadline = time.monotonic() + 30.0
    extra_poll = False
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000 if extra_poll else 500).values():
                for record in records:
                    parsed = validator.parse(record.key, record.value)
                    assert isinstance(parsed, Interaction), (record.key, record.value, parsed)
                    assert record.key == parsed.user_id.encode()
                    out.append(parsed)
            if extra_poll:
                break
            extra_poll = len(out) >= expected
    finally:
        consumer.close()
    return out


def _argv(broker: LocalKafkaBroker, topic: str) -> list[str]:
    kafka = ["--bootstrap-servers", broker.bootstrap_servers, "--interactions-topic", topic]
    return ["produce", *kafka, "--no-progress"]


def test_file_replay_sends_each_valid_row_once_in_time_order(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    path = tmp_path / "log.csv"
    t0 = 1_700_000_000  # epoch seconds (2023)
    rows = [
        ("u1", "i1", t0 + 30, 4),
        ("u2", "i1", t0 + 10, 5),
        ("u3", "", t0 + 20, 1),
        ("u1", "i2", t0 + 20, 2),
    ]
    path.write_text("".join(f"{u};{i};{t};{w}\n" for u, i, t, w in rows))
    topic = topic_factory("produce-file")
    argv = [*_argv(kafka_broker, topic), "--data", str(path), "--sep", ";", "--no-header"]
    argv += ["--weight-col", "3", "--time-unit", "s", "--event-type", "rating", "--rate", "0"]
    assert main(argv) == 0
    got = _read_back(kafka_broker.bootstrap_servers, topic, expected=3)
    assert [(e.user_id, e.item_id, e.ts, e.weight) for e in got] == [
        ("u2", "i1", (t0 + 10) * 1000, 5.0),
        ("u1", "i2", (t0 + 20) * 1000, 2.0),
        ("u1", "i1", (t0 + 30) * 1000, 4.0),
    ]  # the row without an item is refused by the reader, never sent


def test_synthetic_count_sends_the_seeded_stream(
    kafka_broker: LocalKafkaBroker, topic_factory, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = topic_factory("produce-synthetic", partitions=3)
    argv = [*_argv(kafka_broker, topic), "--count", "2000", "--rate", "0", "--seed", "5"]
    before = time.time_ns() // 1_000_000
    assert main([*argv, "--users", "300", "--items", "200", "--late-share", "0"]) == 0
    after = time.time_ns() // 1_000_000
    assert "sent 2000 events" in capsys.readouterr().err
    got = _read_back(kafka_broker.bootstrap_servers, topic, expected=2000)
    config = SyntheticConfig(users=300, items=200, late_share=0.0, seed=5)
    expected = SyntheticStream(config).events(SimulatedClock(0))
    want = sorted(
        (str(e["user_id"]), str(e["item_id"]), str(e["event_type"]))
        for e, _ in zip(expected, range(2000), strict=False)
    )
    assert sorted((e.user_id, e.item_id, e.event_type) for e in got) == want
    assert all(before <= e.ts <= after for e in got)  # live mode: ts is the send time


def test_sigterm_flushes_and_exits_zero(
    kafka_broker: LocalKafkaBroker, topic_factory, tmp_path: Path
) -> None:
    topic = topic_factory("produce-sigterm")
    env = {**os.environ, "STREAMGNN_PRODUCE_RATE": "200"}
    child = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", *_argv(kafka_broker, topic)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        consumer = KafkaConsumer(
            topic, bootstrap_servers=kafka_broker.bootstrap_servers, auto_offset_reset="earliest"
        )
        seen = 0
        deadline = time.monotonic() + 60
        while seen < 50 and time.monotonic() < deadline:
            seen += sum(len(r) for r in consumer.poll(timeout_ms=500).values())
        consumer.close()
        assert seen >= 50, "the producer sent nothing"
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    sent = int(err.rsplit("sent ", 1)[1].split()[0])
    assert len(_read_back(kafka_broker.bootstrap_servers, topic, expected=sent)) == sent


def test_a_topic_the_broker_does_not_have_ends_the_run_in_one_line_before_any_send(
    kafka_broker: LocalKafkaBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """The local broker does not create topics on demand; librdkafka queued the first
    seconds of events, then every send raised (a traceback, the queued events lost)."""
    topic = f"produce-missing-{time.time_ns()}"
    assert main([*_argv(kafka_broker, topic), "--count", "100", "--rate", "0"]) == 2
    err = capsys.readouterr().err
    assert f"topic {topic!r} does not exist" in err and "Traceback" not in err
    assert "sent " not in err
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        assert topic not in admin.list_topics()  # asking for it did not create it
    finally:
        admin.close()
