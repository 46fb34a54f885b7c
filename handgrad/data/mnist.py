"""MNIST (LeCun, Cortes & Burges): 70,000 handwritten digits, 28x28 uint8, from the four original IDX files.

No Debian package carries MNIST, so the files come from your own copy (``root=``, ``$HANDGRAD_MNIST``, or
``$HANDGRAD_DATA/mnist``) or from ``download=True`` on a machine with internet: the four official files
from the mirror torchvision uses (the original page no longer serves them), checked against SHA-256 sums
and sizes before they are renamed into place.

The folder may hold the files gzipped (as distributed) or not, and may also be laid out as torchvision
does it (``ROOT/MNIST/raw/``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy

from handgrad.data._paths import data_dir
from handgrad.data.dataset import Dataset
from handgrad.data.download import Resource, download_resources
from handgrad.data.idx import read_idx

__all__ = ["MNIST", "load_mnist", "download_mnist", "MNIST_RESOURCES", "MNIST_MIRRORS"]

# SHA-256 and sizes of the official gzipped files: published by several independent projects (e.g.
# TensorFlow Datasets' url checksums) and agreeing with each other; the MD5s are torchvision's.
MNIST_RESOURCES: tuple[Resource, ...] = (
    Resource("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
             9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    Resource("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
             28881, "d53e105ee54ea40749a09fcbcd1e9432"),
    Resource("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
             1648877, "9fb629c4189551a2d022fa330f9573f3"),
    Resource("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
             4542, "ec29112dd5afa0611ce80d1b7f02629c"),
)
MNIST_MIRRORS: list[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


class IDXImageDataset(Dataset):
    """Shared machinery of MNIST-style datasets: four IDX files, uint8 images, int64 labels.

    ``dataset[i]`` is ``(image, label)`` with ``image`` a ``(28, 28)`` uint8 array (after ``transform``) and
    ``label`` an int (after ``target_transform``). Without transforms, a DataLoader fetches whole batches by
    indexing ``data``/``targets`` with the batch's index vector.
    """

    name: ClassVar[str] = ""
    env_var: ClassVar[str] = ""
    subdir: ClassVar[str] = ""
    torchvision_dir: ClassVar[str] = ""
    resources: ClassVar[Sequence[Resource]] = ()
    mirrors: ClassVar[Sequence[str]] = ()
    classes: ClassVar[list[str]] = []
    how_to_get: ClassVar[str] = ""

    def __init__(self, root: str | os.PathLike[str] | None = None, train: bool = True, download: bool = False,
                 transform: Callable[[Any], Any] | None = None,
                 target_transform: Callable[[Any], Any] | None = None) -> None:
        self.train = bool(train)
        self.transform = transform
        self.target_transform = target_transform
        self.root = self._resolve(root, download)
        self.data, self.targets = self._read(self.root, self.train)

    # -- where the files are ---------------------------------------------------------------------------
    @classmethod
    def default_roots(cls) -> list[Path]:
        """The folders searched, in order, when no ``root`` is given."""
        roots = []
        if os.environ.get(cls.env_var):
            roots.append(Path(os.environ[cls.env_var]).expanduser())
        roots.extend(cls._system_roots())
        roots.append(data_dir() / cls.subdir)
        return roots

    @classmethod
    def _system_roots(cls) -> list[Path]:
        return []

    @classmethod
    def _complete(cls, folder: Path) -> Path | None:
        """``folder`` or its torchvision-style ``NAME/raw`` subfolder, if it holds all four files."""
        for f in (folder, folder / cls.torchvision_dir / "raw"):
            if all(_find(f, r.filename[:-3]) for r in cls.resources):
                return f
        return None

    @classmethod
    def _resolve(cls, root: str | os.PathLike[str] | None, download: bool) -> Path:
        env = os.environ.get(cls.env_var) if cls.env_var else None
        if root is None and env:  # the user named a folder: a wrong one is an error, not a silent fallback
            folder = Path(env).expanduser()
            if cls._complete(folder) is None:
                what = "does not exist" if not folder.exists() else (
                    "is not a folder" if not folder.is_dir() else "does not hold the four IDX files")
                raise FileNotFoundError(
                    f"{cls.name}: {cls.env_var}={env} {what} "
                    f"({', '.join(r.filename for r in cls.resources)}, gzipped or not); fix it or unset it"
                )
        candidates = [Path(root).expanduser()] if root is not None else cls.default_roots()
        for c in candidates:
            found = cls._complete(c)
            if found is not None:
                return found
        if download:
            target = Path(root).expanduser() if root is not None else data_dir() / cls.subdir
            download_resources(target, cls.resources, cls.mirrors, what=cls.name)
            return target
        looked = ", ".join(f"'{c}'" for c in candidates)
        files = ", ".join(r.filename for r in cls.resources)
        raise FileNotFoundError(
            f"{cls.name}: dataset not found (looked in {looked} for {files}, gzipped or not). "
            f"{cls.how_to_get} Or point {cls.env_var} (or root=) at a folder holding your own copy, or pass "
            f"download=True on a machine with internet to fetch it into '{data_dir() / cls.subdir}'."
        )

    @classmethod
    def _read(cls, folder: Path, train: bool) -> tuple[numpy.ndarray, numpy.ndarray]:
        prefix = "train" if train else "t10k"
        images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{cls.name}: '{folder}' has images {images.shape} and labels {labels.shape}; expected "
                "(N, H, W) images and (N,) labels"
            )
        return images.astype(numpy.uint8, copy=False), labels.astype(numpy.int64)

    # -- Dataset protocol -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img, target = self.data[index], int(self.targets[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def _get_batch(self, indices: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray] | None:
        if self.transform is not None or self.target_transform is not None:
            return None  # per-item transforms: the DataLoader falls back to dataset[i] + collate
        return self.data[indices], self.targets[indices]

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}(split={split}, n={len(self)}, root='{self.root}')"


class MNIST(IDXImageDataset):
    """MNIST digits: 60,000 train / 10,000 test, 28x28 uint8, labels 0-9 (same API as torchvision's)."""

    name = "MNIST"
    env_var = "HANDGRAD_MNIST"
    subdir = "mnist"
    torchvision_dir = "MNIST"
    resources = MNIST_RESOURCES
    mirrors = MNIST_MIRRORS
    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven",
               "8 - eight", "9 - nine"]
    how_to_get = "No Debian package carries MNIST."


def load_mnist(train: bool = True, root: str | os.PathLike[str] | None = None,
               download: bool = False) -> tuple[numpy.ndarray, numpy.ndarray]:
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` for the MNIST train (60,000) or test (10,000) split."""
    ds = MNIST(root, train=train, download=download)
    return ds.data, ds.targets


def download_mnist(root: str | os.PathLike[str] | None = None, mirrors: Sequence[str] | None = None,
                   resources: Sequence[Resource] | None = None) -> Path:
    """Fetch the four MNIST files (SHA-256 checked) into ``root`` (default ``$HANDGRAD_DATA/mnist``).

    ``mirrors`` (URL prefixes) and ``resources`` (names + checksums) override the official ones.
    """
    target = Path(root).expanduser() if root is not None else data_dir() / MNIST.subdir
    download_resources(target, resources or MNIST.resources, mirrors or MNIST.mirrors, what="MNIST")
    return target
