"""LSTM with a projected hidden state (Sak et al. 2014; PyTorch's ``nn.LSTM(proj_size=P)``) as ONE fused op
with hand-written BPTT, on the same schedule machinery (variable lengths, reverse direction) as
``lstm_sequence``::

    z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh                 (B, 4H),  W_hh (4H, P)
    i, f, g, o = sigma(z_i), sigma(z_f), tanh(z_g), sigma(z_o)
    c_t = f * c_{t-1} + i * g                                   (B, H)
    m_t = o * tanh(c_t)                                         (B, H)
    h_t = m_t W_hr^T                                            (B, P),   W_hr (P, H)

BPTT, with dh_t = dL/dy_t + (carry from t+1) (B, P) and dc_t the carry (B, H)::

    dm = dh_t W_hr;        dW_hr = sum_t dh_t^T m_t                  (one GEMM after the loop)
    do = dm * tanh(c_t);   dc_t += dm * o * (1 - tanh^2 c_t)
    di = dc_t * g;   dg = dc_t * i;   df = dc_t * c_{t-1};   dc_{t-1} = dc_t * f
    dz = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)];   dh_{t-1} = dz W_hh
    dW_ih, dW_hh, db as in ``lstm_sequence`` (one GEMM over all steps).
"""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.functional.rnn._fused import FusedRecurrenceFunction, input_projection
from handgrad.functional.rnn.lstm_sequence import _weight_grads


class LSTMProjSequenceFunction(FusedRecurrenceFunction):
    """Fused projected-LSTM layer-direction:
    ``(x, h0 (B, P), c0 (B, H), W_ih, W_hh[, b_ih, b_hh], W_hr) -> (output (T, B, P), h_n (B, P), c_n (B, H))``."""

    n_states = 2
    n_gates = 4
    _saved = ("A", "Hs", "Cs", "TC", "M")

    def forward(self, x: Any, *args: Any) -> Any:
        self.w_hr = args[-1]  # the projection is the last input; the base handles the rest
        return super().forward(x, *args[:-1])

    def backward(self, *gys: Any) -> Any:
        return (*super().backward(*gys), self.gw_hr)

    def _forward(self, x: Any, states: list[Any], w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> tuple[Any, Any]:
        xp = get_array_module(x)
        T, B, _ = x.shape
        H, P = w_hh.shape[0] // 4, w_hh.shape[1]
        dt = x.dtype
        w_hr = self.w_hr
        A = xp.empty((T, B, 4 * H), dt)  # gate activations [i, f, g, o]
        input_projection(x, w_ih, None if b_ih is None else b_ih + b_hh, A)
        Hs = xp.zeros((T + 1, B, P), dt)
        Cs = xp.zeros((T + 1, B, H), dt)
        TC = xp.zeros((T, B, H), dt)
        M = xp.zeros((T, B, H), dt)
        Hs[0], Cs[0] = states
        H2, H3 = 2 * H, 3 * H
        for t, n in enumerate(self.sch.sizes):
            a = A[t, :n]
            a += Hs[t, :n] @ w_hh.T
            a[:, H2:H3] = xp.tanh(a[:, H2:H3])
            for lo, hi in ((0, H2), (H3, 4 * H)):
                a[:, lo:hi] = 1.0 / (1.0 + xp.exp(-a[:, lo:hi]))
            Cs[t + 1, :n] = a[:, H:H2] * Cs[t, :n] + a[:, :H] * a[:, H2:H3]
            TC[t, :n] = xp.tanh(Cs[t + 1, :n])
            M[t, :n] = a[:, H3:] * TC[t, :n]
            Hs[t + 1, :n] = M[t, :n] @ w_hr.T
        self.x, self.A, self.Hs, self.Cs, self.TC, self.M = x, A, Hs, Cs, TC, M
        self.w_ih, self.w_hh = w_ih, w_hh
        return Hs, Cs

    def _backward(self, gy: Any, gfinal: list[Any]) -> tuple:
        x, A, Hs, Cs, TC, M, w_hh, w_hr = self.x, self.A, self.Hs, self.Cs, self.TC, self.M, self.w_hh, self.w_hr
        xp = get_array_module(x)
        T, B, _ = x.shape
        H, P = w_hh.shape[0] // 4, w_hh.shape[1]
        H2, H3 = 2 * H, 3 * H
        dh, dc = gfinal
        dZ = xp.zeros((T, B, 4 * H), x.dtype)
        DH = xp.zeros((T, B, P), x.dtype)  # dL/dh_t per step, for dW_hr after the loop
        for t in range(T - 1, -1, -1):
            n = self.sch.sizes[t]
            a, tc = A[t, :n], TC[t, :n]
            i, f, g, o = a[:, :H], a[:, H:H2], a[:, H2:H3], a[:, H3:]
            dht = dh[:n]
            if gy is not None:
                dht += gy[t, :n]
            DH[t, :n] = dht
            dm = dht @ w_hr
            dct = dc[:n]
            dct += dm * o * (1 - tc * tc)
            dz = dZ[t, :n]
            dz[:, :H] = dct * g * i * (1 - i)
            dz[:, H:H2] = dct * Cs[t, :n] * f * (1 - f)
            dz[:, H2:H3] = dct * i * (1 - g * g)
            dz[:, H3:] = dm * tc * o * (1 - o)
            dct *= f
            dh[:n] = dz @ w_hh
        need_hr = self.needs_input_grad[-1]
        self.gw_hr = DH.reshape(T * B, P).T @ M.reshape(T * B, H) if need_hr else None
        out = _weight_grads(self, dZ, x, Hs, [dh, dc])
        return out

