"""Train the models of one experiment in several processes at once (``--jobs``).

A 2-core machine trains two small CNNs side by side at one BLAS thread each about twice as fast as one after
the other at two threads (each op's batch split at two threads gains only 1.2-1.6x on these models), so the
experiments that compare several models hand each model to a worker process. Every task must be a top-level
function ``fn(name, *args)`` that seeds, builds, trains and scores its model alone (so the numbers do not depend
on which process ran it); with one job the tasks run here, in order, unchanged.

Workers are spawned (not forked: a fork would copy OpenBLAS's and the batch split's threads in whatever state
they are), each at ``threads // jobs`` BLAS threads, with its printed log in ``OUT/NAME/train.log``. The most
expensive tasks should come first: each free worker takes the next one. A worker that dies (killed, out of
memory) stops the run with a one-line error instead of hanging.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from threadpoolctl import threadpool_info, threadpool_limits

from handgrad.errors import ExperimentError


def blas_threads() -> int:
    """NumPy's BLAS thread count now (``handgrad run`` has set it: ``--threads`` or the free cores)."""
    counts = [i.get("num_threads", 1) for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(1, max(counts, default=1))


def resolve_jobs(jobs: int | None, tasks: int) -> int:
    """The processes ``--jobs`` means for ``tasks`` models: as asked, or one per BLAS thread; at most one per
    task."""
    if jobs is not None and jobs < 1:
        raise ExperimentError(f"--jobs must be >= 1, got {jobs}")
    return max(1, min(jobs or blas_threads(), tasks))


def _worker(fn: Callable[..., Any], name: str, args: tuple[Any, ...], out: str, threads: int) -> Any:
    """One task in a worker process. Its stdout and stderr go to ``NAME/train.log``: several processes' lines and
    progress bars would interleave on the terminal (and with stderr not a terminal the Trainer draws no bars);
    an exception still reaches the parent through its future."""
    os.makedirs(os.path.join(out, name), exist_ok=True)
    saved = sys.stdout, sys.stderr
    log = open(os.path.join(out, name, "train.log"), "w", buffering=1)  # noqa: SIM115 - closed below
    sys.stdout = sys.stderr = log
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            return fn(name, *args)
    finally:
        sys.stdout, sys.stderr = saved
        log.close()


def run_tasks(fn: Callable[..., Any], tasks: dict[str, tuple[Any, ...]], jobs: int | None, out: str,
              label: str, summary: Callable[[Any], str] | None = None) -> dict[str, Any]:
    """``{name: fn(name, *args)}`` for every task, in ``jobs`` processes (default: one per BLAS thread, at most
    one per task); ``summary(result)`` is printed as each task finishes."""
    jobs = resolve_jobs(jobs, len(tasks))
    if jobs <= 1:
        return {name: fn(name, *args) for name, args in tasks.items()}
    per = max(1, blas_threads() // jobs)
    print(f"{label}: {len(tasks)} models in {jobs} processes at {per} BLAS thread(s) each (logs in "
          f"{out}/MODEL/train.log)", flush=True)
    done: dict[str, Any] = {}
    start = time.perf_counter()
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(_worker, fn, name, args, out, per): name for name, args in tasks.items()}
        for fut in as_completed(futures):
            name = futures[fut]
            done[name] = fut.result()
            extra = f": {summary(done[name])}" if summary else ""
            print(f"{name}: done after {time.perf_counter() - start:.0f} s{extra}", flush=True)
    except BrokenProcessPool as e:
        raise ExperimentError(f"{label}: a training process died ({e}); its log is in {out}/MODEL/train.log") from e
    finally:
        if len(done) < len(tasks):  # an error or Ctrl-C: stop the other workers now rather than wait for them
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
    return {name: done[name] for name in tasks}
