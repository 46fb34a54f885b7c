"""The two process-wide CPU settings handgrad makes for speed (BENCHMARKS.md, fourth pass):

* ``engine/host_memory.keep_freed_memory``: glibc keeps freed blocks, so a loop that allocates and frees the
  same arrays stops taking page faults (checked by counting minor faults, with ``HANDGRAD_KEEP_MEMORY=0`` as
  the control that must fault);
* ``functional/_threads.quiet_blas_spin``: OpenBLAS's idle spin after a threaded call is cut to
  2^SPIN_LOG2 cycles, and a timeout the user set is left alone.

Each runs in a fresh interpreter: both act once per process, at import or at the first BLAS lookup.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

FAULTS = """
import resource, numpy as np
import handgrad
def work():
    for _ in range(30):
        a = np.ones(2_000_000, np.float32); b = np.ones(1_000_000, np.float32); del a
        c = np.ones(3_000_000, np.float32); del b, c
work()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
work()
print(handgrad.keep_freed_memory(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""

SPIN = """
import ctypes, numpy as np
from handgrad.functional import _threads
libs = _threads._numpy_blas()
print(len(libs), ctypes.CDLL(libs[0].filepath).openblas_thread_timeout() if libs else -1)
a = np.ones((300, 300)); assert np.allclose(a @ a, 300.0)  # the restarted server still computes
"""


def _run(code: str, **env: str) -> list[str]:
    e = {k: v for k, v in os.environ.items() if k not in ("HANDGRAD_KEEP_MEMORY", "OPENBLAS_THREAD_TIMEOUT")}
    e.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_page_faults():
    applied, faults = _run(FAULTS)
    assert applied == "True"
    assert int(faults) < 1000, faults  # 30 rounds of 24 MB allocated and freed: no new pages
    applied, faults = _run(FAULTS, HANDGRAD_KEEP_MEMORY="0")
    assert applied == "False"
    assert int(faults) > 10_000, faults  # the control: glibc's own heuristics give the pages back each round


def _openblas() -> bool:
    from threadpoolctl import threadpool_info

    return any(p.get("internal_api") == "openblas" for p in threadpool_info())


@pytest.mark.skipif(not _openblas(), reason="NumPy's BLAS is not OpenBLAS")
def test_quiet_blas_spin_sets_openblas_timeout():
    import numpy  # noqa: F401 - threadpoolctl sees the BLAS only once NumPy is loaded

    from handgrad.functional import _threads

    n, timeout = _run(SPIN)
    assert n == "1" and int(timeout) == _threads.SPIN_LOG2
    n, timeout = _run(SPIN, OPENBLAS_THREAD_TIMEOUT="20")  # the user's own setting wins
    assert int(timeout) == 20
