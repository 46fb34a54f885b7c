"""2-D convolution and transposed convolution, im2col + one GEMM per group, with hand-written backward.

Notation (NCHW logical layout, as in PyTorch): input x (N, C, H, W), weight w (O, C/G, kh, kw), stride s,
padding p, dilation d, G groups. The output is

    y[n, o, i, j] = b[o] + sum_{c in group(o), p, q} w[o, c, p, q] * xpad[n, c, i*sh + p*dh, j*sw + q*dw]

with Ho = floor((H + pt + pb - dh*(kh-1) - 1) / sh) + 1 (likewise Wo). Writing X = im2col(xpad) as an
(N*Ho*Wo, kh*kw*C/G) matrix per group and W as (O/G, kh*kw*C/G), the forward is Y = X W^T, and the VJPs are

    dW = dY^T X,   db = sum over rows of dY,   dX = dY W  followed by col2im (the adjoint of im2col).

Computation runs in channels-last memory (see ``_cnn_util``); results are returned as NCHW-shaped views.
3x3 and 5x5 stride-1 float32 convolutions with at least 16 channels in and out run by Winograd F(4x4, 3x3) /
F(4x4, 5x5) instead (``_winograd``: 4x / 6x fewer GEMM flops, the same numbers up to float32 rounding, which
grows to ~3e-6 / ~6e-6 of max |y|; ``HANDGRAD_WINOGRAD=0`` turns it off); im2col stays the reference.
"""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor
from handgrad.functional import _cnn_kernels, _kn2row, _threads, _winograd
from handgrad.functional._cnn_util import (
    col2im,
    conv_out_size,
    from_nhwc,
    im2col,
    pad_nhwc,
    pair,
    shape_str,
    to_nhwc,
    windows,
)

Pads = tuple[int, int, int, int]  # (top, bottom, left, right)


