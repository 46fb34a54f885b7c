"""How many BLAS threads a ``handgrad run`` uses.

OpenBLAS starts one thread per core and its threads spin while they wait for work. On a machine whose cores
are already busy that is a disaster (LeNet took 36 minutes instead of 5 on a loaded 2-core machine), while on
an idle machine the extra threads speed up the large matrix products. So the default is decided at run time:

* ``--threads N`` wins;
* else, if the user set ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` or ``MKL_NUM_THREADS``, their choice stands;
* else the free cores: the cores this process may use minus the current 1-minute load average (at least 1).

The limit is applied with ``threadpoolctl`` (it works after NumPy is imported, which environment variables
do not) and only for the duration of the run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int | None:
    """The automatic choice, or ``None`` when the environment already says (leave it alone)."""
    if any(os.environ.get(v) for v in _ENV):
        return None
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(cores, cores - round(load)))


@contextlib.contextmanager
def blas_threads(threads: int | None = None) -> Iterator[int | str]:
    """Limit the BLAS thread pools inside the block; yields the number used (or ``"environment"``)."""
    n = threads if threads is not None else default_threads()
    if n is None:
        yield "environment"
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency; without it the BLAS default stands
        yield "default (threadpoolctl missing)"
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield n
