"""SIGKILL during checkpoint saves: the last good checkpoint always loads, a torn file never.

A zygote process (this module run as ``python -m tests.harness.checkpoint_faults DIR``)
imports torch once and forks one writer per line it reads on stdin; each writer saves
1-3 MiB checkpoints into ``DIR`` in a loop until the scenario SIGKILLs it: on even rounds
while a temp file is being written, on odd rounds at a random time. After every kill the
scenario loads the newest checkpoint, and tries to load any torn temp file directly.

The figures, as a :class:`~tests.harness.faults.CrashReport` entry:

- ``sent``: saves interrupted (one SIGKILLed writer per round);
- ``applied``: rounds after which the newest checkpoint loaded and its data matched the
  digest saved inside it;
- ``lost``: rounds after which it did not (no checkpoint, or a refused one): 0 when the
  last good checkpoint always loads;
- ``duplicated``: torn files (shorter than their header says) that loaded anyway: 0;
- ``recovery_s``: seconds ``load_latest`` took after each kill.

``details`` adds ``torn_left`` (kills that left a torn temp file: the proof that kills
landed mid-write), ``refused`` (files under a checkpoint name that failed to load) and
``most_files`` (checkpoint files seen at once).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from stream.errors import CheckpointError
from stream.learn.checkpoint import _HEADER, CheckpointStore, load_checkpoint
from tests.harness import REPO_ROOT
from tests.harness.faults import CrashReport

_TEMP_PREFIX = ".tmp-"


def run_checkpoint_kill_scenario(
    directory: Path,
    kills: int = 20,
    seed: int = 42,
    keep: int = 3,
    name: str = "checkpoint-sigkill",
    timeout_s: float = 20.0,
) -> CrashReport:
    """SIGKILL ``kills`` checkpoint writers mid-save and load after each; see the module."""
    if kills < 1:
        raise ValueError(f"kills must be >= 1, got {kills!r}")
    zygote = subprocess.Popen(
        [sys.executable, "-m", "tests.harness.checkpoint_faults", str(directory), str(keep)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if zygote.stdin is None or zygote.stdout is None:
        raise RuntimeError("the checkpoint writer zygote has no pipes")
    rng = random.Random(seed)
    store = CheckpointStore(directory, keep=keep)
    report = CrashReport(name=name, sent=kills)
    torn_left = most_files = 0
    try:
        for round_ in range(kills):
            before = store.paths()
            zygote.stdin.write("go\n")
            zygote.stdin.flush()
            writer = int(zygote.stdout.readline())
            deadline = time.monotonic() + timeout_s
            while store.paths() == before and time.monotonic() < deadline:
                time.sleep(0.005)  # let it finish at least one save
            if round_ % 2:
                time.sleep(rng.uniform(0.0, 0.25))
            else:
                while not _temps(directory) and time.monotonic() < deadline:
                    pass  # spin: the temp file lives for milliseconds
            os.kill(writer, signal.SIGKILL)
            if zygote.stdout.readline().strip() != "reaped":
                raise RuntimeError("the checkpoint writer zygote lost track of its writer")
            most_files = max(most_files, len(store.paths()))
            torn = [path for path in _temps(directory) if _is_torn(path)]
            torn_left += bool(torn)
            report.duplicated += sum(_loads(path) for path in torn)
            refused_before = store.refused
            started = time.monotonic()
            loaded = store.load_latest()
            report.recovery_s.append(time.monotonic() - started)
            good = store.refused == refused_before and _intact(loaded)
            report.applied += good
            report.lost += not good
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=30)
    report.details.update(torn_left=torn_left, refused=store.refused, most_files=most_files)
    return report


def _temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(_TEMP_PREFIX)]


def _is_torn(path: Path) -> bool:
    """Shorter than its header says (or than a header): a write cut short."""
    raw = path.read_bytes()
    return len(raw) < _HEADER.size or len(raw) < _HEADER.size + _HEADER.unpack_from(raw)[2]


def _loads(path: Path) -> bool:
    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def _intact(payload: dict[str, Any] | None) -> bool:
    if payload is None:
        return False
    data: torch.Tensor = payload["data"]
    return hashlib.sha256(data.numpy().tobytes()).hexdigest() == str(payload["digest"])


def _writer_loop(directory: Path, keep: int) -> None:
    """The zygote: fork a writer per stdin line, print its pid, reap it, print 'reaped'."""
    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:
            store = CheckpointStore(directory, keep=keep)
            rng = random.Random(os.getpid())
            while True:
                data = torch.rand(rng.randrange(1 << 20, 3 << 20))
                digest = hashlib.sha256(data.numpy().tobytes()).hexdigest()
                store.save({"writer": os.getpid(), "data": data, "digest": digest})
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)


if __name__ == "__main__":
    _writer_loop(Path(sys.argv[1]), int(sys.argv[2]))
