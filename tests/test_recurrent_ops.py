"""The fused sequence ops (rnn_sequence, lstm_sequence, gru_sequence): float64 gradcheck on small shapes
(with lengths, reverse and initial states), one graph node per layer-direction, agreement with PyTorch's
functional cells unrolled by hand, and the error paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handgrad.engine.gradcheck import gradcheck
from handgrad.engine.tensor import Tensor
from handgrad.recurrent import gru_sequence, lstm_sequence, rnn_sequence

GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def params(kind: str, I: int, H: int, seed: int = 0, bias: bool = True):
    rng = np.random.default_rng(seed)
    G = GATES[kind] * H
    shapes = [(G, I), (G, H)] + ([(G,), (G,)] if bias else [])
    return [Tensor(rng.uniform(-0.7, 0.7, s), requires_grad=True) for s in shapes]


def call(kind: str, x, states, ws, **kw):
    if kind == "lstm":
        return lstm_sequence(x, None if states is None else tuple(states), *ws, **kw)
    if kind == "gru":
        return gru_sequence(x, None if states is None else states[0], *ws, **kw)
    return rnn_sequence(x, None if states is None else states[0], *ws, nonlinearity=kind[4:], **kw)


@pytest.mark.parametrize("kind", list(GATES))
@pytest.mark.parametrize("lengths, reverse", [(None, False), ([3, 1, 2], False), ([3, 1, 2], True), (None, True)])
def test_gradcheck(kind, lengths, reverse):
    T, B, I, H = 3, 3, 2, 3
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((T, B, I)), requires_grad=True)
    n_states = 2 if kind == "lstm" else 1
    states = [Tensor(rng.standard_normal((B, H)) * 0.5, requires_grad=True) for _ in range(n_states)]
    ws = params(kind, I, H)

    def f(x, *rest):
        return call(kind, x, list(rest[:n_states]), list(rest[n_states:]), lengths=lengths, reverse=reverse)

    assert gradcheck(f, (x, *states, *ws))


@pytest.mark.parametrize("kind", list(GATES))
def test_gradcheck_no_bias_no_initial_state(kind):
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((4, 2, 3)), requires_grad=True)
    ws = params(kind, 3, 2, bias=False)
    assert gradcheck(lambda x, *w: call(kind, x, None, list(w), lengths=[4, 2]), (x, *ws))


def test_gradcheck_saturated_gates():
    """Large pre-activations overflow exp inside the kernel (sigmoid -> 0 or 1): values and grads stay finite."""
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((3, 2, 2)) * 60, requires_grad=True)
    ws = params("lstm", 2, 2)
    out, h, c = lstm_sequence(x, None, *ws)
    assert np.all(np.isfinite(out.array)) and np.all(np.abs(out.array) <= 1)
    (out.sum() + h.sum() + c.sum()).backward()
    assert np.all(np.isfinite(x.grad.array))


def torch_unroll(kind, x, states, ws, lengths=None, reverse=False):
    """PyTorch's functional cells step by step: the reference for the fused ops' semantics."""
    T, B = x.shape[:2]
    lengths = [T] * B if lengths is None else lengths
    outs = torch.zeros(T, B, ws[1].shape[1], dtype=x.dtype)
    finals = [[None] * B for _ in states]
    for b in range(B):
        st = [s[b : b + 1] for s in states]
        L = lengths[b]
        steps = range(L - 1, -1, -1) if reverse else range(L)
        for t in steps:
            xt = x[t, b : b + 1]
            if kind == "lstm":
                st = list(torch.lstm_cell(xt, tuple(st), *ws))
            elif kind == "gru":
                st = [torch.gru_cell(xt, st[0], *ws)]
            elif kind == "rnn_tanh":
                st = [torch.rnn_tanh_cell(xt, st[0], *ws)]
            else:
                st = [torch.rnn_relu_cell(xt, st[0], *ws)]
            outs = outs.index_put((torch.tensor([t]), torch.tensor([b])), st[0])
        for i, s in enumerate(st):
            finals[i][b] = s[0]
    return outs, [torch.stack(f) for f in finals]


@pytest.mark.parametrize("kind", list(GATES))
@pytest.mark.parametrize("lengths, reverse", [(None, False), ([2, 4, 1], True), ([4, 2, 3], False)])
def test_matches_torch_cells_unrolled(kind, lengths, reverse):
    T, B, I, H = 4, 3, 2, 3
    rng = np.random.default_rng(4)
    n_states = 2 if kind == "lstm" else 1
    x_np = rng.standard_normal((T, B, I))
    s_np = [rng.standard_normal((B, H)) for _ in range(n_states)]
    ws = params(kind, I, H, seed=5)
    g_out = rng.standard_normal((T, B, H))
    g_fin = [rng.standard_normal((B, H)) for _ in range(n_states)]

    tx = torch.tensor(x_np, requires_grad=True)
    ts = [torch.tensor(s, requires_grad=True) for s in s_np]
    tw = [torch.tensor(w.array, requires_grad=True) for w in ws]
    t_out, t_fin = torch_unroll(kind, tx, ts, tw, lengths, reverse)
    loss = (t_out * torch.tensor(g_out)).sum() + sum((f * torch.tensor(g)).sum() for f, g in zip(t_fin, g_fin))
    loss.backward()

    hx = Tensor(x_np, requires_grad=True)
    hs = [Tensor(s, requires_grad=True) for s in s_np]
    res = call(kind, hx, hs, ws, lengths=lengths, reverse=reverse)
    assert len(res) == 1 + n_states
    h_loss = (res[0] * Tensor(g_out)).sum()
    for f, g in zip(res[1:], g_fin):
        h_loss = h_loss + (f * Tensor(g)).sum()
    h_loss.backward()
    np.testing.assert_allclose(res[0].array, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    for f, tf in zip(res[1:], t_fin):
        np.testing.assert_allclose(f.array, tf.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hx.grad.array, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for s, t in zip(hs, ts):
        np.testing.assert_allclose(s.grad.array, t.grad.numpy(), rtol=1e-10, atol=1e-12)
    for w, t in zip(ws, tw):
        np.testing.assert_allclose(w.grad.array, t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_one_graph_node_per_sequence():
    x = Tensor(np.random.default_rng(0).standard_normal((50, 2, 3)), requires_grad=True)
    out, h, c = lstm_sequence(x, None, *params("lstm", 3, 4))
    assert out.grad_fn is h.grad_fn is c.grad_fn
    assert type(out.grad_fn).__name__ == "LSTMSequenceFunction"
    assert all(t.grad_fn is None for t in out.grad_fn.inputs)  # its inputs are the leaves: no per-step nodes


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((5, 2, 3)).astype(np.float32), requires_grad=True)
    ws = [Tensor(w.array.astype(np.float32), requires_grad=True) for w in params("gru", 3, 4)]
    out, h = gru_sequence(x, None, *ws)
    out.sum().backward()
    assert out.dtype == h.dtype == x.grad.dtype == ws[0].grad.dtype == np.float32


# -- errors -------------------------------------------------------------------------------------------------------
def test_error_input_ndim():
    with pytest.raises(ValueError, match=r"lstm_sequence: input must be 3-D \(seq_len, batch, input_size\), "
                                         r"got shape \(4, 3\)"):
        lstm_sequence(Tensor(np.zeros((4, 3))), None, *params("lstm", 3, 2))


def test_error_weight_shapes():
    x = Tensor(np.zeros((4, 2, 3)))
    w_ih, w_hh, b_ih, b_hh = params("gru", 5, 2)
    with pytest.raises(ValueError, match=r"gru_sequence: weight_ih has shape \(6, 5\) but input \(4, 2, 3\) "
                                         r"with 3 features and hidden size 2 need \(6, 3\)"):
        gru_sequence(x, None, w_ih, w_hh, b_ih, b_hh)
    w_ih, w_hh, b_ih, b_hh = params("lstm", 3, 2)
    with pytest.raises(ValueError, match=r"rnn_sequence: weight_hh must have shape \(1\*H, H\), got \(8, 2\)"):
        rnn_sequence(x, None, w_ih, w_hh)
    with pytest.raises(ValueError, match=r"lstm_sequence: bias_hh has shape \(7,\), expected \(8,\)"):
        lstm_sequence(x, None, w_ih, w_hh, b_ih, Tensor(np.zeros(7)))
    with pytest.raises(ValueError, match=r"lstm_sequence: give both bias_ih and bias_hh or neither"):
        lstm_sequence(x, None, w_ih, w_hh, b_ih, None)


def test_error_states_and_lengths():
    x = Tensor(np.zeros((4, 2, 3)))
    ws = params("lstm", 3, 2)
    with pytest.raises(ValueError, match=r"lstm_sequence: c0 has shape \(2, 3\), expected \(batch, hidden_size\) "
                                         r"= \(2, 2\)"):
        lstm_sequence(x, (Tensor(np.zeros((2, 2))), Tensor(np.zeros((2, 3)))), *ws)
    with pytest.raises(ValueError, match=r"lstm_sequence: lengths must lie in \[1, T=4\]"):
        lstm_sequence(x, None, *ws, lengths=[5, 1])
    with pytest.raises(TypeError, match=r"lstm_sequence: all tensors must share one dtype"):
        lstm_sequence(Tensor(np.zeros((4, 2, 3), np.float32)), None, *ws)
    with pytest.raises(ValueError, match=r"rnn_sequence: unknown nonlinearity 'gelu'"):
        rnn_sequence(x, None, *params("rnn_tanh", 3, 2), nonlinearity="gelu")
    with pytest.raises(TypeError, match=r"gru_sequence: lengths must be integers, got dtype"):
        gru_sequence(x, None, *params("gru", 3, 2), lengths=np.array(["a", "b"]))


def test_pooled_work_arrays_never_alias_live_results():
    """Work arrays are recycled across calls; outputs and states the caller still holds must stay intact."""
    import handgrad

    rng = np.random.default_rng(7)
    ws = params("lstm", 3, 4, seed=8)
    x1 = Tensor(rng.standard_normal((6, 2, 3)), requires_grad=True)
    out1, h1, c1 = lstm_sequence(x1, None, *ws)
    kept = [out1.array.copy(), h1.array.copy(), c1.array.copy()]
    (out1.sum() + c1.sum()).backward()  # frees the graph: internal arrays go back to the pool
    g1 = x1.grad.array.copy()
    with handgrad.no_grad():  # no graph at all: arrays go back at the end of the forward
        for _ in range(3):
            lstm_sequence(Tensor(rng.standard_normal((6, 2, 3))), None, *ws)
    x2 = Tensor(rng.standard_normal((6, 2, 3)), requires_grad=True)
    out2, h2, c2 = lstm_sequence(x2, None, *ws)
    (out2.sum() + c2.sum()).backward()
    for a, b in zip((out1.array, h1.array, c1.array, x1.grad.array), (*kept, g1)):
        np.testing.assert_array_equal(a, b)
    assert not np.shares_memory(out1.array, out2.array)
    # the same input again gives the same numbers (nothing stale leaks from a recycled buffer)
    out3, h3, c3 = lstm_sequence(Tensor(x1.array), None, *ws)
    np.testing.assert_array_equal(out3.array, kept[0])
    np.testing.assert_array_equal(c3.array, kept[2])


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_backward_twice_with_retain_graph(kind):
    from handgrad.recurrent import clear_workspace

    rng = np.random.default_rng(9)
    ws = params(kind, 3, 4, seed=10)
    x = Tensor(rng.standard_normal((5, 2, 3)), requires_grad=True)
    res = call(kind, x, None, ws, lengths=[5, 3])
    loss = (res[0] * res[0]).sum() + res[1].sum()
    loss.backward(retain_graph=True)
    g1 = [x.grad.array.copy()] + [w.grad.array.copy() for w in ws]
    loss.backward()  # the saved arrays survived the first backward; gradients accumulate
    for a, t in zip(g1, [x, *ws]):
        np.testing.assert_allclose(t.grad.array, 2 * a, rtol=1e-13, atol=0)
    clear_workspace()
