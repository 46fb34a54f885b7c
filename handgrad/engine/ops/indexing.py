"""Indexing and selection: ``x[index]`` (every NumPy/PyTorch index kind), gather, scatter_add,
index_select, where, masked_fill.

The backward of a selection scatters the output gradient back to where each element came from. Where an
element can be selected more than once (integer-array indices, gather) the scatter must add
(``xp.add.at``); where it cannot (ints, slices, None, Ellipsis, boolean masks) a plain assignment is
enough and much faster.
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import CPU, Device, device_of_array, get_array_module, get_default_dtype
from handgrad.engine.function import Function
from handgrad.engine.grad_mode import state
from handgrad.engine.inplace import apply_inplace, note_write
from handgrad.engine.ops._util import as_tensor_like, unbroadcast
from handgrad.engine.ops.shape import norm_dim
from handgrad.engine.tensor import Tensor
from handgrad.engine.views import index_view, mark_view


class GetItemFunction(Function):
    """y = x[index];  dx = zeros with gy put back at ``index`` (added when an integer-array index can pick
    the same element twice, assigned otherwise)."""

    def __init__(self, index: Any, accumulate: bool) -> None:
        self.index, self.accumulate = index, accumulate

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        y = x[self.index]
        if type(y) is not type(x) and not self.accumulate:  # x[0] of a vector: the 0-d view, not a scalar copy
            y = index_view(x, self.index)
        return y

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        index = self.index
        if self.accumulate and hasattr(index, "ndim"):  # x[int_array]: whole rows picked, maybe repeated
            return index_add_rows(self.shape, index, gy)
        gx = xp.zeros(self.shape, gy.dtype)
        if self.accumulate:
            xp.add.at(gx, index, gy)  # repeated indices must accumulate
        else:
            gx[index] = gy  # slices, ints and masks never repeat an element
        return gx


def index_add_rows(shape: tuple[int, ...], index: Any, g: Any) -> Any:
    """zeros(shape) with row ``index[k]`` += ``g[k]`` for every position k of the integer array ``index``
    (``g`` has shape ``index.shape + shape[1:]``): the backward of ``x[index]``, of index_select and of an
    embedding lookup.

    ``xp.add.at`` is slow when each index addresses a whole row, so on NumPy this sums repeated rows by a
    weighted ``bincount`` over flat positions when the result is small next to ``g``, else by sorting the
    indices and summing each run with ``add.reduceat``."""
    xp = get_array_module(g)
    n = shape[0]
    idx = index.reshape(-1)
    if idx.size and int(idx.min()) < 0:
        idx = idx % n
    rows = g.reshape(idx.size, -1)
    d = rows.shape[1]
    if xp is not numpy:  # pragma: no cover - CuPy's scatter_add is already fast
        gx = xp.zeros((n, d), g.dtype)
        xp.add.at(gx, idx, rows)
        return gx.reshape(shape)
    if n * d <= 4 * rows.size:
        flat = (idx[:, None] * d + numpy.arange(d)).reshape(-1)
        out = numpy.bincount(flat, weights=rows.reshape(-1), minlength=n * d)
        return out.astype(g.dtype, copy=False).reshape(shape)
    gx = numpy.zeros((n, d), g.dtype)
    if idx.size:
        order = numpy.argsort(idx, kind="stable")
        sidx = idx[order]
        starts = numpy.flatnonzero(numpy.concatenate(([True], sidx[1:] != sidx[:-1])))
        gx[sidx[starts]] = numpy.add.reduceat(rows[order], starts, axis=0)
    return gx.reshape(shape)


def _convert_part(p: Any, device: Device) -> tuple[Any, bool]:
    """One index component as NumPy understands it (an index array sent to the indexed array's ``device``,
    as PyTorch accepts a CPU index for a CUDA tensor), and whether it is an integer array that may repeat."""
    if isinstance(p, Tensor):
        p = p.array
    elif isinstance(p, list):
        p = numpy.asarray(p)
        if p.dtype.kind == "f" and p.size == 0:
            p = p.astype(numpy.int64)
    elif p is None or p is Ellipsis or isinstance(p, (int, slice, numpy.integer)):
        return p, False
    if hasattr(p, "dtype"):
        if device is not CPU or type(p) is not numpy.ndarray:
            p = device.send(p)
        kind = p.dtype.kind
        if kind == "b":
            return p, False
        if kind in "iu":
            return p, p.ndim > 0
        raise IndexError(f"tensors used as indices must be integer or boolean, got dtype {p.dtype}")
    return p, False


def convert_index(index: Any, like: Any = None) -> tuple[Any, bool]:
    """``index`` with Tensors and lists turned into arrays on the device of the array ``like`` (the CPU when
    None), and whether the backward must accumulate."""
    device = CPU if like is None else device_of_array(like)
    if isinstance(index, tuple):
        parts, acc = [], False
        for p in index:
            q, a = _convert_part(p, device)
            parts.append(q)
            acc = acc or a
        return tuple(parts), acc
    return _convert_part(index, device)


def getitem(x: Tensor, index: Any) -> Tensor:
    """``x[index]`` with ints (negative ok), slices, None, Ellipsis, boolean masks and integer
    arrays/tensors/lists, as in NumPy/PyTorch."""
    try:
        idx, acc = convert_index(index, x.array)
        y = GetItemFunction(idx, acc)(x)
    except IndexError as e:
        raise IndexError(f"getitem: index {_short(index)} is invalid for a tensor of shape {x.shape}: {e}") from None
    if not acc and _basic(idx):  # ints, slices, None, Ellipsis: a view of x's data, as in PyTorch
        mark_view(y, x, "getitem", idx)
    return y


_BASIC = (int, slice, numpy.integer, type(None), type(Ellipsis))


def _basic(index: Any) -> bool:
    """Whether ``index`` is a basic index (NumPy returns a view), not a mask or an index array (a copy)."""
    if type(index) is int or type(index) is slice:
        return True
    if isinstance(index, tuple):
        return all(isinstance(p, _BASIC) and not isinstance(p, bool) for p in index)
    return isinstance(index, _BASIC) and not isinstance(index, bool)


class IndexPutFunction(Function):
    """y = x with y[index] = v (v broadcast to the shape of y[index]);  dx = gy with the written positions
    zeroed, dv = gy[index] summed down to v's shape (PyTorch's CopySlices / index_put)."""

    def __init__(self, index: Any) -> None:
        self.index = index

    def forward(self, x: Any, v: Any) -> Any:
        self.vshape = v.shape
        y = x.copy()
        y[self.index] = v
        return y

    def backward(self, gy: Any) -> Any:
        n = self.needs_input_grad
        gx = gv = None
        if self.index is Ellipsis:  # the whole (viewed) tensor overwritten: x[i] = v, written through x[i]
            # x's gradient is all zeros: None says so without building (and scattering back) an array
            gy = get_array_module(gy).asarray(gy)  # (a 0-d gradient may arrive as a NumPy scalar)
            return None, (_to_value_shape(gy, self.vshape) if n[1] else None)
        if n[0]:
            gx = gy.copy()
            gx[self.index] = 0
        if n[1]:
            gv = _to_value_shape(gy[self.index], self.vshape)
        return gx, gv


def _to_value_shape(g: Any, vshape: tuple[int, ...]) -> Any:
    """The gradient of the written region summed down to the value's shape, which may have more (leading,
    size-1) dims than the region: NumPy and PyTorch drop them when assigning (``x[0] = v`` with v of (1, n))."""
    extra = len(vshape) - g.ndim
    if extra > 0:
        g = g.reshape((1,) * extra + tuple(g.shape))
    return unbroadcast(g, vshape)


def setitem(x: Tensor, index: Any, value: Any) -> None:
    """``x[index] = value`` in place, as in PyTorch. Outside the graph (nothing requires grad, or under
    ``no_grad``) a direct write into the array; when ``x`` is a non-leaf of the graph or ``value`` requires grad,
    recorded as an ``IndexPutFunction`` (gradients flow to the old ``x`` outside ``index`` and to ``value``),
    through ``engine.inplace`` like every in-place op: a leaf that requires grad refuses, and a node that saved
    the overwritten array raises at backward. A basic index (ints, slices) writes through the view ``x[index]``
    (PyTorch's ``x[index].copy_(value)``, rewriting x's graph by CopySlices: ``engine/views.py``); masks and
    index arrays record ``IndexPutFunction`` on the whole of ``x``."""
    idx, _ = convert_index(index, x.array)
    v = value.array if isinstance(value, Tensor) else value
    if hasattr(v, "shape") and not isinstance(v, numpy.generic) and device_of_array(v) != device_of_array(x.array):
        raise RuntimeError(f"setitem: the value is on {device_of_array(v)} but the tensor is on "
                           f"{device_of_array(x.array)}; move it with .to(device)")
    if state.grad_enabled and (x.requires_grad or getattr(value, "requires_grad", False)):
        val = value if isinstance(value, Tensor) else as_tensor_like(value, x)
        if val.dtype != x.dtype:
            val = val.to(x.dtype)
        target, idx_in = x, idx
        if _basic(idx):  # x[i] = v is x[i].copy_(v), as in PyTorch: a write into a view (no copy of all of x)
            target, idx_in = getitem(x, index), Ellipsis
        try:
            apply_inplace("setitem", target, lambda t: IndexPutFunction(idx_in)(t, val), (val,))
        except (IndexError, ValueError) as e:
            raise type(e)(f"setitem: cannot assign to index {_short(index)} of a tensor of shape {x.shape}: {e}") \
                from None
        return
    try:
        x.array[idx] = v
    except (IndexError, ValueError) as e:
        raise type(e)(f"setitem: cannot assign to index {_short(index)} of a tensor of shape {x.shape}: {e}") from None
    note_write(x)


def _short(index: Any) -> str:
    r = repr(index)
    return r if len(r) < 120 else r[:117] + "..."


# -- gather / scatter_add / index_select -------------------------------------------------------------------
def _full_index(index: Any, axis: int) -> tuple[Any, ...]:
    """Advanced-index tuple addressing input[..., index[i, j, k], ...] at every position of ``index``."""
    xp = get_array_module(index)
    parts: list[Any] = []
    for d, n in enumerate(index.shape):
        if d == axis:
            parts.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = n
            parts.append(xp.arange(n).reshape(shape))
    return tuple(parts)


def _leading(shape: tuple[int, ...], like: tuple[int, ...]) -> tuple[slice, ...]:
    """Slices keeping the first ``like[d]`` entries of each dim."""
    return tuple(slice(0, n) for n in like[: len(shape)])


class GatherFunction(Function):
    """y[i][j][k] = x[index[i][j][k]][j][k] (for dim 0; likewise for other dims);
    dx = zeros with gy added at the gathered positions."""

    def __init__(self, axis: int, index: Any) -> None:
        self.axis, self.index = axis, index

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.shape = x.shape
        part = list(_leading(x.shape, self.index.shape))
        part[self.axis] = slice(None)
        return xp.take_along_axis(x[tuple(part)], self.index, axis=self.axis)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, gy.dtype)
        xp.add.at(gx, _full_index(self.index, self.axis), gy)
        return gx


class ScatterAddFunction(Function):
    """y = x, then y[index[i][j]][j] += src[i][j] (dim 0; likewise for other dims);
    dx = gy, dsrc = gy gathered at ``index`` (zeros where src is not read)."""

    def __init__(self, axis: int, index: Any) -> None:
        self.axis, self.index = axis, index

    def forward(self, x: Any, src: Any) -> Any:
        xp = get_array_module(x)
        self.src_shape = src.shape
        y = x.copy()
        xp.add.at(y, _full_index(self.index, self.axis), src[_leading(src.shape, self.index.shape)])
        return y

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        n = self.needs_input_grad
        gsrc = None
        if n[1]:
            part = list(_leading(gy.shape, self.index.shape))
            part[self.axis] = slice(None)
            picked = xp.take_along_axis(gy[tuple(part)], self.index, axis=self.axis)
            if picked.shape == self.src_shape:
                gsrc = picked
            else:
                gsrc = xp.zeros(self.src_shape, gy.dtype)
                gsrc[_leading(self.src_shape, self.index.shape)] = picked
        return (gy if n[0] else None), gsrc


class IndexSelectFunction(Function):
    """y = x taken at the 1-D ``index`` along ``axis``;  dx = zeros with gy added back (repeats add)."""

    def __init__(self, axis: int, index: Any) -> None:
        self.axis, self.index = axis, index

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        return get_array_module(x).take(x, self.index, axis=self.axis)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        if self.axis == 0:
            return index_add_rows(self.shape, self.index, gy)
        moved = (self.shape[self.axis],) + self.shape[: self.axis] + self.shape[self.axis + 1 :]
        g = index_add_rows(moved, self.index, xp.moveaxis(gy, self.axis, 0))
        return xp.moveaxis(g, 0, self.axis)


def _int_index(op: str, index: Any) -> Any:
    if isinstance(index, Tensor):
        index = index.array
    elif not hasattr(index, "dtype"):
        index = numpy.asarray(index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"{op}: index must be an integer tensor, got dtype {index.dtype}")
    return index


def _check_range(op: str, index: Any, size: int, dim: int, shape: tuple[int, ...]) -> None:
    if index.size and (int(index.min()) < 0 or int(index.max()) >= size):
        bad = int(index.min()) if int(index.min()) < 0 else int(index.max())
        raise IndexError(f"{op}: index {bad} is out of bounds for dim {dim} with size {size} (input shape {shape})")


def gather(x: Tensor, dim: int, index: Any) -> Tensor:
    """``out[i][j][k] = x[index[i][j][k]][j][k]`` for ``dim=0`` (PyTorch's gather): ``index`` has x's
    number of dims and is no larger than x outside ``dim``; the result has index's shape."""
    idx = _int_index("gather", index)
    d = norm_dim("gather", dim, x.ndim)
    if idx.ndim != x.ndim:
        raise ValueError(f"gather: index {tuple(idx.shape)} must have as many dims as input {x.shape}")
    for a, (ni, nx) in enumerate(zip(idx.shape, x.shape)):
        if a != d and ni > nx:
            raise ValueError(
                f"gather: size of index {tuple(idx.shape)} exceeds input {x.shape} at dim {a} (not dim {d})"
            )
    _check_range("gather", idx, x.shape[d] if x.ndim else 1, d, x.shape)
    if x.ndim == 0:
        return x[()] if idx.ndim == 0 else x
    return GatherFunction(d, idx)(x)


def _on_device(idx: Any, like: Tensor) -> Any:
    """The index array on ``like``'s device (a CPU index for a device tensor is moved, as PyTorch accepts)."""
    xp = get_array_module(like.array)
    return idx if get_array_module(idx) is xp else xp.asarray(idx)


def _check_scatter(op: str, x: Tensor, d: int, idx: Any, src: Tensor) -> None:
    """The argument checks shared by ``scatter`` and ``scatter_add``: index, input and src have the same
    number of dims, src has input's dtype, index is no larger than src anywhere nor than input outside
    dim ``d``, and every index is in range for dim ``d``."""
    if not (idx.ndim == x.ndim == src.ndim):
        raise ValueError(f"{op}: index {tuple(idx.shape)}, input {x.shape} and src {src.shape} "
                         "must have the same number of dims")
    if src.dtype != x.dtype:
        raise TypeError(f"{op}: src dtype {src.dtype} differs from input dtype {x.dtype}")
    for a, (ni, nx, ns) in enumerate(zip(idx.shape, x.shape, src.shape)):
        if ni > ns or (a != d and ni > nx):
            raise ValueError(f"{op}: index {tuple(idx.shape)} is larger than src {src.shape} or than "
                             f"input {x.shape} at dim {a}")
    _check_range(op, idx, x.shape[d] if x.ndim else 1, d, x.shape)


def scatter_add(x: Tensor, dim: int, index: Any, src: Tensor) -> Tensor:
    """``out = x`` with ``out[index[i][j]][j] += src[i][j]`` for ``dim=0`` (PyTorch's scatter_add; out of
    place). ``index`` has x's number of dims, is no larger than ``src`` anywhere and no larger than x
    outside ``dim``; a CPU index for a device tensor is moved to x's device."""
    idx = _on_device(_int_index("scatter_add", index), x)
    if not isinstance(src, Tensor):
        src = as_tensor_like(src, x)
    d = norm_dim("scatter_add", dim, x.ndim)
    _check_scatter("scatter_add", x, d, idx, src)
    return ScatterAddFunction(d, idx)(x, src)


def index_select(x: Tensor, dim: int, index: Any) -> Tensor:
    """The entries of ``x`` at the 1-D integer ``index`` along ``dim`` (repeats allowed)."""
    idx = _int_index("index_select", index)
    if idx.ndim > 1:
        raise ValueError(f"index_select: index must be 0-D or 1-D, got shape {tuple(idx.shape)}")
    d = norm_dim("index_select", dim, x.ndim)
    _check_range("index_select", idx, x.shape[d] if x.ndim else 1, d, x.shape)
    if x.ndim == 0:
        return x
    return IndexSelectFunction(d, idx.reshape(-1))(x)


# -- where / masked_fill -----------------------------------------------------------------------------------
class WhereFunction(Function):
    """y = a where cond else b (broadcast);  da = gy where cond (0 elsewhere), db = gy where not cond,
    each summed back to its operand's shape."""

    def __init__(self, cond: Any) -> None:
        self.cond = cond

    def forward(self, a: Any, b: Any) -> Any:
        self.a_shape, self.b_shape = a.shape, b.shape
        return get_array_module(a).where(self.cond, a, b)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        n = self.needs_input_grad
        zero = gy.dtype.type(0)
        ga = unbroadcast(xp.where(self.cond, gy, zero), self.a_shape) if n[0] else None
        gb = unbroadcast(xp.where(self.cond, zero, gy), self.b_shape) if n[1] else None
        return ga, gb


def _bool_mask(op: str, mask: Any) -> Any:
    m = mask.array if isinstance(mask, Tensor) else mask
    if not hasattr(m, "dtype"):
        m = numpy.asarray(m)
    if m.dtype.kind != "b":
        raise TypeError(f"{op}: expected a boolean condition/mask, got dtype {m.dtype}")
    return m


def where(condition: Any, input: Any = None, other: Any = None) -> Any:  # noqa: A002 - torch name
    """``where(cond, a, b)``: a where cond else b, all three broadcast (a, b tensors or numbers).
    ``where(cond)``: the tuple of index tensors of the true entries (like ``nonzero(as_tuple=True)``)."""
    cond = _bool_mask("where", condition)
    if input is None and other is None:
        return tuple(Tensor._from_op(i.astype(numpy.int64), None, 0) for i in get_array_module(cond).nonzero(cond))
    if input is None or other is None:
        raise TypeError("where: give both input and other, or neither")
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        dt = get_default_dtype() if isinstance(input, float) or isinstance(other, float) else numpy.int64
        input = Tensor._from_op(numpy.asarray(input, dtype=dt), None, 0)
    a = input if isinstance(input, Tensor) else as_tensor_like(input, other)
    b = other if isinstance(other, Tensor) else as_tensor_like(other, a)
    if a.dtype != b.dtype:
        raise TypeError(f"where: input dtype {a.dtype} and other dtype {b.dtype} differ; cast one with .to()")
    try:
        numpy.broadcast_shapes(cond.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(f"where: condition {tuple(cond.shape)}, input {a.shape} and other {b.shape} cannot be "
                         "broadcast together") from None
    return WhereFunction(cond)(a, b)


class MaskedFillFunction(Function):
    """y = value where mask else x;  dx = gy where not mask; dvalue (a 0-d tensor) = sum of gy where mask."""

    def __init__(self, mask: Any, value: Any) -> None:
        self.mask, self.value = mask, value

    def forward(self, x: Any, *value: Any) -> Any:
        v = value[0] if value else self.value
        return get_array_module(x).where(self.mask, v, x).astype(x.dtype, copy=False)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        zero = gy.dtype.type(0)
        gx = xp.where(self.mask, zero, gy) if self.needs_input_grad[0] else None
        if len(self.needs_input_grad) == 1:
            return gx
        gv = xp.asarray(xp.where(self.mask, gy, zero).sum()) if self.needs_input_grad[1] else None
        return gx, gv


def masked_fill(x: Tensor, mask: Any, value: Any) -> Tensor:
    """``x`` with ``value`` (a number or 0-d tensor) written where the boolean ``mask`` (broadcast to x's
    shape) is true."""
    m = _bool_mask("masked_fill", mask)
    try:
        if numpy.broadcast_shapes(m.shape, x.shape) != x.shape:
            raise ValueError
    except ValueError:
        raise ValueError(f"masked_fill: mask of shape {tuple(m.shape)} does not broadcast to input {x.shape}") from None
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise ValueError(f"masked_fill: value must be a number or a 0-d tensor, got shape {value.shape}")
        if value.requires_grad:
            return MaskedFillFunction(m, None)(x, value.to(x.dtype))
        value = value.item()
    return MaskedFillFunction(m, value)(x)
