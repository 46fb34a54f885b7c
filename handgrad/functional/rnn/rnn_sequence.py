"""Elman RNN (tanh or ReLU) over a whole sequence as ONE op with hand-written BPTT (``rnn_sequence``), and the
one-step cells ``rnn_tanh_cell`` / ``rnn_relu_cell``.

The course's building block is ``h_t = tanh(z_t)``, ``z_t = W^T [h_{t-1}; x_t; 1]`` with
``W = [W_h; W_x; W_1] in R^{(H+I+1) x H}``. PyTorch (and handgrad) keep the same numbers as
``W_hh = W_h^T (H, H)``, ``W_ih = W_x^T (H, I)`` and ``W_1 = b_ih + b_hh`` (two biases; only the sum matters)::

    z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh        (B, H)
    h_t = tanh(z_t)     (or relu(z_t))

BPTT (the course's ``dh_t/dh_{t-1} = W_h^T diag(1 - tanh^2(z_t))``), with dh_t = dL/dy_t + carry::

    dz_t = dh_t * (1 - h_t^2)         (relu: dh_t * [h_t > 0])
    dh_{t-1} = dz_t @ W_hh
    dW_ih = sum_t dz_t^T x_t,  dW_hh = sum_t dz_t^T h_{t-1},  db = sum_t dz_t     (one GEMM each, after the loop)

Speed: one GEMM for all input projections, one recurrent GEMM per step; ``tanh(z) = 2 / (1 + exp(-2z)) - 1``
with the ``-2`` folded into pre-scaled weights (NumPy's ``exp`` is several times faster than its ``tanh``).
"""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.tensor import Tensor
from handgrad.functional.rnn import _workspace as ws
from handgrad.functional.rnn._fused import FusedRecurrenceFunction, input_projection, run_fused
from handgrad.functional.rnn.lstm_sequence import _weight_grads

NONLINEARITIES = ("tanh", "relu")


class RNNSequenceFunction(FusedRecurrenceFunction):
    """Fused Elman layer-direction: ``(x, h0, W_ih, W_hh[, b_ih, b_hh]) -> (output, h_n)``."""

    n_states = 1
    n_gates = 1
    _saved = ("Hs",)

    def __init__(self, nonlinearity: str = "tanh", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nonlinearity = nonlinearity

    def _forward(self, x: Any, states: list[Any], w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> tuple[Any]:
        xp = get_array_module(x)
        T, B, I = x.shape
        H = w_hh.shape[1]
        dt = x.dtype
        sizes = self.sch.sizes
        use_tanh = self.nonlinearity == "tanh"
        k = -2.0 if use_tanh else 1.0  # tanh: keep -2z, so that h = 2 / (1 + exp(stored)) - 1
        w_hh_s = w_hh * k
        Z = ws.empty(xp, (T, B, H), dt)
        input_projection(x, w_ih * k, None if b_ih is None else (b_ih + b_hh) * k, Z)
        Hs = (ws.zeros if self.sch.padded else ws.empty)(xp, (T + 1, B, H), dt)
        Hs[0] = states[0]
        R = ws.empty(xp, (B, H), dt)
        for t in range(T):
            n = sizes[t]
            z = Z[t, :n]
            r = R[:n]
            xp.matmul(w_hh_s, Hs[t, :n].T, out=r.T)
            z += r
            h = Hs[t + 1, :n]
            if use_tanh:
                xp.exp(z, out=z)
                z += 1
                xp.divide(2, z, out=h)
                h -= 1
            else:
                xp.maximum(z, 0, out=h)
        ws.give(Z, R)
        self.x, self.Hs, self.w_ih, self.w_hh = x, Hs, w_ih, w_hh
        return (Hs,)

    def _backward(self, gy: Any, gfinal: list[Any]) -> tuple:
        x, Hs, w_hh = self.x, self.Hs, self.w_hh
        xp = get_array_module(x)
        T, B, _ = x.shape
        H = w_hh.shape[1]
        sizes = self.sch.sizes
        use_tanh = self.nonlinearity == "tanh"
        (dh,) = gfinal
        dZ = (ws.zeros if self.sch.padded else ws.empty)(xp, (T, B, H), x.dtype)
        for t in range(T - 1, -1, -1):
            n = sizes[t]
            dht = dh[:n]
            if gy is not None:
                dht += gy[t, :n]
            h = Hs[t + 1, :n]
            dz = dZ[t, :n]
            if use_tanh:
                xp.multiply(h, h, out=dz)
                xp.subtract(1, dz, out=dz)
                dz *= dht
            else:
                xp.multiply(dht, h > 0, out=dz)
            xp.matmul(dz, w_hh, out=dht)
        out = _weight_grads(self, dZ, x, Hs, [dh])
        ws.give(dZ)
        return out


def _check_nonlinearity(name: str, nonlinearity: str) -> None:
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"{name}: unknown nonlinearity '{nonlinearity}', expected 'tanh' or 'relu'")


def rnn_sequence(
    input: Tensor,
    hx: Tensor | None,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    lengths: Any = None,
    reverse: bool = False,
    nonlinearity: str = "tanh",
) -> tuple[Tensor, Tensor]:
    """One Elman RNN layer-direction over a whole sequence: one graph node, hand-written BPTT backward.

    input (T, B, I); hx = h0 (B, H) or None for zeros; weight_ih (H, I); weight_hh (H, H); biases (H,) or None;
    ``nonlinearity`` 'tanh' or 'relu'. ``lengths`` (B,) ints in [1, T]: steps past a sequence's length keep its
    state and output zeros (PyTorch's packed-sequence numbers). ``reverse=True`` runs each sequence from its own
    last valid step back to step 0. Returns ``output (T, B, H)`` and ``h_n (B, H)``.
    """
    _check_nonlinearity("rnn_sequence", nonlinearity)
    fn = RNNSequenceFunction(nonlinearity=nonlinearity, reverse=reverse)
    return run_fused(fn, "rnn_sequence", input, [hx], weight_ih, weight_hh, bias_ih, bias_hh, lengths)


def rnn_cell(
    input: Tensor,
    hx: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    """One Elman step: input (B, I), hx (B, H) or None -> h' (B, H). One op, hand-written backward."""
    name = f"rnn_{nonlinearity}_cell" if nonlinearity in NONLINEARITIES else "rnn_cell"
    _check_nonlinearity(name, nonlinearity)
    fn = RNNSequenceFunction(nonlinearity=nonlinearity, cell=True)
    return run_fused(fn, name, input, [hx], w_ih, w_hh, b_ih, b_hh, None)


def rnn_tanh_cell(
    input: Tensor, hx: Tensor | None, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> Tensor:
    """``torch.rnn_tanh_cell``: h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""
    return rnn_cell(input, hx, w_ih, w_hh, b_ih, b_hh, "tanh")


def rnn_relu_cell(
    input: Tensor, hx: Tensor | None, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> Tensor:
    """``torch.rnn_relu_cell``: h' = relu(W_ih x + b_ih + W_hh h + b_hh)."""
    return rnn_cell(input, hx, w_ih, w_hh, b_ih, b_hh, "relu")
