"""Shared plumbing for the CNN functional ops: argument parsing, memory layouts, im2col / col2im.

Layout convention. Every 4-D op takes and returns tensors whose *logical* shape is NCHW, like PyTorch.
Internally the conv and pooling ops compute in NHWC (channels-last) *memory*: they return
``y_nhwc.transpose(0, 3, 1, 2)``, an NCHW-shaped view of channels-last memory. NumPy respects the logical
shape everywhere (elementwise ops keep the input's memory order, reshape copies in logical order when it
must), so results are identical; only speed changes. The next conv or pool then gets its channels-last
view back for free, the im2col copy reads contiguous runs of C values, and col2im adds contiguous runs.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.functional import _cnn_kernels


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def pair(value: Any, name: str, op: str) -> tuple[int, int]:
    """An int or a 1- or 2-sequence of ints as a 2-tuple (``kernel_size=3`` -> ``(3, 3)``); NumPy integers
    count as ints."""
    if _is_int(value):
        return int(value), int(value)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) in (1, 2) and \
            all(_is_int(v) for v in value):
        return int(value[0]), int(value[-1])
    raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")


def to_nhwc(a: Any) -> Any:
    """The channels-last view (N, H, W, C) of a logical NCHW array (no copy)."""
    return a.transpose(0, 2, 3, 1)


def from_nhwc(a: Any) -> Any:
    """The logical NCHW view (N, C, H, W) of a channels-last array (no copy)."""
    return a.transpose(0, 3, 1, 2)


def pad_nhwc(x: Any, pads: tuple[int, int, int, int], value: float = 0.0) -> Any:
    """Pad the H and W axes of an (N, H, W, C) array by ``(top, bottom, left, right)``.

    Returns ``x`` itself (any memory layout) when there is nothing to pad, else a new C-contiguous array.
    """
    top, bottom, left, right = pads
    if not (top or bottom or left or right):
        return x
    xp = get_array_module(x)
    n, h, w, c = x.shape
    out = xp.empty((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
    if value == 0.0:
        out.fill(0)
    else:
        out.fill(value)
    out[:, top : top + h, left : left + w, :] = x
    return out


def windows(xpad: Any, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int], out: tuple[int, int]) -> Any:
    """A strided view (N, Ho, Wo, kh, kw, C) of an (N, Hp, Wp, C) array: element
    ``[n, i, j, p, q, c] = xpad[n, i*sh + p*dh, j*sw + q*dw, c]``. Nothing is copied. Overlapping windows
    share memory: never write into it. Read-only on NumPy; CuPy's ``as_strided`` has no ``writeable``."""
    xp = get_array_module(xpad)
    sn, sh_, sw_, sc = xpad.strides
    n, c = xpad.shape[0], xpad.shape[3]
    shape = (n, out[0], out[1], k[0], k[1], c)
    strides = (sn, sh_ * s[0], sw_ * s[1], sh_ * d[0], sw_ * d[1], sc)
    if xp is numpy:
        return numpy.lib.stride_tricks.as_strided(xpad, shape=shape, strides=strides, writeable=False)
    return xp.lib.stride_tricks.as_strided(xpad, shape=shape, strides=strides)


def im2col(xpad: Any, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int], out: tuple[int, int],
           groups: int) -> Any:
    """The patch matrix of an (N, Hp, Wp, C) array, one row per output pixel, split by group:
    shape (G, N*Ho*Wo, kh*kw*C/G) with the columns ordered (kh, kw, c) so that C is innermost."""
    n, c = xpad.shape[0], xpad.shape[3]
    win = windows(xpad, k, s, d, out)  # (N, Ho, Wo, kh, kw, C), a view
    m, cg = n * out[0] * out[1], c // groups
    if groups == 1:
        return win.reshape(1, m, k[0] * k[1] * c)  # the one copy of the forward pass
    win = win.reshape(n, out[0], out[1], k[0], k[1], groups, cg).transpose(5, 0, 1, 2, 3, 4, 6)
    return win.reshape(groups, m, k[0] * k[1] * cg)


