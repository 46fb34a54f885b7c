"""OpenCV's handwritten digits: 5,000 digits of 20x20 pixels, 500 per class, shipped inside handgrad.

Source: ``samples/data/digits.png`` of OpenCV (Debian package ``opencv-doc``,
``/usr/share/doc/opencv-doc/examples/data/digits.png``), a 2000x1000 grey image tiled with 20x20 cells:
50 rows of 100 digits, rows 0-4 are zeros, rows 5-9 ones, ... (500 per class, in row order). The file
(721 KB) is shipped unchanged as ``handgrad/data/files/digits.png`` (licence in ``files/LICENSES.md``).

Not to be confused with scikit-learn's ``load_digits`` (1,797 8x8 UCI digits).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy

from handgrad.data._paths import PACKAGE_FILES
from handgrad.data.dataset import Dataset

__all__ = ["load_digits", "Digits", "DIGITS_PNG", "DIGITS_SHA256"]

DIGITS_PNG = PACKAGE_FILES / "digits.png"
DIGITS_SHA256 = "60c917758ef97cc090f35cd8e293e4de691ef942847da0ff80dedab33d57c662"  # opencv-doc 4.6.0
_CELL, _ROWS, _COLS, _PER_CLASS = 20, 50, 100, 500


def load_digits(path: str | os.PathLike[str] | None = None) -> tuple[numpy.ndarray, numpy.ndarray]:
    """``(images uint8 (5000, 20, 20), labels int64 (5000,))``, labels ``0,0,...,1,1,...,9`` (500 each).

    ``path``: another copy of ``digits.png`` (e.g. from ``opencv-doc``); default the one shipped in handgrad.
    """
    from PIL import Image

    p = Path(path) if path is not None else DIGITS_PNG
    if not p.is_file():
        raise FileNotFoundError(
            f"load_digits: no file at '{p}'. The image ships with handgrad as {DIGITS_PNG}; reinstall the "
            "package, or pass path= to OpenCV's samples/data/digits.png (Debian: apt-get download opencv-doc)"
        )
    with Image.open(p) as im:
        gray = numpy.asarray(im.convert("L"), dtype=numpy.uint8)
    if gray.shape != (_ROWS * _CELL, _COLS * _CELL):
        raise ValueError(f"load_digits: '{p}' is {gray.shape[1]}x{gray.shape[0]} pixels; OpenCV's digits.png "
                         f"is {_COLS * _CELL}x{_ROWS * _CELL}")
    # (rows, cell_y, cols, cell_x) -> (rows, cols, cell_y, cell_x): cells in row order.
    cells = gray.reshape(_ROWS, _CELL, _COLS, _CELL).transpose(0, 2, 1, 3).reshape(-1, _CELL, _CELL)
    labels = numpy.repeat(numpy.arange(10, dtype=numpy.int64), _PER_CLASS)
    return numpy.ascontiguousarray(cells), labels


class Digits(Dataset):
    """The 5,000 OpenCV digits as a Dataset: ``(image uint8 (20, 20), label int)``.

    There is no official split; use ``random_split`` (e.g. ``random_split(Digits(), [0.8, 0.2], seed)``).
    """

    classes = [str(i) for i in range(10)]

    def __init__(self, path: str | os.PathLike[str] | None = None, transform: Callable[[Any], Any] | None = None,
                 target_transform: Callable[[Any], Any] | None = None) -> None:
        self.data, self.targets = load_digits(path)
        self.transform = transform
        self.target_transform = target_transform

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
            return None
        return self.data[indices], self.targets[indices]
