"""Checkpoints: round trip, pruning, torn and foreign files refused, SIGKILL during save."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from models.checkpoint import (
    _HEADER,
    FORMAT_VERSION,
    MAGIC,
    CheckpointStore,
    load_checkpoint,
)
from stream.errors import CheckpointError, ConfigError

REPO = Path(__file__).resolve().parents[2]


def _payload(version: int) -> dict[str, object]:
    torch.manual_seed(version)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    return {
        "encoder": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "ids": {"users": ["u1", "u2"], "items": ["i1"]},
        "model_version": version,
        "offsets": {"interactions:0": 10 * version, "interactions:3": 7},
    }


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def test_round_trip_restores_model_and_optimizer(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    payload = _payload(1)
    store.save(payload)
    loaded = store.load_latest()
    assert loaded is not None and _same(payload, loaded)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.load_state_dict(loaded["encoder"])
    optimizer.load_state_dict(loaded["optimizer"])
    assert store.refused == 0


def test_empty_directory_has_no_checkpoint(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path / "new").load_latest() is None


def test_keeps_the_newest_and_numbers_monotonically(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    saved = [store.save({"model_version": v}) for v in range(1, 6)]
    assert store.paths() == saved[-3:]
    assert saved == sorted(saved)
    latest = store.load_latest()
    assert latest is not None and latest["model_version"] == 5


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keep"):
        CheckpointStore(tmp_path, keep=0)
    with pytest.raises(ValueError, match=r"payload\['extra'\]\[0\] is a object"):
        CheckpointStore(tmp_path).save({"extra": [object()]})
    assert CheckpointStore(tmp_path).paths() == []


def test_torn_files_are_refused_and_the_previous_one_loads(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(_payload(1))
    newest = store.save(_payload(2))
    whole = newest.read_bytes()
    rng = random.Random(0)
    cuts = {0, 1, _HEADER.size - 1, _HEADER.size, len(whole) - 1}
    cuts |= {rng.randrange(len(whole)) for _ in range(15)}
    for n, cut in enumerate(sorted(cuts), start=1):
        newest.write_bytes(whole[:cut])
        loaded = store.load_latest()
        assert loaded is not None and loaded["model_version"] == 1, f"cut at {cut}"
        assert store.refused == n and store.refusals[-1].path == newest
    with pytest.raises(CheckpointError, match="torn"):
        load_checkpoint(newest)


def test_flipped_and_extended_bytes_are_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(_payload(1))
    newest = store.save(_payload(2))
    whole = bytearray(newest.read_bytes())
    whole[len(whole) // 2] ^= 0x40
    newest.write_bytes(bytes(whole))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(newest)
    whole[len(whole) // 2] ^= 0x40
    newest.write_bytes(bytes(whole) + b"\0")
    with pytest.raises(CheckpointError, match="extended"):
        load_checkpoint(newest)
    loaded = store.load_latest()
    assert loaded is not None and loaded["model_version"] == 1


class _Exploit:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _with_valid_header(body: bytes) -> bytes:
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(body), hashlib.sha256(body).digest()) + body


def test_foreign_files_are_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    store = CheckpointStore(tmp_path / "ckpt")
    store.save({"model_version": 1})
    exploit = pickle.dumps({"model_version": 9, "x": _Exploit(marker)})
    saved = tmp_path / "saved.pt"
    torch.save({"model_version": 9, "x": _Exploit(marker)}, saved)
    foreign = [
        random.Random(1).randbytes(5000),
        exploit,  # a bare malicious pickle
        _with_valid_header(exploit),  # a crafted file whose header checks out
        _with_valid_header(saved.read_bytes()),  # torch.save of a malicious object
        _with_valid_header(pickle.dumps([1, 2, 3])),  # safe, but not a dict
        _HEADER.pack(MAGIC, FORMAT_VERSION + 1, 0, b"\0" * 32),  # a future format
    ]
    for n, raw in enumerate(foreign, start=1):
        path = store.directory / f"ckpt-{900 + n:012d}.sgckpt"
        path.write_bytes(raw)
        loaded = store.load_latest()
        assert loaded == {"model_version": 1}
        assert store.refusals[-1].path == path
        path.unlink()
    assert store.refused == len(foreign)
    assert not marker.exists(), "a checkpoint load executed code from the file"


_WRITER = r"""
import hashlib, os, random, sys
from pathlib import Path
import torch
from models.checkpoint import CheckpointStore

directory = Path(sys.argv[1])
for _ in sys.stdin:  # one line per writer to start; the parent kills each one
    pid = os.fork()
    if pid == 0:
        store = CheckpointStore(directory, keep=3)
        rng = random.Random(os.getpid())
        while True:
            data = torch.rand(rng.randrange(1 << 20, 3 << 20))
            digest = hashlib.sha256(data.numpy().tobytes()).hexdigest()
            store.save({"writer": os.getpid(), "data": data, "digest": digest})
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


def test_sigkill_during_save_always_leaves_a_complete_checkpoint(tmp_path: Path) -> None:
    """A zygote process imports torch once and forks 20 writers; each is killed at random."""
    directory = tmp_path / "ckpt"
    zygote = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert zygote.stdin is not None and zygote.stdout is not None
    rng = random.Random(42)
    store = CheckpointStore(directory)
    torn_temps = 0
    try:
        for round_ in range(20):
            before = store.paths()
            zygote.stdin.write("go\n")
            zygote.stdin.flush()
            writer = int(zygote.stdout.readline())
            deadline = time.monotonic() + 20
            while store.paths() == before and time.monotonic() < deadline:
                time.sleep(0.005)  # let it finish at least one save
            if round_ % 2:  # odd rounds: at a random time
                time.sleep(rng.uniform(0.0, 0.25))
            else:  # even rounds: while the temp file is being written
                while not any(p.name.startswith(".tmp-") for p in directory.iterdir()):
                    if time.monotonic() > deadline:
                        break
            os.kill(writer, signal.SIGKILL)
            assert zygote.stdout.readline().strip() == "reaped"
            torn_temps += any(p.name.startswith(".tmp-") for p in directory.iterdir())
            loaded = store.load_latest()
            assert loaded is not None
            data = loaded["data"]
            assert hashlib.sha256(data.numpy().tobytes()).hexdigest() == loaded["digest"]
            assert len(store.paths()) <= 3 + 1  # a kill between rename and pruning
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=30)
    assert store.refused == 0, store.refusals  # a torn write never reaches a checkpoint name
    assert torn_temps > 0, "no kill landed mid-write; the test proved nothing"
