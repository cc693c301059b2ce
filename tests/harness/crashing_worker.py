"""``python -m tests.harness.crashing_worker TRIGGER [worker options]``: the worker, able to
SIGKILL itself right after a store write.

A SIGKILL sent from outside lands wherever the worker happens to be. The fault scenarios
also need one that lands exactly between the store's atomic write (events + source
offsets in one ``WriteBatch``) and everything after it: pruning, the informational group
commit, the hand-off to the trainer, publishing. This runs the real worker
(:mod:`stream.worker`, same options and environment) with one change: while the file
``TRIGGER`` holds a number ``N``, the first store write that takes the sum of the topic's
stored next offsets to ``N`` or beyond is followed (in :meth:`DecayedGraphStore.prune`,
which ``apply`` calls right after its atomic write) by removing the file and SIGKILLing
the process. Arming by position rather than by time means the kill cannot miss the
stream, however fast the worker ingests; removing the file first keeps the restarted
worker alive.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from stream import worker
from stream.settings import add_options
from stream.state.graph_store import DecayedGraphStore

log = logging.getLogger("streamgnn.testing.crashing_worker")


def arm(trigger: Path) -> None:
    """Make every store in this process die after a write, as ``trigger`` says (module doc)."""
    original = DecayedGraphStore.prune

    def prune(store: DecayedGraphStore, topic: str, partitions: Sequence[int]) -> int:
        try:
            target = int(trigger.read_text())
        except (FileNotFoundError, ValueError):  # not armed (or being written)
            return original(store, topic, partitions)
        stored = sum(o for (t, _), (o, _) in store.positions().items() if t == topic)
        if stored >= target:
            trigger.unlink(missing_ok=True)
            log.warning(
                "SIGKILL right after the store write reaching %d (armed at %d)", stored, target
            )
            logging.shutdown()  # flush the log line before the process vanishes
            os.kill(os.getpid(), signal.SIGKILL)
        return original(store, topic, partitions)

    setattr(DecayedGraphStore, "prune", prune)  # noqa: B010 (mypy refuses method assignment)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.crashing_worker")
    parser.add_argument("trigger", type=Path, help="file holding the stored position to die at")
    add_options(parser, worker.WORKER_OPTIONS)
    args = parser.parse_args(argv)
    arm(args.trigger)
    return worker.main(args)


if __name__ == "__main__":
    sys.exit(main())
