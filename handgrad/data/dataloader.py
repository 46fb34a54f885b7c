"""``DataLoader``: batches of handgrad Tensors from a map-style dataset (``torch.utils.data.DataLoader`` names).

Each epoch (each ``iter(loader)``) walks the indices ``0..N-1`` in order, or in a fresh random permutation
when ``shuffle=True``; consecutive runs of ``batch_size`` indices form the batches (the last one shorter
unless ``drop_last``). Permutations come from handgrad's global generator, so ``handgrad.manual_seed(s)``
before building the epoch iterator reproduces the order, or from a private generator seeded by ``seed=``.

With ``num_workers=N`` the batches are fetched by N worker processes (``handgrad/data/_workers.py``).

Fetching: if ``collate_fn`` is the default and the dataset offers ``_get_batch(indices)`` (TensorDataset,
Subset/ConcatDataset of such, the MNIST-style datasets without per-item transforms), the batch is gathered
with one fancy-indexing call per array; otherwise ``dataset[i]`` is called per item and the items are
merged by ``collate_fn`` (``default_collate``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy

from handgrad.data.dataset import resolve_generator
from handgrad.data.iterable import IterableDataset, IterableFetcher
from handgrad.engine.backend import get_array_module, get_default_dtype
from handgrad.engine.tensor import Tensor

__all__ = ["DataLoader", "default_collate"]


def _stack(arrays: list[Any], where: str) -> Any:
    shapes = {tuple(a.shape) for a in arrays}
    if len(shapes) > 1:
        listed = ", ".join(str(s) for s in sorted(shapes, key=str)[:4])
        raise ValueError(f"default_collate: cannot stack items of different shapes {listed} at {where}; pass a "
                         "collate_fn that pads them")
    xp = get_array_module(*arrays)
    return xp.stack(arrays)


def _collate(batch: Sequence[Any], where: str) -> Any:
    elem = batch[0]
    if isinstance(elem, Tensor):
        return Tensor(_stack([b.array for b in batch], where))
    xp = get_array_module(elem)
    if isinstance(elem, (numpy.ndarray, xp.ndarray)):
        if elem.dtype.kind in "OUS":
            raise TypeError(f"default_collate: arrays of dtype {elem.dtype} at {where} cannot form a Tensor")
        return Tensor(_stack(list(batch), where))
    if isinstance(elem, numpy.generic) and not isinstance(elem, (numpy.str_, numpy.bytes_)):
        return Tensor(numpy.asarray(batch, dtype=elem.dtype))
    if isinstance(elem, bool):
        return Tensor(numpy.asarray(batch, dtype=bool))
    if isinstance(elem, int):
        return Tensor(numpy.asarray(batch, dtype=numpy.int64))
    if isinstance(elem, float):
        # Python floats follow handgrad's rule for new tensors: the default float dtype (float32 unless set).
        return Tensor(numpy.asarray(batch, dtype=get_default_dtype()))
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, Mapping):
        for b in batch:
            if not isinstance(b, Mapping) or set(b) != set(elem):
                raise ValueError(f"default_collate: dict items at {where} have different keys: "
                                 f"{sorted(map(str, elem))} vs {sorted(map(str, b)) if isinstance(b, Mapping) else b}")
        return {k: _collate([b[k] for b in batch], f"{where}[{k!r}]") for k in elem}
    if isinstance(elem, (tuple, list)):
        size = len(elem)
        if any(not isinstance(b, (tuple, list)) or len(b) != size for b in batch):
            raise ValueError(f"default_collate: each item at {where} should be a sequence of length {size}")
        fields = [_collate([b[i] for b in batch], f"{where}[{i}]") for i in range(size)]
        if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
            return type(elem)(*fields)
        return tuple(fields) if isinstance(elem, tuple) else fields
    raise TypeError(f"default_collate: items at {where} of type {type(elem).__name__} cannot be batched; "
                    "expected arrays, Tensors, numbers, strings, or tuples/lists/dicts of them")


def default_collate(batch: Sequence[Any]) -> Any:
    """Merge a list of items into one batch, recursively (``torch.utils.data.default_collate``).

    arrays/Tensors of one shape ``S`` -> Tensor ``(B, *S)``; ints -> int64 Tensor ``(B,)``; floats -> a
    Tensor of the default float dtype; bools -> bool Tensor; NumPy scalars keep their dtype; strings -> a
    list; tuples/lists -> the same kind with each field collated; dicts -> a dict of collated values.
    """
    if len(batch) == 0:
        raise ValueError("default_collate: empty batch")
    return _collate(batch, "batch")


def _to_tensors(batch: Any) -> Any:
    """Wrap the arrays of a fast-path batch (a structure of arrays) as Tensors."""
    if isinstance(batch, Tensor):
        return batch
    if hasattr(batch, "shape") and hasattr(batch, "dtype"):
        return Tensor(batch)
    if isinstance(batch, Mapping):
        return {k: _to_tensors(v) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_to_tensors(v) for v in batch)
    if isinstance(batch, list):
        return [_to_tensors(v) for v in batch]
    return batch


def _drain(fetch: Callable[[Any], Any]) -> Iterator[Any]:
    while True:
        try:
            batch = fetch(None)
        except StopIteration:
            return
        yield batch


class _Fetcher:
    """Turn one batch's indices into a batch (a module-level callable, so worker processes can run it)."""

    def __init__(self, dataset: Any, collate_fn: Callable[[list[Any]], Any] | None) -> None:
        self.dataset, self.collate_fn = dataset, collate_fn

    def __call__(self, idx: Any) -> Any:
        idx = numpy.asarray(idx, dtype=numpy.int64)
        fetch = getattr(self.dataset, "_get_batch", None) if self.collate_fn is None else None
        if fetch is not None:
            batch = fetch(idx)
            if batch is not None:
                return _to_tensors(batch)
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(idx.tolist()) if getitems is not None else [self.dataset[int(i)] for i in idx]
        return (self.collate_fn or default_collate)(items)


