"""Zoneout (Krueger et al. 2017): units randomly keep their previous value instead of updating.

For a state ``s`` (``h`` of an RNN/GRU, ``h`` and ``c`` of an LSTM) with proposed update ``s~_t = cell(x_t, s_{t-1})``::

    training:    s_t = d_t * s_{t-1} + (1 - d_t) * s~_t,     d_t ~ Bernoulli(p) per unit and step
    evaluation:  s_t = p * s_{t-1} + (1 - p) * s~_t           (the expectation over d_t)

Unlike dropout the state is never zeroed, so gradient and information flow through ``d_t = 1`` units like
through an identity (the gradient of ``s_t`` w.r.t. ``s_{t-1}`` is ``d_t + (1 - d_t) ds~/ds``). For an LSTM
the paper's two rates apply to ``c`` and ``h`` separately, with ``h~_t = o_t tanh(c~_t)`` computed from the
un-zoned ``c~_t`` -- exactly what wrapping ``LSTMCell`` gives. ``p = 0`` is the plain cell.

``ZoneoutCell`` wraps any cell with PyTorch's cell API; ``ZoneoutRNN`` runs a stack of them over a sequence
(a Python loop over time, each step's mixing a hand-written ``Function``).
"""

from __future__ import annotations

from typing import Any

from handgrad import nn
from handgrad.engine.factories import zeros
from handgrad.engine.function import Function
from handgrad.engine.ops.shape import stack
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor
from handgrad.nn.module import Module
from handgrad.recurrent.regularization import _check_p


class ZoneoutMixFunction(Function):
    """s = d * prev + (1 - d) * new, ``d`` a constant (0/1 mask in training, the scalar p in evaluation).

    dprev = gs * d,  dnew = gs * (1 - d).
    """

    def __init__(self, d: Any) -> None:
        self.d = d

    def forward(self, prev: Any, new: Any) -> Any:
        return new + self.d * (prev - new)

    def backward(self, gs: Any) -> Any:
        n = self.needs_input_grad
        gprev = gs * self.d if n[0] else None
        gnew = gs * (1 - self.d) if n[1] else None
        return gprev, gnew


def zoneout(prev: Tensor, new: Tensor, p: float, training: bool = True) -> Tensor:
    """Mix a proposed state ``new`` with the previous one ``prev`` (same shape): see the module docstring."""
    p = _check_p("zoneout", p)
    if prev.shape != new.shape:
        raise ValueError(f"zoneout: previous state {prev.shape} and new state {new.shape} must have the same shape")
    if p == 0.0:
        return new
    if training:
        d = (get_rng(new.device).random(new.shape) < p).astype(new.dtype)  # drawn where the state lives
    else:
        d = new.array.dtype.type(p)
    return ZoneoutMixFunction(d)(prev, new)


class ZoneoutCell(Module):
    """Zoneout around an ``nn.RNNCell`` / ``nn.GRUCell`` (``zoneout_h``) or ``nn.LSTMCell`` (``zoneout_h``,
    ``zoneout_c``). Same call as the wrapped cell: ``h' = cell(x, h)`` or ``(h', c') = cell(x, (h, c))``,
    ``x (B, I)``, states ``(B, H)``; a missing state starts at zeros.
    """

    def __init__(self, cell: Module, zoneout_h: float = 0.0, zoneout_c: float = 0.0) -> None:
        super().__init__()
        self.cell = cell
        self.zoneout_h = _check_p("ZoneoutCell", zoneout_h)
        self.zoneout_c = _check_p("ZoneoutCell", zoneout_c)
        self.is_lstm = type(cell).__name__ == "LSTMCell"
        if not self.is_lstm and self.zoneout_c:
            raise ValueError(f"ZoneoutCell: zoneout_c applies only to an LSTMCell, not {type(cell).__name__}")

    def forward(self, input: Tensor, hx: Any = None) -> Any:
        if input.ndim != 2:
            raise ValueError(f"ZoneoutCell: input must be (batch, input_size), got shape {input.shape}")
        hidden = self.cell.hidden_size
        if hx is None:
            z = zeros(input.shape[0], hidden, dtype=input.dtype, device=input.device)
            hx = (z, zeros(input.shape[0], hidden, dtype=input.dtype, device=input.device)) if self.is_lstm else z
        new = self.cell(input, hx)
        if self.is_lstm:
            h = zoneout(hx[0], new[0], self.zoneout_h, self.training)
            c = zoneout(hx[1], new[1], self.zoneout_c, self.training)
            return h, c
        return zoneout(hx, new, self.zoneout_h, self.training)

    def extra_repr(self) -> str:
        return f"zoneout_h={self.zoneout_h}, zoneout_c={self.zoneout_c}"


