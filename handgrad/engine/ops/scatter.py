"""``scatter`` (write ``src`` or a value at ``index`` along a dim), ``index_add`` and ``fill``: the out-of-place,
differentiable ops behind the in-place ``scatter_``, ``index_add_``, ``fill_``/``zero_``/``uniform_``/``normal_``
when the tensor is part of a graph (see ``handgrad.engine.inplace``)."""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.ops._util import as_tensor_like
from handgrad.engine.ops.indexing import _check_scatter, _full_index, _int_index, _leading, _on_device, scatter_add
from handgrad.engine.ops.shape import norm_dim
from handgrad.engine.tensor import Tensor


class ScatterFunction(Function):
    """y = x, then y[index[i][j]][j] = src[i][j] (dim 0; likewise for other dims; a repeated target keeps one
    of its sources, unspecified which, as in PyTorch);  dx = gy with the written positions zeroed,
    dsrc = gy gathered at ``index`` (zeros where src is not read)."""

    def __init__(self, axis: int, index: Any) -> None:
        self.axis, self.index = axis, index

    def forward(self, x: Any, src: Any) -> Any:
        self.src_shape = src.shape
        y = x.copy()
        y[_full_index(self.index, self.axis)] = src[_leading(src.shape, self.index.shape)]
        return y

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        n = self.needs_input_grad
        where = _full_index(self.index, self.axis)
        gx = gsrc = None
        if n[0]:
            gx = gy.copy()
            gx[where] = 0
        if n[1]:
            picked = gy[where]
            if picked.shape == self.src_shape:
                gsrc = picked
            else:
                gsrc = xp.zeros(self.src_shape, gy.dtype)
                gsrc[_leading(self.src_shape, self.index.shape)] = picked
        return gx, gsrc


def scatter(input: Tensor, dim: int, index: Any, src: Any = None, *, value: Any = None) -> Tensor:  # noqa: A002
    """``out = input`` with ``out[index[i][j]][j] = src[i][j]`` for ``dim=0`` (``torch.scatter``; ``value=``
    a number instead of ``src``). ``index`` has input's number of dims, is no larger than ``src`` anywhere
    and no larger than input outside ``dim``."""
    if (src is None) == (value is None):
        raise TypeError("scatter: give exactly one of src and value")
    idx = _on_device(_int_index("scatter", index), input)
    if src is None or not isinstance(src, Tensor):
        v = value if src is None else src
        xp = get_array_module(input.array)
        src = Tensor._from_op(xp.full(idx.shape, v, dtype=input.dtype), None, 0)
    d = norm_dim("scatter", dim, input.ndim)
    _check_scatter("scatter", input, d, idx, src)
    return ScatterFunction(d, idx)(input, src)


def index_add(input: Tensor, dim: int, index: Any, source: Tensor, *, alpha: float = 1) -> Tensor:  # noqa: A002
    """``out = input`` with ``out[..., index[i], ...] += alpha * source[..., i, ...]`` along ``dim``
    (``torch.index_add``; repeated indices accumulate). ``index`` is 1-D with one entry per slice of
    ``source`` along ``dim``; ``source`` has input's shape elsewhere."""
    idx = _on_device(_int_index("index_add", index), input)
    if not isinstance(source, Tensor):
        source = as_tensor_like(source, input)
    d = norm_dim("index_add", dim, input.ndim)
    if idx.ndim != 1 or source.ndim != input.ndim or source.shape[d] != idx.shape[0] or any(
            a != b for k, (a, b) in enumerate(zip(source.shape, input.shape)) if k != d):
        raise ValueError(f"index_add: source {source.shape} must equal input {input.shape} except at dim {dim}, "
                         f"where it must have len(index) = {idx.shape[0] if idx.ndim == 1 else tuple(idx.shape)} "
                         "entries (index 1-D)")
    shape = [1] * input.ndim
    shape[d] = idx.shape[0]
    full = get_array_module(idx).broadcast_to(idx.reshape(shape), source.shape)
    return scatter_add(input, d, Tensor._from_op(full, None, 0), source if alpha == 1 else source * alpha)


class FillFunction(Function):
    """y = ``values`` (an array of x's shape, made by the caller: a constant or random draws);  dx = 0."""

    def __init__(self, values: Any) -> None:
        self.values = values

    def forward(self, x: Any) -> Any:
        return self.values

    def backward(self, gy: Any) -> Any:
        return get_array_module(gy).zeros_like(gy)


def fill(input: Tensor, values: Any) -> Tensor:  # noqa: A002
    """A tensor of ``input``'s shape and dtype holding ``values`` (broadcast), with a zero gradient to
    ``input``: what ``fill_``/``zero_``/``uniform_``/``normal_`` do to a tensor in a graph."""
    xp = get_array_module(input.array)
    arr = xp.empty(input.shape, dtype=input.dtype)
    arr[...] = values
    return FillFunction(arr)(input)
