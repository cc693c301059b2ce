"""A disk that fills up under the worker (each file capped by ``RLIMIT_FSIZE``, or a file
where the checkpoint directory was: real refusals from the real filesystem).

* The graph store: the refused write raises :class:`~stream.errors.StoreWriteError`, none
  of that batch is in the store and every batch before it is; closing afterwards does not
  hide the cause. The worker exits 1 with one line naming the store, and a restart once
  the disk has room applies the rest of the stream, nothing lost or applied twice.
* A checkpoint: refused, it is logged and counted and training goes on; the next one,
  once the disk has room, holds the model as it is then.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stream.behaviours import DEFAULT_BEHAVIOURS
from stream.events import Interaction
from stream.learn.checkpoint import load_checkpoint
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.settings import load_settings
from stream.state.graph_store import DecayedGraphStore
from stream.training import TrainingLoop
from tests.harness import importable_env
from tests.harness.faults import CrashReport, count_applications, prepare_topic
from tests.harness.progress import StoreCompletion
from tests.harness.worker_process import WorkerProcess, wait_for, worker_env

pytestmark = pytest.mark.integration

CAP_BYTES = 256 * 1024  # RocksDB's log reaches it after ~2,000 of these events
EVENTS = 10_000
BATCH = 250

# Applies batches of BATCH events, each on its own edge, until the store refuses one;
# prints how many batches it wrote, the error, and whether the next write was refused too.
STORE_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from stream.behaviours import DEFAULT_BEHAVIOURS
    from stream.errors import StoreWriteError
    from stream.events import Interaction
    from stream.state.graph_store import DecayedGraphStore, PartitionBatch
    from tests.harness.capped_files import cap_file_sizes

    path, cap, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    def events(b):
        return [Interaction(f"u{q}", f"i{q}", "click", 1_700_000_000_000 + q)
                for q in range(b * batch, (b + 1) * batch)]
    store = DecayedGraphStore(path, DEFAULT_BEHAVIOURS)
    cap_file_sizes(cap)
    written, error, again = 0, None, None
    while written < 10_000:
        try:
            store.apply("t", [PartitionBatch(0, (written + 1) * batch, events(written))])
        except StoreWriteError as exc:
            error = str(exc)
            try:
                store.apply("t", [PartitionBatch(0, (written + 2) * batch, events(written + 1))])
            except StoreWriteError as exc2:
                again = str(exc2)
            break
        written += 1
    store.close()
    print(json.dumps({"written": written, "error": error, "again": again}))
    """
)


def test_a_refused_store_write_raises_and_the_store_keeps_every_batch_before_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "graph"
    result = subprocess.run(
        [sys.executable, "-c", STORE_CHILD, str(path), str(CAP_BYTES), str(BATCH)],
        env=importable_env(dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr  # closing after the failure raised nothing
    report = json.loads(result.stdout.splitlines()[-1])
    written = report["written"]
    assert 0 < written < 10_000, report  # the cap was reached mid-stream
    assert str(path) in report["error"] and "File too large" in report["error"]
    assert report["again"] is not None  # a store that failed a write refuses the next
    with DecayedGraphStore(path, DEFAULT_BEHAVIOURS, read_only=True) as store:
        assert store.positions()[("t", 0)][0] == written * BATCH
        edges = sorted(int(e.src_id[1:]) for e in store.edges())
    assert edges == list(range(written * BATCH))  # every batch before, none of the refused


def test_the_worker_exits_1_in_one_line_and_a_restart_loses_nothing(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    topic = prepare_topic(kafka_broker, EVENTS, partitions=2)
    store_path = tmp_path / "graph"
    env = worker_env(kafka_broker.bootstrap_servers, topic, f"g-{topic}", store_path, 250)
    log = tmp_path / "worker.log"
    capped = [sys.executable, "-m", "tests.harness.capped_files", str(CAP_BYTES)]
    first = WorkerProcess(env, log, command=capped)
    first.start()
    try:
        wait_for(lambda: first.exit_status() is not None, 180, f"the capped worker's exit ({log})")
    finally:
        if first.exit_status() is None:
            first.kill()
    text = log.read_text()
    assert first.exit_status() == 1, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "cannot write to the graph store" in errors[0], errors
    assert str(store_path) in errors[0]

    second = WorkerProcess(env, tmp_path / "restart.log")
    second.start()
    try:
        wait_for(StoreCompletion(store_path, topic, EVENTS), 180, "the rest of the stream")
        assert second.terminate(60) == 0
    finally:
        if second.exit_status() is None:
            second.kill()
    report = CrashReport("disk-full", sent=EVENTS)
    count_applications(store_path, topic, report)
    assert (report.lost, report.duplicated, report.applied) == (0, 0, EVENTS)


def test_a_refused_checkpoint_is_counted_and_training_goes_on(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    settings = load_settings(
        {},
        {
            "STREAMGNN_DIM": "8",
            "STREAMGNN_DEVICE": "cpu",
            "STREAMGNN_CHECKPOINT_DIR": str(directory),
            "STREAMGNN_STORE_PATH": str(tmp_path / "graph"),
        },
    )
    metrics = PipelineMetrics()
    events = [
        Interaction(f"u{k % 5}", f"i{k % 7}", "click", 1_700_000_000_000 + k) for k in range(40)
    ]
    with DecayedGraphStore(settings.store.path, DEFAULT_BEHAVIOURS) as store:
        loop = TrainingLoop(settings, store, metrics)
        loop.resume()
    loop.trainer.learn(events)
    assert loop.checkpoint() is True
    written = [p.name for p in loop.checkpoints.paths()]

    shutil.move(directory, tmp_path / "aside")
    directory.write_bytes(b"")  # a file where the directory was: every write is refused
    loop.trainer.learn(events)
    assert loop.checkpoint() is False
    assert metrics.registry.get_sample_value("streamgnn_checkpoint_failures_total") == 1
    assert not loop.checkpoint_due()  # the next try waits an interval, not the next step

    directory.unlink()
    shutil.move(tmp_path / "aside", directory)
    assert [p.name for p in loop.checkpoints.paths()] == written  # the earlier one intact
    loop.trainer.learn(events)
    assert loop.checkpoint() is True
    newest = load_checkpoint(loop.checkpoints.paths()[-1])
    assert newest["trainer"]["model_version"] == loop.trainer.model_version
    assert metrics.registry.get_sample_value("streamgnn_checkpoint_failures_total") == 1
