"""Host memory: keep the blocks NumPy frees inside the process, so the next step's arrays of the same sizes
are not fresh pages from the kernel.

A training step allocates and frees the same large arrays every time (activations, im2col matrices, masks,
gradients: 1-10 MB each). glibc's ``malloc`` gives blocks above its mmap threshold (128 KiB at start, raised
on the fly up to 32 MiB) their own ``mmap`` and returns them at ``free``; below it, it trims the top of the
heap once 2x the threshold is free. Either way the next step touches new pages, and each first touch is a
page fault that zeroes 4 KiB: in a virtual machine, measured on a 2-core Intel Xeon (BENCHMARKS.md, fourth
pass), the ReLU of a ResNet block took 8 ms at 2 threads instead of 2, and the block's step 84 ms instead of
67 ms; LeNet's step at 2 threads 26 ms instead of 17 ms.

``keep_freed_memory`` fixes glibc's settings through ``mallopt`` instead of leaving them to its heuristics:

* ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's maximum): blocks up to 32 MiB come from the heap, where freed
  blocks are reused;
* ``M_TRIM_THRESHOLD`` = 1 GiB: the heap's free top is given back only past 1 GiB;
* ``M_TOP_PAD`` = 64 MiB: the heap grows in steps of 64 MiB (fewer ``brk`` calls).

The cost is resident memory: up to about 1 GiB freed by the process stays mapped to it (PyTorch's advice for
the CPU, a caching allocator such as jemalloc or tcmalloc, trades the same way). It is applied once, at
``import handgrad``; ``HANDGRAD_KEEP_MEMORY=0`` leaves malloc as it was. A C library without ``mallopt``
(musl, macOS) is left alone.
"""

from __future__ import annotations

import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20))

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply ``SETTINGS`` with glibc's ``mallopt`` (once per process); True when glibc accepted all of them."""
    global _applied
    if _applied is None:
        _applied = False
        if os.environ.get("HANDGRAD_KEEP_MEMORY", "1") != "0":
            try:
                import ctypes

                mallopt = ctypes.CDLL("libc.so.6").mallopt
            except (OSError, AttributeError):  # not glibc
                return False
            _applied = all(mallopt(param, value) == 1 for param, value in SETTINGS)
    return _applied
