"""Ops that move data without changing values: reshape, permute, expand, squeeze, cat, stack, split, pad."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.ops._util import unbroadcast
from handgrad.engine.tensor import Tensor
from handgrad.engine.views import index_view, mark_view, shares_memory


class ReshapeFunction(Function):
    """y = x viewed with a new shape;  dx = gy reshaped back."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy: Any) -> Any:
        return gy.reshape(self.in_shape)


class PermuteFunction(Function):
    """y = x with axes reordered by ``perm``;  dx = gy with the inverse permutation."""

    def __init__(self, perm: tuple[int, ...]) -> None:
        self.perm = perm

    def forward(self, x: Any) -> Any:
        return x.transpose(self.perm)

    def backward(self, gy: Any) -> Any:
        inv = [0] * len(self.perm)
        for i, p in enumerate(self.perm):
            inv[p] = i
        return gy.transpose(inv)


def _shape_arg(shape: tuple[Any, ...]) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def resolve_shape(shape: tuple[int, ...], numel: int, op: str, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Fill in one ``-1`` and check the element count."""
    shape = tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise ValueError(f"{op}: only one dimension can be -1, got {shape}")
    known = 1
    for s in shape:
        if s != -1:
            known *= s
    if -1 in shape:
        if known == 0 or numel % known:
            raise ValueError(f"{op}: cannot reshape a tensor of shape {in_shape} ({numel} elements) to {shape}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    elif known != numel:
        raise ValueError(f"{op}: cannot reshape a tensor of shape {in_shape} ({numel} elements) to {shape}")
    return shape


def _reshaped(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``ReshapeFunction(shape)(x)``, marked as a view of ``x`` when no copy was made (as PyTorch's view)."""
    y = ReshapeFunction(shape)(x)
    if x.array.flags.c_contiguous or shares_memory(x.array, y.array):  # (a C-contiguous array always reshapes)
        mark_view(y, x, "reshape", shape)
    return y


def _permuted(x: Tensor, perm: tuple[int, ...]) -> Tensor:
    return mark_view(PermuteFunction(perm)(x), x, "permute", perm)


def reshape(x: Tensor, *shape: Any) -> Tensor:
    return _reshaped(x, resolve_shape(_shape_arg(shape), x.numel(), "reshape", x.shape))


def permute(x: Tensor, *dims: Any) -> Tensor:
    perm = tuple(norm_dim("permute", d, x.ndim) for d in _shape_arg(dims))
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"permute: {perm} is not a permutation of the {x.ndim} axes of shape {x.shape}")
    return _permuted(x, perm)


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    if x.ndim == 0 and dim0 in (0, -1) and dim1 in (0, -1):
        return x
    d0, d1 = norm_dim("transpose", dim0, x.ndim), norm_dim("transpose", dim1, x.ndim)
    perm = list(range(x.ndim))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return _permuted(x, tuple(perm))


