"""Machinery shared by the fused sequence ops: argument checks, the time/batch schedule for variable lengths
and reversed directions, and the ``FusedRecurrenceFunction`` base ``Function``.

A fused op is ONE graph node for a whole layer-direction: its forward loops over time on raw arrays and its
backward is the hand-written BPTT loop. The subclasses (``rnn_sequence``, ``lstm_sequence``,
``gru_sequence``) only write the cell-specific ``_forward`` / ``_backward`` on an *internal* layout:

* time runs forwards (a reverse direction is handled by re-indexing at the boundary), and
* with ``lengths``, the batch is sorted by decreasing length (stable), so the sequences still running at step
  ``t`` are a prefix ``[:n_t]`` of the batch: exactly PyTorch's packed ``batch_sizes``. The recurrent GEMM of
  step ``t`` runs on ``n_t`` rows only, finished rows keep their state, and their output rows stay zero.

Re-indexing at the boundary (one gather in, one scatter out) is a permutation of the ``(t, b)`` positions,
so the gradients go back through the same permutation.
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor
from handgrad.functional import _threads
from handgrad.functional.rnn import _kernels
from handgrad.functional.rnn import _workspace as ws
from handgrad.functional.rnn._workspace import give_back


# -- argument checks ------------------------------------------------------------------------------------------
def as_lengths(name: str, lengths: Any, T: int, B: int) -> numpy.ndarray | None:
    """``lengths`` (a Tensor, array or sequence of B ints in [1, T]) as an int64 NumPy vector, or None."""
    if lengths is None:
        return None
    if isinstance(lengths, Tensor):
        lengths = lengths.numpy()
    xp = get_array_module(lengths)
    arr = numpy.asarray(lengths if xp is numpy else xp.asnumpy(lengths))
    if arr.ndim != 1:
        raise ValueError(f"{name}: lengths must be a 1-D vector of {B} sequence lengths, got shape {arr.shape}")
    if arr.shape[0] != B:
        raise ValueError(f"{name}: lengths has {arr.shape[0]} entries but the batch has {B} sequences")
    if arr.dtype.kind == "f":
        if not numpy.all(arr == numpy.round(arr)):
            raise ValueError(f"{name}: lengths must be integers, got {arr.tolist()}")
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: lengths must be integers, got dtype {arr.dtype}")
    arr = arr.astype(numpy.int64)
    if B and (arr.min() < 1 or arr.max() > T):
        raise ValueError(
            f"{name}: lengths must lie in [1, T={T}] (T is the input's time dimension), "
            f"got min {int(arr.min())} and max {int(arr.max())}"
        )
    return arr


def check_float(name: str, **tensors: Tensor | None) -> None:
    """All given tensors are floating and share one dtype."""
    dtypes = {}
    for key, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {key} must be a Tensor, got {type(t).__name__}")
        if t.dtype.kind != "f":
            raise TypeError(f"{name}: {key} must be floating, got dtype {t.dtype}")
        dtypes[key] = t.dtype
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in dtypes.items())
        raise TypeError(f"{name}: all tensors must share one dtype, got {listed}")


def check_weights(
    name: str, n_gates: int, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
) -> int:
    """Check ``w_ih (G*H, I)``, ``w_hh (G*H, H)``, biases ``(G*H,)`` against the input's I; return H."""
    if w_hh.ndim != 2 or w_hh.shape[0] != n_gates * w_hh.shape[1]:
        raise ValueError(
            f"{name}: weight_hh must have shape ({n_gates}*H, H), got {w_hh.shape}"
        )
    H = w_hh.shape[1]
    I = x.shape[-1]
    if w_ih.shape != (n_gates * H, I):
        raise ValueError(
            f"{name}: weight_ih has shape {w_ih.shape} but input {x.shape} with {I} features and "
            f"hidden size {H} need ({n_gates * H}, {I})"
        )
    if (b_ih is None) != (b_hh is None):
        raise ValueError(f"{name}: give both bias_ih and bias_hh or neither")
    for key, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if b is not None and b.shape != (n_gates * H,):
            raise ValueError(f"{name}: {key} has shape {b.shape}, expected ({n_gates * H},)")
    return H


def check_state(name: str, key: str, s: Tensor | None, B: int, H: int) -> None:
    if s is not None and s.shape != (B, H):
        raise ValueError(f"{name}: {key} has shape {s.shape}, expected (batch, hidden_size) = ({B}, {H})")


