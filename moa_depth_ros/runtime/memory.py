"""Process-wide runtime settings for the per-frame processes (the node, the bag tool, benches).

Owns one thing so far: how the C allocator treats the ~15 MB of buffers each VGA frame
allocates and frees (depth, confidence, cloud, message copies). glibc returns freed blocks of
that size to the kernel (``munmap`` for blocks above the mmap threshold, heap trimming for the
rest), so the next frame page-faults every 4 KiB of them back in: 1-3 ms per frame, more than
all the per-frame numpy/OpenCV work. ``retain_freed_memory`` raises the two glibc thresholds
so those blocks stay in the process and are reused; resident memory stays at about one
frame's worth, as it would after the first frame anyway.

Only glibc is touched (the ``M_*`` option numbers are glibc's; musl, macOS and Windows are
left alone), and glibc's own environment variables win: with ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_`` or a ``glibc.malloc`` tunable set, the user has chosen and nothing
changes. No ROS imports.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Mapping

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Keep up to this much freed memory at the top of the heap before giving it back.
TRIM_THRESHOLD_BYTES = 256 << 20
# Serve blocks below this from the heap (reusable) instead of a fresh mmap per allocation;
# 32 MiB is glibc's own ceiling for its adaptive threshold on 64-bit systems.
MMAP_THRESHOLD_BYTES = 32 << 20
_USER_SETTINGS = ('MALLOC_TRIM_THRESHOLD_', 'MALLOC_MMAP_THRESHOLD_')


def _glibc_version() -> str | None:
    """'glibc 2.35' style string, or None when the C library is not glibc."""
    if not sys.platform.startswith('linux'):
        return None
    try:
        version = os.confstr('CS_GNU_LIBC_VERSION')
    except (ValueError, OSError):  # not defined outside glibc
        return None
    return version if version and version.startswith('glibc') else None


def retain_freed_memory(environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Ask glibc to keep freed frame buffers for reuse; return (applied, one line saying why).

    Safe to call more than once. Does nothing (applied False) on a C library other than
    glibc, or when the environment already sets the allocator thresholds.
    """
    env = os.environ if environ is None else environ
    chosen = [name for name in _USER_SETTINGS if name in env]
    if 'glibc.malloc.trim_threshold' in env.get('GLIBC_TUNABLES', '') or (
        'glibc.malloc.mmap_threshold' in env.get('GLIBC_TUNABLES', '')
    ):
        chosen.append('GLIBC_TUNABLES')
    if chosen:
        return False, f'allocator left as configured by {", ".join(chosen)}'
    version = _glibc_version()
    if version is None:
        return False, 'allocator left as it is (not glibc)'
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False, f'allocator left as it is ({version} without mallopt)'
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error. The mmap threshold goes first: 32-bit glibc
    # caps it at 16 MiB and refuses, and then the trim threshold is left alone as well.
    if not mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
        return False, f'allocator left as it is ({version} refused the mmap threshold)'
    if not mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES):
        return False, f'allocator: {version} refused the trim threshold'
    return True, (
        f'{version}: freed frame buffers are kept for reuse (trim threshold '
        f'{TRIM_THRESHOLD_BYTES >> 20} MiB, mmap threshold {MMAP_THRESHOLD_BYTES >> 20} MiB); '
        'set MALLOC_TRIM_THRESHOLD_ to choose otherwise'
    )
