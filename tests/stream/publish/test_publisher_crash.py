"""A publisher SIGKILLed in the middle of a model version, then restarted from an older
checkpoint: the topics still fold to the final vectors and no key's version ever goes
back in the log."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from publisher_child import KINDS, batch, node_id, vector

from stream.local_broker.broker import LocalKafkaBroker
from stream.publish.consumer import LatestVectors
from stream.publish.publisher import EmbeddingPublisher
from stream.publish.schema import decode_record
from stream.settings import KafkaSettings
from tests.harness.embedding_topics import read_topic, unique_settings

pytestmark = pytest.mark.integration

CHILD = Path(__file__).resolve().parent / "publisher_child.py"
ROOT = Path(__file__).resolve().parents[3]
KEYS, DIM = 300, 16
FINAL = 1_000  # seed of the vectors the restarted trainer publishes
CHECKPOINT_VERSION = 2  # the restarted trainer's checkpoint is older than what was published


def _run_child_until_mid_version_4(args: list[str], chunks: int) -> list[str]:
    """Start the child, SIGKILL it once ``chunks`` chunks of version 4 are acked."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(CHILD.parent)])}
    child = subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert child.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(child.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 120
            while sum(line.startswith("acked 4") for line in lines) < chunks:
                if time.monotonic() > deadline or not selector.select(timeout=1.0):
                    if child.poll() is not None or time.monotonic() > deadline:
                        stderr = child.stderr.read() if child.stderr else ""
                        pytest.fail(f"child stopped early ({child.poll()}): {lines}\n{stderr}")
                    continue
                line = child.stdout.readline()
                if not line:
                    continue
                lines.append(line.strip())
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)  # the crash: no flush, no close
        child.wait(timeout=30)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL
    return lines


def test_sigkill_mid_publish_then_restart_never_regresses_a_version(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = unique_settings(tmp_path, topic_partitions=3)
    args = [bootstrap, settings.user_topic, settings.item_topic, str(settings.ledger_path)]
    lines = _run_child_until_mid_version_4([*args, str(KEYS), str(DIM)], chunks=3)
    acked_v4 = {
        (kind, node_id(kind, k))
        for line in lines
        if line.startswith("acked 4")
        for _, _, _, kind, start, stop in [line.split()]
        for k in range(int(start), int(stop))
    }

    # The restarted trainer restores an older checkpoint; the publisher lifts its version.
    with EmbeddingPublisher(KafkaSettings(bootstrap), settings) as publisher:
        version = max(CHECKPOINT_VERSION + 1, publisher.min_version)
        assert version > 4  # version 4 may be half-published: it is below the floor
        publisher.publish(
            [batch(kind, range(KEYS), FINAL, DIM) for kind in KINDS], model_version=version
        )

    for kind, topic in zip(KINDS, (settings.user_topic, settings.item_topic), strict=True):
        records = read_topic(bootstrap, topic)
        fold = LatestVectors(kind)  # type: ignore[arg-type]
        last_seen: dict[str, int] = {}
        held_v4: set[str] = set()
        for record in records:  # log order per partition, and a key has one partition
            decoded = decode_record(record.value, kind=kind)  # type: ignore[arg-type]
            assert decoded.model_version >= last_seen.get(decoded.id, -1), decoded.id
            last_seen[decoded.id] = decoded.model_version
            held_v4 |= {decoded.id} if decoded.model_version == 4 else set()
            assert fold.apply(record.key, record.value) == "applied"
        assert fold.stats.stale == 0
        # Everything acked before the kill is in the log.
        assert {i for k, i in acked_v4 if k == kind} <= held_v4
        # The folded view is exactly the restarted run's vectors, at its version.
        assert sorted(fold) == sorted(node_id(kind, k) for k in range(KEYS))
        for k in range(KEYS):
            record = fold.get(node_id(kind, k))
            assert record is not None
            assert record.model_version == version
            assert np.array_equal(record.vector, vector(kind, k, FINAL, DIM))
