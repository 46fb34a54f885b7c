"""2-D pooling: max, average, adaptive average and adaptive max, with hand-written backward.

All pools slide a kh x kw window with stride s, padding p and (max only) dilation d over the H, W axes of
an (N, C, H, W) input; Ho = floor-or-ceil((H + 2p - d*(kh-1) - 1) / s) + 1, with PyTorch's rule that in
ceil mode the last window must start inside the input or its left padding.

Instead of materialising windows, the forward loops over the kh*kw kernel offsets (p, q) and combines
whole strided slabs ``xpad[:, p*d :: s, q*d :: s]`` (vectorised over N, C, Ho, Wo); so does the backward.

* max:  y = max over offsets; ``idx`` (int8/int16) records the first offset attaining it (PyTorch's
  tie rule), so dx[offset k] += dy * [idx == k]: one compare-and-multiply per offset, no index arithmetic.
* avg:  y = (sum over offsets) / divisor, the divisor a separable (Ho, Wo) table following PyTorch's
  ``count_include_pad`` and ``divisor_override``; dx[offset k] += dy / divisor.
* adaptive avg: cell i covers rows [floor(i*H/Ho), ceil((i+1)*H/Ho)); the average is separable, so
  y = A_h x A_w^T with averaging matrices A (Ho, H), A (Wo, W); dx = A_h^T dy A_w.

Pools run on whichever memory layout the input has (channels-last views from conv stay channels-last).
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor
from handgrad.functional import _pool_kernels
from handgrad.functional._cnn_util import pair, shape_str


# -- geometry ----------------------------------------------------------------------------------------------
def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's ``pooling_output_shape``."""
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _spatial_view(x: Any) -> tuple[Any, tuple[int, ...]]:
    """A 4-D view of x with the spatial axes at positions 1, 2 (N, H, W, C) when x is channels-last in
    memory, else x itself with them at 2, 3; plus the permutation that restores NCHW."""
    if x.shape[1] > 1 and x.strides[1] < x.strides[3]:  # channels are the faster axis: work channels-last
        return x.transpose(0, 2, 3, 1), (0, 3, 1, 2)
    return x, (0, 1, 2, 3)


def _axes(perm: tuple[int, ...]) -> tuple[int, int]:
    return (1, 2) if perm == (0, 3, 1, 2) else (2, 3)


def _padded(xv: Any, ax: tuple[int, int], before: tuple[int, int], after: tuple[int, int], value: float) -> Any:
    """xv with ``before``/``after`` cells of ``value`` added on its two spatial axes (xv itself if none)."""
    if not any(before) and not any(after):
        return xv
    xp = get_array_module(xv)
    shape = list(xv.shape)
    for a, b0, b1 in zip(ax, before, after):
        shape[a] += b0 + b1
    out = xp.full(shape, value, dtype=xv.dtype)
    idx = [slice(None)] * 4
    for a, b0 in zip(ax, before):
        idx[a] = slice(b0, b0 + xv.shape[a])
    out[tuple(idx)] = xv
    return out


def _slab(ax: tuple[int, int], p: int, q: int, s: tuple[int, int], d: tuple[int, int],
          out: tuple[int, int]) -> tuple[slice, ...]:
    """The index of kernel offset (p, q)'s strided slab: rows p*dh, p*dh + sh, ... (Ho of them)."""
    idx = [slice(None)] * 4
    idx[ax[0]] = slice(p * d[0], p * d[0] + s[0] * (out[0] - 1) + 1, s[0])
    idx[ax[1]] = slice(q * d[1], q * d[1] + s[1] * (out[1] - 1) + 1, s[1])
    return tuple(idx)


