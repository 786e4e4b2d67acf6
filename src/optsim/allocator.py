"""Keep freed memory in the process for the next round (glibc's malloc).

A round allocates and frees the same large tensors again and again (a neural round: the (clients, d)
gradient buffer, per-layer products of several MB each). With glibc's default policy such blocks are
returned to the system when freed (the heap top is trimmed, or the block was its own ``mmap``), so every
round writes them to fresh pages and pays one page fault per 4 KiB: on the neural FedAvg round of
``bench/bench_neural_round.py`` that was about a third of the round. ``keep_freed_memory`` raises the
two thresholds with ``mallopt`` (the C library's documented tuning call): blocks up to 32 MiB (glibc's
upper limit) come from the heap, and up to 256 MiB of freed heap top stays mapped. Peak memory is
unchanged; the process returns less of it between rounds. PyTorch's CPU tuning guide recommends an
allocator that caches (jemalloc, tcmalloc via LD_PRELOAD) for the same reason; this needs no preload.

The round runner calls it once per process; ``OPTSIM_MALLOC=system`` leaves the C library's defaults.
Elsewhere than glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory"]

#: mallopt parameters of glibc's malloc.h
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2 ** 20
TRIM_THRESHOLD = 256 * 2 ** 20

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set the thresholds (module docstring) once; True where glibc accepted them."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("OPTSIM_MALLOC", "") == "system" or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
