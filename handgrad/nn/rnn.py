"""``nn.RNN``, ``nn.LSTM``, ``nn.GRU``: stacked, optionally bidirectional recurrent layers with PyTorch's API,
each layer-direction ONE fused op with hand-written BPTT (``handgrad.recurrent.*_sequence``).

Parameters, per layer ``k`` and direction (suffix ``_reverse`` for the backward direction), exactly PyTorch's::

    weight_ih_l{k}  (G*H, I_k)     I_0 = input_size, I_k = num_directions * H for k > 0
    weight_hh_l{k}  (G*H, H)
    bias_ih_l{k}    (G*H,)         bias_hh_l{k} (G*H,)
    G = 1 (RNN), 4 (LSTM: gates i, f, g, o), 3 (GRU: gates r, z, n)

all initialised ``U(-1/sqrt(H), 1/sqrt(H))``. In the course's notation each gate's matrix
``W = [W_h; W_x; W_1] in R^{(H+I+1) x H}`` (``z_t = W^T [h_{t-1}; x_t; 1]``) is
``[W_hh[gate]^T; W_ih[gate]^T; (b_ih + b_hh)[gate]^T]`` (for the GRU candidate the hidden bias stays inside
the reset gate's product, see ``gru_sequence``).

Call: ``output, h_n = rnn(input, hx=None, lengths=None)`` (LSTM: ``output, (h_n, c_n)``) with
``input (T, B, I)`` (``(B, T, I)`` if ``batch_first``; ``(T, I)`` unbatched), ``hx``/``h_n``/``c_n``
``(num_layers * num_directions, B, H)`` ordered layer 0 forward, layer 0 reverse, layer 1 forward, ... and
``output (T, B, num_directions * H)`` = the last layer's states. ``lengths`` (B,) gives variable-length
sequences (PyTorch's ``pack_padded_sequence(..., enforce_sorted=False)`` numbers, padded back to T): past
its length a sequence keeps its state and outputs zeros, ``h_n`` holds each sequence's state after its last
valid step, and the reverse direction starts at that last valid step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from handgrad.engine.backend import get_array_module, get_default_dtype
from handgrad.engine.ops import cat, reshape, stack, transpose
from handgrad.engine.ops.arithmetic import MulConstantFunction
from handgrad.engine.tensor import Tensor
from handgrad.functional.dropout import dropout_mask
from handgrad.functional.rnn._fused import as_lengths
from handgrad.functional.rnn.gru_sequence import GRUSequenceFunction
from handgrad.functional.rnn.lstm_sequence import LSTMSequenceFunction
from handgrad.functional.rnn.lstmp_sequence import LSTMProjSequenceFunction
from handgrad.functional.rnn.rnn_sequence import RNNSequenceFunction
from handgrad.nn import init
from handgrad.nn._factory import place
from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


class RNNBase(Module):
    """Shared parameter layout, checks and the layer/direction loop of ``RNN``, ``LSTM`` and ``GRU``."""

    mode: str

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: Any = None,
        proj_size: int = 0,
        device: Any = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for key, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: {key} must be a positive integer, got {v!r}")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"{name}: dropout must be a probability in [0, 1], got {dropout}")
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), float(dropout)
        self.bidirectional = bool(bidirectional)
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"{name}: proj_size must be a non-negative integer, got {proj_size!r}")
        if proj_size and mode != "LSTM":
            raise ValueError(f"{name}: proj_size argument is only supported for LSTM, not RNN or GRU")
        if proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size ({proj_size}) has to be smaller than hidden_size ({hidden_size})")
        self.proj_size = proj_size
        out_size = proj_size or hidden_size  # the size of h (and of each direction's output)
        D = 2 if bidirectional else 1
        G = _GATES[mode]
        dtype = get_default_dtype() if dtype is None else dtype
        self._flat_weights_names: list[str] = []
        for k in range(num_layers):
            in_size = input_size if k == 0 else D * out_size
            for d in range(D):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                shapes = [("weight_ih", (G * hidden_size, in_size)), ("weight_hh", (G * hidden_size, out_size))]
                if bias:
                    shapes += [("bias_ih", (G * hidden_size,)), ("bias_hh", (G * hidden_size,))]
                if proj_size:
                    shapes += [("weight_hr", (proj_size, hidden_size))]
                for pname, shape in shapes:
                    setattr(self, pname + sfx, Parameter(numpy.empty(shape, dtype)))
                    self._flat_weights_names.append(pname + sfx)
        self.reset_parameters()
        place(self, device)

    def reset_parameters(self) -> None:
        """PyTorch's init: every weight and bias ``U(-1/sqrt(H), 1/sqrt(H))`` (drawn on the CPU generator,
        written wherever the parameter lives)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, for PyTorch compatibility (there is no cuDNN weight buffer to compact)."""

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def all_weights(self) -> list[list[Parameter]]:
        per = (4 if self.bias else 2) + (1 if self.proj_size else 0)
        flat = [getattr(self, n) for n in self._flat_weights_names]
        return [flat[i : i + per] for i in range(0, len(flat), per)]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        return s

    # -- forward ------------------------------------------------------------------------------------------
    def _check_hx(self, hx: Any, B: int, batched: bool, dtype: Any) -> list[Tensor] | None:
        """hx -> list of (L*D, B, H) state tensors (1 for RNN/GRU, 2 for LSTM), or None."""
        name = type(self).__name__
        if hx is None:
            return None
        keys = ("h0", "c0") if self.mode == "LSTM" else ("h0",)
        if self.mode == "LSTM":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"LSTM: hx must be a tuple (h0, c0), got {type(hx).__name__}")
            states = list(hx)
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"{name}: hx must be a Tensor h0, got a {type(hx).__name__}")
            states = [hx]
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        out = []
        for key, s in zip(keys, states):
            size = self.proj_size if key == "h0" and self.proj_size else H
            want = (LD, B, size) if batched else (LD, size)
            if not isinstance(s, Tensor):
                raise TypeError(f"{name}: {key} must be a Tensor, got {type(s).__name__}")
            if s.dtype != dtype:
                raise TypeError(f"{name}: {key} has dtype {s.dtype} but the input is {dtype}")
            if s.shape != want:
                layout = "(num_layers * num_directions, batch, hidden_size)" if batched else (
                    "(num_layers * num_directions, hidden_size) for unbatched input"
                )
                raise ValueError(f"{name}: {key} has shape {s.shape} but expected {layout} = {want}")
            out.append(s if batched else reshape(s, LD, 1, size))
        return out

    def forward(self, input: Tensor, hx: Any = None, lengths: Any = None) -> tuple[Tensor, Any]:
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.ndim not in (2, 3):
            raise ValueError(
                f"{name}: expected a 3-D input (seq_len, batch, input_size) "
                f"({'(batch, seq_len, input_size) with batch_first' if self.batch_first else 'or batch_first'}) "
                f"or a 2-D unbatched (seq_len, input_size), got shape {input.shape}"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: input has {input.shape[-1]} features (input shape {input.shape}) "
                f"but the layer's input_size is {self.input_size}"
            )
        dt = next(iter(self.parameters())).dtype
        if input.dtype != dt:
            raise TypeError(
                f"{name}: input has dtype {input.dtype} but the parameters are {dt}; cast one of them "
                "(e.g. input.to(...) or module.double())"
            )
        batched = input.ndim == 3
        x = input
        if not batched:
            x = reshape(x, x.shape[0], 1, x.shape[1])
        elif self.batch_first:
            x = transpose(x, 0, 1)
        T, B = x.shape[0], x.shape[1]
        lens = as_lengths(name, lengths, T, B)
        states = self._check_hx(hx, B, batched, x.dtype)
        D = self.num_directions
        finals: list[list[Tensor]] = [[] for _ in range(2 if self.mode == "LSTM" else 1)]
        for k in range(self.num_layers):
            outs = []
            for d in range(D):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                w = [getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)]
                if self.bias:
                    w += [getattr(self, "bias_ih" + sfx), getattr(self, "bias_hh" + sfx)]
                if self.proj_size:
                    w += [getattr(self, "weight_hr" + sfx)]
                if states is None:
                    init = [_zero_state(x, B, self.proj_size or self.hidden_size)]
                    init += [_zero_state(x, B, self.hidden_size)] * (len(finals) - 1)
                else:
                    init = [s[k * D + d] for s in states]
                fn = self._make_fn(lens, bool(d))
                res = fn(x, *init, *w)
                outs.append(res[0])
                for lst, f in zip(finals, res[1:]):
                    lst.append(f)
            x = cat(outs, -1)
            if k < self.num_layers - 1 and self.dropout > 0 and self.training:
                # inverted dropout between layers; float64 uniforms keep the seeded reference results
                x = MulConstantFunction(dropout_mask(x, self.dropout, x.shape, numpy.float64))(x)
        h = [stack(lst, 0) for lst in finals]
        if not batched:
            x = reshape(x, x.shape[0], x.shape[2])
            h = [reshape(s, s.shape[0], s.shape[2]) for s in h]
        elif self.batch_first:
            x = transpose(x, 0, 1)
        if self.mode == "LSTM":
            return x, (h[0], h[1])
        return x, h[0]

    def _make_fn(self, lengths: Any, reverse: bool) -> Any:
        if self.mode == "LSTM" and self.proj_size:
            return LSTMProjSequenceFunction(lengths=lengths, reverse=reverse)
        if self.mode == "LSTM":
            return LSTMSequenceFunction(lengths=lengths, reverse=reverse)
        if self.mode == "GRU":
            return GRUSequenceFunction(lengths=lengths, reverse=reverse)
        return RNNSequenceFunction(nonlinearity="tanh" if self.mode == "RNN_TANH" else "relu", lengths=lengths,
                           reverse=reverse)


def _zero_state(x: Tensor, B: int, H: int) -> Tensor:
    return Tensor._from_op(get_array_module(x.array).zeros((B, H), x.dtype), None, 0)


class RNN(RNNBase):
    """Elman RNN ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` (or relu), PyTorch's ``nn.RNN``.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True, batch_first=False,
    dropout=0.0, bidirectional=False)``; ``output, h_n = rnn(input, h0=None, lengths=None)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: unknown nonlinearity '{nonlinearity}', expected 'tanh' or 'relu'")
        mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, dtype,
                         device=device)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Long short-term memory, PyTorch's ``nn.LSTM`` (gates i, f, g, o)::

        i, f, g, o = sigma(z_i), sigma(z_f), tanh(z_g), sigma(z_o),  z = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
        c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0)``; ``output, (h_n, c_n) = lstm(input, (h0, c0)=None, lengths=None)``.
    With ``proj_size=P > 0`` the hidden state is projected, ``h_t = W_hr (o * tanh(c_t))`` with
    ``weight_hr_l{k} (P, H)``: output and h_n have P features, c_n keeps H (``lstmp_sequence``).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, dtype,
                         proj_size=proj_size, device=device)


class GRU(RNNBase):
    """Gated recurrent unit, PyTorch's ``nn.GRU`` (gates r, z, n)::

        r, z = sigma(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h_{t-1} + b_h{r,z})
        n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn)),   h_t = (1 - z) * n + z * h_{t-1}

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False)``; ``output, h_n = gru(input, h0=None, lengths=None)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, dtype,
                         device=device)