class _Geometry:
    """Everything a pool needs about its window: kernel, stride, padding, dilation, output size, and the
    extra padding on the bottom/right that ceil mode may need so that every slab stays in range."""

    def __init__(self, h: int, w: int, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int],
                 d: tuple[int, int], ceil_mode: bool) -> None:
        self.k, self.s, self.p, self.d = k, s, p, d
        self.out = (_pool_out(h, k[0], s[0], p[0], d[0], ceil_mode), _pool_out(w, k[1], s[1], p[1], d[1], ceil_mode))
        need = [(self.out[a] - 1) * s[a] + d[a] * (k[a] - 1) + 1 for a in (0, 1)]
        self.after = (max(need[0] - h - p[0], 0), max(need[1] - w - p[1], 0))
        self.size = (h, w)


# -- max pooling -------------------------------------------------------------------------------------------
class MaxPool2dFunction(Function):
    """y[n, c, i, j] = max_{p, q} xpad[n, c, i*sh + p*dh, j*sw + q*dw] (xpad padded with -inf);
    dx = dy routed to the first arg-max of each window in (p, q) scan order, PyTorch's tie rule
    (accumulated where windows overlap).

    The forward is only kh*kw - 1 in-place ``maximum`` calls; the arg-max masks are rebuilt in the
    backward from the saved input and output (one compare per offset), which is cheaper than tracking an
    index array through the forward. With numba (``_pool_kernels``), for float32/float64 NumPy arrays, both
    run compiled instead: one pass keeping the arg-max offsets, one masked scatter back.
    """

    def __init__(self, geo: _Geometry) -> None:
        self.geo = geo

    def forward(self, x: Any) -> Any:
        g = self.geo
        xp = get_array_module(x)
        xv, perm = _spatial_view(x)
        ax = _axes(perm)
        xpad = _padded(xv, ax, g.p, g.after, -numpy.inf)
        self.idx = None
        if _pool_kernels.usable(xp, xpad):  # compiled: one pass, arg-max offsets kept for the backward
            y, self.idx = _pool_kernels.max_pool_forward(xpad, ax == (1, 2), g.k, g.s, g.d, g.out)
            self.xpad, self.y, self.perm, self.ax = xpad, y, perm, ax
            return y.transpose(perm)
        y = None
        for p in range(g.k[0]):
            for q in range(g.k[1]):
                sl = xpad[_slab(ax, p, q, g.s, g.d, g.out)]
                if y is None:
                    y = sl.copy()
                else:
                    xp.maximum(y, sl, out=y)  # maximum propagates NaN, like PyTorch
        self.xpad, self.y, self.perm, self.ax = xpad, y, perm, ax
        return y.transpose(perm)

    def _masks(self) -> Any:
        """Yield (slab index, mask of outputs whose first arg-max is this kernel offset), offset by offset."""
        g, y = self.geo, self.y
        xp = get_array_module(y)
        nan = bool(xp.isnan(y).any())
        claimed = None
        last = g.k[0] * g.k[1] - 1
        k = 0
        for p in range(g.k[0]):
            for q in range(g.k[1]):
                sl = _slab(self.ax, p, q, g.s, g.d, g.out)
                v = self.xpad[sl]
                m = v == y
                if nan:
                    m |= xp.isnan(v)
                if claimed is None:
                    claimed = m.copy() if k < last else m
                else:
                    m &= ~claimed
                    if k < last:
                        claimed |= m
                yield sl, m
                k += 1

    def backward(self, gy: Any) -> Any:
        g = self.geo
        xp = get_array_module(gy)
        gyv = gy.transpose(tuple(numpy.argsort(self.perm).tolist()))  # into the forward's working layout
        if self.idx is not None and _pool_kernels.usable(xp, gyv):
            gpad = _pool_kernels.max_pool_backward(gyv, self.idx, self.xpad.shape, self.ax == (1, 2), g.k, g.s, g.d)
            return self._crop(gpad).transpose(self.perm)
        if all(g.s[a] == g.k[a] and (g.d[a] == 1 or g.k[a] == 1) and g.p[a] == 0 and g.after[a] == 0
               for a in (0, 1)):
            return self._backward_blocks(gyv).transpose(self.perm)
        shape, dtype = self.xpad.shape, self.y.dtype
        tiles = all(g.s[a] >= g.d[a] * (g.k[a] - 1) + 1 for a in (0, 1))
        covered = tiles and all(
            g.s[a] == g.k[a] and (g.d[a] == 1 or g.k[a] == 1) and shape[self.ax[a]] == g.out[a] * g.s[a]
            for a in (0, 1)
        )
        gpad = xp.empty(shape, dtype) if covered else xp.zeros(shape, dtype)
        for sl, m in self._masks():
            if tiles:  # disjoint slabs: write straight into gx
                xp.multiply(gyv, m, out=gpad[sl])
            else:
                gpad[sl] += gyv * m
        return self._crop(gpad).transpose(self.perm)

    def _crop(self, gpad: Any) -> Any:
        """The unpadded part of a gradient of ``xpad`` (in the working layout)."""
        g = self.geo
        idx = [slice(None)] * 4
        for a in (0, 1):
            idx[self.ax[a]] = slice(g.p[a], g.p[a] + g.size[a])
        return gpad[tuple(idx)]

    def _backward_blocks(self, gyv: Any) -> Any:
        """Backward for the common kernel == stride, unpadded case (e.g. LeNet's 2x2 pools).

        The input (cropped to the Ho*kh x Wo*kw region the windows tile) is viewed as blocks
        (.., Ho, kh, .., Wo, kw, ..); one broadcast compare against y gives every window's arg-max mask,
        ties are resolved to the first offset in scan order on strided boolean views, and one broadcast
        multiply writes dx contiguously: three whole-array passes instead of kh*kw strided ones.
        """
        g = self.geo
        xp = get_array_module(gyv)
        a0, a1 = self.ax
        x = self.xpad
        crop = [slice(None)] * 4
        crop[a0], crop[a1] = slice(0, g.out[0] * g.k[0]), slice(0, g.out[1] * g.k[1])
        xc = x[tuple(crop)]
        shape6 = list(xc.shape)
        shape6[a1 : a1 + 1] = [g.out[1], g.k[1]]
        shape6[a0 : a0 + 1] = [g.out[0], g.k[0]]
        ex = (a0 + 1, a1 + 2)  # the kernel axes of the block view
        y6 = xp.expand_dims(self.y, ex)
        m = xc.reshape(shape6) == y6  # every position equal to its window's max
        if bool(xp.isnan(self.y).any()):
            m |= xp.isnan(xc.reshape(shape6))
        claimed = None
        for p in range(g.k[0]):
            for q in range(g.k[1]):
                idx = [slice(None)] * 6
                idx[ex[0]], idx[ex[1]] = p, q
                mv = m[tuple(idx)]  # a strided view into m: the in-place ops below edit m itself
                if claimed is None:
                    claimed = mv.copy()
                else:
                    mv &= ~claimed
                    claimed |= mv
        gx6 = xp.expand_dims(gyv, ex) * m
        gxc = gx6.reshape(xc.shape)
        if xc.shape == x.shape:
            return gxc
        gx = xp.zeros(x.shape, gxc.dtype)  # rows/columns past the last window get no gradient
        gx[tuple(crop)] = gxc
        return gx

    def flat_indices(self) -> Any:
        """PyTorch's ``return_indices``: for each output, h*W + w of its arg-max in the unpadded input."""
        g = self.geo
        xp = get_array_module(self.y)
        idx = xp.zeros(self.y.shape, numpy.int64)
        for k, (_, m) in enumerate(self._masks()):
            idx[m] = k
        idx = idx.transpose(self.perm)  # (N, C, Ho, Wo)
        kp, kq = idx // g.k[1], idx % g.k[1]
        hi = xp.arange(g.out[0]).reshape(-1, 1) * g.s[0] - g.p[0] + kp * g.d[0]
        wi = xp.arange(g.out[1]) * g.s[1] - g.p[1] + kq * g.d[1]
        return hi * g.size[1] + wi


