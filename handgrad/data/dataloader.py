"""``DataLoader``: batches of handgrad Tensors from a map-style dataset (``torch.utils.data.DataLoader`` names).

Each epoch (each ``iter(loader)``) walks the indices ``0..N-1`` in order, or in a fresh random permutation
when ``shuffle=True``; consecutive runs of ``batch_size`` indices form the batches (the last one shorter
unless ``drop_last``). Permutations come from handgrad's global generator, so ``handgrad.manual_seed(s)``
before building the epoch iterator reproduces the order, or from a private generator seeded by ``seed=``.

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
        return Tensor(_stack([b.data for b in batch], where))
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


class DataLoader:
    """Iterate a dataset in batches of Tensors.

    Args:
        dataset: any object with ``__len__`` and ``__getitem__(int)``.
        batch_size: items per batch (>= 1).
        shuffle: a new random order every epoch.
        sampler: optional iterable of indices (with ``__len__``) defining the order; excludes ``shuffle``.
        drop_last: drop the final batch when it has fewer than ``batch_size`` items.
        collate_fn: merges a list of items into a batch (default ``default_collate``).
        seed: shuffle with a private generator seeded once here (epochs still differ, runs repeat);
            None draws from handgrad's global generator (``handgrad.manual_seed``).
        generator: a ``numpy.random.Generator`` to shuffle with (instead of ``seed``); kept as
            ``loader.generator`` (None when shuffling from the global generator).

    ``len(loader)`` is the number of batches per epoch.
    """

    def __init__(self, dataset: Any, batch_size: int = 1, shuffle: bool = False, *,
                 sampler: Iterable[int] | None = None, drop_last: bool = False,
                 collate_fn: Callable[[list[Any]], Any] | None = None, seed: int | None = None,
                 generator: numpy.random.Generator | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, numpy.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size should be a positive integer, got {batch_size!r}")
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader: dataset of type {type(dataset).__name__} needs __len__ and __getitem__")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        if seed is not None and generator is not None:
            raise ValueError("DataLoader: give seed or generator, not both")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.sampler = sampler
        self.drop_last = bool(drop_last)
        self.collate_fn = collate_fn
        self.seed = seed
        # The loader's own shuffling generator (public, as in PyTorch: a Trainer checkpoints its state);
        # None means "draw from handgrad's global generator".
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
        n = self._num_items()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        order = self._order()  # drawn when the epoch starts, so manual_seed right before iter() reproduces it
        n = len(order)
        stop = n - n % self.batch_size if self.drop_last else n
        fetch = getattr(self.dataset, "_get_batch", None) if self.collate_fn is None else None
        collate = self.collate_fn or default_collate
        getitems = getattr(self.dataset, "__getitems__", None)
        for start in range(0, stop, self.batch_size):
            idx = order[start:start + self.batch_size]
            if fetch is not None:
                batch = fetch(idx)
                if batch is not None:
                    yield _to_tensors(batch)
                    continue
            items = getitems(idx.tolist()) if getitems is not None else [self.dataset[int(i)] for i in idx]
            yield collate(items)

    def __repr__(self) -> str:
        return (f"DataLoader(dataset={type(self.dataset).__name__}(n={len(self.dataset)}), "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, drop_last={self.drop_last})")
