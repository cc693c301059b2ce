"""Checkpoints: round trip, pruning, torn and foreign files refused, SIGKILL during save."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stream.errors import CheckpointDirInUse, CheckpointError, ConfigError
from stream.learn.checkpoint import (
    _HEADER,
    FORMAT_VERSION,
    MAGIC,
    CheckpointStore,
    load_checkpoint,
)
from tests.harness import importable_env
from tests.harness.checkpoint_faults import run_checkpoint_kill_scenario


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


def test_sigkill_during_save_always_leaves_a_complete_checkpoint(tmp_path: Path) -> None:
    """20 writers, each SIGKILLed mid-save (tests/harness/checkpoint_faults.py)."""
    report = run_checkpoint_kill_scenario(tmp_path / "ckpt", kills=20, keep=3)

    assert (report.sent, report.applied, report.lost) == (20, 20, 0)  # the last good one loads
    assert report.duplicated == 0  # a torn file never loads
    assert report.details["refused"] == 0  # a torn write never reaches a checkpoint name
    assert report.details["most_files"] <= 3 + 1  # a kill between rename and pruning
    assert report.details["torn_left"] > 0, "no kill landed mid-write; the test proved nothing"


HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from stream.learn.checkpoint import CheckpointStore\n"
    "CheckpointStore(Path(sys.argv[1])).hold()\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def test_a_directory_another_process_holds_is_refused_until_that_process_ends(
    tmp_path: Path,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        env=importable_env(dict(os.environ)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointDirInUse, match=str(tmp_path)):
            CheckpointStore(tmp_path).hold()
    finally:
        holder.kill()  # a SIGKILL: the kernel drops the lock with the process
        holder.wait()
    store = CheckpointStore(tmp_path)
    store.hold()
    CheckpointStore(tmp_path).hold()  # this process holds it already: objects may share
    store.release()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        env=importable_env(dict(os.environ)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:  # released: another process may take it
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    finally:
        holder.kill()
        holder.wait()
