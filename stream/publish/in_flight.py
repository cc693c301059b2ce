"""One step's publish in flight while the next step computes.

The worker's trainer thread used to publish each step's vectors itself, waiting for every
ack before it took the next batch: at 10,000 events/s a third of its cycle went to encoding,
sending and waiting (scratch, 2026-12-06: 0.08-0.21 s a publish against 0.34-0.46 s a learn
call). :class:`PublishInFlight` runs a publish in a thread of its own instead, so the next
learn call's torch kernels run while the last step's records are encoded, sent and acked.

At most one publish is in flight: handing the next one first waits for it. So versions go
out in order, a slow publish holds the trainer back as a slow step does (the backlog
coalesces meanwhile, then ingestion pauses), and what the publish counts as trained when
its records are acked (the caller's job) is settled before anything reads it after
:meth:`PublishInFlight.wait` (a checkpoint). An error of the publish in flight is raised in
the trainer thread, by the next :meth:`~PublishInFlight.hand` or
:meth:`~PublishInFlight.wait`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class PublishInFlight:
    """Runs one job at a time in a daemon thread started on the first :meth:`hand`.

    >>> done = []
    >>> publishing = PublishInFlight()
    >>> publishing.hand(lambda: done.append(1)); publishing.hand(lambda: done.append(2))
    >>> publishing.wait(); done
    [1, 2]
    """

    def __init__(self, name: str = "streamgnn-publisher") -> None:
        self._name = name
        self._changed = threading.Condition()
        self._job: Callable[[], object] | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def hand(self, job: Callable[[], object]) -> None:
        """Wait for the job in flight (raising its error), then start ``job``."""
        self.wait()
        with self._changed:
            self._job = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def wait(self) -> None:
        """Return once no job is in flight; raise the error of the last one, once."""
        with self._changed:
            while self._job is not None:
                self._changed.wait()
            error, self._error = self._error, None
        if error is not None:
            raise error

    def busy(self) -> bool:
        """Whether a job is in flight."""
        with self._changed:
            return self._job is not None

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._job is None:
                    self._changed.wait()
                job = self._job
            error: BaseException | None = None
            try:
                job()
            except BaseException as exc:  # the trainer thread raises it (hand or wait)
                error = exc
            with self._changed:
                self._job, self._error = None, error
                self._changed.notify_all()
