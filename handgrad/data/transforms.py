"""Image transforms as plain functions, vectorised over a batch (not differentiable: data preparation only).

Shape convention: images are ``(..., H, W)`` and the random transforms treat the FIRST axis as the batch,
drawing independently for each sample: ``(N, H, W)`` or ``(N, C, H, W)``. A single ``(H, W)`` image is a
batch of one; a single ``(C, H, W)`` image must be given as ``x[None]``. Every function takes a NumPy (or
CuPy) array or a handgrad Tensor and returns the same kind. Randomness comes from ``generator`` (a NumPy
Generator or an int seed) or, by default, handgrad's global generator (``handgrad.manual_seed``).

Compose([f, g]) applies f then g; use ``functools.partial`` to fix arguments:
``Compose([to_float, partial(normalize, mean=0.2860, std=0.3530)])``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy

from handgrad.data.dataset import resolve_generator
from handgrad.engine.backend import get_array_module, get_default_dtype
from handgrad.engine.tensor import Tensor

__all__ = ["Compose", "to_float", "normalize", "random_crop", "random_horizontal_flip", "FASHION_MNIST_MEAN",
           "FASHION_MNIST_STD", "MNIST_MEAN", "MNIST_STD"]

# Per-pixel mean / std of the training images after to_float (the values torchvision users quote).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530


def _unwrap(x: Any) -> tuple[Any, bool]:
    return (x.array, True) if isinstance(x, Tensor) else (x, False)


def _wrap(a: Any, was_tensor: bool) -> Any:
    return Tensor(a) if was_tensor else a


class Compose:
    """Chain transforms: ``Compose([f, g])(x) == g(f(x))`` (``torchvision.transforms.Compose``)."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        for t in transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable")
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        inner = ", ".join(getattr(t, "__name__", repr(t)) for t in self.transforms)
        return f"Compose([{inner}])"


def to_float(x: Any, dtype: Any = None) -> Any:
    """uint8 pixels in [0, 255] -> floats in [0, 1] (``x / 255``); other dtypes are only cast.

    ``dtype`` defaults to handgrad's default float dtype (float32 unless changed).
    """
    a, was_t = _unwrap(x)
    xp = get_array_module(a)
    a = xp.asarray(a)
    dt = numpy.dtype(dtype) if dtype is not None else get_default_dtype()
    if dt.kind != "f":
        raise TypeError(f"to_float: dtype must be floating, got {dt}")
    out = a.astype(dt)
    if a.dtype == numpy.uint8:
        out /= dt.type(255)
    return _wrap(out, was_t)


def normalize(x: Any, mean: float | Sequence[float], std: float | Sequence[float]) -> Any:
    """``(x - mean) / std``; per-channel when ``mean``/``std`` are sequences of length C.

    Shapes: x ``(..., C, H, W)`` with per-channel statistics (channel axis -3, as in torchvision), or any
    shape with scalar statistics. Integer input is converted with ``to_float`` first.
    """
    a, was_t = _unwrap(x)
    xp = get_array_module(a)
    a = xp.asarray(a)
    if a.dtype.kind != "f":
        a = to_float(a)
    m = numpy.asarray(mean, dtype=a.dtype)
    s = numpy.asarray(std, dtype=a.dtype)
    if m.ndim > 1 or s.ndim > 1:
        raise ValueError(f"normalize: mean and std must be scalars or 1-D, got shapes {m.shape} and {s.shape}")
    if numpy.any(s == 0):
        raise ValueError(f"normalize: std contains a zero ({s.tolist()}), which would divide by zero")
    if m.ndim == 1 or s.ndim == 1:
        c = max(m.size, s.size)
        if (m.ndim == 1 and m.size != c) or (s.ndim == 1 and s.size != c):
            raise ValueError(f"normalize: mean has {m.size} values but std has {s.size}")
        if a.ndim < 3 or a.shape[-3] != c:
            raise ValueError(f"normalize: input {tuple(a.shape)} has no channel axis of size {c} at dim -3 "
                             f"(expected (..., {c}, H, W)) for {c} per-channel values")
        m = m.reshape(-1, 1, 1) if m.ndim == 1 else m
        s = s.reshape(-1, 1, 1) if s.ndim == 1 else s
    return _wrap((a - xp.asarray(m)) / xp.asarray(s), was_t)


