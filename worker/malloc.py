"""Keep freed memory in the worker process instead of handing it back to the kernel.

Every forward pass allocates and frees a few large buffers (a batch of 128 digits is
about 13 MB of activations after the first convolution). glibc's malloc, by default,
returns such memory to the kernel (munmap, or trimming the top of the heap) once other
allocations have moved its adaptive thresholds, and takes it back on the next pass,
page by page: measured here, 40-120 page faults per image, alone or in the local
stack, and a chunk cost about a third more. Fixed thresholds keep those pages: 0-6
faults per image. glibc only; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest glibc accepts; bigger blocks are still mapped
TRIM_THRESHOLD = 256 * 1024 * 1024  # free memory kept at the top of the heap


def keep_freed_memory() -> bool:
    """Set fixed malloc thresholds for this process (and the children it forks later);
    returns whether glibc accepted them."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.warning("malloc thresholds not accepted; forward passes may fault pages in")
    return ok
