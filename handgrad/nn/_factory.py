"""The ``device`` / ``dtype`` factory arguments that PyTorch's layers take."""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_default_dtype, get_device


def param_dtype(owner: str, device: Any, dtype: Any) -> numpy.dtype:
    """The dtype for a new layer's parameters (the default float dtype unless given). ``device`` is checked
    here (an unknown name, or ``"cuda"`` without CuPy, fails before any work); the layer then places itself
    there with ``place``."""
    if device is not None:
        try:
            get_device(device)
        except (RuntimeError, ValueError, TypeError) as e:
            raise type(e)(f"{owner}: {e}") from None
    d = get_default_dtype() if dtype is None else numpy.dtype(dtype)
    if d.kind != "f":
        raise TypeError(f"{owner}: parameters must have a floating dtype, got {d}")
    return d


def place(module: Any, device: Any) -> None:
    """Move a freshly initialised layer to ``device`` (nothing for None / cpu). Layers draw their initial
    weights on the CPU generator and then move, so a seed gives the same weights on every device."""
    if device is not None:
        module.to(device=device)