def _check_pool_input(op: str, input: Any) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (3, 4):
        raise ValueError(
            f"{op}: expected 3-D (C, H, W) or 4-D (N, C, H, W) input, got input of shape {shape_str(input)}"
        )
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating input, got dtype {input.dtype}")


def _pool_geometry(op: str, input: Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                   ceil_mode: bool, max_pad: str) -> _Geometry:
    k = pair(kernel_size, "kernel_size", op)
    s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else pair(stride, "stride", op)
    p, d = pair(padding, "padding", op), pair(dilation, "dilation", op)
    if min(k) < 1 or min(s) < 1 or min(d) < 1:
        raise ValueError(f"{op}: kernel_size {k}, stride {s} and dilation {d} must be positive")
    if min(p) < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {p}")
    for a in (0, 1):
        limit = (d[a] * (k[a] - 1) + 1) // 2 if max_pad == "effective" else k[a] // 2
        if p[a] > limit:
            raise ValueError(
                f"{op}: pad should be at most half of effective kernel size, but got padding {p}, "
                f"kernel_size {k} and dilation {d}"
            )
    h, w = input.shape[-2:]
    geo = _Geometry(h, w, k, s, p, d, ceil_mode)
    if min(geo.out) < 1:
        raise ValueError(
            f"{op}: input of shape {shape_str(input)} is too small: output size {geo.out} (kernel_size {k}, "
            f"stride {s}, padding {p}, dilation {d})"
        )
    return geo


