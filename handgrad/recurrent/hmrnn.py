"""Hierarchical multiscale LSTM (Chung, Ahn & Bengio 2017).

Layer l at time t reads its own past h_{t-1}^l, the layer below h_t^{l-1} (h^0 = x) and the layer above
h_{t-1}^{l+1}, and emits a binary boundary z_t^l. With z_b = z_t^{l-1} (1 for the bottom layer) and
z_p = z_{t-1}^l::

    s = U h_{t-1}^l + z_p U_td h_{t-1}^{l+1} + z_b W h_t^{l-1} + b           (4H + 1 pre-activations)
    f, i, o = sigmoid(s_f, s_i, s_o),  g = tanh(s_g),  z~ = hard_sigmoid(a s_z) = clip((a s_z + 1) / 2, 0, 1)
    FLUSH  (z_p = 1):            c_t = i * g,                     h_t = o * tanh(c_t)
    UPDATE (z_p = 0, z_b = 1):   c_t = f * c_{t-1} + i * g,       h_t = o * tanh(c_t)
    COPY   (z_p = 0, z_b = 0):   c_t = c_{t-1},                   h_t = h_{t-1}
    z_t = 1[z~ > 0.5]  (forward);  dz_t/ds_z = d z~/d s_z  (the straight-through estimator, backward)

The three cases are written as one multilinear formula in (z_p, z_b), equal to them for binary z::

    c_t = z_p (i g) + (1 - z_p) [ z_b (f c_{t-1} + i g) + (1 - z_b) c_{t-1} ]
    h_t = k h_{t-1} + (1 - k) o tanh(c_t),   k = (1 - z_p)(1 - z_b)

so the backward is the exact VJP of this formula, with the straight-through rule for z_t. With
``surrogate=True`` the forward emits z~ itself instead of the step: then the backward is the true gradient,
which is how the tests check it against finite differences. The slope a is annealed during training
(``slope_schedule``).

The cell op is fused (one graph node per layer and step, hand-written backward); the model loops over time
and layers because every layer needs the layer above from the previous step.
"""

from __future__ import annotations

import math
from typing import Any

from handgrad.engine.backend import get_array_module, get_default_dtype
from handgrad.engine.factories import ones, zeros
from handgrad.engine.function import Function
from handgrad.engine.ops.shape import cat, stack
from handgrad.engine.ops.unary import sigmoid_array
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor
from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter


