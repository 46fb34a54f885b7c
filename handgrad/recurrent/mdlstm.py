"""Multi-dimensional LSTM (Graves, Fernandez & Schmidhuber 2007), two-dimensional.

Cell (i, j) of a grid receives the input x_ij and ONE predecessor per dimension, (h, c) from (i-1, j) ("up")
and from (i, j-1) ("left"), each with its own forget gate (zeros outside the grid)::

    [i, f1, f2, o, g] = [s, s, s, s, tanh]( W x_ij + U1 h_{i-1,j} + U2 h_{i,j-1} + b )      (s = sigmoid)
    c_ij = i * g + f1 * c_{i-1,j} + f2 * c_{i,j-1}
    h_ij = o * tanh(c_ij)

(Graves et al. also use peephole weights; they are left out here, as in most later 2-D LSTMs.)
All cells on an anti-diagonal i + j = d depend only on diagonal d - 1, so the forward sweeps the
diagonals, each as one vectorised step, and the backward sweeps them in reverse (back-propagation through
the 2-D grid), with dc_{i-1,j} += dc_ij * f1 and dc_{i,j-1} += dc_ij * f2 as the 2-D analogue of the
course's dc_t/dc_{t-1} = diag(f_t). Weight gradients are three GEMMs after the sweep.

A layer scans the image from the four corners (four directions = flips of the grid, each with its own
weights) and concatenates the four hidden maps. Shapes: x (B, H, W, I) -> (B, H, W, directions * hidden).
"""

from __future__ import annotations

import math
from typing import Any

from handgrad.engine.backend import get_array_module, get_default_dtype
from handgrad.engine.function import Function
from handgrad.engine.ops.shape import cat
from handgrad.engine.ops.unary import sigmoid_array
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor
from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter


def _sigmoid(z: Any, xp: Any) -> Any:
    return sigmoid_array(z)  # not (1 + tanh(z/2)) / 2: that is 0 in float32 below z ~ -18


def _diagonals(rows: int, cols: int, xp: Any) -> list[tuple[Any, Any]]:
    out = []
    for d in range(rows + cols - 1):
        i = xp.arange(max(0, d - cols + 1), min(d, rows - 1) + 1)
        out.append((i, d - i))
    return out


class MDLSTM2dScanFunction(Function):
    """One direction of a 2-D LSTM over a whole grid: ``(x, W, U1, U2, b) -> h (R, C, B, H)``, x (R, C, B, I)."""

    def forward(self, x: Any, w: Any, u1: Any, u2: Any, b: Any) -> Any:
        xp = get_array_module(x)
        R, C, B, I = x.shape
        H = u1.shape[1]
        Z = (x.reshape(R * C * B, I) @ w.T + b).reshape(R, C, B, 5 * H)  # all input projections: one GEMM
        hs = xp.zeros((R + 1, C + 1, B, H), x.dtype)  # row/col 0 are the zero states outside the grid
        cs = xp.zeros((R + 1, C + 1, B, H), x.dtype)
        gates = xp.empty((R, C, B, 5 * H), x.dtype)
        self.diags = _diagonals(R, C, xp)
        for ii, jj in self.diags:
            z = Z[ii, jj] + hs[ii, jj + 1] @ u1.T + hs[ii + 1, jj] @ u2.T  # (n, B, 5H)
            s = _sigmoid(z[..., : 4 * H], xp)
            g = xp.tanh(z[..., 4 * H :])
            c = s[..., :H] * g + s[..., H : 2 * H] * cs[ii, jj + 1] + s[..., 2 * H : 3 * H] * cs[ii + 1, jj]
            cs[ii + 1, jj + 1] = c
            hs[ii + 1, jj + 1] = s[..., 3 * H :] * xp.tanh(c)
            gates[ii, jj, :, : 4 * H] = s
            gates[ii, jj, :, 4 * H :] = g
        self.x, self.hs, self.cs, self.gates, self.u1, self.u2, self.w = x, hs, cs, gates, u1, u2, w
        return hs[1:, 1:].copy()

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        x, hs, cs, gates = self.x, self.hs, self.cs, self.gates
        R, C, B, _ = x.shape
        H = self.u1.shape[1]
        dh = xp.zeros_like(hs)
        dh[1:, 1:] = gy
        dc = xp.zeros_like(cs)
        dZ = xp.empty((R, C, B, 5 * H), gy.dtype)
        for ii, jj in reversed(self.diags):
            gt = gates[ii, jj]
            i_, f1, f2, o, g = (gt[..., k * H : (k + 1) * H] for k in range(5))
            tc = xp.tanh(cs[ii + 1, jj + 1])
            gh = dh[ii + 1, jj + 1]
            gc = dc[ii + 1, jj + 1] + gh * o * (1 - tc * tc)
            c_up, c_left = cs[ii, jj + 1], cs[ii + 1, jj]
            dz = dZ[ii, jj]  # a copy (fancy index): filled, then written back
            dz[..., :H] = gc * g * i_ * (1 - i_)
            dz[..., H : 2 * H] = gc * c_up * f1 * (1 - f1)
            dz[..., 2 * H : 3 * H] = gc * c_left * f2 * (1 - f2)
            dz[..., 3 * H : 4 * H] = gh * tc * o * (1 - o)
            dz[..., 4 * H :] = gc * i_ * (1 - g * g)
            dZ[ii, jj] = dz
            # each of these two updates hits distinct cells; the up-target of one cell can be the
            # left-target of its neighbour, hence two separate accumulations
            dc[ii, jj + 1] += gc * f1
            dh[ii, jj + 1] += dz @ self.u1
            dc[ii + 1, jj] += gc * f2
            dh[ii + 1, jj] += dz @ self.u2
        n = self.needs_input_grad
        dZ2 = dZ.reshape(R * C * B, 5 * H)
        gx = (dZ2 @ self.w).reshape(x.shape) if n[0] else None
        gw = dZ2.T @ x.reshape(R * C * B, -1) if n[1] else None
        gu1 = dZ2.T @ hs[:-1, 1:].reshape(R * C * B, H) if n[2] else None  # h_{i-1, j}
        gu2 = dZ2.T @ hs[1:, :-1].reshape(R * C * B, H) if n[3] else None  # h_{i, j-1}
        gb = dZ2.sum(axis=0) if n[4] else None
        return gx, gw, gu1, gu2, gb


