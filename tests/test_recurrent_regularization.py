"""Regularisation for RNNs: locked / embedding / element dropout, zoneout, gradient-clipping tracker.

Each op: a float64 central-difference gradient check, a forward+backward comparison with PyTorch using the
same masks, the statistical properties that define it (masks constant over time, E[y] = x), eval-mode
determinism and the error paths.
"""

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad.engine.ops.arithmetic import MulConstantFunction
from handgrad.engine.random import get_rng
from handgrad.nn import Module, Parameter
from handgrad.recurrent.regularization import (
    ClipTracker,
    EmbeddingDropout,
    LockedDropout,
    dropout,
    embedding_dropout,
    locked_dropout,
)
from handgrad.recurrent.zoneout import ZoneoutMixFunction, zoneout


def numgrad(f, arrays, eps=1e-6):
    """Central differences of the scalar f(*arrays) w.r.t. every array (float64)."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            fp = f(*arrays)
            a[idx] = old - eps
            fm = f(*arrays)
            a[idx] = old
            g[idx] = (fp - fm) / (2 * eps)
        grads.append(g)
    return grads


def check_grad(fn, arrays, seed=None, rtol=1e-6, atol=1e-8):
    """Analytic gradient of sum(fn(*tensors) * w) against central differences; ``seed`` re-seeds handgrad's
    generator before every evaluation so random masks are the same in all of them."""
    rng = np.random.default_rng(123)
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    if seed is not None:
        hg.manual_seed(seed)
    out = fn(*[hg.tensor(a) for a in arrays])
    w = rng.standard_normal(out.shape)

    def f(*arrs):
        if seed is not None:
            hg.manual_seed(seed)
        return float((fn(*[hg.tensor(a) for a in arrs]).numpy() * w).sum())

    ts = [hg.tensor(a, requires_grad=True) for a in arrays]
    if seed is not None:
        hg.manual_seed(seed)
    (fn(*ts) * hg.tensor(w)).sum().backward()
    for t, g in zip(ts, numgrad(f, arrays)):
        np.testing.assert_allclose(t.grad.numpy(), g, rtol=rtol, atol=atol)


# -- locked (variational) dropout ---------------------------------------------------------------------
def test_locked_dropout_mask_is_constant_over_time_and_scaled():
    hg.manual_seed(0)
    x = hg.ones(50, 8, 16, dtype="float64")
    y = locked_dropout(x, 0.3).numpy()
    assert np.all(y == y[:1])  # the same mask at every one of the 50 steps
    assert set(np.unique(y)) <= {0.0, 1 / 0.7}
    # batch_first: time is axis 1
    yb = locked_dropout(x, 0.3, batch_first=True).numpy()
    assert np.all(yb == yb[:, :1])
    assert not np.all(yb == yb[:1])  # but it varies over the batch
    y2 = LockedDropout(0.3)(hg.ones(6, 5, dtype="float64")).numpy()  # unbatched (T, F)
    assert np.all(y2 == y2[:1])


def test_locked_dropout_preserves_expectation():
    hg.manual_seed(1)
    x = np.random.default_rng(0).standard_normal((3, 4000, 10))
    y = locked_dropout(hg.tensor(x), 0.4).numpy()
    # mean over 4000 independent masks of m/(1-p): E = 1, sd = sqrt(p/(1-p))/sqrt(4000) ~ 0.013
    ratio = (y / x).mean(axis=1)
    assert np.all(np.abs(ratio - 1.0) < 0.06)
    assert abs((y == 0).mean() - 0.4) < 0.02


def test_locked_dropout_eval_and_p0_are_identity_and_deterministic():
    x = hg.randn(5, 3, 4)
    m = LockedDropout(0.5)
    m.eval()
    assert m(x) is x
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())
    assert locked_dropout(x, 0.0) is x
    assert "p=0.5" in repr(m)
    assert np.all(locked_dropout(x, 1.0).numpy() == 0)


def test_locked_dropout_gradcheck_and_torch():
    x = np.random.default_rng(2).standard_normal((4, 3, 5))
    check_grad(lambda t: locked_dropout(t, 0.5), [x], seed=7)
    hg.manual_seed(7)
    xt = hg.tensor(x, requires_grad=True)
    y = locked_dropout(xt, 0.5)
    hg.manual_seed(7)
    mask = (get_rng().random((1, 3, 5)) >= 0.5) / 0.5  # the mask our op drew
    tx = torch.tensor(x, requires_grad=True)
    ty = tx * torch.tensor(mask)
    gy = np.random.default_rng(3).standard_normal(y.shape)
    y.backward(gy)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-12)


def test_element_dropout_changes_over_time_and_gradcheck():
    hg.manual_seed(3)
    y = dropout(hg.ones(40, 2, 30, dtype="float64"), 0.5).numpy()
    assert not np.all(y == y[:1])  # Zaremba's dropout: a new mask at every step
    assert abs(y.mean() - 1.0) < 0.05
    check_grad(lambda t: dropout(t, 0.3), [np.random.default_rng(4).standard_normal((3, 4))], seed=5)
    x = hg.randn(3, 4)
    assert dropout(x, 0.5, training=False) is x


def test_dropout_function_with_a_broadcast_mask_gradcheck():
    mask = np.random.default_rng(5).random((1, 3)) * 2
    check_grad(lambda t: MulConstantFunction(mask)(t), [np.random.default_rng(6).standard_normal((4, 3))])


# -- embedding dropout ----------------------------------------------------------------------------------
def test_embedding_dropout_drops_whole_words_everywhere():
    hg.manual_seed(4)
    w = hg.tensor(np.random.default_rng(0).standard_normal((20, 6)) + 5.0)
    idx = hg.tensor(np.tile(np.arange(20), (8, 1)))  # every word at 8 positions
    y = embedding_dropout(idx, w, 0.5).numpy()  # (8, 20, 6)
    dropped = np.all(y == 0, axis=-1)  # (8, 20)
    assert np.all(dropped == dropped[:1])  # a word is dropped at all its positions or none
    assert 0 < dropped[0].sum() < 20
    kept = ~dropped[0]
    np.testing.assert_allclose(y[0, kept], w.numpy()[kept] * 2.0, rtol=1e-6)


def test_embedding_dropout_expectation_and_eval():
    hg.manual_seed(5)
    w = hg.tensor(np.ones((3000, 2)))
    y = embedding_dropout(hg.tensor(np.arange(3000)), w, 0.25).numpy()
    assert abs(y.mean() - 1.0) < 0.05
    y_eval = embedding_dropout(hg.tensor(np.arange(3000)), w, 0.25, training=False).numpy()
    np.testing.assert_array_equal(y_eval, w.numpy())


def test_embedding_dropout_gradcheck_and_torch_with_padding_and_repeats():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((7, 3))
    idx = np.array([[1, 2, 2, 0], [6, 1, 0, 3]])
    check_grad(lambda t: embedding_dropout(hg.tensor(idx), t, 0.4), [w], seed=11)
    hg.manual_seed(11)
    wt = hg.tensor(w, requires_grad=True)
    y = embedding_dropout(hg.tensor(idx), wt, 0.4, padding_idx=0)
    hg.manual_seed(11)
    mask = (get_rng().random((7, 1)) >= 0.4) / 0.6
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.embedding(torch.tensor(idx), tw * torch.tensor(mask), padding_idx=0)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(wt.grad.numpy(), tw.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert np.all(wt.grad.numpy()[0] == 0)


def test_embedding_dropout_module_wraps_weight():
    class Emb(Module):
        def __init__(self):
            super().__init__()
            self.weight = Parameter(np.ones((5, 2)))
            self.padding_idx = None

    m = EmbeddingDropout(Emb(), 0.5)
    m.eval()
    np.testing.assert_array_equal(m(hg.tensor([[0, 4]])).numpy(), np.ones((1, 2, 2)))
    assert "p=0.5" in repr(m)


# -- zoneout mixing -------------------------------------------------------------------------------------
def test_zoneout_mix_values_gradcheck_and_torch():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    d = (rng.random((3, 4)) < 0.5).astype(np.float64)
    check_grad(lambda p, q: ZoneoutMixFunction(d)(p, q), [a, b])
    check_grad(lambda p, q: zoneout(p, q, 0.3), [a, b], seed=2)
    check_grad(lambda p, q: zoneout(p, q, 0.3, training=False), [a, b])
    pa, pb = hg.tensor(a, requires_grad=True), hg.tensor(b, requires_grad=True)
    y = ZoneoutMixFunction(d)(pa, pb)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ty = torch.tensor(d) * ta + (1 - torch.tensor(d)) * tb
    gy = rng.standard_normal((3, 4))
    y.backward(gy)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(pa.grad.numpy(), ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(pb.grad.numpy(), tb.grad.numpy(), rtol=1e-12)


def test_zoneout_training_keeps_previous_or_takes_new_and_eval_is_expectation():
    hg.manual_seed(8)
    prev, new = hg.zeros(200, 50, dtype="float64"), hg.ones(200, 50, dtype="float64")
    y = zoneout(prev, new, 0.3).numpy()
    assert set(np.unique(y)) == {0.0, 1.0}  # each unit either kept its old value or updated
    assert abs((y == 0).mean() - 0.3) < 0.02
    np.testing.assert_allclose(zoneout(prev, new, 0.3, training=False).numpy(), 0.7)
    assert zoneout(prev, new, 0.0) is new


def test_deterministic_ops_pass_handgrad_gradcheck():
    rng = np.random.default_rng(9)
    a = hg.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = hg.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    d = (rng.random((3, 4)) < 0.5).astype(np.float64)
    mask = rng.random((1, 4))
    assert hg.gradcheck(lambda p: MulConstantFunction(mask)(p), (a,))
    assert hg.gradcheck(lambda p, q: ZoneoutMixFunction(d)(p, q), (a, b))
    assert hg.gradcheck(lambda p, q: zoneout(p, q, 0.25, training=False), (a, b))
    w = hg.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    idx = np.array([[0, 4, 4], [2, 0, 1]])
    assert hg.gradcheck(lambda p: embedding_dropout(idx, p, 0.5, training=False), (w,))  # the lookup alone


# -- clipping tracker --------------------------------------------------------------------------------------
def test_clip_tracker_counts_clipped_steps_and_matches_torch():
    pytest.importorskip("handgrad.nn.utils")
    g = np.array([3.0, 4.0])  # norm 5
    p = Parameter(np.zeros(2))
    tr = ClipTracker(max_norm=1.0)
    for scale in (1.0, 0.1, 2.0, 0.05):
        p.grad = hg.tensor(g * scale)
        total = tr([p])
        tp = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        tp.grad = torch.tensor(g * scale)
        t_total = torch.nn.utils.clip_grad_norm_([tp], 1.0)
        assert total == pytest.approx(float(t_total), rel=1e-12)
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-6)
    assert tr.steps == 4 and tr.clipped == 2 and tr.fraction == 0.5
    s = tr.summary()
    assert s["grad_norm_max"] == pytest.approx(10.0) and s["clip_fraction"] == 0.5
    tr.reset()
    assert tr.fraction == 0.0


# -- errors ----------------------------------------------------------------------------------------------
def test_errors_name_op_and_shapes():
    x = hg.randn(3, 4, 5)
    with pytest.raises(ValueError, match="locked_dropout: dropout probability has to be between 0 and 1, but got 1.5"):
        locked_dropout(x, 1.5)
    with pytest.raises(ValueError, match=r"locked_dropout: expected a \(T, B, F\).*\(3, 4, 5, 1\)"):
        locked_dropout(hg.randn(3, 4, 5, 1), 0.1)
    with pytest.raises(ValueError, match="dropout: dropout probability"):
        dropout(x, -0.1)
    with pytest.raises(ValueError, match="LockedDropout: dropout probability"):
        LockedDropout(2.0)
    with pytest.raises(ValueError, match=r"embedding_dropout: weight must be \(num_embeddings, embedding_dim\)"):
        embedding_dropout(hg.tensor([0]), hg.randn(3), 0.1)
    with pytest.raises(TypeError, match="embedding_dropout: input must hold integer indices"):
        embedding_dropout(hg.tensor([0.5]), hg.randn(3, 2), 0.1)
    with pytest.raises(IndexError, match=r"embedding_dropout: indices must lie in \[0, 3\).*\(3, 2\)"):
        embedding_dropout(hg.tensor([0, 3]), hg.randn(3, 2), 0.1)
    with pytest.raises(ValueError, match=r"zoneout: previous state \(2, 3\) and new state \(2, 4\)"):
        zoneout(hg.randn(2, 3), hg.randn(2, 4), 0.1)
    with pytest.raises(ValueError, match="zoneout: dropout probability"):
        zoneout(hg.randn(2, 3), hg.randn(2, 3), 1.1)
    with pytest.raises(ValueError, match="ClipTracker: max_norm must be > 0"):
        ClipTracker(0.0)


# -- zoneout over whole sequences (cells from handgrad.nn) ---------------------------------------------------
def _torch_zoneout(tm, x, p_h, p_c, seed):
    """Reference: torch cells stepped by hand, replaying the masks our ZoneoutRNN draws (same order)."""
    hg.manual_seed(seed)
    rng = get_rng()
    seq, batch = x.shape[0], x.shape[1]
    inp, finals = x, []
    for k in range(tm.num_layers):
        w = [getattr(tm, f"{n}_l{k}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h = torch.zeros(batch, tm.hidden_size, dtype=x.dtype)
        c = torch.zeros_like(h)
        outs = []
        for t in range(seq):
            if tm.mode == "LSTM":
                h1, c1 = torch._VF.lstm_cell(inp[t], (h, c), *w)
            elif tm.mode == "GRU":
                h1 = torch._VF.gru_cell(inp[t], h, *w)
            else:
                h1 = torch._VF.rnn_tanh_cell(inp[t], h, *w)
            if p_h:
                d = torch.tensor((rng.random(h1.shape) < p_h).astype(np.float64))
                h1 = d * h + (1 - d) * h1
            if tm.mode == "LSTM":
                if p_c:
                    d = torch.tensor((rng.random(c1.shape) < p_c).astype(np.float64))
                    c1 = d * c + (1 - d) * c1
                c = c1
            h = h1
            outs.append(h)
        inp = torch.stack(outs)
        finals.append(h)
    return inp, torch.stack(finals)


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_zoneout_rnn_matches_torch_with_the_same_masks(mode):
    from handgrad import nn
    from handgrad.recurrent.zoneout import ZoneoutRNN

    torch.manual_seed(0)
    tm = {"RNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[mode](3, 4, num_layers=2).double()
    fused = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}[mode](3, 4, num_layers=2).double()
    fused.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    p_c = 0.5 if mode == "LSTM" else 0.0
    z = ZoneoutRNN(mode, 3, 4, num_layers=2, zoneout_h=0.3, zoneout_c=p_c).double().load_fused(fused)
    x = np.random.default_rng(1).standard_normal((6, 2, 3))
    hg.manual_seed(9)
    xt = hg.tensor(x, requires_grad=True)
    out, state = z(xt)
    t_x = torch.tensor(x, requires_grad=True)
    t_out, t_hn = _torch_zoneout(tm, t_x, 0.3, p_c, 9)
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    h_n = state[0] if mode == "LSTM" else state
    np.testing.assert_allclose(h_n.numpy(), t_hn.detach().numpy(), rtol=1e-10, atol=1e-12)
    gy = np.random.default_rng(2).standard_normal(out.shape)
    (out * hg.tensor(gy)).sum().backward()
    (t_out * torch.tensor(gy)).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), t_x.grad.numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(
        z.cells[1].cell.weight_hh.grad.numpy(), tm.weight_hh_l1.grad.numpy(), rtol=1e-8, atol=1e-12
    )


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_zoneout_zero_is_the_plain_network_and_eval_is_deterministic(mode):
    from handgrad import nn
    from handgrad.recurrent.zoneout import ZoneoutRNN

    hg.manual_seed(1)
    fused = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}[mode](3, 5, num_layers=2).double()
    z0 = ZoneoutRNN(mode, 3, 5, num_layers=2).double().load_fused(fused)
    x = hg.tensor(np.random.default_rng(3).standard_normal((7, 2, 3)))
    np.testing.assert_allclose(z0(x)[0].numpy(), fused(x)[0].numpy(), rtol=1e-10, atol=1e-12)
    z = ZoneoutRNN(mode, 3, 5, num_layers=2, zoneout_h=0.4, zoneout_c=0.2 if mode == "LSTM" else 0.0)
    z = z.double().load_fused(fused)
    z.eval()
    a, b = z(x)[0].numpy(), z(x)[0].numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, fused(x)[0].numpy())  # eval uses the expectation, not the plain update
    z.train()
    assert not np.array_equal(z(x)[0].numpy(), z(x)[0].numpy())  # fresh masks in training


def test_zoneout_eval_step_is_the_expectation_of_training_steps():
    from handgrad import nn
    from handgrad.recurrent.zoneout import ZoneoutCell

    hg.manual_seed(2)
    cell = nn.GRUCell(3, 4).double()
    zc = ZoneoutCell(cell, zoneout_h=0.3)
    x = hg.tensor(np.random.default_rng(4).standard_normal((2, 3)))
    h = hg.tensor(np.random.default_rng(5).standard_normal((2, 4)))
    zc.eval()
    expect = zc(x, h).numpy()
    np.testing.assert_allclose(expect, 0.3 * h.numpy() + 0.7 * cell(x, h).numpy(), rtol=1e-12)
    zc.train()
    mean = np.mean([zc(x, h).numpy() for _ in range(3000)], axis=0)
    np.testing.assert_allclose(mean, expect, atol=0.05)


def test_zoneout_rnn_gradcheck_in_training_mode():
    from handgrad.recurrent.zoneout import ZoneoutRNN

    hg.manual_seed(3)
    z = ZoneoutRNN("LSTM", 2, 3, zoneout_h=0.3, zoneout_c=0.4).double()
    x = np.random.default_rng(6).standard_normal((4, 2, 2))
    check_grad(lambda t: z(t)[0], [x], seed=21, rtol=1e-6, atol=1e-9)
    w = z.cells[0].cell.weight_hh  # and the recurrent weight, with the same seeded masks
    gy = np.random.default_rng(7).standard_normal((4, 2, 3))

    def f(warr):
        w.array = warr
        hg.manual_seed(22)
        return float((z(hg.tensor(x))[0].numpy() * gy).sum())

    w0 = w.array.copy()
    num = numgrad(f, [w0.copy()])[0]
    w.array, w.grad = w0, None
    hg.manual_seed(22)
    (z(hg.tensor(x))[0] * hg.tensor(gy)).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), num, rtol=1e-6, atol=1e-9)


def test_zoneout_batch_first_and_initial_state():
    from handgrad.recurrent.zoneout import ZoneoutRNN

    hg.manual_seed(4)
    z = ZoneoutRNN("LSTM", 2, 3, batch_first=True).double()
    x = hg.tensor(np.random.default_rng(7).standard_normal((2, 5, 2)))
    h0 = (hg.tensor(np.ones((1, 2, 3))), hg.tensor(np.ones((1, 2, 3))))
    out, (h, c) = z(x, h0)
    assert out.shape == (2, 5, 3) and h.shape == (1, 2, 3) and c.shape == (1, 2, 3)
    np.testing.assert_allclose(out.numpy()[:, -1], h.numpy()[0])
    out0, _ = z(x)
    assert not np.allclose(out.numpy(), out0.numpy())  # the initial state was used


def test_zoneout_errors():
    from handgrad import nn
    from handgrad.recurrent.zoneout import ZoneoutCell, ZoneoutRNN

    with pytest.raises(ValueError, match="ZoneoutCell: zoneout_c applies only to an LSTMCell, not GRUCell"):
        ZoneoutCell(nn.GRUCell(2, 3), 0.1, 0.1)
    with pytest.raises(ValueError, match=r"ZoneoutCell: input must be \(batch, input_size\), got shape \(2, 3, 4\)"):
        ZoneoutCell(nn.GRUCell(4, 3), 0.1)(hg.randn(2, 3, 4))
    with pytest.raises(ValueError, match="ZoneoutRNN: mode must be one of"):
        ZoneoutRNN("TCN", 2, 3)
    with pytest.raises(ValueError, match="ZoneoutRNN: num_layers must be >= 1"):
        ZoneoutRNN("GRU", 2, 3, num_layers=0)
    z = ZoneoutRNN("GRU", 2, 3)
    with pytest.raises(ValueError, match=r"ZoneoutRNN: input must be \(seq_len, batch, input_size\).*\(4, 2\)"):
        z(hg.randn(4, 2))
    with pytest.raises(ValueError, match="ZoneoutRNN: input has 5 features, expected input_size=2"):
        z(hg.randn(4, 1, 5))
    with pytest.raises(ValueError, match=r"ZoneoutRNN.load_fused: weight_ih_l0 has shape \(9, 4\)"):
        z.load_fused(nn.GRU(4, 3))


# -- the Zaremba / Gal stack ---------------------------------------------------------------------------
def test_regularized_rnn_without_dropout_matches_torch_stack():
    from handgrad.recurrent.regularization import RegularizedRNN

    torch.manual_seed(5)
    tm = torch.nn.LSTM(3, 4, num_layers=2).double()
    r = RegularizedRNN("LSTM", 3, 4, num_layers=2).double()
    for k in range(2):
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(r.layers[k], f"{n}_l0").array = getattr(tm, f"{n}_l{k}").detach().numpy().copy()
    x = np.random.default_rng(8).standard_normal((5, 2, 3))
    h0 = np.random.default_rng(9).standard_normal((2, 2, 4))
    c0 = np.random.default_rng(10).standard_normal((2, 2, 4))
    xt = hg.tensor(x, requires_grad=True)
    out, (h, c) = r(xt, (hg.tensor(h0), hg.tensor(c0)))
    t_x = torch.tensor(x, requires_grad=True)
    t_out, (t_h, t_c) = tm(t_x, (torch.tensor(h0), torch.tensor(c0)))
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(h.numpy(), t_h.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(c.numpy(), t_c.detach().numpy(), rtol=1e-10)
    gy = np.random.default_rng(11).standard_normal(out.shape)
    ((out * hg.tensor(gy)).sum() + h.sum() + c.sum()).backward()
    ((t_out * torch.tensor(gy)).sum() + t_h.sum() + t_c.sum()).backward()
    np.testing.assert_allclose(xt.grad.numpy(), t_x.grad.numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(r.layers[0].weight_hh_l0.grad.numpy(), tm.weight_hh_l0.grad.numpy(), rtol=1e-8)


def test_regularized_rnn_masks_are_locked_over_time_only_when_variational():
    from handgrad.recurrent.regularization import RegularizedRNN

    hg.manual_seed(6)
    x = hg.tensor(np.random.default_rng(12).standard_normal((2, 30, 3)))
    for variational in (True, False):
        r = RegularizedRNN("GRU", 3, 16, num_layers=2, dropout=0.5, dropout_out=0.5,
                           variational=variational, batch_first=True).double()
        out = r(x)[0].numpy()
        zero = out == 0  # the output dropout's mask
        if variational:
            assert np.all(zero == zero[:, :1])
        else:
            assert not np.all(zero == zero[:, :1])
        assert 0.3 < zero.mean() < 0.7
        r.eval()
        a, b = r(x)[0].numpy(), r(x)[0].numpy()
        np.testing.assert_array_equal(a, b)
        assert not np.any(a == 0)
    with pytest.raises(ValueError, match="RegularizedRNN: mode must be one of"):
        RegularizedRNN("SRU", 3, 4)
    with pytest.raises(ValueError, match="RegularizedRNN: dropout probability"):
        RegularizedRNN("GRU", 3, 4, dropout=2.0)
