"""The learner thread of a worker that reflects before it steps.

The trainer thread (:mod:`stream.training`) absorbs each batch, publishes its users'
reflected vectors and hands the batch here; this thread takes every batch handed over so
far as one step behind (:meth:`IncrementalTrainer.step_behind`, whose heavy half runs
outside the trainer's lock), and hands the report back with the batches' offsets, which
the trainer thread publishes and only then counts as trained. A step slower than the
stream coalesces the batches waiting for it, as the backlog does for the trainer thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import partial

from stream.learn.report import TrainReport
from stream.learn.trainer import Absorbed, IncrementalTrainer, merged


@dataclass
class Handed:
    """Absorbed batches handed to the learner, coalesced, with what their step settles."""

    absorbed: list[Absorbed] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset
    append_times_ms: list[int] = field(default_factory=list)  # counted with the step's publish
    newest_ts: int | None = None  # newest event time (None: read back, in the graph already)

    def add(self, other: Handed) -> None:
        self.absorbed.extend(other.absorbed)
        for partition, offset in other.positions.items():
            self.positions[partition] = max(offset, self.positions.get(partition, 0))
        self.append_times_ms.extend(other.append_times_ms)
        if other.newest_ts is not None:
            newest = self.newest_ts
            self.newest_ts = other.newest_ts if newest is None else max(newest, other.newest_ts)


class Learner:
    """Steps behind on what :meth:`hand` gives it, in its own thread; see the module."""

    def __init__(self, trainer: IncrementalTrainer) -> None:
        self._trainer = trainer
        self._waiting = Handed()
        self._done: list[tuple[TrainReport, Handed]] = []
        self._busy = False
        self._closed = False
        self.failure: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="streamgnn-learner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def hand(self, handed: Handed) -> None:
        with self._changed:
            self._waiting.add(handed)
            self._changed.notify_all()

    def finished(self) -> list[tuple[TrainReport, Handed]]:
        """The steps finished since the last call, oldest (lowest version) first; raises
        the thread's failure."""
        with self._changed:
            if self.failure is not None:
                raise self.failure
            done, self._done = self._done, []
            return done

    def idle(self) -> bool:
        """Nothing waiting, nothing stepping, nothing finished and not yet taken."""
        with self._changed:
            return not (self._waiting.absorbed or self._busy or self._done)

    def close(self, timeout_s: float = 5.0) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _deliver(self, handed: Handed, report: TrainReport) -> None:
        """The step's report, as its version is taken (under the trainer's lock): a reflect
        published after :meth:`finished` returned it has a higher version."""
        with self._changed:
            self._done.append((report, handed))

    def _run(self) -> None:
        try:
            while True:
                with self._changed:
                    while not self._waiting.absorbed and not self._closed:
                        self._changed.wait()
                    if self._closed:
                        return
                    handed, self._waiting, self._busy = self._waiting, Handed(), True
                self._trainer.step_behind(merged(handed.absorbed), partial(self._deliver, handed))
                with self._changed:
                    self._busy = False
        except BaseException as exc:  # handed to the trainer thread by finished()
            with self._changed:
                self.failure, self._busy = exc, False
