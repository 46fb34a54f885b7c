"""Clockwork RNN (Koutnik et al. 2014): hidden modules that tick at different rates.

The H hidden units are split into g modules of k units, module i with period T_i (by default 2^i),
sorted from fast to slow. At step t only the modules with t mod T_i = 0 are updated; the others keep their
state. The recurrent matrix is block upper-triangular: module i reads the modules j with T_j >= T_i
(itself and the slower ones), so slow modules feed fast ones and never the reverse::

    active_t = { i : t mod T_i = 0 }        (a prefix of the modules, since every period divides the next)
    h_t[i] = tanh( W_H[i] h_{t-1} + W_I[i] x_t + b[i] )   for i in active_t
    h_t[i] = h_{t-1}[i]                                  otherwise

BPTT through the fused sequence (g_t = dL/dh_t, A_t the active units, M the block-triangular mask):

    dz_t = g_t[A_t] * (1 - h_t[A_t]^2)
    g_{t-1} += dz_t @ (M * W_H)[A_t]   and   g_{t-1}[not A_t] += g_t[not A_t]   (the copied units)
    dW_H = M * sum_t dz_t^T h_{t-1},   dW_I = sum_t dz_t^T x_t,   db = sum_t dz_t

Shapes: x (T, B, I), h0 (B, H), W_I (H, I), W_H (H, H), b (H,); output (T, B, H).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from handgrad.engine.backend import get_array_module, get_default_dtype
from handgrad.engine.factories import zeros
from handgrad.engine.function import Function
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor
from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter


def clockwork_mask(module_size: int, periods: Sequence[int], xp: Any = None, dtype: Any = None) -> Any:
    """The (H, H) 0/1 mask letting unit of module i read unit of module j iff T_j >= T_i."""
    import numpy

    xp = numpy if xp is None else xp
    p = xp.repeat(xp.asarray(periods), module_size)
    return (p[None, :] >= p[:, None]).astype(dtype or get_default_dtype())


def active_units(t: int, module_size: int, periods: Sequence[int]) -> int:
    """How many leading hidden units update at step t (modules are sorted by period)."""
    n = 0
    for p in periods:
        if t % p:
            break
        n += module_size
    return n


class ClockworkSequenceFunction(Function):
    """Fused Clockwork RNN over a whole sequence: ``(x, h0, W_I, W_H, b) -> output (T, B, H)``."""

    def __init__(self, module_size: int, periods: Sequence[int]) -> None:
        self.k, self.periods = module_size, tuple(periods)

    def forward(self, x: Any, h0: Any, w_i: Any, w_h: Any, b: Any) -> Any:
        xp = get_array_module(x)
        T, B, I = x.shape
        H = w_h.shape[0]
        self.mask = clockwork_mask(self.k, self.periods, xp, x.dtype)
        w = w_h * self.mask
        Z = (x.reshape(T * B, I) @ w_i.T).reshape(T, B, H) + b  # one GEMM for all steps' inputs
        hs = xp.empty((T + 1, B, H), x.dtype)
        hs[0] = h0
        self.n = [active_units(t, self.k, self.periods) for t in range(T)]
        for t in range(T):
            n = self.n[t]
            hs[t + 1] = hs[t]
            if n:
                z = Z[t, :, :n]
                z += hs[t] @ w[:n].T
                xp.tanh(z, out=hs[t + 1, :, :n])
        self.x, self.hs, self.w, self.w_i = x, hs, w, w_i
        return hs[1:].copy()

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        x, hs, w = self.x, self.hs, self.w
        T, B, H = gy.shape
        dZ = xp.zeros((T, B, H), gy.dtype)
        g = xp.zeros((B, H), gy.dtype)
        for t in range(T - 1, -1, -1):
            g += gy[t]
            n = self.n[t]
            if n:
                h = hs[t + 1, :, :n]
                dz = dZ[t, :, :n]
                xp.multiply(g[:, :n], 1 - h * h, out=dz)
                g[:, :n] = 0  # active units do not copy: their past reaches them only through W_H
                g += dz @ w[:n]
        gx = (dZ.reshape(T * B, H) @ self.w_i).reshape(x.shape) if self.needs_input_grad[0] else None
        dZ2 = dZ.reshape(T * B, H)
        g_wi = dZ2.T @ x.reshape(T * B, -1) if self.needs_input_grad[2] else None
        g_wh = (dZ2.T @ hs[:-1].reshape(T * B, H)) * self.mask if self.needs_input_grad[3] else None
        g_b = dZ2.sum(axis=0) if self.needs_input_grad[4] else None
        return gx, (g if self.needs_input_grad[1] else None), g_wi, g_wh, g_b


def clockwork_sequence(
    x: Tensor, h0: Tensor, w_i: Tensor, w_h: Tensor, b: Tensor, module_size: int, periods: Sequence[int]
) -> Tensor:
    """Run a Clockwork RNN over ``x`` (T, B, I) from ``h0`` (B, H); see the module docstring."""
    H = module_size * len(periods)
    if x.ndim != 3:
        raise ValueError(f"clockwork_sequence: input must be (T, B, I), got shape {x.shape}")
    if w_h.shape != (H, H) or w_i.shape != (H, x.shape[2]) or b.shape != (H,) or h0.shape != (x.shape[1], H):
        raise ValueError(
            f"clockwork_sequence: with {len(periods)} modules of {module_size} units (H={H}) and input "
            f"{x.shape}, expected W_I {(H, x.shape[2])}, W_H {(H, H)}, b {(H,)}, h0 {(x.shape[1], H)}; got "
            f"{w_i.shape}, {w_h.shape}, {b.shape}, {h0.shape}"
        )
    if list(periods) != sorted(periods) or any(q % p for p, q in zip(periods, periods[1:])):
        raise ValueError(f"clockwork_sequence: periods must be sorted and each divide the next, got {periods}")
    return ClockworkSequenceFunction(module_size, periods)(x, h0, w_i, w_h, b)


class ClockworkRNN(Module):
    """Clockwork RNN layer: ``output, h_n = cw(input, h0=None)`` with input (T, B, I) (or (B, T, I) when
    ``batch_first``). ``num_modules`` modules of ``module_size`` units with periods ``periods`` (default
    1, 2, 4, ...). Initialised uniform(-1/sqrt(H), 1/sqrt(H)) like PyTorch's RNN."""

    def __init__(
        self, input_size: int, module_size: int, num_modules: int, periods: Sequence[int] | None = None,
        batch_first: bool = False,
    ) -> None:
        super().__init__()
        self.periods = tuple(periods) if periods is not None else tuple(2**i for i in range(num_modules))
        if len(self.periods) != num_modules:
            raise ValueError(f"ClockworkRNN: {num_modules} modules but {len(self.periods)} periods")
        self.input_size, self.module_size, self.batch_first = input_size, module_size, batch_first
        self.hidden_size = H = module_size * num_modules
        bound = 1.0 / math.sqrt(H)
        rng, dt = get_rng(), get_default_dtype()
        self.weight_ih = Parameter(rng.uniform(-bound, bound, (H, input_size)).astype(dt))
        self.weight_hh = Parameter(
            (rng.uniform(-bound, bound, (H, H)) * clockwork_mask(module_size, self.periods)).astype(dt)
        )
        self.bias = Parameter(rng.uniform(-bound, bound, H).astype(dt))

    def num_effective_parameters(self) -> int:
        """Trainable weights that can be non-zero (the masked half of W_H is not counted)."""
        mask = clockwork_mask(self.module_size, self.periods)
        return int(self.weight_ih.numel() + mask.sum() + self.bias.numel())

    def forward(self, input: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = input.transpose(0, 1) if self.batch_first else input
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"ClockworkRNN: expected input (T, B, {self.input_size}), got {tuple(x.shape)}")
        if h0 is None:
            h0 = zeros(x.shape[1], self.hidden_size, dtype=x.dtype, device=x.device)
        out = clockwork_sequence(x, h0, self.weight_ih, self.weight_hh, self.bias, self.module_size, self.periods)
        h_n = out[-1]
        return (out.transpose(0, 1) if self.batch_first else out), h_n

    def extra_repr(self) -> str:
        return f"{self.input_size}, module_size={self.module_size}, periods={self.periods}"