class HMLSTMCellStepFunction(Function):
    """``(h_prev, c_prev, z_prev, h_below, z_below, h_above, W, U, U_td, b) -> (h, c, z)``.

    h_prev, c_prev (B, H); z_prev, z_below (B, 1); h_below (B, Hb); h_above (B, Ha) (zeros and a zero-width
    U_td for the top layer); W (4H+1, Hb), U (4H+1, H), U_td (4H+1, Ha), b (4H+1,).
    """

    def __init__(self, slope: float, surrogate: bool = False) -> None:
        self.slope, self.surrogate = slope, surrogate

    def forward(self, h_prev: Any, c_prev: Any, z_prev: Any, h_below: Any, z_below: Any, h_above: Any,
                w: Any, u: Any, u_td: Any, b: Any) -> Any:
        xp = get_array_module(h_prev)
        H = h_prev.shape[1]
        td = h_above @ u_td.T
        bu = h_below @ w.T
        s = h_prev @ u.T + z_prev * td + z_below * bu + b
        sig = sigmoid_array(s[:, : 3 * H])  # exact at both tails (not (1 + tanh(s/2)) / 2)
        f, i, o = sig[:, :H], sig[:, H : 2 * H], sig[:, 2 * H : 3 * H]
        g = xp.tanh(s[:, 3 * H : 4 * H])
        zt = xp.clip((self.slope * s[:, 4 * H :] + 1) * 0.5, 0, 1)
        z = zt if self.surrogate else (zt > 0.5).astype(s.dtype)
        ig = i * g
        upd = f * c_prev + ig
        c = z_prev * ig + (1 - z_prev) * (z_below * upd + (1 - z_below) * c_prev)
        tc = xp.tanh(c)
        k = (1 - z_prev) * (1 - z_below)
        h = k * h_prev + (1 - k) * o * tc
        self.saved = (h_prev, c_prev, z_prev, h_below, z_below, h_above, w, u, u_td, td, bu, f, i, o, g, zt, upd,
                      tc, k, s[:, 4 * H :])
        return h, c, z

    def backward(self, gh: Any, gc: Any, gz: Any) -> Any:
        xp = get_array_module(gh)
        (h_prev, c_prev, z_prev, h_below, z_below, h_above, w, u, u_td, td, bu, f, i, o, g, zt, upd, tc, k,
         sz) = self.saved
        # h = k h_prev + (1 - k) o tanh(c)
        gc = gc + gh * (1 - k) * o * (1 - tc * tc)
        go = gh * (1 - k) * tc
        gk = (gh * (h_prev - o * tc)).sum(axis=1, keepdims=True)
        gh_prev = gh * k
        # c = z_p i g + (1 - z_p)(z_b (f c_prev + i g) + (1 - z_b) c_prev)
        a_upd = (1 - z_prev) * z_below
        gig = gc * (z_prev + a_upd)
        gf = gc * a_upd * c_prev
        gc_prev = gc * (a_upd * f + (1 - z_prev) * (1 - z_below))
        gz_prev = (gc * (i * g - (z_below * upd + (1 - z_below) * c_prev))).sum(axis=1, keepdims=True)
        gz_below = (gc * (1 - z_prev) * (upd - c_prev)).sum(axis=1, keepdims=True)
        gz_prev -= gk * (1 - z_below)  # k = (1 - z_p)(1 - z_b)
        gz_below -= gk * (1 - z_prev)
        # gates -> pre-activations; z: straight through the hard sigmoid
        inside = (zt > 0) & (zt < 1)
        ds = xp.concatenate([
            gf * f * (1 - f), gig * g * i * (1 - i), go * o * (1 - o), gig * i * (1 - g * g),
            gz * (0.5 * self.slope) * inside,
        ], axis=1)
        # s = U h_prev + z_p td + z_b bu + b
        gh_prev = gh_prev + ds @ u
        gz_prev = gz_prev + (ds * td).sum(axis=1, keepdims=True)
        gz_below = gz_below + (ds * bu).sum(axis=1, keepdims=True)
        n = self.needs_input_grad
        ds_td, ds_bu = ds * z_prev, ds * z_below
        return (
            gh_prev if n[0] else None,
            gc_prev if n[1] else None,
            gz_prev if n[2] else None,
            ds_bu @ w if n[3] else None,
            gz_below if n[4] else None,
            ds_td @ u_td if n[5] else None,
            ds_bu.T @ h_below if n[6] else None,
            ds.T @ h_prev if n[7] else None,
            ds_td.T @ h_above if n[8] else None,
            ds.sum(axis=0) if n[9] else None,
        )


