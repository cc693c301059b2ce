"""The trainer process's heap: large tensors from the heap, not their own mmap'd pages
(keep_freed_memory), and advised for huge pages (huge_pages)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream import allocator, training
from stream.errors import ConfigError
from stream.metrics import PipelineMetrics
from stream.settings import load_settings
from stream.settings.sections import WorkerSettings
from stream.state.graph_store import DecayedGraphStore
from stream.training import TrainingLoop
from tests.harness.worker_process import training_env

# glibc's heap statistics (every arena), for the probes below.
MALLINFO = """
import ctypes, ctypes.util
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
"""

# Allocates a 64 MiB tensor and prints glibc's count of mmap'd blocks (mallinfo2's hblks)
# while it lives, optionally after keep_freed_memory(): run in a fresh interpreter so the
# test process keeps its own allocator options.
PROBE = (
    MALLINFO
    + """
import sys, torch
from stream.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
before = libc.mallinfo2().hblks
big = torch.ones(16 << 20)  # 64 MiB of float32
print(kept, libc.mallinfo2().hblks - before, libc.mallinfo2().hblkhd >= big.nbytes)
"""
)


def run_probe(script: str, mode: str) -> list[str]:
    """What ``script`` prints, run with ``mode`` in a fresh interpreter without the huge-page
    setting this test process may have (importing bench/ requests it)."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    done = subprocess.run(
        [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True, env=env
    )
    return done.stdout.split()


def probe(mode: str) -> list[str]:
    return run_probe(PROBE, mode)


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
    return run_probe(HUGE_PROBE, mode)


def test_huge_pages_before_the_first_tensor_advise_every_large_one() -> None:
    # a kernel built with transparent huge pages marks advised mappings in any mode
    advised = Path("/sys/kernel/mm/transparent_hugepage/enabled").exists()
    assert huge_probe("first") == [str(advised), str(advised)]


def test_huge_pages_after_a_tensor_report_that_they_did_not_take() -> None:
    assert huge_probe("late") == ["False", "False"]


# What pretouch_heap(64) in a thread leaves behind: resident MiB (RSS) and MiB free in the
# heap (mallinfo2's fordblks, every arena), with keep_freed_memory() on or not; in a fresh
# interpreter (the options are process-wide).
PRETOUCH_PROBE = (
    MALLINFO
    + """
import sys, threading
from stream.allocator import keep_freed_memory, pretouch_heap
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
grown = []
def train():
    rss_before, free_before = rss(), libc.mallinfo2().fordblks
    pretouch_heap(64)
    grown.extend([(rss() - rss_before) >> 20, (libc.mallinfo2().fordblks - free_before) >> 20])
thread = threading.Thread(target=train)
thread.start()
thread.join()
print(*grown)
"""
)


def pretouch_probe(mode: str) -> list[int]:
    return [int(mib) for mib in run_probe(PRETOUCH_PROBE, mode)]


def test_a_pretouched_heap_stays_resident_and_free_only_when_freed_memory_is_kept() -> None:
    resident, free = pretouch_probe("keep")
    assert resident >= 56 and free >= 56  # of 64 MiB: the thread's next blocks, faulted in
    resident, free = pretouch_probe("default")
    assert resident < 8 and free < 8  # each piece its own mapping, unmapped when freed


@pytest.mark.parametrize(
    ("env", "expected"), [({}, [240]), ({"STREAMGNN_PRETOUCH_HEAP_MIB": "0"}, [])]
)
def test_the_training_thread_pretouches_its_heap_once_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: list[int]
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(training, "pretouch_heap", lambda mib: calls.append(mib) or 0.0)
    environ = training_env(tmp_path, "heap") | {"STREAMGNN_STORE_PATH": str(tmp_path / "g")}
    settings = load_settings({}, environ | env)
    with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
        loop = TrainingLoop(settings, store, PipelineMetrics())
        loop.warm_heap()
        loop.warm_heap()
    assert calls == expected
    with pytest.raises(ConfigError, match="pretouch_heap_mib must be 0 to 255"):
        WorkerSettings(pretouch_heap_mib=256)


def test_huge_page_share_reads_the_rollup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rollup = tmp_path / "smaps_rollup"
    rollup.write_text(
        "00400000-7ffd [rollup]\nRss:   9000 kB\nAnonymous:   8192 kB\nAnonHugePages:   2048 kB\n"
    )
    monkeypatch.setattr(allocator, "SMAPS_ROLLUP", rollup)
    assert allocator.huge_page_share() == 0.25
    rollup.write_text("Anonymous:   8192 kB\n")  # a kernel without THP has no such line
    assert allocator.huge_page_share() == 0.0
    monkeypatch.setattr(allocator, "SMAPS_ROLLUP", tmp_path / "absent")
    assert allocator.huge_page_share() is None
