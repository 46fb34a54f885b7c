"""``nn.RNNCell``, ``nn.LSTMCell``, ``nn.GRUCell``: one time step, for decoding step by step.

Each call is ONE op with a hand-written backward: the fused sequence kernel run for a single step
(``rnn_cell``, ``lstm_cell``, ``gru_cell``). Parameters as in PyTorch: ``weight_ih (G*H, I)``,
``weight_hh (G*H, H)``, ``bias_ih``, ``bias_hh (G*H,)``, initialised ``U(-1/sqrt(H), 1/sqrt(H))``; gate
orders LSTM i, f, g, o and GRU r, z, n. In the course's notation ``z = W^T [h; x; 1]`` with
``W = [W_hh^T; W_ih^T; (b_ih + b_hh)^T]``.

Input ``(B, I)`` or unbatched ``(I,)``; state ``(B, H)`` (``(H,)``) or None for zeros. Returns ``h'``
(LSTMCell: ``(h', c')``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from handgrad.engine.backend import get_default_dtype
from handgrad.engine.ops import reshape
from handgrad.engine.tensor import Tensor
from handgrad.functional.rnn.gru_sequence import gru_cell
from handgrad.functional.rnn.lstm_sequence import lstm_cell
from handgrad.functional.rnn.rnn_sequence import rnn_cell
from handgrad.nn import init
from handgrad.nn._factory import place
from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter


class RNNCellBase(Module):
    n_gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        name = type(self).__name__
        for key, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: {key} must be a positive integer, got {v!r}")
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bool(bias)
        G = self.n_gates * hidden_size
        dtype = get_default_dtype() if dtype is None else dtype
        self.weight_ih = Parameter(numpy.empty((G, input_size), dtype))
        self.weight_hh = Parameter(numpy.empty((G, hidden_size), dtype))
        if bias:
            self.bias_ih = Parameter(numpy.empty((G,), dtype))
            self.bias_hh = Parameter(numpy.empty((G,), dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()
        place(self, device)

    def reset_parameters(self) -> None:
        """PyTorch's init: every weight and bias ``U(-1/sqrt(H), 1/sqrt(H))`` (drawn on the CPU generator,
        written wherever the parameter lives)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s

    def _prepare(self, input: Tensor, states: list[Tensor | None]) -> tuple[Tensor, list[Tensor | None], bool]:
        """Check the call; unbatched (I,) input and (H,) states become (1, I) and (1, H)."""
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.ndim not in (1, 2):
            raise ValueError(
                f"{name}: expected input of shape (batch, input_size) or unbatched (input_size,), "
                f"got shape {input.shape}"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: input has {input.shape[-1]} features (input shape {input.shape}) "
                f"but the cell's input_size is {self.input_size}"
            )
        if input.dtype != self.weight_ih.dtype:
            raise TypeError(
                f"{name}: input has dtype {input.dtype} but the parameters are {self.weight_ih.dtype}"
            )
        batched = input.ndim == 2
        want = (input.shape[0], self.hidden_size) if batched else (self.hidden_size,)
        out: list[Tensor | None] = []
        for key, s in zip(("hx", "cx"), states):
            if s is None:
                out.append(None)
                continue
            if not isinstance(s, Tensor):
                raise TypeError(f"{name}: {key} must be a Tensor, got {type(s).__name__}")
            if s.shape != want:
                raise ValueError(f"{name}: {key} has shape {s.shape} but expected {want} for input {input.shape}")
            out.append(s if batched else reshape(s, 1, self.hidden_size))
        x = input if batched else reshape(input, 1, self.input_size)
        return x, out, batched

    def _weights(self) -> tuple[Any, Any, Any, Any]:
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh


def _unbatch(h: Tensor, batched: bool) -> Tensor:
    return h if batched else reshape(h, h.shape[-1])


class RNNCell(RNNCellBase):
    """``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (or relu): PyTorch's ``nn.RNNCell``."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", device: Any = None,
        dtype: Any = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: unknown nonlinearity '{nonlinearity}', expected 'tanh' or 'relu'")
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,), batched = self._prepare(input, [hx])
        return _unbatch(rnn_cell(x, h, *self._weights(), nonlinearity=self.nonlinearity), batched)


class LSTMCell(RNNCellBase):
    """``c' = f * c + i * g``, ``h' = o * tanh(c')`` (gates i, f, g, o): PyTorch's ``nn.LSTMCell``."""

    n_gates = 4

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"LSTMCell: hx must be a tuple (h, c), got {type(hx).__name__}")
        x, (h, c), batched = self._prepare(input, [None, None] if hx is None else list(hx))
        h1, c1 = lstm_cell(x, None if hx is None else (h, c), *self._weights())
        return _unbatch(h1, batched), _unbatch(c1, batched)


class GRUCell(RNNCellBase):
    """``h' = (1 - z) * n + z * h``, ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``: PyTorch's ``nn.GRUCell``."""

    n_gates = 3

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,), batched = self._prepare(input, [hx])
        return _unbatch(gru_cell(x, h, *self._weights()), batched)