def _batched(input: Tensor) -> tuple[Tensor, bool]:
    if input.ndim == 3:
        return input.reshape(1, *input.shape), True
    return input, False


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """Max over kh x kw windows, as ``torch.nn.functional.max_pool2d``.

    input (N, C, H, W) or (C, H, W); stride defaults to kernel_size; padding (at most half the effective
    kernel) pads with -inf. Returns (N, C, Ho, Wo), plus the int64 flat indices h*W + w of each maximum
    when ``return_indices``.
    """
    op = "max_pool2d"
    _check_pool_input(op, input)
    x, squeeze = _batched(input)
    geo = _pool_geometry(op, x, kernel_size, stride, padding, dilation, ceil_mode, "effective")
    fn = MaxPool2dFunction(geo)
    y = fn(x)
    out = y.reshape(*y.shape[1:]) if squeeze else y
    if not return_indices:
        return out
    ind = fn.flat_indices()
    return out, Tensor(ind[0] if squeeze else ind)


# -- average pooling ---------------------------------------------------------------------------------------
def _avg_divisor_1d(n_out: int, size: int, k: int, s: int, p: int, include_pad: bool) -> Any:
    """Per-output window sizes along one axis, exactly as PyTorch's avg_pool2d counts them."""
    start = numpy.arange(n_out) * s - p
    end = numpy.minimum(start + k, size + p)
    full = end - start
    clipped = numpy.minimum(end, size) - numpy.maximum(start, 0)
    return full if include_pad else clipped


