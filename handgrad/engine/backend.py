"""Devices and the one door to the array module.

Every op asks ``get_array_module(*arrays)`` for ``xp`` instead of importing NumPy directly, so the same op
code runs on NumPy (``"cpu"``), on CuPy (``"cuda"`` / ``"cuda:N"``) and on the test suite's strict
stand-in for CuPy (``"strict"``, see ``_strict.py``): Chainer's ``backend.get_array_module`` idea.

A ``Device`` names where arrays live and moves arrays there (``Device.send``), as Chainer's
``backend.get_device`` / ``Device.send`` do; ``handgrad.device("cuda:1")`` is the user's spelling (PyTorch's
``torch.device``). Moves are always explicit: ``to_host(array)`` brings an array to NumPy,
``send(obj, device)`` moves a whole batch (tensors and arrays inside tuples, lists and dicts).

Several GPUs: ``Device.send`` places arrays on the GPU it names, but CuPy runs kernels and allocates on its
*current* GPU, so work on ``"cuda:N"`` with N > 0 runs inside ``using_device("cuda:N")`` (Chainer's rule;
PyTorch switches per op, which would cost every op a context switch here). Untested without a GPU.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import numpy

from handgrad.engine.dtypes import to_dtype

try:  # CuPy is optional: only imported if the user has it.
    import cupy as _cupy  # type: ignore[import-not-found]
except Exception:  # pragma: no cover - no GPU stack in CI
    _cupy = None

_default_dtype = numpy.dtype(numpy.float32)

# array type -> its array module, for the non-NumPy devices (filled by ``_register_array_module``)
_MODULE_OF_TYPE: dict[type, types.ModuleType] = {}
if _cupy is not None:  # pragma: no cover - no GPU stack in CI
    _MODULE_OF_TYPE[_cupy.ndarray] = _cupy
_ndarray = numpy.ndarray


def get_array_module(*arrays: Any) -> types.ModuleType:
    """The array module (``numpy``, ``cupy`` or the strict stand-in) of the first device array among
    ``arrays``; ``numpy`` when all are NumPy arrays or Python/NumPy scalars."""
    for a in arrays:
        t = type(a)
        if t is not _ndarray and t in _MODULE_OF_TYPE:
            return _MODULE_OF_TYPE[t]
    return numpy


def get_special_module(xp: types.ModuleType) -> Any:
    """The ``scipy.special`` of array module ``xp`` (``cupyx.scipy.special`` for CuPy), for ``erf`` and
    friends inside op bodies."""
    if xp is numpy:
        import scipy.special

        return scipy.special
    special = getattr(xp, "special", None)  # the strict device carries its own
    if special is not None:
        return special
    import cupyx.scipy.special  # type: ignore[import-not-found]  # pragma: no cover - needs a GPU

    return cupyx.scipy.special  # pragma: no cover - needs a GPU


def _register_array_module(array_type: type, module: types.ModuleType) -> None:
    """Make ``get_array_module`` answer ``module`` for arrays of ``array_type`` (used by ``_strict.py``)."""
    _MODULE_OF_TYPE[array_type] = module


# -- devices -----------------------------------------------------------------------------------------------
class Device:
    """Where a tensor's data lives: ``type`` is ``"cpu"``, ``"cuda"`` or ``"strict"``, ``index`` the GPU
    number for ``"cuda"`` (None otherwise). Compare with ``==``; ``str(d)`` is PyTorch's spelling."""

    __slots__ = ("type", "index")

    def __init__(self, type: str, index: int | None = None) -> None:  # noqa: A002 - torch name
        self.type = type
        self.index = index

    @property
    def xp(self) -> types.ModuleType:
        """The array module of this device."""
        if self.type == "cpu":
            return numpy
        if self.type == "strict":
            from handgrad.engine import _strict

            return _strict.xp
        return _cupy  # type: ignore[return-value]

    def send(self, array: Any) -> Any:
        """``array`` (NumPy, CuPy, strict or Python data) as an array on this device; unchanged (not copied)
        when it already lives here."""
        if self.type == "cpu":
            return to_host(array)
        if device_of_array(array, None) == self:
            return array
        if self.type == "strict":
            return self.xp.asarray(to_host(array))
        with _cupy.cuda.Device(self.index):  # pragma: no cover - needs a GPU
            if isinstance(array, _cupy.ndarray):  # another GPU: a peer copy onto this one
                return _cupy.array(array, copy=True)
            return _cupy.asarray(to_host(array))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = get_device(other)
            except (RuntimeError, ValueError):
                return False
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        idx = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{idx})"


