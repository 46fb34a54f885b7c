"""The ``"strict"`` device: a stand-in for CuPy that runs on the CPU, for the test suite.

It proves that code runs on CuPy without a GPU. Its arrays (``StrictArray``) wrap NumPy arrays but behave as
CuPy's do where CuPy differs from NumPy:

* they refuse to mix with NumPy arrays: ``strict + numpy_array``, ``xp.where(numpy_mask, ...)``,
  ``x[numpy_index]``, ``x[...] = numpy_array`` and ``numpy.asarray(x)`` all raise ``TypeError`` (CuPy
  raises on most of these; being stricter costs nothing on CuPy and catches every silent host round trip);
  data enters only through ``xp.asarray`` / ``xp.array`` (a copy, like a host-to-device transfer) and leaves
  only through ``xp.asnumpy`` / ``.get()``;
* reductions and scalar indexing give 0-d arrays, never NumPy scalars;
* the module offers only functions CuPy has (``xp.lib.stride_tricks.as_strided`` without ``writeable``, no
  ``errstate``, ``fromiter``, ...); a NumPy function called on a strict array is forwarded to the strict
  module's function of the same name (CuPy's ``__array_function__``) or refused.

Numerics are NumPy's, so results equal the ``"cpu"`` device's bit for bit. Slow (every call unwraps and
wraps): for tests only.
"""

from __future__ import annotations

import types
from typing import Any

import numpy

from handgrad.engine.backend import _register_array_module


class StrictError(TypeError):
    """A NumPy array met a strict device array (CuPy would refuse it too)."""


def _mix_error(where: str) -> StrictError:
    return StrictError(
        f"strict device: {where} got a NumPy array together with device arrays; CuPy refuses this too. "
        "Move it explicitly (Device.send / xp.asarray, or backend.to_host for host work)"
    )


_NUMBERS = (float, bool, complex, numpy.floating, numpy.bool_, numpy.complexfloating)


def _unwrap(x: Any, where: str) -> Any:
    """One argument of a strict-module function with its strict arrays unwrapped. NumPy arrays are refused,
    and so are Python lists/tuples holding floats or bools: CuPy takes device arrays, not lists, as data
    (``xp.asarray`` them first). Lists of ints pass: shapes, axes, pad widths, indices."""
    t = type(x)
    if t is StrictArray:
        return x._a
    if t is numpy.ndarray:
        raise _mix_error(where)
    if t is tuple or t is list:
        for v in x:
            if isinstance(v, _NUMBERS):
                raise StrictError(f"strict device: {where} got a Python {t.__name__} of numbers as array data; "
                                  "CuPy takes device arrays only (xp.asarray it first)")
        return t([_unwrap(v, where) for v in x])
    return x


def _unwrap_args(args: tuple[Any, ...], where: str) -> list[Any]:
    return [_unwrap(a, where) for a in args]


def _unwrap_kw(kw: dict[str, Any], where: str) -> dict[str, Any]:
    return {k: _unwrap(v, where) for k, v in kw.items()} if kw else kw


def _unwrap_data(x: Any) -> Any:
    """Data for ``xp.asarray`` / ``xp.array``: any nesting of lists, numbers, host and strict arrays."""
    t = type(x)
    if t is StrictArray:
        return x._a
    if t is tuple or t is list:
        return t([_unwrap_data(v) for v in x])
    return x


def _unwrap_index(index: Any) -> Any:
    """An index: strict arrays unwrapped, NumPy arrays refused (send them to the device), the rest as is."""
    t = type(index)
    if t is StrictArray:
        return index._a
    if t is numpy.ndarray:
        raise _mix_error("indexing")
    if t is tuple:
        return tuple([_unwrap_index(v) for v in index])
    return index


def _wrap(r: Any) -> Any:
    t = type(r)
    if t is numpy.ndarray:
        return StrictArray(r)
    if isinstance(r, numpy.generic):
        return StrictArray(numpy.asarray(r))
    if t is tuple or t is list:
        return t([_wrap(v) for v in r])
    if isinstance(r, tuple):  # a named tuple (linalg.svd's SVDResult): a plain tuple, as CuPy returns
        return tuple([_wrap(v) for v in r])
    return r