def hmlstm_cell(h_prev: Tensor, c_prev: Tensor, z_prev: Tensor, h_below: Tensor, z_below: Tensor,
                h_above: Tensor, w: Tensor, u: Tensor, u_td: Tensor, b: Tensor, slope: float = 1.0,
                surrogate: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """One HM-LSTM layer step; see the module docstring. Returns (h_t, c_t, z_t)."""
    B, H = h_prev.shape
    G = 4 * H + 1
    expect = {"W": (G, h_below.shape[1]), "U": (G, H), "U_td": (G, h_above.shape[1]), "b": (G,)}
    got = {"W": w.shape, "U": u.shape, "U_td": u_td.shape, "b": b.shape}
    if got != expect:
        raise ValueError(f"hmlstm_cell: expected weights {expect} for hidden size {H}, got {got}")
    for name, t, shape in (("c_prev", c_prev, (B, H)), ("z_prev", z_prev, (B, 1)), ("z_below", z_below, (B, 1))):
        if t.shape != shape:
            raise ValueError(f"hmlstm_cell: {name} must be {shape}, got {t.shape}")
    return HMLSTMCellStepFunction(slope, surrogate)(h_prev, c_prev, z_prev, h_below, z_below, h_above, w, u, u_td, b)


def slope_schedule(step: int, rate: float = 1e-4, max_slope: float = 5.0) -> float:
    """Slope annealing a = min(max_slope, 1 + rate * step) (the paper grows a by 0.04 per epoch up to 5)."""
    return min(max_slope, 1.0 + rate * step)


class HMLSTM(Module):
    """An L-layer HM-LSTM over a sequence: ``h, z, state = hm(x, state)`` with x (T, B, I) -> per layer
    h (T, B, H_l) and boundaries z (T, B, L). The boundary of the top layer is computed like the others (it
    only FLUSHes the top layer itself). Parameters per layer l: ``weight_bu_l{l}`` (W), ``weight_hh_l{l}``
    (U), ``weight_td_l{l}`` (U_td, zero-width for the top layer), ``bias_l{l}``; PyTorch's
    uniform(-1/sqrt(H), 1/sqrt(H)) init."""

    def __init__(self, input_size: int, hidden_sizes: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        self.input_size, self.hidden_sizes = input_size, tuple(hidden_sizes)
        self.slope, self.surrogate = 1.0, False
        rng, dt = get_rng(), get_default_dtype()
        below = (input_size, *self.hidden_sizes[:-1])
        above = (*self.hidden_sizes[1:], 0)
        for l, H in enumerate(self.hidden_sizes):
            bound, G = 1.0 / math.sqrt(H), 4 * H + 1
            for name, shape in (("weight_bu", (G, below[l])), ("weight_hh", (G, H)), ("weight_td", (G, above[l]))):
                setattr(self, f"{name}_l{l}", Parameter(rng.uniform(-bound, bound, shape).astype(dt)))
            setattr(self, f"bias_l{l}", Parameter(rng.uniform(-bound, bound, G).astype(dt)))

    def forward(self, x: Tensor, state: Any = None) -> tuple[list[Tensor], Tensor, Any]:
        """x (T, B, I) -> (per-layer outputs [(T, B, H_l)], boundaries (T, B, L), final state).

        ``state`` = (h, c, z) lists per layer from a previous call (detach it for truncated BPTT), or None
        for zeros with every boundary at 0."""
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"HMLSTM: expected input (T, B, {self.input_size}), got {x.shape}")
        T, B, _ = x.shape
        L = len(self.hidden_sizes)
        dt = x.dtype
        if state is None:
            h = [zeros(B, H, dtype=dt, device=x.device) for H in self.hidden_sizes]
            c = [zeros(B, H, dtype=dt, device=x.device) for H in self.hidden_sizes]
            z = [zeros(B, 1, dtype=dt, device=x.device) for _ in range(L)]
        else:
            h, c, z = (list(s) for s in state)
        ones_b1, empty = ones(B, 1, dtype=dt, device=x.device), zeros(B, 0, dtype=dt, device=x.device)
        outs: list[list[Tensor]] = [[] for _ in range(L)]
        zs: list[list[Tensor]] = [[] for _ in range(L)]
        for t in range(T):
            below, z_below = x[t], ones_b1
            new_h, new_c, new_z = [], [], []
            for l in range(L):
                above = h[l + 1] if l + 1 < L else empty
                hl, cl, zl = hmlstm_cell(h[l], c[l], z[l], below, z_below, above, getattr(self, f"weight_bu_l{l}"),
                                         getattr(self, f"weight_hh_l{l}"), getattr(self, f"weight_td_l{l}"),
                                         getattr(self, f"bias_l{l}"), self.slope, self.surrogate)
                new_h.append(hl)
                new_c.append(cl)
                new_z.append(zl)
                outs[l].append(hl)
                zs[l].append(zl)
                below, z_below = hl, zl
            h, c, z = new_h, new_c, new_z
        return [stack(o) for o in outs], cat([stack(zl) for zl in zs], dim=2), (h, c, z)