# -- the schedule ---------------------------------------------------------------------------------------------
class Schedule:
    """Where each (t, b) of the caller's layout sits in the internal layout, and how many rows run at each t.

    ``sizes[t]`` = number of sequences still running at internal step t (all B without lengths).
    ``last[j]`` = length of internal row j (None without lengths: every row ends at T).
    """

    def __init__(self, T: int, B: int, lengths: numpy.ndarray | None, reverse: bool, xp: Any = numpy) -> None:
        self.T, self.B, self.reverse = T, B, reverse
        if lengths is not None and bool(numpy.all(lengths == T)):
            lengths = None  # nothing is padded: the plain (fast) path gives the same numbers
        self.lengths = lengths
        self.perm: numpy.ndarray | None = None
        self.tt: numpy.ndarray | None = None
        self.last: numpy.ndarray | None = None
        if lengths is None:
            self.sizes = [B] * T
            return
        order = numpy.argsort(-lengths, kind="stable")
        if not bool(numpy.all(order == numpy.arange(B))):
            self.perm = order
            self.inv = numpy.argsort(order)
        last = lengths[order]
        self.last = last
        steps = numpy.arange(T)
        self.sizes = (last[None, :] > steps[:, None]).sum(axis=1).tolist()
        if reverse:
            # each sequence runs from its own last valid step back to 0; padded steps map to themselves
            self.tt = numpy.where(steps[:, None] < last[None, :], last[None, :] - 1 - steps[:, None], steps[:, None])
            self.cols = (self.perm if self.perm is not None else numpy.arange(B))[None, :]
        self.rows = numpy.arange(B)
        if xp is not numpy:  # the index arrays are built on the host once, then live where the data is
            for name in ("perm", "inv", "tt", "cols", "last", "rows"):
                if getattr(self, name, None) is not None:
                    setattr(self, name, xp.asarray(getattr(self, name)))

    @property
    def padded(self) -> bool:
        return self.lengths is not None

    def seq_in(self, a: Any) -> Any:
        """(T, B, ...) caller layout -> internal layout (a view or a gathered copy)."""
        if self.tt is not None:
            return a[self.tt, self.cols]
        if self.reverse:
            a = a[::-1]
        if self.perm is not None:
            a = a[:, self.perm]
        return a

    def seq_out(self, a: Any) -> Any:
        """Internal (T, B, ...) -> caller layout (the inverse of ``seq_in``)."""
        if self.tt is not None:
            out = get_array_module(a).empty_like(a)
            out[self.tt, self.cols] = a
            return out
        if self.perm is not None:
            a = a[:, self.inv]
        if self.reverse:
            a = a[::-1]
        return a

    def state_in(self, s: Any) -> Any:
        return s if self.perm is None else s[self.perm]

    def state_out(self, s: Any) -> Any:
        return s if self.perm is None else s[self.inv]

    def final(self, states: Any) -> Any:
        """The state after each row's last valid step, from the (T+1, B, H) array of all states."""
        if self.last is None:
            return states[self.T]
        return states[self.last, self.rows]


