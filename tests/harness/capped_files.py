"""``python -m tests.harness.capped_files BYTES [worker options]``: the worker on a disk that
fills up.

No file the process writes may grow past ``BYTES`` (``RLIMIT_FSIZE``): a write past it fails
with EFBIG as one on a full disk fails with ENOSPC, through the same calls (RocksDB's log
append, a checkpoint's write). SIGXFSZ is ignored, so the write returns the error instead of
killing the process. Otherwise this is the real worker, same options and environment.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
from collections.abc import Sequence

from stream import worker
from stream.settings import add_options


def cap_file_sizes(limit_bytes: int) -> None:
    """From now on no file this process writes grows past ``limit_bytes``."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.capped_files")
    parser.add_argument("limit_bytes", type=int, help="the largest file the worker may write")
    add_options(parser, worker.WORKER_OPTIONS)
    args = parser.parse_args(argv)
    cap_file_sizes(args.limit_bytes)
    return worker.main(args)


if __name__ == "__main__":
    sys.exit(main())
