"""``handgrad run NAME --distributed``: the same experiment on every rank of an MPI job, data-parallel.

    mpiexec -n 2 handgrad run lenet-fashion --distributed            # as root: mpiexec --allow-run-as-root

Every rank runs the experiment; its Trainer splits the data over the ranks and averages the gradients
(:mod:`handgrad.distributed`), so ``--batch-size`` is the global batch (each rank takes ``1/N`` of it). Rank 0
writes the out dir and prints; the other ranks write into a temporary folder (deleted at the end) with their
output silenced. Any error on any rank, a user error too, stops every rank with one line per failing rank
(``handgrad.distributed: rank r of N: failed (...)``) and a non-zero exit status, instead of leaving the
others waiting (exit status 2 for a user error, 1 otherwise). Without ``mpiexec`` the option runs a world of one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any


def run_distributed(opts: Any, run: Callable[[], int], user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """``run()`` as one rank of the job (see the module docstring); returns its exit status."""
    from handgrad import distributed as dist

    dist.init()  # Trainers built from now on are data-parallel
    rank = dist.get_rank()
    scratch = None
    quiet: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if rank != 0:
        scratch = tempfile.mkdtemp(prefix=f"handgrad-rank{rank}-")
        opts.out = os.path.join(scratch, "out")
        opts.no_progress = True
        quiet = contextlib.redirect_stdout(open(os.devnull, "w"))  # noqa: SIM115 -- closed with the process
    try:
        with dist.abort_on_error(user_errors=user_errors), quiet:
            code = run()
        if dist.get_world_size() > 1 and dist.comm._STATE.wrapped == 0 and rank == 0:
            print(f"handgrad run {opts.experiment}: warning: --distributed: this experiment trained no data-parallel "
                  "Trainer, so every rank ran all of it", file=sys.stderr)
        return code
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