def mdlstm2d_scan(x: Tensor, w: Tensor, u1: Tensor, u2: Tensor, b: Tensor) -> Tensor:
    """One-direction 2-D LSTM scan from the top-left corner: x (R, C, B, I) -> h (R, C, B, H)."""
    if x.ndim != 4:
        raise ValueError(f"mdlstm2d_scan: input must be (rows, cols, B, I), got shape {x.shape}")
    H = u1.shape[1] if u1.ndim == 2 else -1
    expect = {"W": (5 * H, x.shape[3]), "U1": (5 * H, H), "U2": (5 * H, H), "b": (5 * H,)}
    got = {"W": w.shape, "U1": u1.shape, "U2": u2.shape, "b": b.shape}
    if H < 1 or got != expect:
        raise ValueError(f"mdlstm2d_scan: with input size {x.shape[3]} expected weights {expect}, got {got}")
    return MDLSTM2dScanFunction()(x, w, u1, u2, b)


def _flip(t: Tensor, axes: tuple[int, ...]) -> Tensor:
    """Reverse ``t`` along ``axes`` (a reversed-slice index, so the gradient is reversed back)."""
    if not axes:
        return t
    index = tuple(slice(None, None, -1) if a in axes else slice(None) for a in range(t.ndim))
    return t[index]


class MDLSTM2d(Module):
    """2-D LSTM layer scanning from ``directions`` corners (1, 2 or 4): x (B, H, W, I) -> (B, H, W, d * hidden).

    Direction k flips the grid (0: top-left, 1: top-right, 2: bottom-left, 3: bottom-right start), runs
    :func:`mdlstm2d_scan` and flips back, so every output sees the whole image once all four are stacked.
    Parameters per direction: ``weight_ih_d{k}`` (5H, I), ``weight_up_d{k}`` (5H, H), ``weight_left_d{k}``
    (5H, H), ``bias_d{k}`` (5H,), gate order i, f_up, f_left, o, g; uniform(-1/sqrt(H), 1/sqrt(H)) init.
    """

    FLIPS = ((), (1,), (0,), (0, 1))  # grid axes to flip for each starting corner

    def __init__(self, input_size: int, hidden_size: int, directions: int = 4) -> None:
        super().__init__()
        if directions not in (1, 2, 4):
            raise ValueError(f"MDLSTM2d: directions must be 1, 2 or 4, got {directions}")
        self.input_size, self.hidden_size, self.directions = input_size, hidden_size, directions
        bound = 1.0 / math.sqrt(hidden_size)
        rng, dt = get_rng(), get_default_dtype()
        for k in range(directions):
            shapes = (("weight_ih", (5 * hidden_size, input_size)), ("weight_up", (5 * hidden_size, hidden_size)),
                      ("weight_left", (5 * hidden_size, hidden_size)), ("bias", (5 * hidden_size,)))
            for name, shape in shapes:
                setattr(self, f"{name}_d{k}", Parameter(rng.uniform(-bound, bound, shape).astype(dt)))

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim != 4 or input.shape[3] != self.input_size:
            raise ValueError(f"MDLSTM2d: expected input (B, H, W, {self.input_size}), got {input.shape}")
        x = input.permute(1, 2, 0, 3)  # (rows, cols, B, I)
        outs = []
        for k in range(self.directions):
            xk = _flip(x, self.FLIPS[k])
            h = mdlstm2d_scan(xk, getattr(self, f"weight_ih_d{k}"), getattr(self, f"weight_up_d{k}"),
                              getattr(self, f"weight_left_d{k}"), getattr(self, f"bias_d{k}"))
            outs.append(_flip(h, self.FLIPS[k]))
        out = outs[0] if len(outs) == 1 else cat(outs, dim=3)
        return out.permute(2, 0, 1, 3)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, directions={self.directions}"
