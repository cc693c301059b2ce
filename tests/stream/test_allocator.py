"""keep_freed_memory: a large tensor comes from the heap, not its own mmap'd pages."""

from __future__ import annotations

import subprocess
import sys

# Allocates a 64 MiB tensor and prints glibc's count of mmap'd blocks (mallinfo2's hblks)
# while it lives, optionally after keep_freed_memory(): run in a fresh interpreter so the
# test process keeps its own allocator options.
PROBE = """
import ctypes, ctypes.util, sys, torch
from stream.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
before = libc.mallinfo2().hblks
big = torch.ones(16 << 20)  # 64 MiB of float32
print(kept, libc.mallinfo2().hblks - before, libc.mallinfo2().hblkhd >= big.nbytes)
"""


def probe(mode: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_a_large_tensor_is_mmapped_by_default_and_from_the_heap_when_freed_memory_is_kept() -> None:
    assert probe("default") == ["None", "1", "True"]  # its own mapping: the probe can tell
    kept, new_mappings, _ = probe("keep")
    assert kept == "True" and new_mappings == "0"