class AvgPool2dFunction(Function):
    """y[n, c, i, j] = (1/D[i, j]) sum_{p, q} xpad[n, c, i*sh + p, j*sw + q] (xpad zero-padded);
    dx = sum over offsets of the slabs dy / D."""

    def __init__(self, geo: _Geometry, divisor: Any) -> None:
        self.geo, self.divisor = geo, divisor

    def forward(self, x: Any) -> Any:
        g = self.geo
        xp = get_array_module(x)
        xv, perm = _spatial_view(x)
        ax = _axes(perm)
        xpad = _padded(xv, ax, g.p, g.after, 0.0)
        y = None
        for p in range(g.k[0]):
            for q in range(g.k[1]):
                sl = xpad[_slab(ax, p, q, g.s, g.d, g.out)]
                if y is None:
                    y = sl.copy()
                else:
                    y += sl
        dshape = [1, 1, 1, 1]
        dshape[ax[0]], dshape[ax[1]] = g.out
        self.div = xp.asarray(self.divisor, dtype=x.dtype).reshape(dshape)
        y /= self.div
        self.perm, self.ax, self.padded_shape, self.dtype = perm, ax, xpad.shape, x.dtype
        return y.transpose(perm)

    def backward(self, gy: Any) -> Any:
        g = self.geo
        xp = get_array_module(gy)
        gyv = gy.transpose(tuple(numpy.argsort(self.perm).tolist())) / self.div
        tiles = all(g.s[a] >= g.k[a] for a in (0, 1))
        gpad = xp.zeros(self.padded_shape, self.dtype)
        for p in range(g.k[0]):
            for q in range(g.k[1]):
                sl = _slab(self.ax, p, q, g.s, g.d, g.out)
                if tiles:
                    gpad[sl] = gyv
                else:
                    gpad[sl] += gyv
        return self._crop(gpad).transpose(self.perm)

    def _crop(self, gpad: Any) -> Any:
        """The unpadded part of a gradient of ``xpad`` (in the working layout)."""
        g = self.geo
        idx = [slice(None)] * 4
        for a in (0, 1):
            idx[self.ax[a]] = slice(g.p[a], g.p[a] + g.size[a])
        return gpad[tuple(idx)]


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """Mean over kh x kw windows, as ``torch.nn.functional.avg_pool2d``.

    input (N, C, H, W) or (C, H, W); stride defaults to kernel_size; padding (at most kernel/2) is zeros.
    The divisor is the window size including padding (``count_include_pad=True``) or only the cells that
    fall in the input, or ``divisor_override`` when given. Returns (N, C, Ho, Wo).
    """
    op = "avg_pool2d"
    _check_pool_input(op, input)
    x, squeeze = _batched(input)
    geo = _pool_geometry(op, x, kernel_size, stride, padding, 1, ceil_mode, "kernel")
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, int) or divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be a non-zero int, got {divisor_override!r}")
        divisor = numpy.full(geo.out, float(divisor_override))
    else:
        dh = _avg_divisor_1d(geo.out[0], geo.size[0], geo.k[0], geo.s[0], geo.p[0], count_include_pad)
        dw = _avg_divisor_1d(geo.out[1], geo.size[1], geo.k[1], geo.s[1], geo.p[1], count_include_pad)
        divisor = numpy.outer(dh, dw).astype(numpy.float64)
    y = AvgPool2dFunction(geo, divisor)(x)
    return y.reshape(*y.shape[1:]) if squeeze else y


