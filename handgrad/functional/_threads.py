"""Batch-split threading for the CNN ops: every thread runs the whole op (transforms, copies, GEMMs) on its own
slice of the batch, with NumPy's BLAS held at one thread meanwhile.

Why not let OpenBLAS thread each GEMM and numba thread each element-wise pass? Then two thread pools take
turns: OpenBLAS's threads spin after every call while a single-threaded (or numba-threaded) pass runs, and
small GEMMs (Winograd's 36 of (T/36, C) x (C, O)) pay a fork-join each. Splitting the batch gives each thread
one long stretch of independent work (images never share output memory; weight gradients are summed from
per-thread partials) with no spinning and no second runtime (numba's OpenMP pool collided with PyTorch's in
the benchmarks). The thread count is the one NumPy's BLAS is set to (``threadpoolctl``, e.g. by
``handgrad run --threads`` or the benchmarks' ``set_threads``): one BLAS thread means no threads here.

The BLAS thread count is process-global: two ops splitting at the same moment from different Python threads
would restore each other's setting; a lock serialises them.

OpenBLAS's spin. After a GEMM run on more than one thread (a Linear layer, any NumPy matmul outside the split
ops), OpenBLAS's worker threads spin for 2^28 cycles (~0.1 s) before they sleep, so they hold the other core
while this module's threads want it: on a 2-core Intel Xeon, LeNet's training step took 35 ms at 2 threads as
at 1. ``quiet_blas_spin`` shortens that wait to 2^``SPIN_LOG2`` cycles (OpenBLAS's own
``OPENBLAS_THREAD_TIMEOUT`` setting, applied at run time: re-read, then the server restarted) the first time the
BLAS is looked up; a timeout the user set in the environment is left as it is (BENCHMARKS.md, fourth pass).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy

_libs: list[Any] | None = None
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()
ENABLED = os.environ.get("HANDGRAD_CNN_THREADS", "1") != "0"  # 0: never split (BLAS threads each GEMM instead)
# a split costs ~70 us (handing the chunks to the pool and back, measured at load ~5): ops with less work than
# this (multiply-adds or elements) run on the calling thread alone
MIN_WORK = 1 << 19
# OpenBLAS's idle spin after a threaded call, log2 cycles (its default is 28, ~0.1 s at 2.5 GHz): 2^16 cycles
# (~25 us) keeps back-to-back GEMMs from paying a wake-up and frees the core before the next split op starts
SPIN_LOG2 = 16


def _numpy_blas() -> list[Any]:
    """threadpoolctl's controllers of NumPy's own BLAS (not PyTorch's or SciPy's copies), found once."""
    global _libs
    if _libs is None:
        try:
            from threadpoolctl import ThreadpoolController

            root = os.path.dirname(os.path.dirname(numpy.__file__))
            mine = (os.path.join(root, "numpy.libs"), os.path.join(root, "numpy") + os.sep)
            _libs = [lib for lib in ThreadpoolController().lib_controllers
                     if lib.user_api == "blas" and lib.filepath.startswith(mine)]
        except Exception:  # noqa: BLE001 - no threadpoolctl or an unknown BLAS: never split
            _libs = []
        for lib in _libs:
            quiet_blas_spin(lib)
    return _libs


def quiet_blas_spin(lib: Any) -> bool:
    """Shorten an OpenBLAS's idle spin to 2^SPIN_LOG2 cycles unless ``OPENBLAS_THREAD_TIMEOUT`` is set; True
    when applied. OpenBLAS reads its timeout from the environment when its thread server starts: set it, make
    the library re-read its environment (``openblas_read_env``), and stop the server
    (``blas_thread_shutdown_``, what OpenBLAS itself calls before a fork); the next threaded call starts it with
    the new timeout. A BLAS without these symbols (MKL, BLIS, an OpenBLAS built with OpenMP) is left alone."""
    if getattr(lib, "internal_api", "") != "openblas" or os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
        return False
    try:
        import ctypes

        so = ctypes.CDLL(lib.filepath)
        read_env, shutdown = so.openblas_read_env, so.blas_thread_shutdown_
    except (OSError, AttributeError):
        return False
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(SPIN_LOG2)  # child processes inherit it (set before their load)
    read_env()
    shutdown()
    return True


def workers(n_items: int, work: int | None = None) -> int:
    """How many threads a batch of ``n_items`` is split over: NumPy's BLAS thread count, at most n_items; one
    when the op's ``work`` (multiply-adds or elements, when given) is below ``MIN_WORK``."""
    if not ENABLED or n_items < 2 or (work is not None and work < MIN_WORK):
        return 1
    libs = _numpy_blas()
    if not libs:
        return 1
    return max(1, min(n_items, libs[0].get_num_threads()))


def run(fn: Callable[[int, int], Any], n_items: int, work: int | None = None, n_workers: int | None = None
        ) -> list[Any]:
    """``fn(lo, hi)`` over contiguous chunks of range(n_items), one per worker (the caller runs the first);
    returns the results in chunk order. BLAS runs single-threaded while the chunks run. ``n_workers`` (from
    ``workers``) fixes the count when the chunks must know it (the unit-split recurrences' barrier)."""
    k = workers(n_items, work) if n_workers is None else n_workers
    if k == 1:
        return [fn(0, n_items)]
    global _pool
    bounds = [n_items * i // k for i in range(k + 1)]
    libs = _numpy_blas()
    with _lock:
        if _pool is None or _pool._max_workers < k - 1:
            _pool = ThreadPoolExecutor(max_workers=k - 1, thread_name_prefix="handgrad-cnn")
        saved = [lib.get_num_threads() for lib in libs]
        for lib in libs:
            lib.set_num_threads(1)
        try:
            futures = [_pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, k)]
            first = fn(bounds[0], bounds[1])
            return [first] + [f.result() for f in futures]
        finally:
            for lib, s in zip(libs, saved):
                lib.set_num_threads(s)


def contiguous(a: Any) -> Any:
    """``a`` as a C-contiguous NumPy array, the copy (when one is needed) split over the batch axis like the
    ops (a transposing copy of a gradient is one of the few passes left outside the kernels)."""
    if a.flags.c_contiguous:
        return a
    out = numpy.empty(a.shape, a.dtype)
    run(lambda lo, hi: numpy.copyto(out[lo:hi], a[lo:hi]), a.shape[0], a.size)
    return out
