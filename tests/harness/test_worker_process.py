"""The harness's worker process: a worker that will not stop is killed, children and all;
whether the latest start consumes is read from that start's own lines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.worker_process import WorkerExited, WorkerProcess, wait_for

# Ignores SIGTERM, starts a child that ignores it too, writes the child's pid, then sleeps.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of a killed parent is reaped by init; until then it is a zombie.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:  # reaped between the two looks
        return False
    return status != "Z"


def _stubborn_worker(tmp_path: Path) -> tuple[WorkerProcess, int]:
    """A started :data:`STUBBORN` worker and its child's pid."""
    pid_file = tmp_path / "child.pid"
    worker = WorkerProcess(
        {}, tmp_path / "stubborn.log", command=[sys.executable, "-c", STUBBORN, str(pid_file)]
    )
    worker.start()
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", 30, "the child's pid")
    return worker, int(pid_file.read_text())


def test_a_worker_that_ignores_sigterm_is_killed_with_its_children_after_the_timeout(
    tmp_path: Path,
) -> None:
    worker, child = _stubborn_worker(tmp_path)
    time.sleep(0.2)  # the parent's SIGTERM handler is set before it writes the pid

    with pytest.raises(subprocess.TimeoutExpired):
        worker.terminate(timeout_s=1)

    assert worker.exit_status() is not None  # reaped, not left running
    wait_for(lambda: not _alive(child), 10, "the worker's child to be gone")


def test_a_killed_worker_takes_its_children_with_it(tmp_path: Path) -> None:
    worker, child = _stubborn_worker(tmp_path)

    worker.kill()

    assert worker.exit_status() == -9
    wait_for(lambda: not _alive(child), 10, "the worker's child to be gone")


def test_a_worker_that_stops_on_sigterm_returns_its_exit_status(tmp_path: Path) -> None:
    worker = WorkerProcess(
        {},
        tmp_path / "polite.log",
        command=[sys.executable, "-c", "import time; time.sleep(60)"],
    )
    worker.start()
    time.sleep(0.5)
    assert worker.terminate(timeout_s=30) == -15  # SIGTERM's default action: killed by it


# Says it consumes once the file its argument names exists, then sleeps.
CONSUMES_WHEN_TOLD = """
import pathlib, sys, time
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.02)
print("worker consuming topic", flush=True)
time.sleep(600)
"""


def test_a_start_killed_before_it_consumed_leaves_the_next_start_to_say_so(
    tmp_path: Path,
) -> None:
    go = tmp_path / "go"
    worker = WorkerProcess(
        {}, tmp_path / "restarts.log", command=[sys.executable, "-c", CONSUMES_WHEN_TOLD, str(go)]
    )
    worker.start()
    time.sleep(0.3)
    assert not worker.consuming()
    worker.kill()  # before it consumed: it wrote no line
    worker.start()
    assert not worker.consuming()
    go.touch()
    try:
        wait_for(worker.consuming, 30, "the restarted worker to consume")
        worker.kill()
        go.unlink()
        worker.start()  # the earlier start's line is not this one's
        time.sleep(0.3)
        assert not worker.consuming()
    finally:
        worker.kill()


def test_a_start_that_exits_before_consuming_is_reported_with_its_log(tmp_path: Path) -> None:
    worker = WorkerProcess(
        {},
        tmp_path / "failing.log",
        command=[sys.executable, "-c", "import sys; print('cannot open the store'); sys.exit(3)"],
    )
    worker.start()
    with pytest.raises(WorkerExited, match=r"exited 3 before consuming(.|\n)*cannot open"):
        wait_for(worker.consuming, 30, "the worker to consume")