# -- the base Function -------------------------------------------------------------------------------------------
class FusedRecurrenceFunction(Function):
    """One direction of one recurrent layer over a whole sequence (or one step, for the cells).

    Inputs: ``x (T, B, I), *states (B, H), w_ih (G*H, I), w_hh (G*H, H)[, b_ih (G*H,), b_hh (G*H,)]``.
    Outputs: ``output (T, B, H), *final_states (B, H)``; a cell (``cell=True``) takes ``x (B, I)`` and returns
    only the new states.
    """

    n_states = 1
    n_gates = 1
    _saved: tuple[str, ...] = ()  # internal arrays kept for the backward; pooled again once the graph is freed

    def __init__(self, lengths: numpy.ndarray | None = None, reverse: bool = False, cell: bool = False) -> None:
        self.lengths, self.reverse, self.cell = lengths, reverse, cell

    # subclasses: internal-layout kernels -----------------------------------------------------------------
    def _forward(self, x: Any, states: list[Any], w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> tuple[Any, ...]:
        """x (T, B, I) contiguous, states (B, H) -> one (T+1, B, H) array per state (h first; LSTM: h, c), row 0
        the initial state, padded positions of h zero. Saves what ``_backward`` needs on ``self``."""
        raise NotImplementedError

    def _backward(self, gy: Any, gfinal: list[Any]) -> tuple[Any, list[Any], Any, Any, Any, Any]:
        """-> gx (T, B, I) or None, [g initial states], g w_ih, g w_hh, g b_ih, g b_hh."""
        raise NotImplementedError

    # machinery ----------------------------------------------------------------------------------------
    def forward(self, x: Any, *args: Any) -> Any:
        ns = self.n_states
        states = args[:ns]
        w_ih, w_hh = args[ns], args[ns + 1]
        b_ih, b_hh = (args[ns + 2], args[ns + 3]) if len(args) > ns + 2 else (None, None)
        self.has_bias = b_ih is not None
        xp = get_array_module(x)
        if self.cell:
            x = x[None]
        T, B = x.shape[0], x.shape[1]
        sch = self.sch = Schedule(T, B, self.lengths, self.reverse, xp)
        xi = xp.ascontiguousarray(sch.seq_in(x))
        st = [xp.ascontiguousarray(sch.state_in(s)) for s in states]
        # exp overflows to inf for strongly saturated gates; 1/(1+inf) = 0 is the right sigmoid: not an error
        with numpy.errstate(over="ignore"):
            all_states = self._forward(xi, st, w_ih, w_hh, b_ih, b_hh)
        # copies: a final state must not be a view that pins (or could alias) a pooled work array
        finals = tuple(xp.array(sch.state_out(sch.final(s)), copy=True) for s in all_states)
        output = None if self.cell else sch.seq_out(all_states[0][1:])
        del all_states
        if not any(self.needs_input_grad):  # no backward will come: the work arrays can go back now
            give_back(self, self._saved)
        if self.cell:
            return finals if ns > 1 else finals[0]
        return (output, *finals)

    def release(self) -> None:
        give_back(self, self._saved)
        super().release()

    def backward(self, *gys: Any) -> Any:
        sch = self.sch
        xp = get_array_module(*gys)
        if self.cell:
            gy, gfinal = None, gys
        else:
            gy, gfinal = sch.seq_in(gys[0]), gys[1:]
        gfinal = [xp.array(sch.state_in(g), copy=True) for g in gfinal]  # the BPTT loop accumulates into these
        gx, gstates, gw_ih, gw_hh, gb_ih, gb_hh = self._backward(gy, gfinal)
        if gx is not None:
            gx = sch.seq_out(gx)
            gx = gx[0] if self.cell else xp.ascontiguousarray(gx)
        gstates = [sch.state_out(g) for g in gstates]
        out = (gx, *gstates, gw_ih, gw_hh)
        if self.has_bias:
            out += (gb_ih, gb_hh)
        return out


def run_fused(
    fn: FusedRecurrenceFunction,
    name: str,
    x: Tensor,
    states: list[Tensor | None],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Any,
) -> Any:
    """Validate, fill missing initial states with zeros and call ``fn`` (shared by the public functions)."""
    check_float(name, input=x, weight_ih=w_ih, weight_hh=w_hh, bias_ih=b_ih, bias_hh=b_hh)
    want = 2 if fn.cell else 3
    if x.ndim != want:
        layout = "(batch, input_size)" if fn.cell else "(seq_len, batch, input_size)"
        raise ValueError(f"{name}: input must be {want}-D {layout}, got shape {x.shape}")
    H = check_weights(name, fn.n_gates, x, w_ih, w_hh, b_ih, b_hh)
    B = x.shape[-2]
    keys = ("h0", "c0") if not fn.cell else ("hx", "cx")
    xp = get_array_module(x.array)
    filled = []
    for key, s in zip(keys, states):
        if s is None:
            s = Tensor._from_op(xp.zeros((B, H), x.dtype), None, 0)
        else:
            check_float(name, input=x, **{key: s})
            check_state(name, key, s, B, H)
        filled.append(s)
    fn.lengths = None if fn.cell else as_lengths(name, lengths, x.shape[0], B)
    args = [x, *filled, w_ih, w_hh]
    if b_ih is not None:
        args += [b_ih, b_hh]
    return fn(*args)


def input_projection(x: Any, w: Any, b: Any, out: Any, packed: bool = False) -> None:
    """out (T, B, G) = X W^T + b for all T*B rows at once: ONE GEMM ``[X, 1] @ [W, b]^T`` (the course's
    ``W^T [x; 1]``; the ones column folds the bias in instead of a separate pass over the T*B*G result).

    ``packed=True`` (the LSTM and GRU, training and no-grad) runs the GEMM on ``_kernels.gemm_packed_bias``
    where ``_kernels.packable`` allows (float32; x C-contiguous), its rows split over the threads: measured 4.0 ms
    against 5.7 ms in OpenBLAS for (3200, 65) x (65, 1024) at one thread. There the bias starts the accumulators,
    so neither ``[X, 1]`` nor ``[W, b]`` is built."""
    xp = get_array_module(x)
    T, B, I = x.shape
    G = w.shape[0]
    out2 = out.reshape(T * B, G)
    packed = packed and _kernels.packable(xp, out2) and _kernels.usable(xp, out2, x)
    if packed:  # rows split over the threads (one packed GEMM per thread; BLAS would thread it otherwise)
        x2 = x.reshape(T * B, I)
        pk = _kernels.pack_rows(w)
        bias = xp.zeros(G, x.dtype) if b is None else xp.ascontiguousarray(b, dtype=x.dtype)
        _threads.run(lambda lo, hi: _kernels.gemm_packed_bias(x2[lo:hi], pk, bias, out2[lo:hi]), T * B, T * B * I * G)
        return
    if b is None:
        xp.matmul(x.reshape(T * B, I), w.T, out=out2)
        return
    P = ws.empty(xp, (T * B, I + 1), x.dtype)
    P[:, :I] = x.reshape(T * B, I)
    P[:, I] = 1
    W1 = xp.empty((G, I + 1), x.dtype)
    W1[:, :I] = w
    W1[:, I] = b
    xp.matmul(P, W1.T, out=out2)
    ws.give(P)


def gate_scale(xp: Any, dtype: Any, H: int, factors: tuple[float, ...]) -> Any:
    """A (G*H,) vector repeating each gate's factor H times (used to pre-scale weights for the exp tricks)."""
    return xp.repeat(xp.asarray(factors, dtype=dtype), H)
