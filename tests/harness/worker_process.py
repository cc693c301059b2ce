"""The worker as a child process, configured by environment, as the scenarios run it.

:class:`WorkerProcess` runs ``python -m stream.worker`` (or the self-killing
:mod:`tests.harness.crashing_worker`); :func:`worker_env` and :func:`training_env` are the
environments the scenarios and benchmarks start it with.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from stream.local_broker.broker import free_ports
from stream.metrics import owns_partitions
from tests.harness import importable_env

# The scaled-out deployment's two processes (``streamgnn ingest``, ``streamgnn train``).
INGEST_COMMAND = [sys.executable, "-m", "stream.ingest.command"]
TRAIN_COMMAND = [sys.executable, "-m", "stream.train"]


class WorkerExited(RuntimeError):
    """The worker exited while a scenario waited for it to get somewhere."""


class WorkerProcess:
    """``python -m stream.worker`` as a child process, configured by environment.

    With ``kill_trigger`` it runs as :mod:`tests.harness.crashing_worker`, which SIGKILLs
    itself right after the store write that reaches the position that file holds; with
    ``command``, that command instead (another stream engine, bench/engines.py).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        kill_trigger: Path | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self._env = importable_env({**os.environ, **env})
        self._log_path = log_path
        self._command = list(command or [sys.executable, "-m", "stream.worker"])
        if kill_trigger is not None:
            self._command = [
                sys.executable,
                "-m",
                "tests.harness.crashing_worker",
                str(kill_trigger),
            ]
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start = 0  # where the latest start's lines begin in the shared log

    def start(self) -> None:
        with self._log_path.open("ab") as log:
            self._log_start = log.tell()
            self._process = subprocess.Popen(
                self._command,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the worker with its process group: a child it started (a torchrun's
        ranks) must not outlive it holding ports, stores and checkpoints."""
        if self._process is not None:
            _kill_group(self._process)

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (drain and exit); returns the exit status.

        A worker still running ``timeout_s`` later is SIGKILLed with its process group (a
        torchrun's ranks too) before the timeout is raised: a hung worker fails its test,
        and does not outlive the run holding its broker, ports and store.
        """
        if self._process is None:
            raise RuntimeError("worker was never started")
        self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(self._process)
            raise

    def consuming(self) -> bool:
        """Whether the latest start got as far as consuming (its signal handlers are set,
        so a SIGTERM now drains and exits 0). Only the latest start's lines count: a start
        killed before it consumed wrote none. Raises if that start exited first."""
        status = self.exit_status()  # first: an exited start has written all it will
        text = self._latest_log()
        if "worker consuming" in text:
            return True
        if status is not None:
            tail = "\n".join(text.splitlines()[-20:])
            raise WorkerExited(
                f"worker exited {status} before consuming; its log {self._log_path} ends:\n{tail}"
            )
        return False

    def _latest_log(self) -> str:
        if not self._log_path.exists():
            return ""
        with self._log_path.open("rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def owns_partitions(self) -> bool:
        """Whether the running worker owns partitions: it restores each one from its
        changelog (when it has one) before it reports them owned."""
        return self.exit_status() is None and owns_partitions(
            self._env["STREAMGNN_METRICS_ADDRESS"]
        )

    def exit_status(self) -> int | None:
        return None if self._process is None else self._process.poll()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("worker was never started")
        return self._process.pid


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``process`` and every process of its session (started with
    ``start_new_session``, its pid is the group's id), and reap it."""
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` every 50 ms; returns the seconds it took, raises on timeout."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def training_env(workdir: Path, tag: str, dim: int = 16) -> dict[str, str]:
    """What turns a :func:`worker_env` worker into a training one: its own checkpoint
    folder, version ledger and embedding topics under ``tag``."""
    return {
        "STREAMGNN_TRAIN": "true",
        "STREAMGNN_DIM": str(dim),
        "STREAMGNN_CHECKPOINT_DIR": str(workdir / f"checkpoints-{tag}"),
        "STREAMGNN_VERSION_LEDGER": str(workdir / f"ledger-{tag}" / "versions.json"),
        "STREAMGNN_USER_EMBEDDINGS_TOPIC": f"{tag}.user-embeddings",
        "STREAMGNN_ITEM_EMBEDDINGS_TOPIC": f"{tag}.item-embeddings",
    }


def worker_env(
    bootstrap: str, topic: str, group: str, store_path: Path, max_batch_records: int
) -> dict[str, str]:
    """The ingest-only worker environment every scenario starts from."""
    return {
        "STREAMGNN_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMGNN_INTERACTIONS_TOPIC": topic,
        "STREAMGNN_DLQ_TOPIC": f"{topic}.dlq",
        "STREAMGNN_GROUP_ID": group,
        "STREAMGNN_INSTANCE_ID": "worker-1",
        "STREAMGNN_SESSION_TIMEOUT_MS": "6000",
        "STREAMGNN_MAX_BATCH_RECORDS": str(max_batch_records),
        "STREAMGNN_STORE_PATH": str(store_path),
        "STREAMGNN_TRAIN": "false",  # the ingest half: exactly-once into the store
        "STREAMGNN_METRICS_ADDRESS": f"127.0.0.1:{free_ports(1)[0]}",
    }