def _weight_matrix(w: Any, groups: int) -> Any:
    """Conv weight (O, C/G, kh, kw) as (G, O/G, kh*kw*C/G), columns ordered (kh, kw, c)."""
    o, cg, kh, kw = w.shape
    return w.reshape(groups, o // groups, cg, kh, kw).transpose(0, 1, 3, 4, 2).reshape(groups, o // groups, -1)


def _weight_from_matrix(gm: Any, shape: tuple[int, ...], groups: int) -> Any:
    """Inverse of ``_weight_matrix``: (G, O/G, kh*kw*C/G) back to (O, C/G, kh, kw)."""
    o, cg, kh, kw = shape
    return gm.reshape(groups, o // groups, kh, kw, cg).transpose(0, 1, 4, 2, 3).reshape(shape)


def _rows(a_nhwc: Any, groups: int) -> Any:
    """(N, H, W, C) as the per-group row matrix (G, N*H*W, C/G) (a view when possible)."""
    n, h, w, c = a_nhwc.shape
    m = a_nhwc.reshape(n * h * w, c)
    if groups == 1:
        return m[None]
    return m.reshape(n * h * w, groups, c // groups).transpose(1, 0, 2)


def _unrows(r: Any, shape: tuple[int, int, int, int]) -> Any:
    """(G, N*H*W, C/G) back to a C-contiguous (N, H, W, C) array."""
    if r.shape[0] == 1:
        return r[0].reshape(shape)
    return r.transpose(1, 0, 2).reshape(shape)


class Conv2dFunction(Function):
    """y = conv2d(x, w) + b as above. Inputs (x, w) or (x, w, b); x (N, C, H, W), w (O, C/G, kh, kw), b (O,);
    output (N, O, Ho, Wo)."""

    def __init__(self, stride: tuple[int, int], pads: Pads, dilation: tuple[int, int], groups: int) -> None:
        self.stride, self.pads, self.dilation, self.groups = stride, pads, dilation, groups

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        n, c, h, wd = x.shape
        o, _, kh, kw = w.shape
        pt, pb, pl, pr = self.pads
        self.k = (kh, kw)
        self.in_shape = x.shape
        self.w_shape = w.shape
        self.padded = (n, h + pt + pb, wd + pl + pr, c)
        ho = conv_out_size(h, kh, self.stride[0], pt + pb, self.dilation[0])
        wo = conv_out_size(wd, kw, self.stride[1], pl + pr, self.dilation[1])
        self.out = (ho, wo)
        self.wino = self.kn2row = None
        xp = get_array_module(x)
        if _winograd.usable(xp, x, w.shape, self.stride, self.dilation, self.groups):
            return self._forward_winograd(x, w, b)
        xpad = pad_nhwc(to_nhwc(x), self.pads)
        if _kn2row.usable(xp, x, w.shape, self.stride, self.groups):
            return self._forward_kn2row(xpad, w, b)
        wm = _weight_matrix(w, self.groups)  # (G, O/G, K)
        self.split = _cnn_kernels.split_usable(get_array_module(x), x.dtype, self.groups, self.dilation[1], n,
                                               n * ho * wo * kh * kw * c * o)
        if self.split:  # several threads: each copies and multiplies the patch rows of its images
            y, cols = _cnn_kernels.conv_forward_split(windows(xpad, self.k, self.stride, self.dilation, self.out),
                                                      wm[0], b, self.out)
        else:
            cols = im2col(xpad, self.k, self.stride, self.dilation, self.out, self.groups)  # (G, M, K)
            ym = cols @ wm.transpose(0, 2, 1)  # (G, M, O/G): one GEMM per group
            y = _unrows(ym, (n, ho, wo, o))
            if b is not None:
                y += b  # broadcast over the channels-last axis, in place
        if self.needs_input_grad[1]:
            self.cols = cols
        if self.needs_input_grad[0]:
            self.wm = wm
        return from_nhwc(y)

    def _forward_winograd(self, x: Any, w: Any, b: Any) -> Any:
        """The 3x3 / 5x5 stride-1 case by Winograd (``_winograd``): the input is padded once, to the
        rows/columns its tiles read (at least the requested padding; the extra zeros only reach outputs
        past the edge, which are never written)."""
        xp = get_array_module(x)
        n, c, h, wd = x.shape
        (ho, wo), (pt, _, pl, _), r = self.out, self.pads, w.shape[2]
        _, _, hq, wq = _winograd.tiles(r, ho, wo)
        xq = xp.ascontiguousarray(pad_nhwc(to_nhwc(x), (pt, hq - h - pt, pl, wq - wd - pl)))
        u = _winograd.filter_transform(w)
        y, v = _winograd.forward(xq, u, r, ho, wo)
        if b is not None:
            y += b
        self.wino = (v if self.needs_input_grad[1] else None, u, xq.shape)
        return from_nhwc(y)

    def _forward_kn2row(self, xpad: Any, w: Any, b: Any) -> Any:
        """Few output channels, stride 1: multiply first, shift after (``_kn2row``)."""
        xpad = _threads.contiguous(xpad)
        wk = _kn2row.weight_matrix(w)
        y = _kn2row.forward(xpad, wk, self.k, self.stride, self.dilation, self.out)
        if b is not None:
            y += b
        self.kn2row = (xpad if self.needs_input_grad[1] else None, wk)
        return from_nhwc(y)

    def _backward_kn2row(self, gy: Any) -> Any:
        need = self.needs_input_grad
        xpad, wk = self.kn2row
        g = _threads.contiguous(to_nhwc(gy))
        gxpad, dwk = _kn2row.backward(g, xpad, wk, self.k, self.stride, self.dilation, need[0], need[1])
        return self._grads(g, gxpad, _kn2row.weight_from_matrix(dwk, self.w_shape) if need[1] else None)

    def _grads(self, g: Any, gxpad: Any, gw: Any) -> Any:
        """The gradient tuple of the Winograd and kn2row paths: dx cropped out of the padded input's gradient,
        dW as given, db as a GEMV of ones with the channels-last dY ``g`` (faster than a sum over its rows)."""
        need = self.needs_input_grad
        gx = gb = None
        if need[0]:
            (pt, _, pl, _), (_, _, h, wd) = self.pads, self.in_shape
            gx = from_nhwc(gxpad[:, pt : pt + h, pl : pl + wd, :])
        if len(need) > 2 and need[2]:
            xp = get_array_module(g)
            gb = xp.ones(g.shape[0] * g.shape[1] * g.shape[2], g.dtype) @ g.reshape(-1, g.shape[3])
        return (gx, gw) if len(need) == 2 else (gx, gw, gb)

    def _backward_winograd(self, gy: Any) -> Any:
        need = self.needs_input_grad
        v, u, xq_shape = self.wino
        g = _threads.contiguous(to_nhwc(gy))  # (N, Ho, Wo, O); free when gy is channels-last
        gxq, du = _winograd.backward(g, v, u, self.w_shape[2], xq_shape, need[0], need[1])
        return self._grads(g, gxq, _winograd.filter_grad(du, self.w_shape) if need[1] else None)

    def backward(self, gy: Any) -> Any:
        if self.wino is not None:
            return self._backward_winograd(gy)
        if self.kn2row is not None:
            return self._backward_kn2row(gy)
        need = self.needs_input_grad
        xp = get_array_module(gy)
        gn = to_nhwc(gy)
        if self.split:  # the one copy (when gy is not channels-last) split over the threads too
            gn = _threads.contiguous(gn)
        g = _rows(gn, self.groups)  # (G, M, O/G); free when gy is channels-last
        gx = gw = gb = None
        if len(need) > 2 and need[2]:
            # a GEMV with a ones vector is several times faster than NumPy's sum over the long M axis
            gb = (xp.ones(g.shape[1], g.dtype) @ g).reshape(-1)
        gpad = None
        if self.split and (need[0] or need[1]):  # each thread: its images' GEMMs and col2im, a part of dW
            gpad, gwm = _cnn_kernels.conv_backward_split(
                xp.ascontiguousarray(g[0]), self.cols if need[1] else None, self.wm[0] if need[0] else None,
                self.padded, self.k, self.stride, self.dilation, self.out, need[0], need[1])
            if need[1]:
                gw = _weight_from_matrix(gwm[None], self.w_shape, self.groups)
        else:
            if need[1]:
                gw = _weight_from_matrix(g.transpose(0, 2, 1) @ self.cols, self.w_shape, self.groups)
            if need[0]:
                gcols = g @ self.wm  # (G, M, K)
                gpad = col2im(gcols, self.padded, self.k, self.stride, self.dilation, self.out, self.groups)
        if need[0]:
            pt, _, pl, _ = self.pads
            _, _, h, wd = self.in_shape
            gx = from_nhwc(gpad[:, pt : pt + h, pl : pl + wd, :])
        return (gx, gw) if len(need) == 2 else (gx, gw, gb)


class ConvTranspose2dFunction(Function):
    """y = conv_transpose2d(x, w) + b: the adjoint (input-gradient) of conv2d with the same weight.

    x (N, Cin, H, W), w (Cin, O/G, kh, kw), b (O,); Ho = (H-1)*sh - 2*ph + dh*(kh-1) + oph + 1. With
    X = rows of x per group (N*H*W, Cin/G) and W (Cin/G, kh*kw*O/G), the forward is col2im(X W), so
    dX = im2col(dy_pad) W^T, dW = X^T im2col(dy_pad), db = sum dy.
    """

    def __init__(self, stride: tuple[int, int], padding: tuple[int, int], output_padding: tuple[int, int],
                 dilation: tuple[int, int], groups: int) -> None:
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.dilation, self.groups = dilation, groups

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        n, cin, h, wd = x.shape
        _, og, kh, kw = w.shape
        o = og * self.groups
        (sh, sw), (ph, pw), (oph, opw), (dh, dw) = self.stride, self.padding, self.output_padding, self.dilation
        ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
        wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
        self.k, self.in_shape, self.w_shape, self.out = (kh, kw), x.shape, w.shape, (ho, wo)
        # the equivalent conv has input (N, O, Ho, Wo) padded by p on every side and output (N, Cin, H, W);
        # its weight (Cin, O/G, kh, kw) is ours, read as (conv out channels, conv in channels per group, ...)
        self.padded = (n, ho + 2 * ph, wo + 2 * pw, o)
        xr = _rows(to_nhwc(x), self.groups)  # (G, N*H*W, Cin/G)
        wm = _weight_matrix(w, self.groups)  # (G, Cin/G, kh*kw*O/G)
        ypad = col2im(xr @ wm, self.padded, self.k, self.stride, self.dilation, (h, wd), self.groups)
        y = ypad[:, ph : ph + ho, pw : pw + wo, :]
        if b is not None:
            y += b  # ypad is our own fresh array, so the in-place add on its crop is safe
        if self.needs_input_grad[1]:
            self.xr = xr
        if self.needs_input_grad[0]:
            self.wm = wm
        return from_nhwc(y)

    def backward(self, gy: Any) -> Any:
        need = self.needs_input_grad
        ph, pw = self.padding
        n, cin, h, wd = self.in_shape
        gy_nhwc = to_nhwc(gy)
        gx = gw = gb = None
        if len(need) > 2 and need[2]:
            gb = gy_nhwc.sum(axis=(0, 1, 2))  # small next to the GEMMs: never the hot spot
        if need[0] or need[1]:
            # dy padded back to the equivalent conv's padded input (the output_padding rows stay inside)
            pads = (ph, self.padded[1] - ph - gy.shape[2], pw, self.padded[2] - pw - gy.shape[3])
            gpad = pad_nhwc(gy_nhwc, pads)
            cols = im2col(gpad, self.k, self.stride, self.dilation, (h, wd), self.groups)  # (G, N*H*W, K)
            if need[0]:
                gx = from_nhwc(_unrows(cols @ self.wm.transpose(0, 2, 1), (n, h, wd, cin)))
            if need[1]:
                gw = _weight_from_matrix(self.xr.transpose(0, 2, 1) @ cols, self.w_shape, self.groups)
        return (gx, gw) if len(need) == 2 else (gx, gw, gb)


# -- public functions --------------------------------------------------------------------------------------
def _check_common(op: str, input: Tensor, weight: Tensor, bias: Tensor | None, groups: int) -> None:
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(f"{op}: input and weight must be Tensors")
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D, got weight of shape {shape_str(weight)}")
    if input.ndim != 4:
        raise ValueError(
            f"{op}: expected 3-D (C, H, W) or 4-D (N, C, H, W) input, got input of shape {shape_str(input)}"
        )
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if input.dtype != weight.dtype:
        raise TypeError(f"{op}: input dtype {input.dtype} and weight dtype {weight.dtype} differ")
    if bias is not None and bias.dtype != weight.dtype:
        raise TypeError(f"{op}: bias dtype {bias.dtype} and weight dtype {weight.dtype} differ")


def _positive(op: str, name: str, v: tuple[int, int], minimum: int) -> None:
    if min(v) < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{op}: {name} must be {kind}, got {v}")


def _unsqueeze_input(op: str, input: Tensor) -> tuple[Tensor, bool]:
    if isinstance(input, Tensor) and input.ndim == 3:
        return input.reshape(1, *input.shape), True
    return input, False


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    input (N, C, H, W) or (C, H, W); weight (O, C/groups, kh, kw); bias (O,) or None. ``padding`` is an
    int, a pair, ``'valid'`` (no padding) or ``'same'`` (output size = input size; needs stride 1; when
    d*(k-1) is odd the extra row/column goes to the bottom/right, as in PyTorch). Returns (N, O, Ho, Wo).
    """
    op = "conv2d"
    input, squeeze = _unsqueeze_input(op, input)
    _check_common(op, input, weight, bias, groups)
    s, d = pair(stride, "stride", op), pair(dilation, "dilation", op)
    _positive(op, "stride", s, 1)
    _positive(op, "dilation", d, 1)
    n, c, h, w = input.shape
    o, cg, kh, kw = weight.shape
    if c % groups:
        raise ValueError(f"{op}: input {shape_str(input)} has {c} channels, not divisible by groups={groups}")
    if o % groups:
        raise ValueError(f"{op}: weight {shape_str(weight)} has {o} output channels, not divisible by groups={groups}")
    if cg * groups != c:
        raise ValueError(
            f"{op}: input {shape_str(input)} has {c} channels but weight {shape_str(weight)} expects "
            f"{cg * groups} (= {cg} per group x {groups} groups)"
        )
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"{op}: bias must have shape ({o},) for weight {shape_str(weight)}, got {shape_str(bias)}")
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if s != (1, 1):
                raise ValueError(f"{op}: padding='same' is not supported for strided convolutions (stride={s})")
            th, tw = d[0] * (kh - 1), d[1] * (kw - 1)
            pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        else:
            raise ValueError(f"{op}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        ph, pw = pair(padding, "padding", op)
        _positive(op, "padding", (ph, pw), 0)
        pads = (ph, ph, pw, pw)
    eff_h, eff_w = d[0] * (kh - 1) + 1, d[1] * (kw - 1) + 1
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    if eff_h > hp or eff_w > wp:
        raise ValueError(
            f"{op}: kernel of size ({eff_h}, {eff_w}) (weight {shape_str(weight)}, dilation {d}) is larger than "
            f"the padded input ({hp}, {wp}) (input {shape_str(input)}, padding {pads})"
        )
    args = (input, weight) if bias is None else (input, weight, bias)
    y = Conv2dFunction(s, pads, d, groups)(*args)
    return y.reshape(*y.shape[1:]) if squeeze else y


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """2-D transposed convolution ("deconvolution"), as ``torch.nn.functional.conv_transpose2d``.

    input (N, Cin, H, W) or (Cin, H, W); weight (Cin, O/groups, kh, kw); bias (O,) or None. Output
    (N, O, Ho, Wo) with Ho = (H-1)*stride - 2*padding + dilation*(kh-1) + output_padding + 1. It is the
    gradient of ``conv2d`` with respect to its input, for the same weight.
    """
    op = "conv_transpose2d"
    input, squeeze = _unsqueeze_input(op, input)
    _check_common(op, input, weight, bias, groups)
    s, d = pair(stride, "stride", op), pair(dilation, "dilation", op)
    p, op_ = pair(padding, "padding", op), pair(output_padding, "output_padding", op)
    _positive(op, "stride", s, 1)
    _positive(op, "dilation", d, 1)
    _positive(op, "padding", p, 0)
    _positive(op, "output_padding", op_, 0)
    n, cin, h, w = input.shape
    wc, og, kh, kw = weight.shape
    if cin % groups or wc % groups:
        raise ValueError(
            f"{op}: input {shape_str(input)} channels ({cin}) and weight {shape_str(weight)} in-channels ({wc}) "
            f"must be divisible by groups={groups}"
        )
    if wc != cin:
        raise ValueError(
            f"{op}: input {shape_str(input)} has {cin} channels but weight {shape_str(weight)} expects {wc}"
        )
    for a in (0, 1):
        if op_[a] >= s[a] and op_[a] >= d[a]:
            raise ValueError(
                f"{op}: output_padding {op_} must be smaller than either stride {s} or dilation {d}"
            )
    ho = (h - 1) * s[0] - 2 * p[0] + d[0] * (kh - 1) + op_[0] + 1
    wo = (w - 1) * s[1] - 2 * p[1] + d[1] * (kw - 1) + op_[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(
            f"{op}: output size ({ho}, {wo}) is too small for input {shape_str(input)}, weight "
            f"{shape_str(weight)}, stride {s}, padding {p}, dilation {d}"
        )
    if bias is not None and tuple(bias.shape) != (og * groups,):
        raise ValueError(
            f"{op}: bias must have shape ({og * groups},) for weight {shape_str(weight)} and groups={groups}, "
            f"got {shape_str(bias)}"
        )
    args = (input, weight) if bias is None else (input, weight, bias)
    y = ConvTranspose2dFunction(s, p, op_, d, groups)(*args)
    return y.reshape(*y.shape[1:]) if squeeze else y


__all__ = ["conv2d", "conv_transpose2d"]