def norm_dim(op: str, dim: Any, ndim: int, extra: int = 0) -> int:
    """``dim`` as a non-negative axis of a tensor with ``ndim + extra`` positions (``extra=1`` where a new
    axis is inserted, as in unsqueeze/stack); a clear error if it is out of range."""
    if not isinstance(dim, (int, numpy.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    n = max(ndim + extra, 1)
    if not -n <= dim < n:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dimensions "
                         f"(expected to be in [{-n}, {n - 1}])")
    return int(dim) % n


class ExpandFunction(Function):
    """y = x broadcast to ``shape`` (a read-only view, no copy);  dx = gy summed over the broadcast axes."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        return get_array_module(x).broadcast_to(x, self.shape)

    def backward(self, gy: Any) -> Any:
        return unbroadcast(gy, self.in_shape)


def expand(x: Tensor, *sizes: Any) -> Tensor:
    """Broadcast ``x`` to ``sizes`` (``-1`` keeps a size; new dims go in front), without copying."""
    sizes = _shape_arg(sizes)
    if len(sizes) < x.ndim:
        raise ValueError(f"expand: the number of sizes {len(sizes)} is smaller than the number of "
                         f"dimensions of the input {x.shape}")
    lead = len(sizes) - x.ndim
    shape = []
    for i, s in enumerate(sizes):
        s = int(s)
        if i < lead:
            if s < 0:
                raise ValueError(f"expand: size -1 is not allowed for the new leading dim {i} (sizes {tuple(sizes)})")
            shape.append(s)
            continue
        have = x.shape[i - lead]
        if s == -1:
            shape.append(have)
        elif have == s or have == 1:
            shape.append(s)
        else:
            raise ValueError(f"expand: the size of input {x.shape} at dim {i - lead} ({have}) must match the "
                             f"size {s} or be 1 (sizes {tuple(sizes)})")
    shape_t = tuple(shape)
    if shape_t == x.shape:
        return x
    return mark_view(ExpandFunction(shape_t)(x), x, "expand", shape_t)


def expand_as(x: Tensor, other: Tensor) -> Tensor:
    return expand(x, other.shape)


def squeeze(x: Tensor, dim: Any = None) -> Tensor:
    """Remove size-1 dims: all of them, or those among ``dim`` (int or tuple; a dim that is not of
    size 1 is left alone, as in PyTorch)."""
    if dim is None:
        shape = tuple(s for s in x.shape if s != 1)
    else:
        dims = (dim,) if isinstance(dim, (int, numpy.integer)) else tuple(dim)
        axes = {norm_dim("squeeze", d, x.ndim) for d in dims}
        shape = tuple(s for i, s in enumerate(x.shape) if not (i in axes and s == 1))
    if shape == x.shape:
        return x
    return _reshaped(x, shape)


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dim at ``dim`` (in ``[-ndim-1, ndim]``)."""
    d = norm_dim("unsqueeze", dim, x.ndim, extra=1)
    return _reshaped(x, x.shape[:d] + (1,) + x.shape[d:])


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim`` (inclusive) into one; a 0-d tensor becomes shape (1,)."""
    if x.ndim == 0:
        return _reshaped(x, (1,))
    s, e = norm_dim("flatten", start_dim, x.ndim), norm_dim("flatten", end_dim, x.ndim)
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {x.shape}")
    n = 1
    for v in x.shape[s : e + 1]:
        n *= v
    shape = x.shape[:s] + (n,) + x.shape[e + 1 :]
    if shape == x.shape:
        return x
    return _reshaped(x, shape)


def unflatten(x: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
    """Split dim ``dim`` into ``sizes`` (one may be -1)."""
    d = norm_dim("unflatten", dim, x.ndim)
    inner = resolve_shape(tuple(sizes), x.shape[d], "unflatten", x.shape)
    return _reshaped(x, x.shape[:d] + inner + x.shape[d + 1 :])


class CatFunction(Function):
    """y = [x_1, ..., x_n] joined along ``axis``;  dx_i = the slice of gy that x_i filled."""

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, *xs: Any) -> Any:
        self.bounds = numpy.cumsum([x.shape[self.axis] for x in xs])[:-1].tolist()
        return get_array_module(*xs).concatenate(xs, axis=self.axis)

    def backward(self, gy: Any) -> Any:
        parts = get_array_module(gy).split(gy, self.bounds, axis=self.axis)
        return tuple(p if need else None for p, need in zip(parts, self.needs_input_grad))


class StackFunction(Function):
    """y = x_1, ..., x_n stacked along a new ``axis``;  dx_i = gy taken at position i of that axis."""

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, *xs: Any) -> Any:
        return get_array_module(*xs).stack(xs, axis=self.axis)

    def backward(self, gy: Any) -> Any:
        lead = (slice(None),) * self.axis
        return tuple(gy[lead + (i,)] if need else None for i, need in enumerate(self.needs_input_grad))


def _check_seq(op: str, tensors: Any) -> list[Tensor]:
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{op}: expected a list or tuple of tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty list of tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: element {i} is a {type(t).__name__}, not a Tensor")
    dt = tensors[0].dtype
    for i, t in enumerate(tensors):
        if t.dtype != dt:
            raise TypeError(f"{op}: tensor {i} has dtype {t.dtype} but tensor 0 has {dt}; cast with .to()")
    return list(tensors)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along an existing ``dim``; all other sizes must agree."""
    ts = _check_seq("cat", tensors)
    ref = ts[0]
    d = norm_dim("cat", dim, ref.ndim)
    for i, t in enumerate(ts):
        if t.ndim != ref.ndim or t.shape[:d] + t.shape[d + 1 :] != ref.shape[:d] + ref.shape[d + 1 :]:
            raise ValueError(f"cat: sizes of tensors must match except in dim {dim}: tensor 0 has shape "
                             f"{ref.shape} but tensor {i} has shape {t.shape}")
    if len(ts) == 1:
        return ts[0]
    return CatFunction(d)(*ts)


concat = concatenate = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join equally shaped tensors along a new ``dim``."""
    ts = _check_seq("stack", tensors)
    ref = ts[0]
    d = norm_dim("stack", dim, ref.ndim, extra=1)
    for i, t in enumerate(ts):
        if t.shape != ref.shape:
            raise ValueError(f"stack: expects each tensor to be equal size, but got {ref.shape} at entry 0 "
                             f"and {t.shape} at entry {i}")
    return StackFunction(d)(*ts)


class SplitFunction(Function):
    """(y_1, ..., y_k) = consecutive pieces of x along ``axis`` (views);  dx = the gy_i joined back (pieces
    that got no gradient count as zeros)."""

    def __init__(self, sizes: list[int], axis: int) -> None:
        self.sizes, self.axis = sizes, axis

    def forward(self, x: Any) -> Any:
        bounds = numpy.cumsum(self.sizes)[:-1].tolist()
        return tuple(get_array_module(x).split(x, bounds, axis=self.axis))

    def backward(self, *gys: Any) -> Any:
        return get_array_module(*gys).concatenate(gys, axis=self.axis)


def split(x: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
    """Pieces of ``split_size_or_sections`` along ``dim`` (the last may be smaller), or of the listed sizes
    (which must add up to the size of ``dim``)."""
    d = norm_dim("split", dim, x.ndim)
    n = x.shape[d]
    if isinstance(split_size_or_sections, (int, numpy.integer)):
        size = int(split_size_or_sections)
        if size <= 0 and not (size == 0 and n == 0):
            raise ValueError(f"split: split_size must be positive, got {size}")
        sizes = [size] * (n // size) + ([n % size] if n % size else []) if n else [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if any(s < 0 for s in sizes) or sum(sizes) != n:
            raise ValueError(f"split: split_sizes {sizes} must be non-negative and sum to {n}, the size of dim "
                             f"{dim} of input {x.shape}")
    return _split(x, sizes, d)


def _split(x: Tensor, sizes: list[int], d: int) -> tuple[Tensor, ...]:
    """The pieces, each marked as a view of ``x`` (one of several: PyTorch refuses graph writes into them)."""
    ys = SplitFunction(sizes, d)(x)
    lead, start = (slice(None),) * d, 0
    for y, n in zip(ys, sizes):
        mark_view(y, x, "split", lead + (slice(start, start + n),))
        start += n
    return ys


def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """Split into ``chunks`` pieces of ceil(n / chunks) (fewer pieces if the size runs out, as in PyTorch)."""
    if not isinstance(chunks, (int, numpy.integer)) or chunks <= 0:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    d = norm_dim("chunk", dim, x.ndim)
    n = x.shape[d]
    size = -(-n // int(chunks)) if n else 0
    if size == 0:
        return _split(x, [0] * int(chunks), d) if n == 0 else split(x, 1, d)
    return split(x, size, d)


class UnbindFunction(Function):
    """(y_0, ..., y_{n-1}) = x[..., i, ...] along ``axis``;  dx = the gy_i stacked back."""

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, x: Any) -> Any:
        lead = (slice(None),) * self.axis
        return tuple(index_view(x, lead + (i,)) for i in range(x.shape[self.axis]))

    def backward(self, *gys: Any) -> Any:
        return get_array_module(*gys).stack(gys, axis=self.axis)


def unbind(x: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
    """The slices of ``x`` along ``dim``, with that dim removed."""
    d = norm_dim("unbind", dim, x.ndim)
    if x.ndim == 0:
        raise ValueError("unbind: cannot unbind a 0-d tensor")
    ys = UnbindFunction(d)(x)
    lead = (slice(None),) * d
    for i, y in enumerate(ys):
        mark_view(y, x, "unbind", lead + (i,))
    return ys


# -- pad ---------------------------------------------------------------------------------------------------
def _axis_slice(ndim: int, axis: int, start: int | None, stop: int | None) -> tuple[slice, ...]:
    return (slice(None),) * axis + (slice(start, stop),) + (slice(None),) * (ndim - axis - 1)


class ConstantPadFunction(Function):
    """y = x framed by ``value`` (negative widths crop);  dx = gy cut back to x's place (zeros for the
    cropped part)."""

    def __init__(self, widths: list[tuple[int, int]], value: float) -> None:
        self.widths, self.value = widths, value

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.in_shape = x.shape
        src = tuple(slice(max(-l, 0), n - max(-r, 0)) for (l, r), n in zip(self.widths, x.shape))
        dst = tuple(slice(max(l, 0), max(l, 0) + (s.stop - s.start)) for (l, _), s in zip(self.widths, src))
        shape = tuple(n + l + r for (l, r), n in zip(self.widths, x.shape))
        self.src, self.dst = src, dst
        y = xp.full(shape, self.value, dtype=x.dtype)
        y[dst] = x[src]
        return y

    def backward(self, gy: Any) -> Any:
        if all(s.start == 0 and s.stop == n for s, n in zip(self.src, self.in_shape)):
            return gy[self.dst]
        gx = get_array_module(gy).zeros(self.in_shape, gy.dtype)
        gx[self.src] = gy[self.dst]
        return gx


class EdgePadFunction(Function):
    """Reflect / replicate / circular padding: every output element copies one input element, separately
    along each padded axis;  dx folds the gradient of each copy back onto its source, axis by axis."""

    _NP_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}

    def __init__(self, widths: list[tuple[int, int]], mode: str) -> None:
        self.widths, self.mode = widths, mode

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        return get_array_module(x).pad(x, self.widths, mode=self._NP_MODE[self.mode])

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        g = gy
        nd = gy.ndim
        for axis, (l, r) in enumerate(self.widths):
            if not l and not r:
                continue
            n = self.in_shape[axis]
            gi = g[_axis_slice(nd, axis, l, l + n)].copy()
            left, right = g[_axis_slice(nd, axis, 0, l)], g[_axis_slice(nd, axis, l + n, None)]
            if self.mode == "replicate":
                gi[_axis_slice(nd, axis, 0, 1)] += left.sum(axis=axis, keepdims=True)
                gi[_axis_slice(nd, axis, n - 1, n)] += right.sum(axis=axis, keepdims=True)
            elif self.mode == "reflect":
                # output k < l copies input l - k; output l + n + k copies input n - 2 - k
                gi[_axis_slice(nd, axis, 1, l + 1)] += xp.flip(left, axis=axis)
                gi[_axis_slice(nd, axis, n - 1 - r, n - 1)] += xp.flip(right, axis=axis)
            else:  # circular: output k < l copies input n - l + k; output l + n + k copies input k
                gi[_axis_slice(nd, axis, n - l, n)] += left
                gi[_axis_slice(nd, axis, 0, r)] += right
            g = gi
        return g


def pad(x: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    """``torch.nn.functional.pad``: ``pad = (left, right)`` for the last dim, then ``(top, bottom)`` for the
    one before, and so on. ``mode`` is 'constant' (fill with ``value``, any number of dims, negative widths
    crop), 'reflect' (mirror without repeating the edge), 'replicate' (repeat the edge) or 'circular'
    (wrap around); the last three pad 1-3 trailing dims of a tensor with one or two more dims."""
    if not isinstance(x, Tensor):
        raise TypeError(f"pad: expected a Tensor, got {type(x).__name__}")
    p = [int(v) for v in pad]
    if len(p) % 2:
        raise ValueError(f"pad: padding length must be divisible by 2, got {len(p)} ({tuple(p)})")
    k = len(p) // 2
    if k > x.ndim:
        raise ValueError(f"pad: padding length {len(p)} pads {k} dims but the input {x.shape} has only {x.ndim}")
    widths = [(0, 0)] * (x.ndim - k) + [(p[2 * i], p[2 * i + 1]) for i in reversed(range(k))]
    if mode == "constant":
        for (l, r), n in zip(widths, x.shape):
            if n + l + r < 0:
                raise ValueError(f"pad: padding {tuple(p)} makes a negative size for input {x.shape}")
        if all(l == 0 and r == 0 for l, r in widths):
            return x
        return ConstantPadFunction(widths, 0.0 if value is None else float(value))(x)
    if mode not in EdgePadFunction._NP_MODE:
        raise ValueError(f"pad: mode must be 'constant', 'reflect', 'replicate' or 'circular', got {mode!r}")
    if value is not None and value != 0:
        raise ValueError(f"pad: padding mode {mode!r} doesn't take in value argument")
    if not 1 <= k <= 3 or x.ndim not in (k + 1, k + 2):
        raise ValueError(f"pad: {mode} padding of {k} dims needs a {k + 1}-D or {k + 2}-D input, got {x.shape}")
    for (l, r), n in zip(widths, x.shape):
        if l < 0 or r < 0:
            raise ValueError(f"pad: negative padding {tuple(p)} is only supported in constant mode")
        if mode == "reflect" and (l >= n or r >= n) and (l or r):
            raise ValueError(f"pad: reflect padding {tuple(p)} must be less than the padded dims of input {x.shape}")
        if mode == "circular" and (l > n or r > n):
            raise ValueError(f"pad: circular padding {tuple(p)} must be at most the padded dims of input {x.shape}")
        if mode == "replicate" and n == 0 and (l or r):
            raise ValueError(f"pad: replicate padding needs non-empty padded dims, input {x.shape}")
    return EdgePadFunction(widths, mode)(x)