def _function(f: Any, name: str) -> Any:
    def call(*args: Any, **kw: Any) -> Any:
        return _wrap(f(*_unwrap_args(args, name), **_unwrap_kw(kw, name)))

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"Strict-device ``{name}`` (NumPy's, refusing NumPy arrays)."
    return call


class _Ufunc:
    """A NumPy ufunc that refuses NumPy arrays (``__call__``, ``at``, ``reduce``, ``reduceat``, ...)."""

    def __init__(self, uf: numpy.ufunc) -> None:
        self._uf = uf
        self.__name__ = uf.__name__
        self.nin, self.nout = uf.nin, uf.nout

    def __call__(self, *args: Any, **kw: Any) -> Any:
        return _wrap(self._uf(*_unwrap_args(args, self.__name__), **_unwrap_kw(kw, self.__name__)))

    def _method(self, method: str, *args: Any, **kw: Any) -> Any:
        where = f"{self.__name__}.{method}"
        return _wrap(getattr(self._uf, method)(*_unwrap_args(args, where), **_unwrap_kw(kw, where)))

    def at(self, *args: Any, **kw: Any) -> Any:
        return self._method("at", *args, **kw)

    def reduce(self, *args: Any, **kw: Any) -> Any:
        return self._method("reduce", *args, **kw)

    def reduceat(self, *args: Any, **kw: Any) -> Any:
        return self._method("reduceat", *args, **kw)

    def accumulate(self, *args: Any, **kw: Any) -> Any:
        return self._method("accumulate", *args, **kw)

    def outer(self, *args: Any, **kw: Any) -> Any:
        return self._method("outer", *args, **kw)


def _binary(uf: numpy.ufunc, reflected: bool = False) -> Any:
    name = uf.__name__

    def op(self: StrictArray, other: Any) -> Any:
        if _defers_to(other):
            return NotImplemented
        o = _unwrap(other, name)
        return _wrap(uf(o, self._a) if reflected else uf(self._a, o))

    return op


def _inplace(uf: numpy.ufunc) -> Any:
    name = uf.__name__

    def op(self: StrictArray, other: Any) -> Any:
        uf(self._a, _unwrap(other, name), out=self._a)
        return self

    return op


def _defers_to(other: Any) -> bool:
    """CuPy's ``_should_use_rop``: let an operand of higher ``__array_priority__`` (a Tensor) handle it."""
    t = type(other)
    return (t is not StrictArray and t is not numpy.ndarray
            and getattr(other, "__array_priority__", 0) > StrictArray.__array_priority__)