def _as_batch(a: Any, fn: str) -> tuple[Any, bool]:
    if a.ndim < 2:
        raise ValueError(f"{fn}: expected images (N, ..., H, W) or one (H, W) image, got shape {tuple(a.shape)}")
    return (a[None], True) if a.ndim == 2 else (a, False)


def random_crop(x: Any, size: int | Sequence[int], padding: int | Sequence[int] | None = None, fill: float = 0,
                padding_mode: str = "constant", generator: numpy.random.Generator | int | None = None) -> Any:
    """Pad, then cut an ``(h, w)`` window at an independent random position for each sample.

    x: ``(N, ..., H, W)`` (or one ``(H, W)`` image). size: ``h`` or ``(h, w)``. padding: pixels added on
    every side (int), ``(left/right, top/bottom)`` or ``(left, top, right, bottom)`` as in torchvision.
    padding_mode: ``constant`` (with ``fill``), ``edge``, ``reflect`` or ``symmetric``.
    Returns ``(N, ..., h, w)``. Offsets are uniform over every valid position of the padded image.
    """
    a, was_t = _unwrap(x)
    xp = get_array_module(a)
    a, single = _as_batch(xp.asarray(a), "random_crop")
    h, w = (size, size) if isinstance(size, (int, numpy.integer)) else tuple(int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"random_crop: size must be positive, got {(h, w)}")
    if padding is not None:
        p = [padding] * 4 if isinstance(padding, (int, numpy.integer)) else list(padding)
        if len(p) == 2:
            p = [p[0], p[1], p[0], p[1]]
        if len(p) != 4 or any(v < 0 for v in p):
            raise ValueError(f"random_crop: padding must be a non-negative int or 2 or 4 ints, got {padding!r}")
        left, top, right, bottom = (int(v) for v in p)
        if padding_mode not in ("constant", "edge", "reflect", "symmetric"):
            raise ValueError(f"random_crop: padding_mode must be constant, edge, reflect or symmetric, "
                             f"got {padding_mode!r}")
        widths = [(0, 0)] * (a.ndim - 2) + [(top, bottom), (left, right)]
        kw = {"constant_values": fill} if padding_mode == "constant" else {}
        a = xp.pad(a, widths, mode=padding_mode, **kw)
    H, W = a.shape[-2:]
    if h > H or w > W:
        raise ValueError(f"random_crop: crop size {(h, w)} is larger than the (padded) image {(H, W)}")
    rng = resolve_generator(generator)
    n = a.shape[0]
    oy = rng.integers(0, H - h + 1, size=n)
    ox = rng.integers(0, W - w + 1, size=n)
    # All windows as a strided view (no copy), then one gather of each sample's window.
    windows = xp.lib.stride_tricks.sliding_window_view(a, (h, w), axis=(-2, -1))  # (N, ..., H-h+1, W-w+1, h, w)
    mid = (slice(None),) * (a.ndim - 3)
    # With slices between the advanced indices NumPy puts the batch axis first: (N, ..., h, w) either way.
    out = windows[(xp.arange(n), *mid, xp.asarray(oy), xp.asarray(ox))]
    out = xp.ascontiguousarray(out)
    return _wrap(out[0] if single else out, was_t)


def random_horizontal_flip(x: Any, p: float = 0.5, generator: numpy.random.Generator | int | None = None) -> Any:
    """Mirror each sample left-right (last axis) with probability ``p``, independently.

    x: ``(N, ..., H, W)`` (or one ``(H, W)`` image); same shape out.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random_horizontal_flip: p must lie in [0, 1], got {p}")
    a, was_t = _unwrap(x)
    xp = get_array_module(a)
    a, single = _as_batch(xp.asarray(a), "random_horizontal_flip")
    flip = resolve_generator(generator).random(a.shape[0]) < p
    mask = xp.asarray(flip).reshape((-1,) + (1,) * (a.ndim - 1))
    out = xp.where(mask, a[..., ::-1], a)
    return _wrap(out[0] if single else out, was_t)
