"""The graph store's RocksDB handle, whose failed reads raise :class:`StoreReadError`.

rocksdict raises a plain ``Exception`` when a read meets a damaged table file (a block
whose checksum does not match) or a disk that cannot read, and an iterator that meets one
just stops: ``valid()`` turns false as it does at the end, and only ``status()`` tells the
two apart. A scan that did not ask ended early and said nothing (by hand on 2026-12-07,
64 bytes flipped in one table file cut a whole-store scan from 1,061,143 records to
347,439 without an error; a trainer bootstrapping from such a store trains on part of the
graph), and a failed get left the worker with a bare traceback. Every read of the store
goes through :class:`Rocks`, so each failure is one error that names the store and the
way out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import Rdict, WriteBatch, WriteOptions

from stream.errors import StoreReadError


class Rocks:
    """Reads (single, listed, prefix scans) and writes of one open ``Rdict``."""

    def __init__(self, db: Rdict, path: Path) -> None:
        self._db = db
        self._path = path

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key)
        except Exception as exc:  # rocksdict raises plain Exception("Corruption: ...")
            raise self._read_error(exc) from exc
        return value

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """The values of ``keys`` in one call (rocksdict releases the GIL for a list get)."""
        if not keys:
            return []
        wanted: list[Any] = keys
        try:
            values: list[bytes | None] = self._db.get(wanted) or []
        except Exception as exc:
            raise self._read_error(exc) from exc
        return values

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Raw ``(key, value)`` records under ``prefix``, in key order, to the last one:
        an iterator stopped by a failed read raises instead of ending."""
        try:
            it = self._db.iter()
            it.seek(prefix)
            while it.valid():
                key = it.key()
                if not key.startswith(prefix):
                    return
                yield key, it.value()
                it.next()
            it.status()  # raises when the iterator stopped on an error, not at the end
        except Exception as exc:
            raise self._read_error(exc) from exc

    def write(self, batch: WriteBatch, options: WriteOptions) -> None:
        self._db.write(batch, options)

    def flush(self) -> None:
        """The memtables into table files."""
        self._db.flush()

    def property_value(self, name: str) -> str | None:
        """One of RocksDB's properties (``rocksdb.*``), as text."""
        value: str | None = self._db.property_value(name)
        return value

    def close(self) -> None:
        self._db.close()

    def _read_error(self, exc: Exception) -> StoreReadError:
        return StoreReadError(
            f"cannot read the graph store at {self._path}: {exc}. A damaged store is "
            "rebuilt by moving its directory aside and starting again (the worker restores "
            "it from the changelog with --changelog, else replays the interactions topic "
            "from as far back as the topic holds); a failing disk needs fixing first"
        )
