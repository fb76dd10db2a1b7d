"""Large blocks of freed memory are kept for reuse (glibc), for the dream step's sake.

A dream step allocates and frees the same few large tensors every time (the first encoder
block's activations at batch 4 are 35 MB each). glibc hands blocks over 32 MB straight back
to the kernel when they are freed, so every step mapped them afresh and the kernel zeroed
every page on first touch (a 40-MB tensor: 10 240 page faults each time; tests/test_heap.py).
Raising glibc's thresholds keeps those blocks in the heap, where the next step reuses them.
Measured on the 2-core development machine, the shipped model, batch 4: 180 steps over
three taps took 0.217 s a step against 0.237 without (alternating runs: 0.19 against 0.31 s
from noise on an early tap). The price: the process keeps its peak working set, about 850 MB
against 600-720 MB over those steps (it levels off; it does not grow).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_BYTES = 1 << 30  # blocks up to this size come from the heap; this much free memory is kept

_done: bool | None = None


def keep_large_blocks() -> bool:
    """Tell glibc to serve blocks up to KEEP_BYTES from the heap and keep them when freed.
    Once per process; False where the C library is not glibc (macOS, Windows, musl)."""
    global _done
    if _done is None:
        _done = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
            except (OSError, AttributeError):
                mallopt = None
            if mallopt is not None:
                _done = bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
        if not _done:
            log.debug("freed memory is handed back as the C library decides (no glibc mallopt)")
    return _done