class StrictArray:
    """An array of the strict device: a NumPy array that CuPy's rules guard (see the module docstring)."""

    __slots__ = ("_a",)
    __array_priority__ = 100  # as cupy.ndarray
    __hash__ = None  # type: ignore[assignment]  # arrays are unhashable

    def __init__(self, a: numpy.ndarray) -> None:
        self._a = a

    # -- the gates -------------------------------------------------------------------------------------
    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise StrictError("strict device: implicit conversion to a NumPy array is not allowed (as in CuPy); "
                          "use xp.asnumpy(x) / x.get(), or backend.to_host")

    def __array_ufunc__(self, ufunc: numpy.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        where = f"numpy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        ins = _unwrap_args(inputs, where)
        kw = _unwrap_kw(kwargs, where)
        if "out" in kw and isinstance(kw["out"], tuple) and len(kw["out"]) == 1:
            kw["out"] = kw["out"][0]
        f = ufunc if method == "__call__" else getattr(ufunc, method)
        return _wrap(f(*ins, **kw))

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        ns: Any = linalg if (func.__module__ or "").startswith("numpy.linalg") else xp
        f = getattr(ns, func.__name__, None)
        if f is None:
            raise StrictError(f"strict device: numpy.{func.__name__} has no CuPy counterpart here; "
                              "use xp = get_array_module(x) and a function CuPy offers")
        return f(*args, **kwargs)

    # -- facts -----------------------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: StrictArray(self._a.T))
    real = property(lambda self: StrictArray(self._a.real))
    imag = property(lambda self: StrictArray(self._a.imag))

    @property
    def base(self) -> Any:
        return None if self._a.base is None else StrictArray(self._a.base)

    @property
    def device(self) -> str:
        return "strict"

    def get(self) -> numpy.ndarray:
        """A NumPy copy (CuPy's device-to-host transfer)."""
        return self._a.copy()

    def item(self) -> Any:
        return self._a.item()

    def tolist(self) -> Any:
        return self._a.tolist()

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Any:
        for i in range(len(self._a)):
            yield StrictArray(numpy.asarray(self._a[i]))

    def __bool__(self) -> bool:
        return bool(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __index__(self) -> int:
        return self._a.__index__()

    def __complex__(self) -> complex:
        return complex(self._a)

    def __repr__(self) -> str:
        return "strict_" + repr(self._a)

    def __str__(self) -> str:
        return str(self._a)

    # -- indexing --------------------------------------------------------------------------------------
    def __getitem__(self, index: Any) -> Any:
        return _wrap(self._a[_unwrap_index(index)])

    def __setitem__(self, index: Any, value: Any) -> None:
        self._a[_unwrap_index(index)] = _unwrap(value, "index assignment")

    # -- operators -------------------------------------------------------------------------------------
    __add__, __radd__, __iadd__ = _binary(numpy.add), _binary(numpy.add, True), _inplace(numpy.add)
    __sub__, __rsub__, __isub__ = _binary(numpy.subtract), _binary(numpy.subtract, True), _inplace(numpy.subtract)
    __mul__, __rmul__, __imul__ = _binary(numpy.multiply), _binary(numpy.multiply, True), _inplace(numpy.multiply)
    __truediv__, __rtruediv__ = _binary(numpy.true_divide), _binary(numpy.true_divide, True)
    __itruediv__ = _inplace(numpy.true_divide)
    __floordiv__, __rfloordiv__ = _binary(numpy.floor_divide), _binary(numpy.floor_divide, True)
    __mod__, __rmod__ = _binary(numpy.remainder), _binary(numpy.remainder, True)
    __pow__, __rpow__, __ipow__ = _binary(numpy.power), _binary(numpy.power, True), _inplace(numpy.power)
    __matmul__, __rmatmul__ = _binary(numpy.matmul), _binary(numpy.matmul, True)
    __and__, __rand__, __iand__ = _binary(numpy.bitwise_and), _binary(numpy.bitwise_and, True), \
        _inplace(numpy.bitwise_and)
    __or__, __ror__, __ior__ = _binary(numpy.bitwise_or), _binary(numpy.bitwise_or, True), _inplace(numpy.bitwise_or)
    __xor__, __rxor__ = _binary(numpy.bitwise_xor), _binary(numpy.bitwise_xor, True)
    __lt__, __le__ = _binary(numpy.less), _binary(numpy.less_equal)
    __gt__, __ge__ = _binary(numpy.greater), _binary(numpy.greater_equal)
    __eq__, __ne__ = _binary(numpy.equal), _binary(numpy.not_equal)  # type: ignore[assignment]

    def __neg__(self) -> StrictArray:
        return StrictArray(-self._a)

    def __pos__(self) -> StrictArray:
        return StrictArray(+self._a)

    def __abs__(self) -> StrictArray:
        return StrictArray(abs(self._a))

    def __invert__(self) -> StrictArray:
        return StrictArray(~self._a)


# the ndarray methods CuPy has
_METHODS = (
    "all", "any", "argmax", "argmin", "argpartition", "argsort", "astype", "clip", "compress", "conj", "copy",
    "cumprod", "cumsum", "diagonal", "dot", "fill", "flatten", "max", "mean", "min", "nonzero", "partition",
    "prod", "ptp", "put", "ravel", "repeat", "reshape", "round", "sort", "squeeze", "std", "sum", "swapaxes",
    "take", "trace", "transpose", "var", "view",
)
for _name in _METHODS:
    def _method(self: StrictArray, *args: Any, _n: str = _name, **kw: Any) -> Any:
        return _wrap(getattr(self._a, _n)(*_unwrap_args(args, f"ndarray.{_n}"), **_unwrap_kw(kw, f"ndarray.{_n}")))

    _method.__name__ = _name
    setattr(StrictArray, _name, _method)


# -- the module ------------------------------------------------------------------------------------------
# NumPy functions that CuPy also offers (the ones the library could plausibly use)
_FUNCTIONS = """
abs absolute add all allclose amax amin any append arange arccos arccosh arcsin arcsinh arctan arctan2 arctanh
argmax argmin argpartition argsort argwhere around array_equal array_split atleast_1d atleast_2d atleast_3d
average bincount bitwise_and bitwise_or bitwise_xor broadcast_arrays broadcast_to cbrt ceil choose clip
column_stack compress concatenate copysign copyto corrcoef cos cosh count_nonzero cov cross cumprod cumsum deg2rad
diag diag_indices diagonal diff divide dot dsplit dstack einsum empty empty_like equal exp exp2 expand_dims
expm1 extract eye fabs fill_diagonal fix flatnonzero flip fliplr flipud float_power floor floor_divide fmax
fmin fmod frexp full full_like greater greater_equal heaviside histogram hsplit hstack hypot identity imag
indices inner interp invert isclose iscomplexobj isfinite isin isinf isnan isreal isrealobj isscalar kron
ldexp left_shift less less_equal lexsort linspace log log10 log1p log2 logaddexp logaddexp2 logical_and
logical_not logical_or logical_xor matmul max maximum mean median meshgrid min minimum mod modf moveaxis
multiply nan_to_num nanargmax nanargmin nancumprod nancumsum nanmax nanmean nanmedian nanmin nanprod nanstd
nansum nanvar negative nextafter nonzero not_equal ones ones_like outer pad partition percentile positive
power prod ptp put put_along_axis quantile rad2deg ravel ravel_multi_index real reciprocal remainder repeat
reshape resize right_shift rint roll rollaxis rot90 round searchsorted select shares_memory sign signbit sin
sinc sinh sort split sqrt square squeeze stack std subtract sum swapaxes take take_along_axis tan tanh
tensordot tile trace transpose tri tril tril_indices triu triu_indices true_divide trunc unique unravel_index
var vdot vsplit vstack where zeros zeros_like
""".split()
_UFUNC_NAMES = [n for n in _FUNCTIONS if isinstance(getattr(numpy, n, None), numpy.ufunc)]
_CONSTANTS = """
bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 complex64 complex128 intp
dtype finfo iinfo generic number integer signedinteger unsignedinteger floating complexfloating inexact
result_type promote_types can_cast issubdtype nan inf pi e newaxis
""".split()

xp = types.ModuleType("handgrad.engine._strict.xp", "The strict device's array module (CuPy's API subset).")
linalg = types.ModuleType("handgrad.engine._strict.xp.linalg")
_lib = types.ModuleType("handgrad.engine._strict.xp.lib")
_stride_tricks = types.ModuleType("handgrad.engine._strict.xp.lib.stride_tricks")

for _name in _FUNCTIONS:
    _f = getattr(numpy, _name, None)
    if _f is None:  # pragma: no cover - a name a NumPy version lacks
        continue
    setattr(xp, _name, _Ufunc(_f) if isinstance(_f, numpy.ufunc) else _function(_f, _name))
for _name in _CONSTANTS:
    setattr(xp, _name, getattr(numpy, _name))
for _name in ("norm", "inv", "solve", "det", "slogdet", "qr", "svd", "eigh", "eigvalsh", "cholesky", "pinv",
              "lstsq", "matrix_power", "matrix_rank"):
    setattr(linalg, _name, _function(getattr(numpy.linalg, _name), f"linalg.{_name}"))


def _as_strided(x: StrictArray, shape: Any = None, strides: Any = None) -> StrictArray:
    """CuPy's ``as_strided``: no ``subok``, no ``writeable`` (the view is always writeable)."""
    return StrictArray(numpy.lib.stride_tricks.as_strided(_unwrap(x, "as_strided"), shape, strides))


def _sliding_window_view(x: StrictArray, window_shape: Any, axis: Any = None) -> StrictArray:
    return StrictArray(numpy.lib.stride_tricks.sliding_window_view(_unwrap(x, "sliding_window_view"),
                                                                   window_shape, axis))


_stride_tricks.as_strided = _as_strided  # type: ignore[attr-defined]
_stride_tricks.sliding_window_view = _sliding_window_view  # type: ignore[attr-defined]
_lib.stride_tricks = _stride_tricks  # type: ignore[attr-defined]
_special = types.ModuleType("handgrad.engine._strict.xp.special")  # cupyx.scipy.special's part we use
for _name in ("erf", "erfc", "erfinv", "gammaln", "digamma", "expit", "log_expit", "logit", "ndtr", "xlogy"):
    _special_f = getattr(__import__("scipy.special", fromlist=[_name]), _name)
    setattr(_special, _name, _Ufunc(_special_f) if isinstance(_special_f, numpy.ufunc) else
            _function(_special_f, _name))
xp.special = _special  # type: ignore[attr-defined]
xp.lib = _lib  # type: ignore[attr-defined]
xp.linalg = linalg  # type: ignore[attr-defined]
xp.ndarray = StrictArray  # type: ignore[attr-defined]


def _asarray(a: Any, dtype: Any = None, order: Any = None) -> StrictArray:
    """Host data (NumPy arrays included: a transfer, so a copy) or strict arrays as a strict array."""
    if type(a) is StrictArray:
        return StrictArray(numpy.asarray(a._a, dtype=dtype, order=order))
    if type(a) is numpy.ndarray:
        return StrictArray(numpy.array(a, dtype=dtype, order=order, copy=True))
    return StrictArray(numpy.array(_unwrap_data(a), dtype=dtype, order=order))


def _array(a: Any, dtype: Any = None, copy: bool = True, order: Any = None, ndmin: int = 0) -> StrictArray:
    if type(a) is numpy.ndarray:
        return StrictArray(numpy.array(a, dtype=dtype, copy=True, order=order, ndmin=ndmin))
    return StrictArray(numpy.array(_unwrap_data(a), dtype=dtype, copy=copy, order=order, ndmin=ndmin))


def _ascontiguousarray(a: StrictArray, dtype: Any = None) -> StrictArray:
    return StrictArray(numpy.ascontiguousarray(_unwrap(a, "ascontiguousarray"), dtype=dtype))


def _asnumpy(a: Any) -> numpy.ndarray:
    """A strict array's data as a NumPy copy (CuPy's ``asnumpy``); NumPy arrays pass through."""
    if type(a) is StrictArray:
        return a._a.copy()
    return numpy.asarray(a)


xp.asarray = _asarray  # type: ignore[attr-defined]
xp.asanyarray = _asarray  # type: ignore[attr-defined]
xp.array = _array  # type: ignore[attr-defined]
xp.ascontiguousarray = _ascontiguousarray  # type: ignore[attr-defined]
xp.asnumpy = _asnumpy  # type: ignore[attr-defined]


class Generator:
    """The strict device's random generator: NumPy's ``default_rng`` (same stream for the same seed),
    giving strict arrays."""

    _METHODS = ("random", "standard_normal", "normal", "uniform", "integers", "permutation", "binomial",
                "exponential", "poisson", "choice")

    def __init__(self, seed: int | None = None) -> None:
        self._g = numpy.random.default_rng(seed)

    def __getattr__(self, name: str) -> Any:
        if name not in Generator._METHODS:
            raise AttributeError(f"strict device generator has no method {name!r}")
        f = getattr(self._g, name)
        return lambda *args, **kw: _wrap(f(*_unwrap_args(args, name), **_unwrap_kw(kw, name)))


_register_array_module(StrictArray, xp)