class DataLoader:
    """Iterate a dataset in batches of Tensors (``torch.utils.data.DataLoader``'s arguments and order).

    Args:
        dataset: any object with ``__len__`` and ``__getitem__(int)``.
        batch_size: items per batch (>= 1); None with ``batch_sampler`` only.
        shuffle: a new random order every epoch.
        sampler: optional iterable of indices (with ``__len__``) defining the order; excludes ``shuffle``.
        batch_sampler: optional iterable of index lists (one per batch); excludes batch_size, shuffle,
            sampler and drop_last.
        num_workers: 0 fetches in this process; N > 0 uses N worker processes (see ``_workers``: seeded per
            worker, batches in order, arrays through shared memory, a crashed worker is an error, not a hang).
        collate_fn: merges a list of items into a batch (default ``default_collate``).
        pin_memory: accepted for PyTorch compatibility; host arrays need no pinning here (no effect).
        drop_last: drop the final batch when it has fewer than ``batch_size`` items.
        timeout: seconds to wait for a batch from the workers (0: no limit; a dead worker is still noticed).
        worker_init_fn: called as ``fn(worker_id)`` in each worker after it is seeded.
        multiprocessing_context: 'fork' (default where available), 'spawn', 'forkserver' or a context.
        generator: a ``numpy.random.Generator`` (or int seed) to shuffle and seed workers with; kept as
            ``loader.generator`` (None: handgrad's global generator, ``handgrad.manual_seed``).
        prefetch_factor: batches in flight per worker (default 2).
        persistent_workers: accepted; workers are started for each epoch.
        seed: shuffle with a private generator seeded once here (epochs still differ, runs repeat).

    ``len(loader)`` is the number of batches per epoch.
    """

    def __init__(self, dataset: Any, batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler: Iterable[int] | None = None, batch_sampler: Iterable[Sequence[int]] | None = None,
                 num_workers: int = 0, collate_fn: Callable[[list[Any]], Any] | None = None,
                 pin_memory: bool = False, drop_last: bool = False, timeout: float = 0,
                 worker_init_fn: Callable[[int], None] | None = None, multiprocessing_context: Any = None,
                 generator: numpy.random.Generator | None = None, *, prefetch_factor: int | None = None,
                 persistent_workers: bool = False, pin_memory_device: str = "", in_order: bool = True,
                 seed: int | None = None) -> None:
        shuffle = bool(shuffle)
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("DataLoader: batch_sampler option is mutually exclusive with batch_size, shuffle, "
                                 "sampler, and drop_last")
            batch_size = None
        elif batch_size is None:
            raise ValueError("DataLoader: batch_size=None (no automatic batching) is not supported; give a size or "
                             "a batch_sampler")
        if batch_size is not None and (
                isinstance(batch_size, bool) or not isinstance(batch_size, (int, numpy.integer)) or batch_size < 1):
            raise ValueError(f"DataLoader: batch_size should be a positive integer, got {batch_size!r}")
        self._iterable = isinstance(dataset, IterableDataset)
        if self._iterable:
            for key, v in (("shuffle", shuffle), ("sampler", sampler), ("batch_sampler", batch_sampler)):
                if v:
                    raise ValueError(f"DataLoader with IterableDataset: expected unspecified {key} option, "
                                     f"but got {key}={v!r}")
        elif not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader: dataset of type {type(dataset).__name__} needs __len__ and __getitem__ "
                            "(or derive it from IterableDataset and define __iter__)")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        if seed is not None and generator is not None:
            raise ValueError("DataLoader: give seed or generator, not both")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers should be a non-negative integer, got {num_workers!r}")
        if timeout < 0:
            raise ValueError(f"DataLoader: timeout should be non-negative, got {timeout}")
        if num_workers == 0 and (prefetch_factor is not None or persistent_workers):
            raise ValueError("DataLoader: prefetch_factor and persistent_workers need num_workers > 0")
        self.dataset = dataset
        self.batch_size = None if batch_size is None else int(batch_size)
        self.shuffle = shuffle
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.drop_last = bool(drop_last)
        self.collate_fn = collate_fn
        self.num_workers, self.pin_memory, self.timeout = num_workers, bool(pin_memory), timeout
        self.worker_init_fn, self.multiprocessing_context = worker_init_fn, multiprocessing_context
        self.prefetch_factor, self.persistent_workers = prefetch_factor, bool(persistent_workers)
        self.seed = seed
        # The loader's own shuffling generator (public, as in PyTorch: a Trainer checkpoints its state);
        # None means "draw from handgrad's global generator".
        if isinstance(generator, (int, numpy.integer)) and not isinstance(generator, bool):
            generator = numpy.random.default_rng(int(generator))
        self.generator: numpy.random.Generator | None = generator if generator is not None else (
            numpy.random.default_rng(int(seed)) if seed is not None else None)

    def _order(self) -> numpy.ndarray:
        if self.sampler is not None:
            return numpy.fromiter((int(i) for i in self.sampler), dtype=numpy.int64)
        n = len(self.dataset)
        if self.shuffle:
            return resolve_generator(self.generator).permutation(n).astype(numpy.int64)
        return numpy.arange(n, dtype=numpy.int64)

    def _num_items(self) -> int:
        return len(self.sampler) if self.sampler is not None else len(self.dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        if self._iterable:
            try:
                n = len(self.dataset)
            except NotImplementedError:
                raise TypeError(f"DataLoader: the IterableDataset {type(self.dataset).__name__} defines no "
                                "__len__, so the loader has no length") from None
            bs = self.batch_size or 1
            return n // bs if self.drop_last else math.ceil(n / bs)
        if self.batch_sampler is not None:
            return len(self.batch_sampler)  # type: ignore[arg-type]
        n = self._num_items()
        assert self.batch_size is not None
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _index_batches(self) -> list[numpy.ndarray]:
        """This epoch's batches as index vectors (drawn when the epoch starts, so ``manual_seed`` right
        before ``iter()`` reproduces them)."""
        if self.batch_sampler is not None:
            return [numpy.asarray(list(b), dtype=numpy.int64) for b in self.batch_sampler]
        order = self._order()
        n, bs = len(order), self.batch_size
        assert bs is not None
        stop = n - n % bs if self.drop_last else n
        return [order[start:start + bs] for start in range(0, stop, bs)]

    def __iter__(self) -> Iterator[Any]:
        if self._iterable:
            stream = IterableFetcher(self.dataset, self.batch_size or 1, self.drop_last,
                                     self.collate_fn or default_collate)
            if self.num_workers > 0:
                from handgrad.data._workers import MultiProcessIterator

                return MultiProcessIterator(self, None, stream)
            return _drain(stream)
        batches = self._index_batches()
        fetch = _Fetcher(self.dataset, self.collate_fn)
        if self.num_workers > 0:
            from handgrad.data._workers import MultiProcessIterator

            return MultiProcessIterator(self, batches, fetch)
        return (fetch(idx) for idx in batches)

    def __repr__(self) -> str:
        try:
            size = f"(n={len(self.dataset)})"
        except (NotImplementedError, TypeError):
            size = ""
        return (f"DataLoader(dataset={type(self.dataset).__name__}{size}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, drop_last={self.drop_last}, "
                f"num_workers={self.num_workers})")