class ZoneoutRNN(Module):
    """A stacked RNN / LSTM / GRU with zoneout on every layer's state, stepped cell by cell.

    Same call and shapes as ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``: ``output, h_n = rnn(x, h0)`` (LSTM:
    ``output, (h_n, c_n)``), ``x (T, B, I)`` (``(B, T, I)`` with ``batch_first``), ``output (T, B, H)``,
    ``h_n (num_layers, B, H)``. Parameters are the cells' (``cells.{k}.weight_ih``, ...), so weights from a
    fused ``nn.LSTM`` load with ``load_fused(rnn)``.
    """

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        zoneout_h: float = 0.0,
        zoneout_c: float = 0.0,
        bias: bool = True,
        batch_first: bool = False,
        nonlinearity: str = "tanh",
    ) -> None:
        super().__init__()
        kinds = {"RNN": nn.RNNCell, "LSTM": nn.LSTMCell, "GRU": nn.GRUCell}
        if mode not in kinds:
            raise ValueError(f"ZoneoutRNN: mode must be one of {sorted(kinds)}, got {mode!r}")
        if num_layers < 1:
            raise ValueError(f"ZoneoutRNN: num_layers must be >= 1, got {num_layers}")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.batch_first = num_layers, batch_first
        extra = {"nonlinearity": nonlinearity} if mode == "RNN" else {}
        cells = [
            ZoneoutCell(
                kinds[mode](input_size if k == 0 else hidden_size, hidden_size, bias=bias, **extra),
                zoneout_h,
                zoneout_c if mode == "LSTM" else 0.0,
            )
            for k in range(num_layers)
        ]
        self.cells = nn.ModuleList(cells)

    def load_fused(self, rnn: Module) -> ZoneoutRNN:
        """Copy the weights of a fused ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (``weight_ih_l{k}``, ...) into the cells."""
        for k, zc in enumerate(self.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                src = getattr(rnn, f"{name}_l{k}", None)
                dst = getattr(zc.cell, name, None)
                if src is None or dst is None:
                    continue
                if src.shape != dst.shape:
                    raise ValueError(
                        f"ZoneoutRNN.load_fused: {name}_l{k} has shape {src.shape}, cell expects {dst.shape}"
                    )
                dst.array = src.array.astype(dst.array.dtype, copy=True)
        return self

    def forward(self, input: Tensor, hx: Any = None) -> tuple[Tensor, Any]:
        if input.ndim != 3:
            raise ValueError(
                f"ZoneoutRNN: input must be (seq_len, batch, input_size) (batch_first: (batch, seq_len, input_size)), "
                f"got shape {input.shape}"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(f"ZoneoutRNN: input has {input.shape[-1]} features, expected input_size={self.input_size}")
        x = input.transpose(0, 1) if self.batch_first else input
        lstm = self.mode == "LSTM"
        hs, cs = [], []
        for k, zc in enumerate(self.cells):
            state = None
            if hx is not None:
                state = (hx[0][k], hx[1][k]) if lstm else hx[k]
            outs = []
            for t in range(x.shape[0]):
                state = zc(x[t], state)
                outs.append(state[0] if lstm else state)
            x = stack(outs, 0)
            if lstm:
                hs.append(state[0])
                cs.append(state[1])
            else:
                hs.append(state)
        out = x.transpose(0, 1) if self.batch_first else x
        h_n = stack(hs, 0)
        return out, ((h_n, stack(cs, 0)) if lstm else h_n)

    def extra_repr(self) -> str:
        return f"{self.mode}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
