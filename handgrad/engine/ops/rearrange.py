"""Ops that move or copy elements without arithmetic: ``tril``, ``triu``, ``flip``, ``roll``, ``repeat``,
``repeat_interleave``. Each backward routes the gradient back along the same map (masked, flipped, rolled
back, or summed over the copies)."""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.ops.shape import norm_dim
from handgrad.engine.tensor import Tensor


def _need(op: str, x: Any) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")


def _dims(op: str, dims: Any, ndim: int) -> tuple[int, ...]:
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    out = tuple(norm_dim(op, d, ndim) for d in dims)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dims {dims} repeat a dimension")
    return out


class TriangleFunction(Function):
    """y = x with the entries above (``tril``) or below (``triu``) the ``diagonal``-th diagonal zeroed, on
    the last two axes;  dx = gy masked the same way."""

    def __init__(self, upper: bool, diagonal: int) -> None:
        self.upper, self.diagonal = upper, diagonal

    def _mask(self, a: Any) -> Any:
        xp = get_array_module(a)
        return (xp.triu if self.upper else xp.tril)(a, self.diagonal)

    def forward(self, x: Any) -> Any:
        return self._mask(x)

    def backward(self, gy: Any) -> Any:
        return self._mask(gy)


def tril(input: Tensor, diagonal: int = 0) -> Tensor:  # noqa: A002 - torch argument name
    """The lower triangle (on and below the ``diagonal``-th diagonal) of the last two dims, zeros above."""
    _need("tril", input)
    if input.ndim < 2:
        raise ValueError(f"tril: expected a tensor with at least 2 dims, got shape {input.shape}")
    return TriangleFunction(False, int(diagonal))(input)


def triu(input: Tensor, diagonal: int = 0) -> Tensor:  # noqa: A002
    """The upper triangle (on and above the ``diagonal``-th diagonal) of the last two dims, zeros below."""
    _need("triu", input)
    if input.ndim < 2:
        raise ValueError(f"triu: expected a tensor with at least 2 dims, got shape {input.shape}")
    return TriangleFunction(True, int(diagonal))(input)


class FlipFunction(Function):
    """y = x reversed along ``axes``;  dx = gy reversed along them (a copy, as PyTorch's flip)."""

    def __init__(self, axes: tuple[int, ...]) -> None:
        self.axes = axes

    def forward(self, x: Any) -> Any:
        return get_array_module(x).flip(x, axis=self.axes).copy()

    def backward(self, gy: Any) -> Any:
        return get_array_module(gy).flip(gy, axis=self.axes).copy()


def flip(input: Tensor, dims: Any) -> Tensor:  # noqa: A002
    """``input`` reversed along each of ``dims``."""
    _need("flip", input)
    return FlipFunction(_dims("flip", dims, input.ndim))(input)


class RollFunction(Function):
    """y = x shifted cyclically by ``shifts`` along ``axes`` (flattened when axes is None);
    dx = gy shifted back."""

    def __init__(self, shifts: Any, axes: Any) -> None:
        self.shifts, self.axes = shifts, axes

    def forward(self, x: Any) -> Any:
        return get_array_module(x).roll(x, self.shifts, axis=self.axes)

    def backward(self, gy: Any) -> Any:
        back = -self.shifts if isinstance(self.shifts, int) else tuple(-s for s in self.shifts)
        return get_array_module(gy).roll(gy, back, axis=self.axes)


def roll(input: Tensor, shifts: Any, dims: Any = None) -> Tensor:  # noqa: A002
    """Shift the elements of ``input`` cyclically by ``shifts`` along ``dims`` (over the flattened tensor when
    ``dims`` is None; ``shifts`` and ``dims`` may be tuples of equal length)."""
    _need("roll", input)
    if dims is None:
        if not isinstance(shifts, int):
            raise ValueError(f"roll: without dims, shifts must be one int, got {shifts!r}")
        return RollFunction(int(shifts), None)(input)
    axes = _dims("roll", dims, input.ndim)
    sh = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    if len(sh) != len(axes):
        raise ValueError(f"roll: shifts {shifts!r} and dims {dims!r} must have the same length")
    return RollFunction(tuple(int(s) for s in sh), axes)(input)


