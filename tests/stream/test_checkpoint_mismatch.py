"""A worker whose checkpoint was written under other meaning settings exits 2 at once with
a message naming each setting and both values (not a crash loop: no Kafka is reached and
nothing is retried); ``--on-checkpoint-mismatch discard`` starts a fresh model and keeps
the old checkpoints, byte for byte, in a ``discarded-*`` folder (worker processes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream.behaviours import Behaviour
from stream.events import Interaction
from stream.learn.checkpoint import CheckpointStore
from stream.local_broker.broker import LocalKafkaBroker, free_ports
from stream.metrics import PipelineMetrics
from stream.settings import OPTIONS, load_settings
from stream.state.graph_store import DecayedGraphStore
from stream.training import TrainingLoop
from tests.harness.worker_process import WorkerProcess, training_env, wait_for, worker_env
from tests.stream.learn.test_checkpoint_compat import CHANGED, USERS

pytestmark = pytest.mark.integration

EVENTS = [
    Interaction(f"u{k % USERS}", f"i{k % 7}", "click", 1_700_000_000_000 + k) for k in range(40)
]
CASES = {
    **{key: {twin: value} for key, (twin, value) in CHANGED.items()},
    "training.max_users": {"STREAMGNN_MAX_USERS": str(USERS - 1)},
}


def base_env(tmp_path: Path, bootstrap: str, topic: str) -> dict[str, str]:
    env = worker_env(bootstrap, topic, f"group-{tmp_path.name}", tmp_path / "graph", 500)
    training = training_env(tmp_path, tmp_path.name, dim=8)  # CHANGED's dim differs
    return env | training | {"STREAMGNN_DEVICE": "cpu"}


def write_checkpoint(env: dict[str, str]) -> dict[str, bytes]:
    """A checkpoint trained on :data:`EVENTS` under ``env``; its files' bytes by name."""
    settings = load_settings({}, env)
    with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
        loop = TrainingLoop(settings, store, PipelineMetrics())
        loop.resume()
        loop.trainer.learn(EVENTS)
        loop.checkpoint()
    return {p.name: p.read_bytes() for p in loop.checkpoints.paths()}


def _run_to_exit(env: dict[str, str], log: Path) -> tuple[int | None, str]:
    """Start a worker that must exit by itself; its exit status and log."""
    worker = WorkerProcess(env, log)
    worker.start()
    try:
        wait_for(lambda: worker.exit_status() is not None, 120, f"the worker to exit ({log})")
    finally:
        if worker.exit_status() is None:
            worker.kill()
    return worker.exit_status(), log.read_text()


@pytest.mark.parametrize("key", sorted(CASES))
def test_a_mismatch_exits_2_at_once_naming_the_setting_and_both_values(
    tmp_path: Path, key: str
) -> None:
    # Nothing listens on the broker address: the check must come before any Kafka client.
    env = base_env(tmp_path, f"127.0.0.1:{free_ports(1)[0]}", "interactions")
    files = write_checkpoint(env)
    changed = env | CASES[key] | {"STREAMGNN_STORE_PATH": str(tmp_path / "fresh-graph")}
    status, text = _run_to_exit(changed, tmp_path / "worker.log")
    option = next(o for o in OPTIONS if o.key == key)
    assert status == 2, text
    assert len(re.findall("does not match the settings", text)) == 1
    (line,) = [line for line in text.splitlines() if line.strip().startswith(option.flag)]
    assert re.search(r"checkpoint .+, settings .+", line), line
    assert "--on-checkpoint-mismatch discard" in text
    assert "Traceback" not in text
    checkpoint_dir = Path(env["STREAMGNN_CHECKPOINT_DIR"])
    assert {p.name: p.read_bytes() for p in CheckpointStore(checkpoint_dir).paths()} == files


def test_discard_starts_fresh_and_keeps_the_old_checkpoints_aside(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    topic = f"mismatch-{tmp_path.name}"
    kafka_broker.create_topics({topic: 1, f"{topic}.dlq": 1})
    env = base_env(tmp_path, kafka_broker.bootstrap_servers, topic)
    files = write_checkpoint(env)
    log = tmp_path / "worker.log"
    worker = WorkerProcess(
        env | {"STREAMGNN_DIM": "32", "STREAMGNN_ON_CHECKPOINT_MISMATCH": "discard"}, log
    )
    worker.start()
    try:
        wait_for(lambda: "worker consuming" in log.read_text(), 120, f"ingestion ({log})")
        assert worker.terminate() == 0
    finally:
        if worker.exit_status() is None:
            worker.kill()
    checkpoint_dir = Path(env["STREAMGNN_CHECKPOINT_DIR"])
    (aside,) = [p for p in checkpoint_dir.iterdir() if p.is_dir()]
    assert aside.name.startswith("discarded-")
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == files
    newest = CheckpointStore(checkpoint_dir).load_latest()
    assert newest is not None and newest["settings"]["training.dim"] == "32"
    (warning,) = [line for line in log.read_text().splitlines() if "discard: moved" in line]
    assert " WARNING " in warning and all(name in warning for name in files)
    assert "--dim (STREAMGNN_DIM): checkpoint 8, settings 32" in warning


def test_a_store_built_under_other_behaviours_exits_2_at_once_naming_both(tmp_path: Path) -> None:
    """The store's own start-up refusal (a default's half-life changed, say), the same way:
    one message, the way out, no traceback, no Kafka reached."""
    env = base_env(tmp_path, f"127.0.0.1:{free_ports(1)[0]}", "interactions")
    DecayedGraphStore(Path(env["STREAMGNN_STORE_PATH"]), {"click": Behaviour(1.0, 1_000)}).close()
    status, text = _run_to_exit(env, tmp_path / "worker.log")
    assert status == 2, text
    assert len(re.findall("was built with behaviours", text)) == 1
    assert '{"click": {"beta": 1.0, "half_life_ms": 1000}}' in text  # as --behaviours takes it
    assert "--behaviours" in text and "Traceback" not in text
