"""Splitting the data over the ranks: :class:`DistributedSampler` (``torch.utils.data.distributed``), and
:func:`shard_loader`, which turns the loaders a Trainer is given into per-rank ones.

Each epoch, every rank draws the same permutation from ``(seed, epoch)`` (so it depends neither on the rank
nor on how many ranks there are, and a run resumed on another number of ranks continues the same sequence of
epochs) and takes every N-th index starting at its rank: rank r's batch k together with the other ranks'
batch k is exactly batch k of one process with N times the batch size. For training the index list is padded
with its own first indices to a multiple of N (PyTorch's default), so every rank takes the same number of
steps (a rank with one step more would wait forever in the all-reduce); ``pad=False`` (for evaluation, whose
sums are reduced once at the end) gives disjoint, possibly unequal shards with no repeated example.

A :class:`~handgrad.train.bptt.StreamLoader` (truncated BPTT over ``B`` parallel streams) is split by streams:
with ``B`` global streams each rank reads ``B / N`` of them (rank r streams ``r*B/N .. (r+1)*B/N - 1``), cut
from the same text at the same random shift, so the N ranks together read exactly what one process reads.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy

from handgrad.data.dataloader import DataLoader
from handgrad.data.sampler import Sampler
from handgrad.distributed import comm as _comm
from handgrad.train.bptt import StreamLoader

__all__ = ["DistributedSampler", "ShardedLoader", "ShardedStreamLoader", "shard_loader"]


class DistributedSampler(Sampler):
    """Indices of this rank's shard of ``dataset`` (PyTorch's arguments and order, plus ``pad``).

    Args:
        dataset: anything with ``len()``.
        num_replicas, rank: the world size and this rank (default: from :mod:`handgrad.distributed`).
        shuffle: a new permutation every epoch, from ``(seed, epoch)``; call :meth:`set_epoch` each epoch.
        seed: the same on every rank.
        drop_last: drop the tail that does not divide evenly instead of padding it.
        pad: with ``drop_last=False``, repeat the first indices to make the shards equal (training); ``False``:
            unequal, disjoint shards (evaluation).
    """

    def __init__(self, dataset: Any, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False, pad: bool = True) -> None:
        num_replicas = _comm.get_world_size() if num_replicas is None else int(num_replicas)
        rank = _comm.get_rank() if rank is None else int(rank)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank must be in [0, {num_replicas}), got rank {rank} of "
                             f"{num_replicas}")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.pad = bool(shuffle), int(seed), bool(drop_last), bool(pad)
        self.epoch = 0
        n = len(dataset)
        if drop_last:
            self.total_size = (n // num_replicas) * num_replicas
        elif pad:
            self.total_size = math.ceil(n / num_replicas) * num_replicas
        else:
            self.total_size = n
        if self.total_size == 0:
            raise ValueError(f"DistributedSampler: {n} examples give {num_replicas} ranks nothing to read")
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose permutation :meth:`__iter__` yields (the Trainer calls it before each epoch)."""
        self.epoch = int(epoch)

    def indices(self) -> numpy.ndarray:
        n = len(self.dataset)
        if self.shuffle:
            order = numpy.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            order = numpy.arange(n)
        if self.total_size > n:
            order = numpy.concatenate([order, numpy.resize(order, self.total_size - n)])
        order = order[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas].astype(numpy.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples


class ShardedLoader:
    """A ``DataLoader`` over a :class:`DistributedSampler`, with ``set_epoch`` (which the Trainer calls)."""

    def __init__(self, loader: DataLoader, sampler: DistributedSampler) -> None:
        self.loader, self.sampler = loader, sampler
        self.dataset, self.batch_size = loader.dataset, loader.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


class ShardedStreamLoader(StreamLoader):
    """A :class:`~handgrad.train.bptt.StreamLoader` of ``n_streams`` global streams of which this rank reads
    its ``n_streams / world_size`` (same text, same shifts on every rank; its state is rank-independent)."""

    def __init__(self, ids: Any, n_streams: int, bptt: int, steps_per_epoch: int | None = None,
                 shuffle: bool = True, seed: int = 0, rank: int | None = None, world_size: int | None = None) -> None:
        self.world_size = _comm.get_world_size() if world_size is None else int(world_size)
        self.rank = _comm.get_rank() if rank is None else int(rank)
        if n_streams % self.world_size:
            raise ValueError(f"ShardedStreamLoader: {n_streams} streams do not split evenly over "
                             f"{self.world_size} ranks")
        super().__init__(ids, n_streams, bptt, steps_per_epoch, shuffle, seed)

    @property
    def _data(self) -> numpy.ndarray:  # (steps, n_streams / world_size): this rank's columns
        return self._own

    @_data.setter
    def _data(self, full: numpy.ndarray) -> None:
        per = self.n_streams // self.world_size
        self._own = numpy.ascontiguousarray(full[:, self.rank * per : (self.rank + 1) * per])


def shard_loader(loader: Any, train: bool = True) -> Any:
    """This rank's part of ``loader``: a ``DataLoader`` (its ``batch_size`` is the global batch, divided by
    the world size) or a ``StreamLoader``; loaders already sharded are returned as they are."""
    world, rank = _comm.get_world_size(), _comm.get_rank()
    if loader is None or isinstance(loader, (ShardedLoader, ShardedStreamLoader)):
        return loader
    if isinstance(loader, StreamLoader):
        if loader.n_streams % world:
            raise ValueError(f"distributed training: {loader.n_streams} streams do not split over {world} ranks")
        out = ShardedStreamLoader(loader.ids, loader.n_streams, loader.bptt, loader.steps_per_epoch,
                                  loader.shuffle, 0, rank, world)
        out.generator, out.pos, out.shift = loader.generator, loader.pos, loader.shift
        out._data = numpy.asarray(loader._data)  # the streams as the loader has them now
        return out
    if isinstance(loader, DataLoader):
        if loader.batch_sampler is not None or loader.sampler is not None or loader._iterable:
            raise TypeError("distributed training: cannot split a DataLoader with its own sampler, batch_sampler "
                            "or an IterableDataset over the ranks; give it a DistributedSampler yourself")
        bs = loader.batch_size
        if train and bs % world:
            raise ValueError(f"distributed training: the batch size {bs} does not split over {world} ranks")
        sampler = DistributedSampler(loader.dataset, world, rank, shuffle=loader.shuffle,
                                     seed=0 if loader.seed is None else loader.seed, drop_last=loader.drop_last,
                                     pad=train)
        per_rank = bs // world if train else bs
        sharded = DataLoader(loader.dataset, batch_size=per_rank, sampler=sampler, collate_fn=loader.collate_fn,
                             drop_last=loader.drop_last, num_workers=loader.num_workers, timeout=loader.timeout,
                             worker_init_fn=loader.worker_init_fn)
        return ShardedLoader(sharded, sampler)
    raise TypeError(f"distributed training: cannot split a {type(loader).__name__} over the ranks (a DataLoader "
                    "or a StreamLoader can be split; or shard your data yourself and pass distributed=False)")
