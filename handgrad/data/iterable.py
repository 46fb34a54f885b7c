"""Iterable-style datasets (``torch.utils.data.IterableDataset``): a stream of items instead of indexable
ones, e.g. lines read from a file or samples generated on the fly.

A ``DataLoader`` over one takes ``batch_size`` consecutive items per batch (no sampler, no shuffle). With
``num_workers=N`` every worker iterates its OWN copy of the dataset, so a dataset that should not be
repeated N times splits itself with ``get_worker_info()`` (worker ``id`` of ``num_workers``); batches are
taken from the workers in turn (batch k from worker k % N while all run; an exhausted worker is skipped),
as in PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from handgrad.data.dataset import Dataset

__all__ = ["ChainDataset", "IterableDataset"]


class IterableDataset(Dataset):
    """Base class of iterable-style datasets: subclasses define ``__iter__`` (``__len__`` is optional)."""

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")

    def __getitem__(self, index: int) -> Any:
        raise TypeError(f"{type(self).__name__} is an IterableDataset: iterate it, it cannot be indexed")

    def __add__(self, other: Any) -> ChainDataset:  # type: ignore[override]
        return ChainDataset([self, other])


class ChainDataset(IterableDataset):
    """The items of several iterable datasets, one after the other."""

    def __init__(self, datasets: Iterable[IterableDataset]) -> None:
        self.datasets = list(datasets)

    def __iter__(self) -> Iterator[Any]:
        for d in self.datasets:
            yield from d

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)  # type: ignore[arg-type]


class IterableFetcher:
    """Each call returns the next batch of ``batch_size`` items from ``iter(dataset)`` (started on the first
    call, i.e. inside the worker once it is seeded); raises StopIteration when the stream is done (or only a
    short last batch is left and ``drop_last``)."""

    def __init__(self, dataset: Any, batch_size: int, drop_last: bool,
                 collate_fn: Callable[[list[Any]], Any]) -> None:
        self.dataset, self.batch_size, self.drop_last, self.collate_fn = dataset, batch_size, drop_last, collate_fn
        self._it: Iterator[Any] | None = None

    def __call__(self, _indices: Any = None) -> Any:
        if self._it is None:
            self._it = iter(self.dataset)
        items = []
        for item in self._it:
            items.append(item)
            if len(items) == self.batch_size:
                break
        if not items or (self.drop_last and len(items) < self.batch_size):
            raise StopIteration
        return self.collate_fn(items)
