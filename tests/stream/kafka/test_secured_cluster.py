"""Every command over SASL_SSL with SCRAM, configured through its environment twins only.

The node's secured listener has a SCRAM user made by the storage tool at format time and
a certificate from a CA made in the test (tests/harness/secured_cluster.py). ``streamgnn
produce`` sends events over it, ``streamgnn worker`` ingests them, dead-letters a record
that is not an event and publishes vectors over it, and ``streamgnn consume`` reads the
vectors back over it. A wrong password ends each command with an authentication error
(exit 2) instead of a retry loop. No password shows in any output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from stream.kafka.clients import confluent_producer
from stream.local_broker.broker import free_ports
from stream.metrics import scrape_metrics, serves_metrics, total
from stream.publish.schema import decode_record
from tests.harness import importable_env
from tests.harness.embedding_topics import read_topic
from tests.harness.secured_cluster import SecuredCluster

pytestmark = pytest.mark.integration

EVENTS = 300
_COMMAND_TIMEOUT_S = 120  # a bound on a hang, not a performance figure


def _env(cluster: SecuredCluster, topics: dict[str, str], **twins: str) -> dict[str, str]:
    """This process's environment without STREAMGNN_* settings, plus ``twins``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMGNN_")}
    env.update(cluster.env())
    env.update(
        {
            "STREAMGNN_INTERACTIONS_TOPIC": topics["interactions"],
            "STREAMGNN_DLQ_TOPIC": topics["dlq"],
            "STREAMGNN_USER_EMBEDDINGS_TOPIC": topics["users"],
            "STREAMGNN_ITEM_EMBEDDINGS_TOPIC": topics["items"],
        }
    )
    env.update(twins)
    return importable_env(env)


def _streamgnn(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=_COMMAND_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def topics(secured_cluster: SecuredCluster) -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    names = {
        "interactions": f"interactions-{tag}",
        "dlq": f"dlq-{tag}",
        "users": f"user-embeddings-{tag}",
        "items": f"item-embeddings-{tag}",
    }
    # Created through the PLAINTEXT listener; the embedding topics the worker creates itself.
    secured_cluster.broker.create_topics({names["interactions"]: 2, names["dlq"]: 1})
    return names


def test_worker_produce_and_consume_over_sasl_ssl(
    secured_cluster: SecuredCluster, topics: dict[str, str], tmp_path: Path
) -> None:
    kafka = secured_cluster.kafka()
    password = secured_cluster.password
    produced = _streamgnn(
        ["produce"],
        _env(
            secured_cluster,
            topics,
            STREAMGNN_PRODUCE_COUNT=str(EVENTS),
            STREAMGNN_PRODUCE_RATE="0",
            STREAMGNN_PRODUCE_NO_PROGRESS="true",
        ),
    )
    assert produced.returncode == 0, produced.stderr
    sent = read_topic(kafka, topics["interactions"])
    assert len(sent) == EVENTS
    users = {json.loads(record.value)["user_id"] for record in sent}
    # follow events are applied but reflected in no vector (not in the freshness histogram)
    reflected = sum(json.loads(record.value)["event_type"] != "follow" for record in sent)
    bad = confluent_producer(kafka, {"acks": "all"})
    bad.produce(topics["interactions"], b"not an event", b"x")
    assert bad.flush(30) == 0, "the hostile record was not delivered"

    metrics = f"127.0.0.1:{free_ports(1)[0]}"
    worker_env = _env(
        secured_cluster,
        topics,
        STREAMGNN_GROUP_ID=f"g-{topics['interactions']}",
        STREAMGNN_STORE_PATH=str(tmp_path / "graph"),
        STREAMGNN_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
        STREAMGNN_VERSION_LEDGER=str(tmp_path / "ledger" / "versions.json"),
        STREAMGNN_METRICS_ADDRESS=metrics,
        STREAMGNN_DIM="8",
        STREAMGNN_DEVICE="cpu",
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"],
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        samples = _wait_until_published(worker, metrics, log, reflected)
        assert total(samples, "streamgnn_events_applied_total") == EVENTS
        assert total(samples, "streamgnn_events_rejected_total") == 1
        (letter,) = read_topic(kafka, topics["dlq"])
        assert letter.value == b"not an event"
        assert dict(letter.headers)["dlq.reason"]

        consumed = _streamgnn(
            ["consume", "--json", "--from-beginning", "--max-seconds", "15"],
            _env(secured_cluster, topics),
        )
        assert consumed.returncode == 0, consumed.stderr
        lines = [json.loads(line) for line in consumed.stdout.splitlines() if line]
        on_topics = {
            kind: {_node_id(r.value) for r in read_topic(kafka, topics[f"{kind}s"])}
            for kind in ("user", "item")
        }
        assert on_topics["user"] and on_topics["item"]
        assert on_topics["user"] <= users  # vectors of the stream's users, read over SASL_SSL
        for kind, ids in on_topics.items():
            assert {line["id"] for line in lines if line["kind"] == kind} == ids
        for output in (produced.stdout, produced.stderr, consumed.stdout, consumed.stderr):
            assert password not in output
    finally:
        worker.send_signal(signal.SIGTERM)
        status = worker.wait(timeout=_COMMAND_TIMEOUT_S)
    text = log.read_text(errors="replace")
    assert status == 0, text[-3000:]
    assert password not in text
    assert "SASL_SSL" in text or "Authenticated" in text  # it did log in over the listener


def _node_id(value: bytes) -> str:
    return str(decode_record(value).id)


def _wait_until_published(
    worker: subprocess.Popen[bytes], metrics: str, log: Path, reflected: int
) -> dict[str, float]:
    """Until every event a vector reflects is published, and the bad one refused."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            pytest.fail(f"the worker exited {worker.returncode}:\n{log.read_text()[-3000:]}")
        if serves_metrics(metrics):
            samples = scrape_metrics(metrics)
            published = total(samples, "streamgnn_freshness_seconds_count")
            rejected = total(samples, "streamgnn_events_rejected_total")
            if published >= reflected and rejected >= 1:
                return samples
        time.sleep(0.5)
    pytest.fail(f"the worker did not publish every event:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("command", ["worker", "produce", "consume"])
def test_a_wrong_password_ends_the_command_with_an_authentication_error(
    secured_cluster: SecuredCluster, topics: dict[str, str], tmp_path: Path, command: str
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    env = _env(
        secured_cluster,
        topics,
        STREAMGNN_KAFKA_SASL_PASSWORD=wrong,
        STREAMGNN_STORE_PATH=str(tmp_path / "graph"),
        STREAMGNN_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
        STREAMGNN_VERSION_LEDGER=str(tmp_path / "versions.json"),
        STREAMGNN_METRICS_ADDRESS=f"127.0.0.1:{free_ports(1)[0]}",
        STREAMGNN_PRODUCE_COUNT="10",
        STREAMGNN_PRODUCE_NO_PROGRESS="true",
    )
    done = _streamgnn([command], env)  # TimeoutExpired (a hang) fails the test
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "authentication failed" in output.lower(), output
    assert wrong not in output and secured_cluster.password not in output
