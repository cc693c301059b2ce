"""The trainer process's heap: large tensors from the heap, not their own mmap'd pages
(keep_freed_memory), and advised for huge pages (huge_pages)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


# huge_pages() before (or after) torch's first CPU allocation, then whether a 64 MiB tensor
# lies in a mapping the kernel marks advised for huge pages: in a fresh interpreter, as
# torch reads the setting once per process.
HUGE_PROBE = """
import sys, torch
from stream.allocator import _vm_flags, huge_pages
first = torch.ones(4) if sys.argv[1] == "late" else None
taken = huge_pages()
big = torch.ones(16 << 20)
print(taken, "hg" in _vm_flags(big.data_ptr()))
"""


def huge_probe(mode: str) -> list[str]:
    # without the setting this test process may have (importing bench/ requests it)
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    done = subprocess.run(
        [sys.executable, "-c", HUGE_PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return done.stdout.split()


def test_huge_pages_before_the_first_tensor_advise_every_large_one() -> None:
    # a kernel built with transparent huge pages marks advised mappings in any mode
    advised = Path("/sys/kernel/mm/transparent_hugepage/enabled").exists()
    assert huge_probe("first") == [str(advised), str(advised)]


def test_huge_pages_after_a_tensor_report_that_they_did_not_take() -> None:
    assert huge_probe("late") == ["False", "False"]
