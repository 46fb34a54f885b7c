"""``SyncBatchNorm``: batch norm whose statistics are those of the global batch across all ranks (PyTorch's
``torch.nn.SyncBatchNorm``), so a data-parallel run normalises exactly as one process with the whole batch.

Forward (training), x (N_r, C, *) on rank r, n = sum_r N_r * prod(*) elements per channel:

    mu = (sum_r sum x) / n                   one Allreduce of the per-channel sums (and the counts)
    var = (sum_r sum (x - mu)^2) / n         a second one (two passes, as BatchNorm: accurate for large means)
    xhat = (x - mu) / sqrt(var + eps),  y = w xhat + b

Backward, with the sums over the global batch (one Allreduce of the per-channel ``sum dy`` and
``sum dy xhat``)::

    dx = w r (dy - (sum_all dy) / n - xhat (sum_all dy xhat) / n)
    dw = sum_local dy xhat,  db = sum_local dy       (local: DistributedDataParallel averages them)

Each rank's loss is the mean over its own ``N / R`` examples, so its ``dy`` is ``R`` times the one-process
``dy``; both ``dx`` and the local ``dw, db`` carry that factor ``R`` and the gradient average over the ``R`` ranks
removes it: the averaged gradients are those of one process with the whole batch (checked to 1e-12 on 2 ranks
in ``tests/test_distributed.py``). The running statistics are updated with the global mean and unbiased
variance, identically on every rank. Evaluation uses them, with no communication. Every rank must run the
same number of training-mode forward passes (as in any data-parallel step).
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.distributed import comm as _comm
from handgrad.engine.backend import get_array_module, to_host
from handgrad.engine.tensor import Tensor
from handgrad.functional.normalization import BatchNormFunction, _affine, _check_batch_norm, _optional, _unpack
from handgrad.nn.module import Module
from handgrad.nn.normalization import _BatchNorm

__all__ = ["SyncBatchNorm", "SyncBatchNormFunction", "sync_batch_norm"]


def _sum_over_ranks(xp: Any, comm: Any, *arrays: Any) -> list[Any]:
    """The element-wise sums over the ranks of a few small arrays (one Allreduce, float64 on the host)."""
    host = [numpy.asarray(to_host(a), dtype=numpy.float64).reshape(-1) for a in arrays]
    buf = numpy.concatenate(host)
    if comm.Get_size() > 1:
        mpi = _comm._STATE.mpi
        comm.Allreduce(mpi.IN_PLACE, buf, op=mpi.SUM)
    out, at = [], 0
    for a, h in zip(arrays, host):
        out.append(xp.asarray(buf[at:at + h.size].reshape(numpy.shape(a)).astype(a.dtype)))
        at += h.size
    return out


class SyncBatchNormFunction(BatchNormFunction):
    """Batch norm over axes (0, 2, ...) of x (N, C, *) with statistics over every rank's batch (training);
    inputs x[, w][, b]. In eval mode it is :class:`BatchNormFunction` (running statistics, no communication)."""

    def __init__(self, present: tuple[bool, bool], training: bool, running_mean: Any, running_var: Any,
                 momentum: float, eps: float, comm: Any) -> None:
        super().__init__(present, training, running_mean, running_var, momentum, eps)
        self.comm = comm

    def forward(self, x: Any, *wb: Any) -> Any:
        if not self.training:
            return super().forward(x, *wb)
        xp = get_array_module(x)
        w, b = _unpack(self.present, wb)
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        local_n = x.size // x.shape[1]
        total, n = _sum_over_ranks(xp, self.comm, x.sum(axis=axes), xp.asarray(numpy.array([float(local_n)])))
        n = float(to_host(n)[0])
        mu = (total / n).reshape(bshape)
        xc = x - mu
        (sq,) = _sum_over_ranks(xp, self.comm, (xc * xc).sum(axis=axes))
        var = (sq / n).reshape(bshape)
        r = 1.0 / xp.sqrt(var + self.eps)
        xhat = xc
        xhat *= r
        self._update_running(mu, var, n)
        self.n, self.axes, self.bshape, self.r, self.w, self.xhat = n, axes, bshape, r, w, xhat
        return _affine(xhat, w, b, bshape)

    def backward(self, gy: Any) -> Any:
        if not self.training:
            return super().backward(gy)
        need = self.needs_input_grad
        axes, bshape = self.axes, self.bshape
        xp = get_array_module(gy)
        gb = gy.sum(axis=axes)
        gw = (gy * self.xhat).sum(axis=axes)
        gx = None
        if need[0]:
            gb_all, gw_all = _sum_over_ranks(xp, self.comm, gb, gw)
            scale = self.r if self.w is None else self.r * self.w.reshape(bshape)
            gx = gy - (gb_all / self.n).reshape(bshape)
            gx -= self.xhat * (gw_all / self.n).reshape(bshape)
            gx *= scale
        out = [gx]
        if self.present[0]:
            out.append(gw if need[1] else None)
        if self.present[1]:
            out.append(gb if need[1 + self.present[0]] else None)
        return tuple(out)


def sync_batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                    weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
                    momentum: float = 0.1, eps: float = 1e-5, comm: Any = None) -> Tensor:
    """``F.batch_norm`` with global-batch statistics in training (see the module docstring)."""
    _check_batch_norm("sync_batch_norm", input, running_mean, running_var, weight, bias, training)
    inputs, present = _optional(input, weight, bias)
    fn = SyncBatchNormFunction(present[1:], bool(training), None if running_mean is None else running_mean.array,
                               None if running_var is None else running_var.array, float(momentum), float(eps),
                               comm or _comm.get_comm())
    return fn(*inputs)


class SyncBatchNorm(_BatchNorm):
    """``torch.nn.SyncBatchNorm``: BatchNorm1d/2d/3d whose training statistics span all ranks; input (N, C, *).
    Same arguments, parameters and buffers as ``BatchNorm2d`` (``process_group`` is not supported)."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.ndim < 2:
            raise ValueError(f"SyncBatchNorm: expected at least 2-D input (N, C, ...), got shape {tuple(input.shape)}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.array += 1
            factor = 1.0 / float(self.num_batches_tracked.array) if self.momentum is None else self.momentum
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        return sync_batch_norm(input, self.running_mean if use_running else None,
                               self.running_var if use_running else None, self.weight, self.bias, bn_training,
                               factor, self.eps)

    @classmethod
    def convert_sync_batchnorm(cls, module: Module) -> Module:
        """``module`` with every BatchNorm layer replaced by a SyncBatchNorm holding the same parameters and
        buffers (the objects themselves); returns the converted module (a new one if ``module`` is a BN)."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            new = cls.__new__(cls)
            new.__dict__.update(module.__dict__)  # same Parameters, buffers and settings
            return new
        for name, child in list(module.named_children()):
            converted = cls.convert_sync_batchnorm(child)
            if converted is not child:
                setattr(module, name, converted)
        return module
