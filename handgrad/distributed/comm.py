"""The MPI world of a data-parallel run: start-up, rank and size, a few collectives, and stopping every rank.

``init()`` looks at the environment: a process started by ``mpiexec``/``mpirun``/``srun`` (OpenMPI's
``OMPI_COMM_WORLD_SIZE``, MPICH/Hydra's or Slurm's ``PMI_SIZE``/``PMIX_RANK``) imports ``mpi4py`` and joins
``MPI.COMM_WORLD``; a plain ``python`` process does not import ``mpi4py`` at all and is a world of one
(rank 0 of 1), so the same script runs unchanged without MPI. ``import handgrad`` never imports ``mpi4py``.

Failure (a rank that raises): with more than one rank, ``init()`` installs a ``sys.excepthook`` that prints
the traceback and a one-line ``handgrad.distributed: rank r of N failed (...); stopping all N ranks`` and then
calls ``MPI_Abort``, which makes ``mpiexec`` kill every rank at once (instead of the others waiting forever
inside the next ``Allreduce``). :func:`abort_on_error` does the same for code that catches its own errors (the
``handgrad run`` command line). A rank that *dies* (killed, segfault, ``os._exit``) is noticed by ``mpiexec``
itself, which then stops the others. A rank that hangs without dying is not detected (no collective times out).
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any

__all__ = ["abort", "abort_on_error", "all_reduce_sum", "allgather", "barrier", "get_comm", "get_rank",
           "get_world_size", "init", "is_enabled", "is_initialized", "is_main_process", "launched_by_mpi"]

# environment variables that an MPI launcher sets in every rank it starts
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")


class SelfComm:
    """A world of one with mpi4py's buffer-method names: every collective is the identity. It lets the same
    code path (buckets, host copies) run without MPI, and tests run it in a plain process."""

    def Get_rank(self) -> int:  # noqa: N802 -- mpi4py's names
        return 0

    def Get_size(self) -> int:  # noqa: N802
        return 1

    def Allreduce(self, sendbuf: Any, recvbuf: Any, op: Any = None) -> None:  # noqa: N802
        pass

    def Bcast(self, buf: Any, root: int = 0) -> None:  # noqa: N802
        pass

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def allreduce(self, obj: Any, op: Any = None) -> Any:
        return obj

    def Barrier(self) -> None:  # noqa: N802
        pass

    def Abort(self, errorcode: int = 1) -> None:  # noqa: N802
        os._exit(errorcode)


class _State:
    comm: Any = None  # mpi4py's COMM_WORLD, or a SelfComm
    mpi: Any = None  # the mpi4py.MPI module when MPI is in use
    enabled = False  # a run asked for data parallelism (``--distributed``): Trainers wrap their updater
    wrapped = 0  # DistributedDataParallel steps built in this process (the CLI warns when a run built none)
    hook_installed = False


_STATE = _State()


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process (then ``init`` joins its world)."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


def init(enable: bool = True) -> Any:
    """Join the MPI world (or make a world of one); returns the communicator. Idempotent.

    ``enable=True`` also turns data parallelism on for every ``Trainer`` built afterwards with
    ``distributed=None`` (the default): that is how ``handgrad run NAME --distributed`` reaches the loop.
    """
    if _STATE.comm is None:
        if launched_by_mpi():
            try:
                from mpi4py import MPI
            except ImportError as e:  # pragma: no cover - depends on the installation
                raise RuntimeError("handgrad.distributed: started by an MPI launcher but mpi4py is not installed "
                                   "(pip install 'handgrad[distributed]')") from e
            _STATE.mpi, _STATE.comm = MPI, MPI.COMM_WORLD
        else:
            _STATE.comm = SelfComm()
        if _STATE.comm.Get_size() > 1 and not _STATE.hook_installed:
            _install_excepthook()
    if enable:
        from handgrad.distributed import ddp  # noqa: F401 -- registers DistributedDataParallel with the Trainer
        from handgrad.train.trainer import Trainer

        _STATE.enabled = Trainer.distributed_default = True
    return _STATE.comm


def is_initialized() -> bool:
    return _STATE.comm is not None


def is_enabled() -> bool:
    """Whether ``init()`` turned data parallelism on for this process (Trainers then wrap their updater)."""
    return _STATE.enabled


def get_comm() -> Any:
    """The communicator (``init(enable=False)`` first if needed)."""
    return _STATE.comm if _STATE.comm is not None else init(enable=False)


def get_rank() -> int:
    """This process's rank (0 without MPI)."""
    return int(get_comm().Get_rank())


def get_world_size() -> int:
    """The number of ranks (1 without MPI)."""
    return int(get_comm().Get_size())


def is_main_process() -> bool:
    """Rank 0: the one rank that writes logs, history, progress bars and checkpoints."""
    return get_rank() == 0


def barrier() -> None:
    get_comm().Barrier()


def allgather(obj: Any) -> list[Any]:
    """Every rank's (picklable) ``obj``, in rank order, on every rank."""
    return list(get_comm().allgather(obj))


def all_reduce_sum(values: Any) -> Any:
    """The element-wise sum over ranks of a float64 vector (a list of numbers or an array); same type back."""
    import numpy

    buf = numpy.array(values, dtype=numpy.float64, copy=True).reshape(-1)
    comm = get_comm()
    if comm.Get_size() > 1:
        comm.Allreduce(_STATE.mpi.IN_PLACE, buf, op=_STATE.mpi.SUM)
    return buf.tolist() if isinstance(values, (list, tuple)) else buf


def abort(message: str, errorcode: int = 1) -> None:
    """Print ``message`` (one line, prefixed with the rank) on stderr and stop every rank (``MPI_Abort``)."""
    comm = get_comm()
    rank, size = comm.Get_rank(), comm.Get_size()
    print(f"handgrad.distributed: rank {rank} of {size}: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    comm.Abort(errorcode)


def _failure_line(exc: BaseException) -> str:
    what = " ".join(str(exc).split()) or type(exc).__name__
    size = get_world_size()
    return f"failed ({type(exc).__name__}: {what}); stopping all {size} ranks"


def _install_excepthook() -> None:
    previous = sys.excepthook

    def hook(kind: Any, value: BaseException, tb: Any) -> None:
        try:
            previous(kind, value, tb)
        finally:
            abort(_failure_line(value))

    sys.excepthook = hook
    _STATE.hook_installed = True


@contextlib.contextmanager
def abort_on_error(show_traceback: bool = False,
                   user_errors: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Inside a multi-rank run, any exception (a user error too) stops every rank with one line instead of
    leaving the others blocked in a collective (exit status 2 for one of ``user_errors``, else 1). With one
    rank it does nothing: errors propagate."""
    try:
        yield
    except BaseException as e:  # noqa: BLE001 -- every kind of failure must stop the other ranks
        if isinstance(e, SystemExit) and not e.code:
            raise
        if _STATE.comm is None or _STATE.comm.Get_size() == 1:
            raise
        if show_traceback:
            traceback.print_exc()
        abort(_failure_line(e), 2 if isinstance(e, user_errors) else 1)
        raise  # pragma: no cover - Abort does not return
