"""glibc's allocator set for training: freed memory is kept for reuse, not handed back.

A training step frees and reallocates activations and gradients of tens of MB. By default glibc
serves blocks that large with fresh mmap'd pages, unmaps them on free and trims its heap, so every
step faults the same memory in again: a default refresh on two cores took 140 million minor page
faults and 394 s of system time. Called only in processes that exist to train (the refresh runs as
its own process, also under the bot's scheduler), since the memory is then kept until they exit.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

# mallopt parameters from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes: trim only above 2 GiB free at the top


def keep_freed_memory() -> bool:
    """Ask glibc for no mmap'd blocks and no trimming; False where the C library is not glibc."""
    library, _ = platform.libc_ver()
    if library != "glibc":
        log.debug("C library %r: allocator left as it is", library or "unknown")
        return False
    libc = ctypes.CDLL("libc.so.6")
    done = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    if not done:
        log.warning("glibc refused the allocator settings; training faults freed memory in again")
    return done
