"""The host memory allocator of a fewstep process (Linux / glibc).

glibc's malloc gives freed memory back to the operating system once more than a few megabytes sit free at the top
of the heap (its dynamic trim threshold is twice the largest block it recently freed), and serves blocks above a
dynamic threshold with fresh ``mmap`` pages. A network forward on the CPU allocates and frees megabytes of
activations per layer, so every forward page-faults its activations back in: measured on the digits MLP at
1,024-row chunks, about 12,000 minor page faults (~50 MB) per forward, and a sampler's float64 state between
forwards moves the heap top so that the count differs between a sampler and bare forwards (the cause of most of the
noise in ``fewstep bench speed``'s sampler ratios). PyTorch's CPU allocator caches nothing; the usual advice is
to preload jemalloc or tcmalloc. :func:`tune_host_allocator` does the part of that which glibc's own ``mallopt``
can: a fixed mmap threshold (32 MiB, glibc's maximum), a large trim threshold and a top pad, so freed activations
are reused without page faults (measured: 0 faults per forward). The cost is memory: up to ``TRIM_BYTES`` of freed
memory stays with the process. Arithmetic does not change (allocation only).

The ``fewstep`` command calls it at start; a Python program can call it itself. ``FEWSTEP_MALLOC=default`` in the
environment turns it off.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
"""glibc's ``mallopt`` parameter numbers (malloc.h)."""
MMAP_BYTES = 32 << 20
"""Blocks up to this size come from the heap (glibc's largest accepted mmap threshold on 64-bit)."""
TRIM_BYTES = 256 << 20
"""Free memory kept at the top of the heap before glibc returns it to the system."""
TOP_PAD_BYTES = 64 << 20
"""Extra memory requested from the system whenever the heap grows."""


def tune_host_allocator() -> bool:
    """Set glibc's malloc to keep freed memory (see the module notes); True if it was set, False where there is
    no glibc ``mallopt`` (macOS, Windows, musl) or ``FEWSTEP_MALLOC=default`` is set. Idempotent."""
    if os.environ.get("FEWSTEP_MALLOC", "") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(p, v) == 1 for p, v in ((M_MMAP_THRESHOLD, MMAP_BYTES), (M_TRIM_THRESHOLD, TRIM_BYTES),
                                               (M_TOP_PAD, TOP_PAD_BYTES)))
