"""The C heap under torch's CPU tensors: keep freed blocks for the next learn step, on
transparent huge pages.

glibc serves each allocation above its mmap threshold (128 KiB, rising to at most 32 MiB as
large blocks are freed) with fresh mmap'd pages and unmaps them on free. A learn step's
temporaries (per-edge columns, each propagation layer, the gradients) are tens to hundreds
of MB, so every step pays page faults and zeroing for memory the last one just released.
With mmap off (``M_MMAP_MAX`` 0) and the heap's free top trimmed only past 256 MiB
(``M_TRIM_THRESHOLD``) they come from freed heap blocks instead. Measured with the worker's
one torch thread on bench.step_cost's graphs (learn calls of 1,100 events, medians of 7):
0.40 -> 0.33 s at 210k edges, 2.53 -> 1.56 s at 1M; RSS +130 / +330 MB, what the heap
keeps of the largest step's temporaries (docs/worker.md).

A step gathers and scatters rows scattered over tables of hundreds of MB to GB (embeddings,
the optimiser's moments, the mirror's slot arrays): with 4 KiB pages nearly every row is a
TLB miss. torch advises huge pages (``madvise(MADV_HUGEPAGE)``) for each CPU allocation of
2 MiB or more when ``THP_MEM_ALLOC_ENABLE`` is set at its first allocation; the kernel
honours that in its default ``madvise`` mode (not in ``never``). Measured (bench.step_cost,
one thread, with the heap options above, medians of 5): local step with shared negatives
0.65 -> 0.57 s at 10M edges, the full step 0.99 -> 0.86 s at 1M.

A starting trainer's heap grows by hundreds of MB in its first learn calls (tables,
moments, a step's temporaries) and every new page is faulted in on first touch: on this
project's virtual machine at 0.16-0.6 GB/s when the guest's pages are new to the host
(bench/results/heap_growth.json), which stalled a fresh worker's first seconds (most of
its trainer thread's time in the kernel). :func:`pretouch_heap` faults a kept allowance of
the training thread's heap in once, before the first event (the JVM's ``AlwaysPreTouch``):
the first learn calls then reuse resident pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from pathlib import Path

import torch

from stream.settings.sections import WorkerSettings

log = logging.getLogger("streamgnn.allocator")

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 256 << 20
# Pre-touched in pieces below glibc's 64 MiB per-thread heap, so the calling thread's own
# arena serves them (a larger block falls back to the main arena) and keeps them, freed.
PRETOUCH_PIECE_BYTES = 8 << 20
HUGE_PAGE_BYTES = 2 << 20  # torch advises allocations of this size and more
SMAPS = Path("/proc/self/smaps")
SMAPS_ROLLUP = Path("/proc/self/smaps_rollup")
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def worker_heap(worker: WorkerSettings) -> dict[str, bool]:
    """The worker's heap options for this process, huge pages first (they must come before
    any tensor); which of them took, by setting name (a benchmark records it)."""
    taken = {
        "huge_pages": worker.huge_pages and huge_pages(),
        "keep_freed_memory": worker.keep_freed_memory and keep_freed_memory(),
    }
    log.info("heap options: %s", " ".join(f"{name}={on}" for name, on in taken.items()))
    return taken


def keep_freed_memory() -> bool:
    """Set both options for this process; False (and a log line) where the C library has
    no glibc ``mallopt`` or refuses them: the process then runs with the library's own."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError) as exc:
        log.info("no glibc mallopt (%s): the C heap keeps its default options", exc)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
    if not ok:
        log.info("mallopt refused M_MMAP_MAX / M_TRIM_THRESHOLD: default heap options")
    return ok


def pretouch_heap(mib: int) -> float:
    """Fault ``mib`` MiB of the calling thread's heap in and free it again, for that
    thread's next allocations (with :func:`keep_freed_memory` on: otherwise freed pieces
    go back to the kernel at once); the seconds it took."""
    start = time.perf_counter()
    pieces = [
        torch.empty(PRETOUCH_PIECE_BYTES, dtype=torch.uint8).fill_(0)
        for _ in range(-(-(mib << 20) // PRETOUCH_PIECE_BYTES))
    ]
    del pieces
    return time.perf_counter() - start


def huge_pages() -> bool:
    """Have torch advise huge pages for this process's large CPU tensors; True when a large
    tensor's pages carry the advice (the kernel's ``hg`` flag). torch reads the setting
    once, at its first CPU allocation, so this must come before any tensor: False (and a
    log line) when one came first, or where the kernel has no transparent huge pages. A
    kernel in mode ``never`` marks the advice and ignores it (a log line says so)."""
    request_huge_pages()
    probe = torch.empty(2 * HUGE_PAGE_BYTES, dtype=torch.uint8)
    taken = "hg" in _vm_flags(probe.data_ptr())
    if not taken:
        log.info("no huge-page advice (a CPU tensor came first, or no THP): 4 KiB pages")
    elif "[never]" in read_kernel_file(THP_MODE):
        log.info("huge pages advised, but %s says never: 4 KiB pages", THP_MODE)
    return taken


def request_huge_pages() -> None:
    """Only set what torch reads (for a process that must ask before its imports allocate,
    as importing torch_geometric does); :func:`huge_pages` checks it took."""
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"


def huge_page_share() -> float | None:
    """The share of this process's anonymous memory on huge pages (/proc/self/smaps_rollup),
    None where it cannot be read: advised pages the kernel could not back with huge ones (a
    fragmented host) cost a TLB miss per row again."""
    fields = {}
    for line in read_kernel_file(SMAPS_ROLLUP).splitlines():
        name, _, rest = line.partition(":")
        if name in ("Anonymous", "AnonHugePages"):
            fields[name] = int(rest.split()[0])
    if not fields.get("Anonymous"):
        return None
    return fields.get("AnonHugePages", 0) / fields["Anonymous"]


def _vm_flags(address: int) -> list[str]:
    """The kernel's flags of the mapping holding this address (/proc/self/smaps)."""
    lines = read_kernel_file(SMAPS).splitlines()  # empty where not Linux
    inside = False
    for line in lines:
        head = line.split(maxsplit=1)[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and head == "VmFlags:":
            return line.split()[1:]
    return []


def read_kernel_file(path: Path) -> str:
    """A /proc or /sys file's text; empty where it cannot be read (not Linux, no THP)."""
    try:
        return path.read_text()
    except OSError:
        return ""
