"""keep_freed_memory: glibc serves large CPU tensors from its heap instead of fresh mmaps.
Run in a subprocess: the setting is process-wide."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

SCRIPT = r"""
import ctypes, ctypes.util, sys, torch
from normapps.platform.cpu_memory import keep_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = Info
def mmapped_with_big_tensor():
    base = libc.mallinfo2().hblks
    big = torch.empty(64 << 20, dtype=torch.uint8)  # 64 MiB
    big.fill_(1)
    n = libc.mallinfo2().hblks - base
    del big
    return n
assert mmapped_with_big_tensor() >= 1, "glibc's default should mmap a 64 MiB block"
assert keep_freed_memory() is True and keep_freed_memory() is True
assert mmapped_with_big_tensor() == 0, "after keep_freed_memory large blocks come from the heap"
print("ok")
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc only (elsewhere keep_freed_memory does nothing)")
def test_large_tensors_no_longer_get_their_own_mmap():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
