"""Data: datasets, the DataLoader, transforms, dataset loaders (``torch.utils.data`` names).

See ``handgrad/data/README.md`` for every dataset: where it comes from, its licence, how it is installed
and how to point a loader at your own copy.
"""

from handgrad.data._paths import data_dir
from handgrad.data.dataloader import DataLoader, default_collate
from handgrad.data.dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from handgrad.data.digits import Digits, load_digits
from handgrad.data.fashion_mnist import FashionMNIST, download_fashion_mnist, load_fashion_mnist
from handgrad.data.idx import read_idx, write_idx
from handgrad.data.mnist import MNIST, download_mnist, load_mnist
from handgrad.data.text import load_shakespeare
from handgrad.data import transforms
