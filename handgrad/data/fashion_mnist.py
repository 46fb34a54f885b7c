"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, Zalando Research, MIT licence): 70,000 28x28 uint8 clothing
images in 10 classes, read from the four original IDX files.

Where the files are looked for, in order: ``root=`` if given; else ``$HANDGRAD_FASHION_MNIST``; else
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``, which ``setup.sh`` installs);
else ``$HANDGRAD_DATA/fashion-mnist`` (default ``~/.cache/handgrad/fashion-mnist``), where
``download=True`` puts the official files after checking their SHA-256 sums and sizes.

Debian re-gzipped the files (their ``.gz`` bytes differ from the official ones) but the decompressed IDX
data are the same 60,000 + 10,000 images; the checksums below are only applied to downloads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy

from handgrad.data._paths import data_dir
from handgrad.data.download import Resource, download_resources
from handgrad.data.mnist import IDXImageDataset

__all__ = ["FashionMNIST", "load_fashion_mnist", "download_fashion_mnist", "FASHION_MNIST_RESOURCES",
           "FASHION_MNIST_MIRRORS", "DEBIAN_FASHION_MNIST"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# SHA-256 and sizes of the official files (as served by Zalando's S3 bucket and GitHub repository),
# published by several independent projects that agree; the MD5s are the ones torchvision checks.
FASHION_MNIST_RESOURCES: tuple[Resource, ...] = (
    Resource("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
             26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    Resource("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
             29515, "25c81989df183df01b3e8a0aad5dffbe"),
    Resource("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
             4422102, "bef4ecab320f06d8554ea6380940ec79"),
    Resource("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
             5148, "bb300cfdad3c16e7a12a480ee83cd310"),
)
FASHION_MNIST_MIRRORS: list[str] = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
]


class FashionMNIST(IDXImageDataset):
    """Fashion-MNIST: 60,000 train / 10,000 test, 28x28 uint8, 10 classes (same API as torchvision's)."""

    name = "FashionMNIST"
    env_var = "HANDGRAD_FASHION_MNIST"
    subdir = "fashion-mnist"
    torchvision_dir = "FashionMNIST"
    resources = FASHION_MNIST_RESOURCES
    mirrors = FASHION_MNIST_MIRRORS
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
    how_to_get = "Install it with `bash setup.sh` (Debian package dataset-fashion-mnist)."

    @classmethod
    def _system_roots(cls) -> list[Path]:
        return [DEBIAN_FASHION_MNIST]


def load_fashion_mnist(train: bool = True, root: str | os.PathLike[str] | None = None,
                       download: bool = False) -> tuple[numpy.ndarray, numpy.ndarray]:
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` for the train (60,000) or test (10,000) split."""
    ds = FashionMNIST(root, train=train, download=download)
    return ds.data, ds.targets


def download_fashion_mnist(root: str | os.PathLike[str] | None = None, mirrors: Sequence[str] | None = None,
                           resources: Sequence[Resource] | None = None) -> Path:
    """Fetch the four official files (SHA-256 checked) into ``root`` (default ``$HANDGRAD_DATA/fashion-mnist``).

    ``mirrors`` (URL prefixes) and ``resources`` (names + checksums) override the official ones.
    """
    target = Path(root).expanduser() if root is not None else data_dir() / FashionMNIST.subdir
    download_resources(target, resources or FashionMNIST.resources, mirrors or FashionMNIST.mirrors,
                       what="FashionMNIST")
    return target
