"""CPU allocator tuning for inference on large images.

glibc serves every allocation of 32 MiB or more with a fresh ``mmap`` and returns it to the
system on free, so each large activation tensor is page-faulted (and zeroed by the kernel) again
on every layer and every image. For fully convolutional image networks at 1024x1024 that is a
large part of the run time: on the 26-style CIN network it measured about 1.5-2x end to end
(scripts/bench_style.py). ``keep_freed_memory`` makes glibc serve large blocks from its heap
and keep freed ones for reuse, which is what the memory arenas of inference engines (and
jemalloc/tcmalloc, the allocators usually recommended for PyTorch on CPU) do. The cost: the
process keeps its peak memory after the peak has passed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_APPLIED = False


def _glibc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Serve large allocations from the heap (no mmap) and trim the heap only when more than
    ``trim_threshold`` bytes are free at its top. Process-wide and idempotent; returns whether
    the setting is in effect (False on non-glibc systems, where it does nothing)."""
    global _APPLIED
    if _APPLIED:
        return True
    libc = _glibc()
    if libc is None:
        log.info("keep_freed_memory: not a glibc system, allocator left as it is")
        return False
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    _APPLIED = ok
    return ok