def col2im(cols: Any, padded_shape: tuple[int, int, int, int], k: tuple[int, int], s: tuple[int, int],
           d: tuple[int, int], out: tuple[int, int], groups: int) -> Any:
    """The adjoint of ``im2col``: scatter-add a (G, N*Ho*Wo, kh*kw*C/G) patch matrix back into a new
    (N, Hp, Wp, C) array.

    One vectorised strided add per kernel offset (p, q): ``xpad[:, p*dh :: sh, q*dw :: sw, :] +=
    cols[..., p, q, :]`` (kh*kw adds in all, never a loop over pixels), or, when that is faster, one per
    (kernel row p, output column j) moving whole contiguous (kw, C) blocks. Offsets that cannot overlap
    (the kernel tiles the input) are written with plain assignment. A 1x1 kernel at stride 1 over an unpadded
    input with one group scatters each row to its own pixel: the patch matrix is the image, returned reshaped
    (no copy; the caller's fresh GEMM output).
    """
    if k == (1, 1) and s == (1, 1) and groups == 1 and tuple(padded_shape[1:3]) == tuple(out):
        return cols.reshape(padded_shape)
    xp = get_array_module(cols)
    if _cnn_kernels.usable(xp, cols, groups, d[1]):  # compiled: one pass over cols (same numbers)
        return _cnn_kernels.col2im(cols, padded_shape, k, s, d, out)
    n, hp, wp, c = padded_shape
    kh, kw = k
    cg = c // groups
    ho, wo = out
    # (G, M, K) -> (N, Ho, Wo, kh, kw, G, Cg): a view, so each offset's slab is read in place
    v = cols.reshape(groups, n, ho, wo, kh, kw, cg).transpose(1, 2, 3, 4, 5, 0, 6)
    # offsets never overlap when each window's span fits in one stride; they cover every cell of xpad
    # when, moreover, windows are dense (no dilation gaps) and tile it exactly
    tiles = all(s[a] >= d[a] * (k[a] - 1) + 1 for a in (0, 1))
    covered = tiles and all(
        (d[a] == 1 or k[a] == 1) and s[a] == k[a] and padded_shape[1 + a] == out[a] * s[a] for a in (0, 1)
    )
    xpad = xp.empty(padded_shape, cols.dtype) if covered else xp.zeros(padded_shape, cols.dtype)
    if groups == 1 and d[1] == 1 and 1 < kw and kw * c >= 16 and wo <= 64:
        # Loop over output columns j instead of kernel columns q: for a fixed (p, j) the (q, c) block is
        # contiguous in both cols and xpad, so each add moves runs of kw*C values instead of C. NumPy's
        # short inner loops were the cost: this halves col2im on LeNet's conv2 (Wo = 8, kw*C = 160).
        v2 = cols.reshape(n, ho, wo, kh, kw * c)
        xr = xpad.reshape(n, hp, wp * c)
        for p in range(kh):
            hs = slice(p * d[0], p * d[0] + s[0] * (ho - 1) + 1, s[0])
            for j in range(wo):
                w0 = j * s[1] * c
                if tiles:
                    xr[:, hs, w0 : w0 + kw * c] = v2[:, :, j, p]
                else:
                    xr[:, hs, w0 : w0 + kw * c] += v2[:, :, j, p]
        return xpad
    xv = xpad.reshape(n, hp, wp, groups, cg)
    for p in range(kh):
        h0 = p * d[0]
        hs = slice(h0, h0 + s[0] * (ho - 1) + 1, s[0])
        for q in range(kw):
            w0 = q * d[1]
            ws = slice(w0, w0 + s[1] * (wo - 1) + 1, s[1])
            if tiles:
                xv[:, hs, ws] = v[:, :, :, p, q]
            else:
                xv[:, hs, ws] += v[:, :, :, p, q]
    return xpad


def conv_out_size(size: int, k: int, s: int, p_total: int, d: int) -> int:
    """floor((size + pads - d*(k-1) - 1) / s) + 1, the conv/pool output length without ceil mode."""
    return (size + p_total - d * (k - 1) - 1) // s + 1


def shape_str(t: Any) -> str:
    return str(tuple(t.shape))
