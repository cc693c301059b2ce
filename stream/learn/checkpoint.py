"""Durable trainer checkpoints: atomic to write, safe to read, torn files refused.

A checkpoint *payload* is a nested mapping of tensors and plain data (``dict`` / ``list``
/ ``tuple`` / ``str`` / ``int`` / ``float`` / ``bool`` / ``None``): the encoder and
optimizer ``state_dict``, the id registry's lists, the model version and the source
offsets trained through (``{"topic:partition": next_offset}``). Nothing else is
accepted, so a payload always loads with ``torch.load(weights_only=True)``; arbitrary
objects (and the code a pickle can smuggle in) are never unpickled.

On disk one checkpoint is one file ``ckpt-<sequence>.sgckpt``::

    magic (16 bytes) | format version (u32) | body length (u64) | SHA-256 of body (32 bytes)
    body: torch.save(payload)

Writing is atomic: a temp file in the same directory is written, flushed and fsynced,
renamed into place, and the directory is fsynced, so a crash at any point leaves either
the previous set of checkpoints or the previous set plus a complete new one. Reading
checks magic, version, length and digest *before* the body is deserialised; a file
that fails is refused (logged and counted) and :meth:`CheckpointStore.load_latest`
falls back to the next older one. :meth:`CheckpointStore.set_aside` moves every checkpoint
into a ``discarded-<UTC time>`` folder inside the directory (a rename on the same file
system, so nothing is copied or deleted), for a model the settings no longer fit.

One process writes a directory: :meth:`CheckpointStore.hold` takes an exclusive ``flock``
on its ``LOCK`` file (the kernel drops it when the process ends, however it ends), so a
second worker given the same ``--checkpoint-dir`` is refused instead of loading the first
one's model and writing its own checkpoints among the first one's.

>>> import tempfile, torch
>>> store = CheckpointStore(Path(tempfile.mkdtemp()), keep=2)
>>> _ = store.save({"model_version": 1, "weights": torch.ones(2)})
>>> store.load_latest()["model_version"]
1
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import re
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stream.errors import CheckpointDirInUse, CheckpointError, ConfigError

log = logging.getLogger(__name__)

MAGIC = b"\x89streamgnn-ckpt\n"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">16sIQ32s")
_NAME = re.compile(r"^ckpt-(\d{12})\.sgckpt$")
_TEMP_PREFIX = ".tmp-ckpt-"

Payload = dict[str, Any]
LOCK_NAME = "LOCK"
# Directories this process holds -> the descriptor its lock is on. Per process, not per
# store object: the lock keeps other processes out, and objects of one process may share.
_HELD: dict[Path, int] = {}


@dataclass(frozen=True)
class Refusal:
    """A checkpoint file :meth:`CheckpointStore.load_latest` skipped, and why."""

    path: Path
    reason: str


class CheckpointStore:
    """Numbered checkpoints in one directory; the newest ``keep`` are kept.

    Args:
        directory: where checkpoint files live (created if missing). One writer at a time.
        keep: how many complete checkpoints to keep (>= 1); older ones are deleted after
            each successful save.
    """

    def __init__(self, directory: Path, keep: int = 3) -> None:
        if keep < 1:
            raise ConfigError(f"checkpoint keep must be >= 1, got {keep!r}")
        self.directory = Path(directory)
        self.keep = keep
        self.refusals: list[Refusal] = []
        self.loaded: Path | None = None  # the file load_latest returned last
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in its place, a parent it may not write
            raise _unusable(self.directory, exc) from None

    def hold(self) -> None:
        """Hold the directory for this process until :meth:`release` or its end.

        Raises:
            CheckpointDirInUse: another process holds it.
        """
        key = self.directory.resolve()
        if key in _HELD:
            return
        try:
            fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _unusable(self.directory, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointDirInUse(
                f"checkpoint directory {self.directory} is held by another process: each "
                "training worker needs a --checkpoint-dir (STREAMGNN_CHECKPOINT_DIR) of its own"
            ) from None
        _HELD[key] = fd

    def release(self) -> None:
        """Let the directory go (the process's hold on it, if any)."""
        fd = _HELD.pop(self.directory.resolve(), None)
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock

    @property
    def refused(self) -> int:
        """How many files loading has refused so far (torn, foreign or unreadable)."""
        return len(self.refusals)

    def paths(self) -> list[Path]:
        """Checkpoint files present, oldest first (by sequence number)."""
        found = [(_sequence(p), p) for p in self.directory.iterdir() if _NAME.match(p.name)]
        return [p for _, p in sorted(found)]

    # -- writing ----------------------------------------------------------------------

    def save(self, payload: Mapping[str, Any]) -> Path:
        """Write ``payload`` as the newest checkpoint, atomically; returns its path."""
        _check_payload(payload, "payload")
        buffer = io.BytesIO()
        torch.save(dict(payload), buffer)
        body = buffer.getvalue()
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body), hashlib.sha256(body).digest())
        self._remove_stale_temps()
        existing = self.paths()
        sequence = _sequence(existing[-1]) + 1 if existing else 1
        final = self.directory / f"ckpt-{sequence:012d}.sgckpt"
        temp = self.directory / f"{_TEMP_PREFIX}{sequence:012d}-{os.getpid()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(header)
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_directory(self.directory)
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return final

    def _remove_stale_temps(self) -> None:
        """Temp files are left only by a writer that died mid-save; they are never read."""
        for path in self.directory.glob(f"{_TEMP_PREFIX}*"):
            path.unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------

    def load_latest(self) -> Payload | None:
        """The newest checkpoint that verifies, or None when there is none.

        Each file refused on the way is logged and recorded in :attr:`refusals`.
        """
        for path in reversed(self.paths()):
            try:
                payload = load_checkpoint(path)
                self.loaded = path
                return payload
            except CheckpointError as exc:
                self.refusals.append(Refusal(path, str(exc)))
                log.warning("refused checkpoint %s: %s; trying the previous one", path, exc)
        return None

    def set_aside(self) -> tuple[Path, list[Path]]:
        """Move every checkpoint file into a new ``discarded-<UTC time>`` folder inside the
        directory; returns the folder and the files' new paths. Inside, not beside: the
        directory may be a mounted volume, and a rename never leaves it."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.directory / f"discarded-{stamp}"
        n = 1
        while aside.exists():
            n += 1
            aside = self.directory / f"discarded-{stamp}-{n}"
        aside.mkdir()
        moved = []
        for path in self.paths():
            os.replace(path, aside / path.name)
            moved.append(aside / path.name)
        _fsync_directory(aside)
        _fsync_directory(self.directory)
        self.loaded = None
        return aside, moved


def cpu_copy(obj: Any) -> Any:
    """A deep copy of nested state with every tensor cloned to the CPU (a payload part)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, Mapping):
        return {key: cpu_copy(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_copy(value) for value in obj)
    return obj


def load_checkpoint(path: Path) -> Payload:
    """Read and verify one checkpoint file; raises :class:`CheckpointError` if it is not good."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc}") from exc
    if len(raw) < _HEADER.size:
        raise CheckpointError(f"{path}: {len(raw)} bytes is shorter than the header (torn file)")
    magic, version, length, digest = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise CheckpointError(f"{path}: not a streamgnn checkpoint (bad magic {magic[:8]!r})")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version}, this build reads {FORMAT_VERSION}"
        )
    body = memoryview(raw)[_HEADER.size :]
    if len(body) != length:
        raise CheckpointError(
            f"{path}: body is {len(body)} bytes, header says {length} (torn or extended file)"
        )
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"{path}: SHA-256 mismatch (corrupt file)")
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError from the zip reader, ...
        raise CheckpointError(f"{path}: body refused by the safe loader: {exc}"[:500]) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: payload is a {type(payload).__name__}, not a dict")
    return payload


_PLAIN = (str, int, float, bool, type(None))


def _check_payload(value: object, where: str) -> None:
    """Refuse anything ``torch.load(weights_only=True)`` would not give back."""
    if isinstance(value, (torch.Tensor, *_PLAIN)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise ValueError(f"checkpoint {where} has a key of type {type(key).__name__}")
            _check_payload(item, f"{where}[{key!r}]")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_payload(item, f"{where}[{i}]")
        return
    raise ValueError(
        f"checkpoint {where} is a {type(value).__name__}; only tensors, dicts, lists, "
        "tuples, str, int, float, bool and None can be checkpointed"
    )


def _sequence(path: Path) -> int:
    match = _NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path.name!r} is not a checkpoint file name")
    return int(match.group(1))


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unusable(directory: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot use checkpoint directory {directory}: {exc.strerror or exc}; give "
        "--checkpoint-dir (STREAMGNN_CHECKPOINT_DIR) a directory this process may create "
        "and write"
    )
