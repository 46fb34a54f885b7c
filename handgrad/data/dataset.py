"""Map-style datasets (``torch.utils.data`` names): Dataset, TensorDataset, Subset, ConcatDataset, random_split.

A dataset is anything with ``__len__`` and ``__getitem__(int)``. A dataset may also define
``_get_batch(indices) -> structure of arrays | None``: the DataLoader then fetches a whole batch by fancy
indexing with the batch's index vector instead of a Python loop over items (``None`` means "not now", e.g.
because a per-item transform is set, and the loader falls back to items + collate).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.tensor import Tensor

__all__ = ["Dataset", "TensorDataset", "Subset", "ConcatDataset", "random_split", "resolve_generator"]


def resolve_generator(generator: numpy.random.Generator | int | None) -> numpy.random.Generator:
    """A NumPy generator: the one given, a fresh one seeded by an int, or handgrad's global one (seeded by
    ``handgrad.manual_seed``)."""
    if isinstance(generator, numpy.random.Generator):
        return generator
    if generator is None:
        from handgrad.engine.random import get_rng

        return get_rng()
    if isinstance(generator, (int, numpy.integer)) and not isinstance(generator, bool):
        return numpy.random.default_rng(int(generator))
    raise TypeError(f"expected a numpy.random.Generator, an int seed or None, got {type(generator).__name__}")


class Dataset:
    """Base class of map-style datasets: subclasses define ``__getitem__(index)`` and ``__len__()``."""

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def __add__(self, other: Dataset) -> ConcatDataset:
        return ConcatDataset([self, other])


def _as_host_array(t: Any) -> Any:
    return t.array if isinstance(t, Tensor) else (t if hasattr(t, "shape") else numpy.asarray(t))


class TensorDataset(Dataset):
    """Rows of equally long arrays or Tensors: ``dataset[i] == (t0[i], t1[i], ...)``.

    Items keep the kind they were given as (Tensor rows for Tensors, array rows for arrays); DataLoader
    batches index all arrays at once with the batch's index vector.
    """

    def __init__(self, *tensors: Any) -> None:
        if not tensors:
            raise ValueError("TensorDataset: needs at least one array or Tensor")
        arrays = [_as_host_array(t) for t in tensors]
        for a in arrays:
            if a.ndim == 0:
                raise ValueError("TensorDataset: 0-d arrays have no rows to index")
        sizes = [a.shape[0] for a in arrays]
        if any(s != sizes[0] for s in sizes):
            shapes = ", ".join(str(tuple(a.shape)) for a in arrays)
            raise ValueError(f"TensorDataset: size mismatch between tensors: first dimensions of {shapes} differ")
        self.tensors = tuple(tensors)
        self._arrays = arrays
        self._is_tensor = [isinstance(t, Tensor) for t in tensors]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return tuple(Tensor(a[index]) if is_t else a[index] for a, is_t in zip(self._arrays, self._is_tensor))

    def __len__(self) -> int:
        return int(self._arrays[0].shape[0])

    def _get_batch(self, indices: numpy.ndarray) -> tuple[Any, ...]:
        xp = get_array_module(self._arrays[0])
        idx = indices if xp is numpy else xp.asarray(indices)
        return tuple(a[idx] for a in self._arrays)


class Subset(Dataset):
    """The items of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = numpy.asarray(indices, dtype=numpy.int64).reshape(-1)
        n = len(dataset)
        if self.indices.size and (self.indices.max() >= n or self.indices.min() < -n):
            raise IndexError(f"Subset: indices must lie in [-{n}, {n}) for a dataset of length {n}, got "
                             f"min {self.indices.min()} max {self.indices.max()}")

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, (list, tuple, numpy.ndarray)):
            return [self.dataset[int(i)] for i in self.indices[numpy.asarray(index, dtype=numpy.int64)]]
        return self.dataset[int(self.indices[index])]

    def __len__(self) -> int:
        return int(self.indices.size)

    def _get_batch(self, indices: numpy.ndarray) -> Any:
        fetch = getattr(self.dataset, "_get_batch", None)
        return None if fetch is None else fetch(self.indices[indices])


class ConcatDataset(Dataset):
    """Several datasets one after another: ``len`` is the sum, index ``i`` goes to the dataset it falls in."""

    def __init__(self, datasets: Sequence[Any]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        self.cumulative_sizes = list(numpy.cumsum([len(d) for d in self.datasets]).tolist())

    def __len__(self) -> int:
        return int(self.cumulative_sizes[-1])

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        if index < 0:
            if -index > n:
                raise IndexError(f"ConcatDataset: index {index} out of range for length {n}")
            index += n
        if index >= n:
            raise IndexError(f"ConcatDataset: index {index} out of range for length {n}")
        d = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[d - 1] if d > 0 else 0
        return self.datasets[d][index - start]

    def _get_batch(self, indices: numpy.ndarray) -> Any:
        # Fast path only when every part can batch and yields the same structure of arrays.
        fetchers = [getattr(d, "_get_batch", None) for d in self.datasets]
        if any(f is None for f in fetchers):
            return None
        which = numpy.searchsorted(self.cumulative_sizes, indices, side="right")
        starts = numpy.concatenate([[0], self.cumulative_sizes[:-1]])
        parts, positions, single = [], [], False
        for d in numpy.unique(which):
            sel = numpy.nonzero(which == d)[0]
            part = fetchers[d](indices[sel] - starts[d])
            if part is None:
                return None
            if not isinstance(part, tuple):
                part, single = (part,), True
            if not all(hasattr(a, "shape") for a in part):
                return None
            parts.append(part)
            positions.append(sel)
        if len({len(p) for p in parts}) != 1:
            return None
        order = numpy.argsort(numpy.concatenate(positions), kind="stable")
        out = tuple(numpy.concatenate([p[k] for p in parts])[order] for k in range(len(parts[0])))
        return out[0] if single else out


def random_split(dataset: Any, lengths: Sequence[int | float],
                 generator: numpy.random.Generator | int | None = None) -> list[Subset]:
    """Split ``dataset`` into disjoint random Subsets of the given lengths (``torch.utils.data.random_split``).

    ``lengths`` are ints summing to ``len(dataset)``, or fractions summing to 1: each subset then gets
    ``floor(n * fraction)`` items and the remainder is dealt one by one to the subsets in order.
    ``generator``: a NumPy Generator, an int seed, or None for handgrad's global generator.
    """
    n = len(dataset)
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: lengths is empty")
    if all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1.0) and sum(lengths) <= 1 + 1e-9:
        if any(not 0.0 <= x <= 1.0 for x in lengths):
            raise ValueError(f"random_split: fractions must lie in [0, 1], got {lengths}")
        sizes = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
        lengths = sizes
    if any(isinstance(x, float) and not float(x).is_integer() for x in lengths):
        raise ValueError(f"random_split: lengths must be ints summing to {n} or fractions summing to 1, "
                         f"got {lengths} (sum {sum(lengths)})")
    lengths = [int(x) for x in lengths]
    if any(x < 0 for x in lengths):
        raise ValueError(f"random_split: lengths must be non-negative, got {lengths}")
    if sum(lengths) != n:
        raise ValueError(f"random_split: sum of input lengths ({sum(lengths)}) does not equal the length of the "
                         f"input dataset ({n})")
    perm = resolve_generator(generator).permutation(n)
    bounds = numpy.cumsum([0, *lengths])
    return [Subset(dataset, perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
