"""The C heap under torch's CPU tensors: keep freed blocks for the next learn step.

glibc serves each allocation above its mmap threshold (128 KiB, rising to at most 32 MiB as
large blocks are freed) with fresh mmap'd pages and unmaps them on free. A learn step's
temporaries (per-edge columns, each propagation layer, the gradients) are tens to hundreds
of MB, so every step pays page faults and zeroing for memory the last one just released.
With mmap off (``M_MMAP_MAX`` 0) and the heap's free top trimmed only past 256 MiB
(``M_TRIM_THRESHOLD``) they come from freed heap blocks instead. Measured with the worker's
one torch thread on bench.step_cost's graphs (learn calls of 1,100 events, medians of 7):
0.40 -> 0.33 s at 210k edges, 2.53 -> 1.56 s at 1M; RSS +130 / +330 MB, what the heap
keeps of the largest step's temporaries (README "The worker").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("streamgnn.allocator")

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 256 << 20


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