# -- adaptive pooling --------------------------------------------------------------------------------------
def _adaptive_bounds(size: int, out: int) -> tuple[Any, Any]:
    """Cell i covers [floor(i*size/out), ceil((i+1)*size/out))."""
    i = numpy.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _averaging_matrix(size: int, out: int, dtype: Any) -> Any:
    start, end = _adaptive_bounds(size, out)
    cols = numpy.arange(size)
    inside = (cols >= start[:, None]) & (cols < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


class AdaptiveAvgPool2dFunction(Function):
    """y = A_h x A_w^T (per image and channel), A_h (Ho, H), A_w (Wo, W) averaging matrices;
    dx = A_h^T dy A_w."""

    def __init__(self, out: tuple[int, int]) -> None:
        self.out = out

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        h, w = x.shape[2:]
        self.ah = xp.asarray(_averaging_matrix(h, self.out[0], x.dtype))
        self.aw = xp.asarray(_averaging_matrix(w, self.out[1], x.dtype))
        return self.ah @ (x @ self.aw.T)

    def backward(self, gy: Any) -> Any:
        return (self.ah.T @ gy) @ self.aw


def _output_size(op: str, output_size: Any, h: int, w: int) -> tuple[int, int]:
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        out = (output_size, output_size)
    elif isinstance(output_size, (list, tuple)) and len(output_size) == 2:
        out = (h if output_size[0] is None else output_size[0], w if output_size[1] is None else output_size[1])
    else:
        raise TypeError(f"{op}: output_size must be an int or a pair (entries may be None), got {output_size!r}")
    if not all(isinstance(v, int) and v >= 1 for v in out):
        raise ValueError(f"{op}: output_size must be positive, got {output_size!r}")
    return int(out[0]), int(out[1])


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    """Average over the adaptive cells that split H into Ho and W into Wo near-equal, possibly overlapping
    ranges, as ``torch.nn.functional.adaptive_avg_pool2d``. input (N, C, H, W) or (C, H, W)."""
    op = "adaptive_avg_pool2d"
    _check_pool_input(op, input)
    x, squeeze = _batched(input)
    h, w = x.shape[2:]
    out = _output_size(op, output_size, h, w)
    if h % out[0] == 0 and w % out[1] == 0:
        # cells tile the input exactly: a plain average pool with kernel = stride = H/Ho
        k = (h // out[0], w // out[1])
        y = AvgPool2dFunction(_Geometry(h, w, k, k, (0, 0), (1, 1), False), numpy.full(out, float(k[0] * k[1])))(x)
    else:
        y = AdaptiveAvgPool2dFunction(out)(x)
    return y.reshape(*y.shape[1:]) if squeeze else y


class AdaptiveMaxPool2dFunction(Function):
    """y[n, c, i, j] = max over cell (i, j); dx = dy scattered (added) to each cell's first arg-max."""

    def __init__(self, out: tuple[int, int]) -> None:
        self.out = out

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        n, c, h, w = x.shape
        hs, he = _adaptive_bounds(h, self.out[0])
        ws, we = _adaptive_bounds(w, self.out[1])
        y = xp.empty((n, c) + self.out, x.dtype)
        ind = xp.empty((n, c) + self.out, numpy.int64)
        for i in range(self.out[0]):  # one vectorised reduction per output cell (few cells in practice)
            for j in range(self.out[1]):
                cell = x[:, :, hs[i] : he[i], ws[j] : we[j]].reshape(n, c, -1)
                a = cell.argmax(axis=2)
                y[:, :, i, j] = xp.take_along_axis(cell, a[..., None], axis=2)[..., 0]
                cw = we[j] - ws[j]
                ind[:, :, i, j] = (hs[i] + a // cw) * w + ws[j] + a % cw
        self.ind, self.shape = ind, x.shape
        return y

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        n, c, h, w = self.shape
        gx = xp.zeros((n * c, h * w), gy.dtype)
        rows = xp.repeat(xp.arange(n * c), self.out[0] * self.out[1])
        xp.add.at(gx, (rows, self.ind.reshape(-1)), gy.reshape(-1))  # cells may overlap: accumulate
        return gx.reshape(self.shape)


def adaptive_max_pool2d(input: Tensor, output_size: Any, return_indices: bool = False) -> Any:
    """Max over adaptive cells, as ``torch.nn.functional.adaptive_max_pool2d``; with ``return_indices`` also
    the int64 flat indices h*W + w of each maximum. input (N, C, H, W) or (C, H, W)."""
    op = "adaptive_max_pool2d"
    _check_pool_input(op, input)
    x, squeeze = _batched(input)
    h, w = x.shape[2:]
    out = _output_size(op, output_size, h, w)
    fn = AdaptiveMaxPool2dFunction(out)
    y = fn(x)
    res = y.reshape(*y.shape[1:]) if squeeze else y
    if not return_indices:
        return res
    return res, Tensor(fn.ind[0] if squeeze else fn.ind)


__all__ = ["adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d", "max_pool2d"]
