"""``handgrad.utils.data`` = ``torch.utils.data``: the PyTorch import path over ``handgrad.data``.

    from handgrad.utils.data import DataLoader, Dataset, TensorDataset, random_split

Everything here is defined in ``handgrad.data`` (datasets, the DataLoader and its worker processes,
samplers); this module only gives it PyTorch's address.
"""

from handgrad.data._workers import WorkerInfo, get_worker_info
from handgrad.data.dataloader import DataLoader, default_collate
from handgrad.data.dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from handgrad.data.iterable import ChainDataset, IterableDataset
from handgrad.data.sampler import (
    BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler, WeightedRandomSampler,
)

__all__ = [
    "BatchSampler", "ChainDataset", "ConcatDataset", "DataLoader", "Dataset", "IterableDataset", "RandomSampler",
    "Sampler", "SequentialSampler", "Subset", "SubsetRandomSampler", "TensorDataset", "WeightedRandomSampler",
    "WorkerInfo", "default_collate", "get_worker_info", "random_split",
]
