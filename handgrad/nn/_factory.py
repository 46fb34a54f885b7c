"""The ``device`` / ``dtype`` factory arguments that PyTorch's layers take, resolved for NumPy."""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_default_dtype


def param_dtype(owner: str, device: Any, dtype: Any) -> numpy.dtype:
    """The dtype for a new layer's parameters (the default float dtype unless given). ``device`` exists for
    PyTorch signature compatibility; only None / 'cpu' are meaningful here."""
    if device is not None and str(device) != "cpu":
        raise ValueError(f"{owner}: device {device!r} is not supported (parameters live in NumPy arrays: use 'cpu')")
    d = get_default_dtype() if dtype is None else numpy.dtype(dtype)
    if d.kind != "f":
        raise TypeError(f"{owner}: parameters must have a floating dtype, got {d}")
    return d
