"""The worker's training loop publishes a step while the next one computes
(stream.publish.in_flight): the next learn call runs while the last step's records are
unacked, a step's offsets count as trained (and go into a checkpoint) only once its records
are acked, versions go out in order, and a publish's error stops the trainer thread.

The publisher here holds chosen versions' acks until the test releases them; the trainer,
store and checkpoints are the real ones."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from stream.events import Interaction
from stream.ingest.worker import AppliedBatch
from stream.learn.checkpoint import load_checkpoint
from stream.metrics import PipelineMetrics
from stream.publish.publisher import NodeVectors
from stream.settings import load_settings
from stream.state.graph_store import DecayedGraphStore
from stream.training import TrainingLoop
from tests.harness.worker_process import training_env

WAIT_S = 60.0
T0 = 1_700_000_000_000


class HeldAcks:
    """A publisher whose ``publish`` returns (acks) once the test releases its version."""

    min_version = 0

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.entered: list[int] = []  # versions whose publish began
        self.acked: list[tuple[int, list[str]]] = []  # versions acked, with their user ids
        self.released: set[int] = set()
        self.hold_all = True
        self._changed = threading.Condition()

    def publish(
        self, batches: Iterable[NodeVectors], *, model_version: int, append_times_ms: object = ()
    ) -> None:
        users = [i for b in batches if b.kind == "user" for i in b.ids]
        with self._changed:
            self.entered.append(model_version)
            self._changed.notify_all()
            if self.fail is not None:
                raise self.fail
            while self.hold_all and model_version not in self.released:
                self._changed.wait()
            self.acked.append((model_version, users))
            self._changed.notify_all()

    def release(self, version: int | None = None) -> None:
        with self._changed:
            if version is None:
                self.hold_all = False
            else:
                self.released.add(version)
            self._changed.notify_all()

    def interrupt(self) -> None:
        self.release()


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _batch(users: range, offset: int) -> AppliedBatch:
    events = [Interaction(f"u{k}", f"i{k % 5}", "click", T0 + k) for k in users]
    return AppliedBatch(events, [T0 + k for k in users], {0: offset})


@pytest.fixture
def new_loop(tmp_path: Path) -> Iterator[Callable[[float], TrainingLoop]]:
    """A training loop whose checkpoints fall due every ``interval_s``."""
    with contextlib.ExitStack() as stack:

        def make(interval_s: float) -> TrainingLoop:
            env = training_env(tmp_path, "overlap", dim=8) | {
                "STREAMGNN_STORE_PATH": str(tmp_path / "graph"),
                "STREAMGNN_CHECKPOINT_INTERVAL_S": str(interval_s),
                "STREAMGNN_DEVICE": "cpu",
                "STREAMGNN_PRETOUCH_HEAP_MIB": "0",
            }
            settings = load_settings({}, env)
            behaviours = settings.events.behaviours
            store = stack.enter_context(DecayedGraphStore(settings.store.path, behaviours))
            training = TrainingLoop(settings, store, PipelineMetrics())
            training.resume()
            return training

        yield make


def _offsets(training: TrainingLoop) -> list[int]:
    """Each checkpoint's offset of partition 0, oldest first."""
    return [
        load_checkpoint(path)["offsets"].get(f"{training.source_topic}:0", 0)
        for path in training.checkpoints.paths()
    ]


def test_the_next_step_computes_while_the_last_is_unacked_and_offsets_wait_for_acks(
    new_loop: Callable[[float], TrainingLoop],
) -> None:
    loop = new_loop(3600.0)  # no checkpoint falls due during the test: only stop's
    publisher = HeldAcks()
    loop.start(publisher)  # type: ignore[arg-type]  # the publish/interrupt it calls
    loop.on_applied(_batch(range(0, 10), offset=10))
    _until(lambda: len(publisher.entered) == 1, "the first step's publish")
    first = publisher.entered[0]
    loop.on_applied(_batch(range(10, 20), offset=20))
    # the second learn call ran although the first step's records are not acked ...
    _until(lambda: loop.trainer.model_version > first, "the second step")
    time.sleep(0.2)
    # ... and nothing after it: the second publish waits for the first, and no offset is
    # trained through until the first is acked
    assert publisher.entered == [first]
    assert loop.trained_through == {}
    publisher.release(first)
    _until(lambda: len(publisher.entered) == 2, "the second step's publish")
    second = publisher.entered[1]
    assert second > first
    assert loop.trained_through == {0: 10}
    publisher.release()
    _until(lambda: loop.trained_through == {0: 20}, "the second ack")
    loop.stop(timeout_s=WAIT_S)
    assert [version for version, _ in publisher.acked] == [first, second]
    assert {u for _, users in publisher.acked for u in users} >= {f"u{k}" for k in range(20)}
    assert _offsets(loop) == [20]


def test_a_checkpoint_falling_due_waits_for_the_publish_in_flight(
    new_loop: Callable[[float], TrainingLoop],
) -> None:
    loop = new_loop(0.001)  # due after every step
    publisher = HeldAcks()
    loop.start(publisher)  # type: ignore[arg-type]
    loop.on_applied(_batch(range(0, 10), offset=10))
    _until(lambda: len(publisher.entered) == 1, "the first step's publish")
    loop.on_applied(_batch(range(10, 20), offset=20))
    time.sleep(0.5)
    # the checkpoint due after the first step waits for its acks, and the loop with it
    assert loop.checkpoints.paths() == []
    assert len(publisher.entered) == 1
    publisher.release()
    _until(lambda: loop.trained_through == {0: 20}, "both acks")
    loop.stop(timeout_s=WAIT_S)
    offsets = _offsets(loop)
    assert offsets[0] == 10  # the first checkpoint: the first step, once acked
    assert offsets[-1] == 20
    assert sorted(offsets) == offsets  # never back


def test_a_publish_that_fails_stops_the_trainer_thread_with_its_error(
    new_loop: Callable[[float], TrainingLoop],
) -> None:
    loop = new_loop(3600.0)
    publisher = HeldAcks(fail=ValueError("model_version regression"))
    loop.start(publisher)  # type: ignore[arg-type]
    loop.on_applied(_batch(range(0, 10), offset=10))
    _until(lambda: loop.failure is not None, "the trainer thread to fail")
    assert isinstance(loop.failure, ValueError)
    loop.stop(timeout_s=WAIT_S)
    assert loop.trained_through == {}
    assert loop.checkpoints.paths() == []  # a failed thread writes none