CPU = Device("cpu")
STRICT = Device("strict")
DeviceLike = Device | str | int | None


def get_device(spec: DeviceLike) -> Device:
    """A ``Device`` from ``"cpu"``, ``"cuda"``, ``"cuda:N"``, an int N (= ``"cuda:N"``), ``"strict"`` (the
    test suite's CuPy stand-in), a ``Device`` or None (= cpu). ``"cuda"`` needs CuPy and a GPU: without
    them this raises a one-line ``RuntimeError`` saying which is missing."""
    if isinstance(spec, Device):
        return spec
    if spec is None:
        return CPU
    if isinstance(spec, int) and not isinstance(spec, bool):
        return _cuda_device(int(spec), f"cuda:{spec}")
    if not isinstance(spec, str):
        raise TypeError(f"device: expected a device name such as 'cpu' or 'cuda:0', got {type(spec).__name__}")
    name = spec.strip().lower()
    if name == "cpu":
        return CPU
    if name == "strict":
        return STRICT
    if name == "cuda" or name.startswith("cuda:"):
        index = 0
        if name != "cuda":
            try:
                index = int(name[5:])
            except ValueError:
                raise ValueError(f"device: cannot read the GPU number in {spec!r} (expected 'cuda:N')") from None
        return _cuda_device(index, spec)
    raise ValueError(f"device: unknown device {spec!r} (expected 'cpu', 'cuda', 'cuda:N' or 'strict')")


device = get_device  # ``handgrad.device("cuda:0")``, as ``torch.device``


def is_device_spec(obj: Any) -> bool:
    """Whether ``obj`` names a device (rather than a dtype): for ``.to(x)`` with one positional argument."""
    if isinstance(obj, Device):
        return True
    if isinstance(obj, str):
        name = obj.strip().lower()
        return name in ("cpu", "cuda", "strict") or name.startswith("cuda:")
    return False