class RepeatFunction(Function):
    """y = x tiled ``reps`` times per dim (leading dims added as size 1, as ``torch.Tensor.repeat``);
    dx = gy summed over the copies: gy reshaped to (r_0, s_0, r_1, s_1, ...) and summed over the r's."""

    def __init__(self, reps: tuple[int, ...]) -> None:
        self.reps = reps

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        return get_array_module(x).tile(x.reshape((1,) * (len(self.reps) - x.ndim) + x.shape), self.reps)

    def backward(self, gy: Any) -> Any:
        full = (1,) * (len(self.reps) - len(self.shape)) + tuple(self.shape)
        split = []
        for r, s in zip(self.reps, full):
            split += [r, s]
        g = gy.reshape(split).sum(axis=tuple(range(0, 2 * len(full), 2)))
        return g.reshape(self.shape)


def repeat(input: Tensor, *sizes: Any) -> Tensor:  # noqa: A002
    """``input`` tiled ``sizes[d]`` times along each dim (``torch.Tensor.repeat``; ``sizes`` may have more
    entries than ``input`` has dims: new leading dims)."""
    _need("repeat", input)
    reps = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else tuple(sizes)
    if len(reps) < input.ndim:
        raise ValueError(f"repeat: {len(reps)} repeat counts for a tensor with {input.ndim} dims (shape "
                         f"{input.shape}); give at least one per dim")
    if any(int(r) < 0 for r in reps):
        raise ValueError(f"repeat: repeat counts must be non-negative, got {reps}")
    return RepeatFunction(tuple(int(r) for r in reps))(input)


class RepeatInterleaveFunction(Function):
    """y = each element of x along ``axis`` repeated ``repeats[i]`` times in place;
    dx_i = the sum of gy over the copies of element i."""

    def __init__(self, repeats: Any, axis: int) -> None:
        self.repeats, self.axis = repeats, axis

    def forward(self, x: Any) -> Any:
        self.n = x.shape[self.axis]
        return get_array_module(x).repeat(x, self.repeats, axis=self.axis)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        r = self.repeats
        if isinstance(r, int):
            g = xp.moveaxis(gy, self.axis, 0)
            g = g.reshape((self.n, r) + g.shape[1:]).sum(axis=1)
            return xp.moveaxis(g, 0, self.axis)
        owner = xp.repeat(xp.arange(self.n), r)  # which input element each output slot copies
        g = xp.zeros(gy.shape[: self.axis] + (self.n,) + gy.shape[self.axis + 1:], dtype=gy.dtype)
        xp.add.at(g, (slice(None),) * self.axis + (owner,), gy)
        return g


def repeat_interleave(input: Tensor, repeats: Any, dim: int | None = None) -> Tensor:  # noqa: A002
    """Each element repeated ``repeats`` times (an int, or one count per element along ``dim``), consecutively;
    over the flattened input when ``dim`` is None."""
    _need("repeat_interleave", input)
    x = input.reshape(-1) if dim is None else input
    axis = 0 if dim is None else norm_dim("repeat_interleave", dim, x.ndim)
    n = x.shape[axis] if x.ndim else 1
    if isinstance(repeats, Tensor):
        repeats = repeats.numpy().tolist() if repeats.ndim else int(repeats.item())
    if isinstance(repeats, int):
        if repeats < 0:
            raise ValueError(f"repeat_interleave: repeats must be non-negative, got {repeats}")
    else:
        repeats = [int(r) for r in repeats]
        if len(repeats) == 1:
            repeats = repeats[0]
        elif len(repeats) != n or min(repeats, default=0) < 0:
            raise ValueError(f"repeat_interleave: {len(repeats)} non-negative counts needed one per element of "
                             f"dim {dim} (size {n}), got {repeats}")
        else:
            repeats = get_array_module(x.array).asarray(repeats)
    return RepeatInterleaveFunction(repeats, axis)(x)
