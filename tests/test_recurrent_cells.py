"""nn.RNNCell / nn.LSTMCell / nn.GRUCell against PyTorch's cells with the weights copied across, float64
gradcheck of the one-step ops, step-by-step decoding equal to the fused layer, and the error paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import handgrad
from handgrad import nn
from handgrad.engine.gradcheck import gradcheck
from handgrad.engine.tensor import Tensor
from handgrad.recurrent import gru_cell, lstm_cell, rnn_relu_cell, rnn_tanh_cell

I, H, B = 3, 4, 5


def make_pair(kind: str, dtype: str, bias: bool = True):
    if kind.startswith("rnn"):
        nl = kind[4:]
        tm, hm = torch.nn.RNNCell(I, H, bias=bias, nonlinearity=nl), nn.RNNCell(I, H, bias=bias, nonlinearity=nl)
    elif kind == "lstm":
        tm, hm = torch.nn.LSTMCell(I, H, bias=bias), nn.LSTMCell(I, H, bias=bias)
    else:
        tm, hm = torch.nn.GRUCell(I, H, bias=bias), nn.GRUCell(I, H, bias=bias)
    tm = tm.to(torch.float64 if dtype == "float64" else torch.float32)
    hm.to(dtype)
    hm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return tm, hm


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-8), ("float32", 2e-5)])
@pytest.mark.parametrize("batched, with_state", [(True, True), (True, False), (False, True)])
def test_matches_torch(kind, dtype, tol, batched, with_state):
    torch.manual_seed(0)
    tm, hm = make_pair(kind, dtype)
    tdt = tm.weight_ih.dtype
    lead = (B,) if batched else ()
    x = torch.randn(*lead, I, dtype=tdt, requires_grad=True)
    n_states = 2 if kind == "lstm" else 1
    states = [torch.randn(*lead, H, dtype=tdt, requires_grad=True) for _ in range(n_states)] if with_state else None
    t_hx = None if states is None else (tuple(states) if kind == "lstm" else states[0])
    out = tm(x, t_hx)
    out = list(out) if kind == "lstm" else [out]
    gs = [torch.randn_like(o) for o in out]
    sum((o * g).sum() for o, g in zip(out, gs)).backward()

    hx_ = Tensor(x.detach().numpy().copy(), requires_grad=True)
    h_states = None if states is None else [Tensor(s.detach().numpy().copy(), requires_grad=True) for s in states]
    h_hx = None if h_states is None else (tuple(h_states) if kind == "lstm" else h_states[0])
    h_out = hm(hx_, h_hx)
    h_out = list(h_out) if kind == "lstm" else [h_out]
    loss = None
    for o, g in zip(h_out, gs):
        term = (o * Tensor(g.numpy())).sum()
        loss = term if loss is None else loss + term
    loss.backward()

    pairs = [(o.array, t.detach().numpy()) for o, t in zip(h_out, out)] + [(hx_.grad.array, x.grad.numpy())]
    if states is not None:
        pairs += [(s.grad.array, t.grad.numpy()) for s, t in zip(h_states, states)]
    hp = dict(hm.named_parameters())
    pairs += [(hp[k].grad.array, p.grad.numpy()) for k, p in tm.named_parameters()]
    for a, b in pairs:
        assert a.shape == b.shape and a.dtype == np.dtype(dtype)
        assert rel_err(a, b) <= tol


@pytest.mark.parametrize("fn, n_gates, n_states", [(rnn_tanh_cell, 1, 1), (rnn_relu_cell, 1, 1), (lstm_cell, 4, 2),
                                                   (gru_cell, 3, 1)])
def test_gradcheck(fn, n_gates, n_states):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    hs = [Tensor(rng.standard_normal((2, 2)), requires_grad=True) for _ in range(n_states)]
    ws = [Tensor(rng.uniform(-0.8, 0.8, s), requires_grad=True)
          for s in [(2 * n_gates, 3), (2 * n_gates, 2), (2 * n_gates,), (2 * n_gates,)]]

    def f(x, *rest):
        st = rest[:n_states]
        return fn(x, tuple(st) if n_states == 2 else st[0], *rest[n_states:])

    assert gradcheck(f, (x, *hs, *ws))


def test_one_op_per_step():
    m = nn.LSTMCell(3, 4)
    h, c = m(handgrad.randn(2, 3))
    assert h.grad_fn is c.grad_fn and all(t.grad_fn is None for t in h.grad_fn.inputs)


def test_decoding_step_by_step_equals_fused_layer():
    handgrad.manual_seed(0)
    layer = nn.GRU(I, H).double()
    cell = nn.GRUCell(I, H).double()
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})  # weight_ih_l0 -> weight_ih
    x = handgrad.randn(6, B, I, dtype="float64")
    out, hn = layer(x)
    h = None
    for t in range(6):
        h = cell(x[t], h)
        np.testing.assert_allclose(h.array, out.array[t], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h.array, hn.array[0], rtol=1e-12, atol=1e-14)


def test_parameters_and_repr():
    m = nn.LSTMCell(10, 20, bias=False)
    assert [(k, v.shape) for k, v in m.named_parameters()] == [("weight_ih", (80, 10)), ("weight_hh", (80, 20))]
    assert repr(m) == "LSTMCell(10, 20, bias=False)"
    assert repr(nn.RNNCell(2, 3, nonlinearity="relu")) == "RNNCell(2, 3, nonlinearity='relu')"
    assert np.abs(nn.GRUCell(2, 16).weight_hh.array).max() <= 0.25


def test_errors():
    with pytest.raises(ValueError, match=r"LSTMCell: input has 5 features \(input shape \(2, 5\)\) but the cell's "
                                         r"input_size is 3"):
        nn.LSTMCell(3, 4)(handgrad.randn(2, 5))
    with pytest.raises(ValueError, match=r"GRUCell: expected input of shape \(batch, input_size\) or unbatched"):
        nn.GRUCell(3, 4)(handgrad.randn(1, 2, 3))
    with pytest.raises(ValueError, match=r"RNNCell: hx has shape \(3, 4\) but expected \(2, 4\)"):
        nn.RNNCell(3, 4)(handgrad.randn(2, 3), handgrad.zeros(3, 4))
    with pytest.raises(ValueError, match=r"LSTMCell: cx has shape \(2, 5\) but expected \(2, 4\)"):
        nn.LSTMCell(3, 4)(handgrad.randn(2, 3), (handgrad.zeros(2, 4), handgrad.zeros(2, 5)))
    with pytest.raises(TypeError, match=r"LSTMCell: hx must be a tuple \(h, c\)"):
        nn.LSTMCell(3, 4)(handgrad.randn(2, 3), handgrad.zeros(2, 4))
    with pytest.raises(ValueError, match=r"RNNCell: unknown nonlinearity 'elu'"):
        nn.RNNCell(3, 4, nonlinearity="elu")
    with pytest.raises(TypeError, match=r"GRUCell: input has dtype float64 but the parameters are float32"):
        nn.GRUCell(3, 4)(handgrad.randn(2, 3, dtype="float64"))
    with pytest.raises(ValueError, match=r"lstm_cell: input must be 2-D \(batch, input_size\)"):
        lstm_cell(handgrad.randn(3), None, handgrad.randn(8, 3), handgrad.randn(8, 2))