def parse_to_args(owner: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Device | None, Any]:
    """``(device, dtype)`` from the arguments of PyTorch's ``.to``: ``(dtype)``, ``(device)``,
    ``(device, dtype)``, ``(tensor)`` (its device and dtype), keywords ``device=``, ``dtype=`` (and the
    accepted, meaningless here, ``non_blocking=`` / ``copy=``). None where not named."""
    kwargs = dict(kwargs)
    dev, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    kwargs.pop("non_blocking", None)
    kwargs.pop("copy", None)
    if kwargs:
        raise TypeError(f"{owner}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
    if len(args) > 2:
        raise TypeError(f"{owner}: expected at most a device and a dtype, got {len(args)} positional arguments")
    for a in args:
        if isinstance(a, _Tensor):
            dev, dtype = device_of_array(a.array), a.dtype
        elif is_device_spec(a):
            dev = a
        elif a is not None:
            dtype = a
    if dtype is not None:
        try:
            dtype = to_dtype(dtype, owner)
        except TypeError as e:
            if "float16" in str(e):
                raise
            raise TypeError(f"{owner}: {dtype!r} is neither a device ('cpu', 'cuda', 'cuda:N', 'strict') "
                            "nor a dtype") from None
    return (None if dev is None else get_device(dev)), dtype


def _cuda_device(index: int, spec: str) -> Device:
    if _cupy is None:
        raise RuntimeError(f"device {spec!r}: CuPy is not installed (pip install cupy-cuda12x); "
                           "handgrad runs on 'cpu' without it")
    try:  # pragma: no cover - needs CuPy
        count = _cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # pragma: no cover - CuPy without a driver
        raise RuntimeError(f"device {spec!r}: CuPy is installed but no GPU is usable "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if index < 0 or index >= count:  # pragma: no cover - needs CuPy
        raise RuntimeError(f"device {spec!r}: no such GPU ({count} visible)")
    return Device("cuda", index)  # pragma: no cover - needs CuPy


_REQUIRED = object()


def device_of_array(array: Any, default: Any = _REQUIRED) -> Any:
    """The device an array lives on (NumPy arrays and scalars, Python numbers: cpu). An unknown array type
    gives ``default`` when one is passed, else ``TypeError``."""
    t = type(array)
    if t is _ndarray or t not in _MODULE_OF_TYPE:
        if isinstance(array, (numpy.ndarray, numpy.generic, int, float, bool, complex)):
            return CPU
        if default is not _REQUIRED:
            return default
        raise TypeError(f"device_of_array: {t.__name__} is not an array")
    if _cupy is not None and t is _cupy.ndarray:  # pragma: no cover - needs a GPU
        return Device("cuda", int(array.device.id))
    return STRICT


def module_device(module: Any) -> Device:
    """The device of a model: that of its first parameter (or buffer); the CPU for one with neither. For
    library code that feeds a model host data (decoding, sampling, evaluation)."""
    for t in (*module.parameters(), *(b for b in getattr(module, "buffers", tuple)() if b is not None)):
        return device_of_array(t.array)
    return CPU


def to_host(array: Any) -> Any:
    """``array`` as a NumPy array (a copy from a device, the same object from NumPy). For host-only work
    (decoding, evaluation, bookkeeping) that has to leave the device explicitly."""
    t = type(array)
    if t is _ndarray or t not in _MODULE_OF_TYPE:
        if hasattr(array, "__array__") or isinstance(array, (list, tuple, int, float, bool, numpy.generic)):
            return numpy.asarray(array)
        return array
    return _MODULE_OF_TYPE[t].asnumpy(array)


def send(obj: Any, device: DeviceLike) -> Any:
    """``obj`` moved to ``device``: a Tensor by ``Tensor.to``, an array by ``Device.send``, tuples, lists
    and dicts element by element (their type kept); anything else (strings, ints, None) unchanged.

    The training loop and ``DataLoader(device=...)`` use it to place each batch on the model's device."""
    dev = get_device(device)
    if isinstance(obj, _Tensor):
        return obj.to(dev)
    if type(obj) is _ndarray or type(obj) in _MODULE_OF_TYPE:
        return dev.send(obj)
    if isinstance(obj, dict):
        return type(obj)((k, send(v, dev)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(send(v, dev) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(send(v, dev) for v in obj)
    return obj


@contextlib.contextmanager
def using_device(device: DeviceLike) -> Iterator[Device]:
    """Make ``device`` CuPy's current GPU inside the block (a no-op for cpu and strict), as Chainer's
    ``using_device``: new CuPy arrays made inside are allocated there."""
    dev = get_device(device)
    if dev.type == "cuda":  # pragma: no cover - needs a GPU
        with _cupy.cuda.Device(dev.index):
            yield dev
    else:
        yield dev


# -- dtypes ------------------------------------------------------------------------------------------------
def get_default_dtype() -> numpy.dtype:
    """The floating dtype new tensors get when none is named (float32 unless changed)."""
    return _default_dtype


def set_default_dtype(dtype: Any) -> None:
    """Set the floating dtype for new tensors: ``float32`` or ``float64``."""
    global _default_dtype
    d = to_dtype(dtype, "set_default_dtype")
    if d.kind != "f":
        raise TypeError(f"set_default_dtype: expected a floating dtype, got {d}")
    _default_dtype = d


def is_floating(dtype: Any) -> bool:
    return numpy.dtype(dtype).kind == "f"


# late import (the engine's rule for import cycles, see tensor.py): ``send`` recognises tensors
from handgrad.engine.tensor import Tensor as _Tensor  # noqa: E402
