"""``Tensor``: an array plus the node that made it; ``backward`` starts the sweep in ``autograd.py``.

The engine's one rule for import cycles: a module that needs a name only when its functions run (not to
define its classes) imports it at its end, after its own definitions ("late import"). ``tensor.py`` ends by
importing ``autograd`` and ``ops`` (Tensor's operators call the ops, the ops build Tensors), ``function.py``
ends by importing ``Tensor`` (``Function.__call__`` builds the output tensors). Whichever module Python
loads first, each finds the names it needs already defined. No registration hooks, no imports inside
functions.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy

from handgrad.engine import backend as _backend
from handgrad.engine.backend import CPU, Device, device_of_array, get_array_module, get_default_dtype, to_host
from handgrad.engine.dtypes import to_dtype
from handgrad.engine.tensor_inplace import TensorInplaceMethods
from handgrad.engine.tensor_methods import TensorMethods

if TYPE_CHECKING:
    from handgrad.engine.function import Function


def _to_array(data: Any, dtype: Any = None) -> Any:
    """Turn Python data or an array into an array; Python floats get the default float dtype."""
    if isinstance(data, Tensor):
        data = data.array
    if dtype is not None:
        dtype = to_dtype(dtype, "tensor")
    xp = get_array_module(data)
    if isinstance(data, xp.ndarray):
        return data if dtype is None else data.astype(dtype, copy=False)
    if isinstance(data, numpy.generic):
        return numpy.asarray(data, dtype=dtype)
    arr = numpy.asarray(data)
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f":
        return arr.astype(get_default_dtype(), copy=False)
    if arr.dtype.kind == "i":
        return arr.astype(numpy.int64, copy=False)
    return arr


class Tensor(TensorMethods, TensorInplaceMethods):
    """An n-dimensional array that records the ops applied to it, so gradients can flow back.

    ``array`` is the underlying NumPy (or CuPy) array (Chainer's ``Variable.array``). ``data`` is, as in
    PyTorch, a Tensor sharing that memory but cut from the graph and from the version counter, so
    ``w.data.uniform_(-a, a)`` initialises ``w`` in place without autograd seeing it. ``grad`` is a Tensor
    filled by ``backward`` for leaves with ``requires_grad=True``.
    """

    # _vc: the version counter [version, stamp] of in-place writes, created on the first one (engine/inplace.py);
    # _view: (root base, steps, root rewrites seen) of a view, _hist: the creators before in-place rewrites
    # (engine/views.py); both None until set
    __slots__ = ("array", "grad", "requires_grad", "_creator", "_output_index", "_vc", "_view", "_hist",
                 "__weakref__")
    __array_priority__ = 1000  # so ``ndarray + Tensor`` defers to Tensor.__radd__

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None) -> None:
        self.array = _to_array(data, dtype)
        self.grad: Tensor | None = None
        if requires_grad and self.array.dtype.kind not in "fc":
            raise TypeError(f"only floating tensors can require gradients, got dtype {self.array.dtype}")
        self.requires_grad = bool(requires_grad)
        self._creator: Function | None = None
        self._output_index = 0
        self._view = self._hist = None

    @classmethod
    def _from_op(cls, data: Any, creator: Function | None, index: int) -> Tensor:
        """A tensor made by an op (``creator``, its output ``index``), or a leaf when ``creator`` is None."""
        t = object.__new__(cls)
        t.array = data
        t.grad = None
        t.requires_grad = creator is not None
        t._creator = creator
        t._output_index = index
        t._view = t._hist = None
        return t

    # -- basic facts -----------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> numpy.dtype:
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def is_leaf(self) -> bool:
        if self._view is not None:
            _refresh(self)
        return self._creator is None

    @property
    def grad_fn(self) -> Function | None:
        if self._view is not None:
            _refresh(self)  # a view of a base rewritten in place since: the base's current graph
        return self._creator

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.array.ndim

    def numel(self) -> int:
        return int(self.array.size)

    def __len__(self) -> int:
        return len(self.array)

    @property
    def device(self) -> Device:
        """Where the data lives: ``device(type='cpu')``, ``'cuda:N'`` or the test suite's ``'strict'``."""
        return device_of_array(self.array)

    def numpy(self) -> numpy.ndarray:
        """The data as a NumPy array: shared, not copied, on the CPU; copied to the host from a device (an
        explicit transfer, as ``t.cpu().numpy()`` in PyTorch)."""
        return to_host(self.array)

    def __array__(self, dtype: Any = None, copy: Any = None) -> numpy.ndarray:
        """``numpy.asarray(t)`` gives the data (shared where possible), like PyTorch's CPU tensors. A tensor on
        another device refuses, as PyTorch's CUDA tensors do: host work converts explicitly (``.numpy()``)."""
        if type(self.array) is not numpy.ndarray and not isinstance(self.array, numpy.generic):
            raise TypeError(f"can't convert a {self.device} tensor to a NumPy array implicitly; "
                            "use .numpy() or .cpu() to copy it to the host first")
        a = self.numpy()
        if dtype is not None:
            a = a.astype(dtype, copy=False)
        return a.copy() if copy else a

    def item(self) -> Any:
        return self.array.item()

    def tolist(self) -> Any:
        return self.array.tolist()

    @property
    def data(self) -> Tensor:
        """PyTorch's ``t.data``: a leaf sharing this tensor's memory, with no graph and its own version
        counter (writes through it are not seen by autograd, which is the point of ``.data``)."""
        return Tensor._from_op(self.array, None, 0)

    @data.setter
    def data(self, value: Any) -> None:
        # ``p.data = t`` makes p share t's memory (shape and dtype may change), as in PyTorch
        self.array = value.array if isinstance(value, Tensor) else _to_array(value)

    def detach(self) -> Tensor:
        """A new leaf sharing the data (and the version counter of in-place writes, a view's its root's), cut
        from the graph."""
        t = Tensor._from_op(self.array, None, 0)
        t._vc = version_counter(self)
        return t

    def clone(self) -> Tensor:
        return _ops.clone(self)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not self.is_leaf:
            raise RuntimeError("requires_grad_: only leaf tensors can change requires_grad")
        if requires_grad and self.array.dtype.kind not in "fc":
            raise TypeError(f"only floating tensors can require gradients, got dtype {self.array.dtype}")
        self.requires_grad = requires_grad
        return self

    def to(self, *args: Any, **kwargs: Any) -> Tensor:
        """``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other)`` or ``to(device=, dtype=)``, as in
        PyTorch: a tensor cast and/or moved (differentiably: gradients flow back to this tensor's device and
        dtype); ``self`` when the device already matches and no dtype is named."""
        device, dtype = _backend.parse_to_args("Tensor.to", args, kwargs)
        t = self
        if dtype is not None:
            t = _ops.cast(t, dtype)
        if device is not None and device != device_of_array(t.array):
            t = _to_device(t, device)
        return t

    def cpu(self) -> Tensor:
        """This tensor on the CPU (``self`` if already there)."""
        return self.to(CPU)

    def cuda(self, device: Any = None) -> Tensor:
        """This tensor on GPU ``device`` (default 0); needs CuPy and a GPU."""
        return self.to(_backend.get_device("cuda" if device is None else device if not isinstance(device, int)
                                  else f"cuda:{device}"))

    # .float() .double() .long() .int() .bool() .half() .type(): in tensor_methods.py

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    def is_floating_point(self) -> bool:
        return self.array.dtype.kind == "f"

    def __repr__(self) -> str:
        # prefix: numpy indents the rows after the first by its length, so they line up under the first
        body = numpy.array2string(self.numpy(), separator=", ", precision=4, threshold=50, prefix="tensor(")
        extra = ""
        if self._creator is not None:
            extra = f", grad_fn={self._creator.name}"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        dev = device_of_array(self.array)
        where = "" if dev is CPU else f", device='{dev}'"
        return f"tensor({body}{where}, dtype={self.dtype}{extra})"

    def __bool__(self) -> bool:
        if self.array.size != 1:  # e.g. ``if a == b:`` on tensors: == is elementwise, as in PyTorch
            what = "no values" if self.array.size == 0 else "more than one value"
            raise RuntimeError(f"Boolean value of Tensor with {what} is ambiguous (shape {self.shape}); "
                               "use .any(), .all() or handgrad.equal(a, b)")
        return bool(self.array)

    def __float__(self) -> float:
        return float(self._scalar("float"))

    def __int__(self) -> int:
        return int(self._scalar("int"))

    def _scalar(self, what: str) -> Any:
        """The one element of a one-element tensor of any shape (NumPy 2 refuses float() of a (1,) array;
        PyTorch does not)."""
        if self.array.size != 1:
            raise TypeError(f"{what}(): only one element tensors can be converted to Python scalars, got shape "
                            f"{self.shape}")
        return self.array.item()

    # -- autodiff --------------------------------------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) . grad into ``leaf.grad`` for every leaf that requires a gradient.

        ``grad`` defaults to 1 for a one-element tensor. The graph is freed afterwards unless
        ``retain_graph=True``.
        """
        if self._view is not None:
            _refresh(self)
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no grad_fn")
        xp = get_array_module(self.array)
        if grad is None:
            if self.array.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implied only for a one-element tensor, got shape {self.shape}"
                )
            g = xp.ones_like(self.array)
        else:
            g = _to_array(grad, self.dtype)
            if g.shape != self.array.shape:
                raise ValueError(f"backward: grad has shape {tuple(g.shape)} but the tensor has {self.shape}")
        if self._creator is None:
            accumulate_grad(self, g)
            return
        run_backward(self._creator, self._output_index, g, retain_graph)

    # -- Python operators (the ops themselves live in handgrad.engine.ops) -------------------------------
    def __add__(self, o: Any) -> Tensor:
        return _ops.add(self, o)

    def __radd__(self, o: Any) -> Tensor:
        return _ops.add(o, self)

    def __sub__(self, o: Any) -> Tensor:
        return _ops.sub(self, o)

    def __rsub__(self, o: Any) -> Tensor:
        return _ops.sub(o, self)

    def __mul__(self, o: Any) -> Tensor:
        return _ops.mul(self, o)

    def __rmul__(self, o: Any) -> Tensor:
        return _ops.mul(o, self)

    def __truediv__(self, o: Any) -> Tensor:
        return _ops.div(self, o)

    def __rtruediv__(self, o: Any) -> Tensor:
        return _ops.div(o, self)

    # // (floor division): in tensor_methods.py

    def __pow__(self, o: Any) -> Tensor:
        return _ops.pow(self, o)

    def __rpow__(self, o: Any) -> Tensor:
        return _ops.pow(o, self)

    def __neg__(self) -> Tensor:
        return _ops.neg(self)

    def __matmul__(self, o: Any) -> Tensor:
        return _ops.matmul(self, o)

    def __rmatmul__(self, o: Any) -> Tensor:
        return _ops.matmul(o, self)

    def __getitem__(self, index: Any) -> Tensor:
        return _ops.getitem(self, index)

    # comparisons (== != < <= > >=, elementwise bool tensors) and & | ~: in tensor_methods.py

    # -- op methods (thin: the ops live in handgrad.engine.ops) -------------------------------------------
    def __setitem__(self, index: Any, value: Any) -> None:
        _ops.setitem(self, index, value)

    def __abs__(self) -> Tensor:
        return _ops.abs(self)

    def add(self, other: Any) -> Tensor:
        return _ops.add(self, other)

    def sub(self, other: Any) -> Tensor:
        return _ops.sub(self, other)

    def mul(self, other: Any) -> Tensor:
        return _ops.mul(self, other)

    def div(self, other: Any, *, rounding_mode: str | None = None) -> Tensor:
        return _ops.div(self, other, rounding_mode=rounding_mode)

    def pow(self, exponent: Any) -> Tensor:
        return _ops.pow(self, exponent)

    def neg(self) -> Tensor:
        return _ops.neg(self)

    def square(self) -> Tensor:
        return _ops.square(self)

    def maximum(self, other: Tensor) -> Tensor:
        return _ops.maximum(self, other)

    def minimum(self, other: Tensor) -> Tensor:
        return _ops.minimum(self, other)

    def reshape(self, *shape: Any) -> Tensor:
        return _ops.reshape(self, *shape)

    def view(self, *shape: Any) -> Tensor:
        """``reshape`` that refuses, as PyTorch, when the data cannot take the new shape without a copy (e.g.
        ``x.t().view(-1)``); ``reshape`` copies then."""
        check_viewable(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)
        return _ops.reshape(self, *shape)

    def view_as(self, other: Tensor) -> Tensor:
        return self.view(other.shape)

    def reshape_as(self, other: Tensor) -> Tensor:
        return _ops.reshape(self, other.shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return _ops.flatten(self, start_dim, end_dim)

    def unflatten(self, dim: int, sizes: Sequence[int]) -> Tensor:
        return _ops.unflatten(self, dim, sizes)

    def permute(self, *dims: Any) -> Tensor:
        return _ops.permute(self, *dims)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return _ops.transpose(self, dim0, dim1)

    @property
    def T(self) -> Tensor:  # noqa: N802 - torch name
        return _ops.permute(self, *reversed(range(self.ndim)))

    @property
    def mT(self) -> Tensor:  # noqa: N802 - torch name
        return _ops.transpose(self, -2, -1)

    def expand(self, *sizes: Any) -> Tensor:
        return _ops.expand(self, *sizes)

    def expand_as(self, other: Tensor) -> Tensor:
        return _ops.expand_as(self, other)

    def squeeze(self, dim: Any = None) -> Tensor:
        return _ops.squeeze(self, dim)

    def unsqueeze(self, dim: int) -> Tensor:
        return _ops.unsqueeze(self, dim)

    def split(self, split_size: Any, dim: int = 0) -> tuple[Tensor, ...]:
        return _ops.split(self, split_size, dim)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        return _ops.chunk(self, chunks, dim)

    def unbind(self, dim: int = 0) -> tuple[Tensor, ...]:
        return _ops.unbind(self, dim)

    def gather(self, dim: int, index: Any) -> Tensor:
        return _ops.gather(self, dim, index)

    def scatter_add(self, dim: int, index: Any, src: Tensor) -> Tensor:
        return _ops.scatter_add(self, dim, index, src)

    def index_select(self, dim: int, index: Any) -> Tensor:
        return _ops.index_select(self, dim, index)

    def masked_fill(self, mask: Any, value: Any) -> Tensor:
        return _ops.masked_fill(self, mask, value)

    def where(self, condition: Any, other: Any) -> Tensor:
        return _ops.where(condition, self, other)

    def matmul(self, other: Any) -> Tensor:
        return _ops.matmul(self, other)

    def exp(self) -> Tensor:
        return _ops.exp(self)

    def log(self) -> Tensor:
        return _ops.log(self)

    def sqrt(self) -> Tensor:
        return _ops.sqrt(self)

    def abs(self) -> Tensor:
        return _ops.abs(self)

    def sin(self) -> Tensor:
        return _ops.sin(self)

    def cos(self) -> Tensor:
        return _ops.cos(self)

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002 - torch names
        return _ops.clamp(self, min, max)

    def clip(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002 - torch names
        return _ops.clamp(self, min, max)

    def tanh(self) -> Tensor:
        return _ops.tanh(self)

    def sigmoid(self) -> Tensor:
        return _ops.sigmoid(self)

    def relu(self) -> Tensor:
        return _ops.relu(self)

    def softmax(self, dim: int) -> Tensor:
        return _ops.softmax(self, dim)

    def log_softmax(self, dim: int) -> Tensor:
        return _ops.log_softmax(self, dim)

    def retain_grad(self) -> None:
        """Keep the gradient of this non-leaf tensor in ``.grad`` during later backward passes."""
        if self._view is not None:
            _refresh(self)
        if self._creator is None:
            return
        fn = self._creator
        if fn._retain is None:
            fn._retain = {}
        fn._retain[self._output_index] = weakref.ref(self)


def _make(data: Any, creator: Function | None, index: int) -> Tensor:
    """``Tensor._from_op`` without the classmethod lookup: the constructor on every op's hot path."""
    t = _object_new(Tensor)
    t.array = data
    t.grad = None
    t.requires_grad = creator is not None
    t._creator = creator
    t._output_index = index
    t._view = t._hist = None
    return t


_object_new = object.__new__

# late imports (see the module docstring): these modules use Tensor, Tensor's methods use them
from handgrad.engine import ops as _ops  # noqa: E402
from handgrad.engine.autograd import accumulate_grad, run_backward  # noqa: E402
from handgrad.engine.inplace import check_viewable, version_counter  # noqa: E402
from handgrad.engine.ops.device import to_device as _to_device  # noqa: E402
from handgrad.engine.views import refresh as _refresh  # noqa: E402

