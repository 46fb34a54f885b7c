"""nn.RNN / nn.LSTM / nn.GRU against PyTorch with the weights copied across: outputs, final states, the input
and initial-state gradients and every parameter gradient, for stacked, bidirectional, batch-first,
variable-length (packed) and initial-state configurations; dropout between layers; error paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import handgrad
from handgrad import nn
from handgrad.engine.tensor import Tensor

KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
T, B, I, H = 5, 4, 3, 5
LENGTHS = [3, 5, 1, 4]  # unsorted on purpose: enforce_sorted=False


def make_pair(kind: str, dtype: str, **kw):
    tdt = torch.float64 if dtype == "float64" else torch.float32
    if kind.startswith("rnn"):
        nl = kind[4:]
        tm = torch.nn.RNN(I, H, nonlinearity=nl, **kw)
        hm = nn.RNN(I, H, nonlinearity=nl, **kw)
    elif kind == "lstm":
        tm, hm = torch.nn.LSTM(I, H, **kw), nn.LSTM(I, H, **kw)
    else:
        tm, hm = torch.nn.GRU(I, H, **kw), nn.GRU(I, H, **kw)
    tm = tm.to(tdt)
    hm.to(dtype)
    hm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return tm, hm


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() / max(np.abs(b).max(), 1e-30))


def run_both(kind, dtype, num_layers=1, bidirectional=False, batch_first=False, lengths=None, init=False,
             dropout=0.0, train=False, seed=0):
    torch.manual_seed(seed)
    tm, hm = make_pair(kind, dtype, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                       dropout=dropout)
    tm.train(train)
    hm.train(train)
    tdt = tm.weight_hh_l0.dtype
    D = 2 if bidirectional else 1
    shape = (B, T, I) if batch_first else (T, B, I)
    x = torch.randn(*shape, dtype=tdt, requires_grad=True)
    n_states = 2 if kind == "lstm" else 1
    states = [torch.randn(num_layers * D, B, H, dtype=tdt, requires_grad=True) for _ in range(n_states)] if init \
        else None
    t_hx = None if states is None else (tuple(states) if kind == "lstm" else states[0])
    if lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                                         enforce_sorted=False)
        out, fin = tm(packed, t_hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    else:
        out, fin = tm(x, t_hx)
    fin = list(fin) if kind == "lstm" else [fin]
    g_out = torch.randn_like(out)
    g_fin = [torch.randn_like(f) for f in fin]
    loss = (out * g_out).sum() + sum((f * g).sum() for f, g in zip(fin, g_fin))
    loss.backward()

    hx_ = Tensor(x.detach().numpy().copy(), requires_grad=True)
    h_states = None if states is None else [Tensor(s.detach().numpy().copy(), requires_grad=True) for s in states]
    h_hx = None if h_states is None else (tuple(h_states) if kind == "lstm" else h_states[0])
    h_out, h_fin = hm(hx_, h_hx, lengths=lengths)
    h_fin = list(h_fin) if kind == "lstm" else [h_fin]
    h_loss = (h_out * Tensor(g_out.numpy())).sum()
    for f, g in zip(h_fin, g_fin):
        h_loss = h_loss + (f * Tensor(g.numpy())).sum()
    h_loss.backward()

    pairs = [("output", h_out.array, out.detach().numpy())]
    pairs += [(f"final{i}", f.array, tf.detach().numpy()) for i, (f, tf) in enumerate(zip(h_fin, fin))]
    pairs += [("grad input", hx_.grad.array, x.grad.numpy())]
    if states is not None:
        pairs += [(f"grad state{i}", s.grad.array, ts.grad.numpy()) for i, (s, ts) in enumerate(zip(h_states, states))]
    hp = dict(hm.named_parameters())
    for name, p in tm.named_parameters():
        pairs.append((f"grad {name}", hp[name].grad.array, p.grad.numpy()))
    return pairs


CONFIGS = [
    # num_layers, bidirectional, batch_first, lengths, init
    (1, False, False, None, False),
    (1, False, True, LENGTHS, True),
    (2, True, False, None, True),
    (2, False, True, LENGTHS, False),
    (3, True, True, LENGTHS, True),
    (3, True, False, None, False),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"L{c[0]}-{'bi' if c[1] else 'uni'}-"
                         f"{'bf' if c[2] else 'tf'}-{'len' if c[3] else 'full'}-{'h0' if c[4] else 'zero'}")
def test_matches_torch_float64(kind, config):
    num_layers, bi, bf, lengths, init = config
    pairs = run_both(kind, "float64", num_layers, bi, bf, lengths, init)
    assert len(pairs) >= 3 + 4 * num_layers * (2 if bi else 1)
    for name, a, b in pairs:
        assert a.shape == b.shape, name
        assert a.dtype == np.float64
        assert rel_err(a, b) <= 1e-8, (name, rel_err(a, b))


@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch_float32(kind):
    pairs = run_both(kind, "float32", num_layers=2, bidirectional=True, batch_first=False, lengths=LENGTHS, init=True)
    for name, a, b in pairs:
        assert a.dtype == np.float32, name
        assert rel_err(a, b) <= 2e-5, (name, rel_err(a, b))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_dropout_one_between_layers_matches_torch(kind):
    # p = 1 drops every unit between the layers: deterministic, so it can be compared with PyTorch exactly
    pairs = run_both(kind, "float64", num_layers=2, bidirectional=True, dropout=1.0, train=True, init=True)
    for name, a, b in pairs:
        assert rel_err(a, b) <= 1e-8 or np.abs(b).max() == 0 == np.abs(a).max(), (name, rel_err(a, b))


def test_dropout_eval_is_identity_and_train_masks():
    handgrad.manual_seed(0)
    m = nn.LSTM(3, 8, num_layers=2, dropout=0.5).double()
    x = handgrad.randn(6, 2, 3, dtype="float64")
    m.eval()
    y0, _ = m(x)
    y1, _ = m(x)
    np.testing.assert_array_equal(y0.array, y1.array)
    m.train()
    y2, _ = m(x)
    y3, _ = m(x)
    assert np.abs(y2.array - y0.array).max() > 1e-3  # dropped units change the second layer's input
    assert np.abs(y2.array - y3.array).max() > 1e-3  # a fresh mask per call
    m1 = nn.LSTM(3, 8, num_layers=1, dropout=0.5).double()  # dropout only acts *between* layers
    m1.train()
    np.testing.assert_array_equal(m1(x)[0].array, m1(x)[0].array)


def test_unbatched_input_matches_torch():
    torch.manual_seed(1)
    tm, hm = make_pair("gru", "float64", num_layers=2, bidirectional=True)
    x = torch.randn(T, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, H, dtype=torch.float64, requires_grad=True)
    out, hn = tm(x, h0)
    (out.sum() + (hn * hn).sum()).backward()
    hx, hh0 = Tensor(x.detach().numpy(), requires_grad=True), Tensor(h0.detach().numpy(), requires_grad=True)
    o, n = hm(hx, hh0)
    assert o.shape == (T, 2 * H) and n.shape == (4, H)
    (o.sum() + (n * n).sum()).backward()
    for a, b in [(o.array, out.detach().numpy()), (n.array, hn.detach().numpy()), (hx.grad.array, x.grad.numpy()),
                 (hh0.grad.array, h0.grad.numpy())]:
        assert rel_err(a, b) <= 1e-8


def test_parameter_names_shapes_and_init():
    handgrad.manual_seed(0)
    m = nn.LSTM(10, 20, num_layers=2, bidirectional=True)
    t = torch.nn.LSTM(10, 20, num_layers=2, bidirectional=True)
    ours = {k: v.shape for k, v in m.named_parameters()}
    theirs = {k: tuple(v.shape) for k, v in t.named_parameters()}
    assert list(ours) == list(theirs)  # same names in the same order
    assert ours == theirs
    assert m.weight_ih_l0.dtype == np.float32
    bound = 1 / np.sqrt(20)
    for p in m.parameters():
        assert np.abs(p.array).max() <= bound
        assert np.abs(p.array).max() > 0.8 * bound  # uniform over the whole interval, not a tiny range
    assert repr(m) == "LSTM(10, 20, num_layers=2, bidirectional=True)"
    g = nn.GRU(4, 6, bias=False)
    assert [k for k, _ in g.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    assert g.weight_ih_l0.shape == (18, 4)
    assert len(m.all_weights) == 4 and len(m.all_weights[0]) == 4


def test_no_bias_matches_torch():
    torch.manual_seed(2)
    tm, hm = make_pair("lstm", "float64", bias=False, num_layers=2)
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, (hn, cn) = tm(x)
    o, (n, c) = hm(Tensor(x.numpy()))
    assert rel_err(o.array, out.detach().numpy()) <= 1e-8
    assert rel_err(c.array, cn.detach().numpy()) <= 1e-8


def test_lengths_semantics():
    """Past its length a sequence outputs zeros and h_n is its state after its own last step."""
    handgrad.manual_seed(3)
    m = nn.GRU(I, H).double()
    x = handgrad.randn(T, 2, I, dtype="float64")
    out, hn = m(x, lengths=[2, 5])
    assert np.all(out.array[2:, 0] == 0)
    np.testing.assert_allclose(hn.array[0, 0], out.array[1, 0], rtol=0, atol=0)
    np.testing.assert_allclose(hn.array[0, 1], out.array[4, 1], rtol=0, atol=0)
    short, hs = m(x[:2, :1])  # running only the valid steps gives the same numbers
    np.testing.assert_allclose(hs.array[0, 0], hn.array[0, 0], rtol=1e-13, atol=0)
    as_tensor, _ = m(x, lengths=handgrad.tensor([2, 5]))  # a Tensor (or array) of lengths works the same
    np.testing.assert_array_equal(as_tensor.array, out.array)
    # lengths all equal to T = no lengths
    full1, _ = m(x, lengths=[T, T])
    full2, _ = m(x)
    np.testing.assert_array_equal(full1.array, full2.array)


def test_float32_default_and_grad_mode():
    m = nn.RNN(3, 4)
    x = handgrad.randn(5, 2, 3)
    with handgrad.no_grad():
        y, h = m(x)
    assert y.dtype == np.float32 and y.grad_fn is None and y.shape == (5, 2, 4) and h.shape == (1, 2, 4)


# -- errors -----------------------------------------------------------------------------------------------------
def test_error_wrong_input_size():
    m = nn.LSTM(8, 4)
    with pytest.raises(ValueError, match=r"LSTM: input has 7 features .* input_size is 8"):
        m(handgrad.randn(5, 3, 7))


def test_error_wrong_ndim():
    with pytest.raises(ValueError, match=r"GRU: expected a 3-D input .* got shape \(5,\)"):
        nn.GRU(5, 4)(handgrad.randn(5))
    with pytest.raises(ValueError, match=r"RNN: expected a 3-D input .* got shape \(1, 2, 3, 4\)"):
        nn.RNN(4, 4)(handgrad.randn(1, 2, 3, 4))


@pytest.mark.parametrize("lengths, msg", [
    ([5, 6, 1], r"lengths must lie in \[1, T=5\].*max 6"),
    ([5, 0, 1], r"lengths must lie in \[1, T=5\].*min 0"),
    ([5, 2], r"lengths has 2 entries but the batch has 3 sequences"),
    ([[5, 2, 1]], r"lengths must be a 1-D vector"),
    ([1.5, 2, 3], r"lengths must be integers"),
])
def test_error_bad_lengths(lengths, msg):
    with pytest.raises(ValueError, match="LSTM: " + msg):
        nn.LSTM(2, 3)(handgrad.randn(5, 3, 2), lengths=lengths)


def test_error_bad_lengths_batch_first_counts_batch_axis():
    with pytest.raises(ValueError, match=r"GRU: lengths has 5 entries but the batch has 3"):
        nn.GRU(2, 3, batch_first=True)(handgrad.randn(3, 5, 2), lengths=[1, 2, 3, 4, 5])


def test_error_wrong_initial_state():
    m = nn.LSTM(2, 3, num_layers=2)
    x = handgrad.randn(5, 4, 2)
    with pytest.raises(ValueError, match=r"LSTM: h0 has shape \(1, 4, 3\) but expected .* = \(2, 4, 3\)"):
        m(x, (handgrad.zeros(1, 4, 3), handgrad.zeros(2, 4, 3)))
    with pytest.raises(ValueError, match=r"LSTM: c0 has shape \(2, 4, 4\)"):
        m(x, (handgrad.zeros(2, 4, 3), handgrad.zeros(2, 4, 4)))
    with pytest.raises(TypeError, match=r"LSTM: hx must be a tuple \(h0, c0\)"):
        m(x, handgrad.zeros(2, 4, 3))
    with pytest.raises(ValueError, match=r"GRU: h0 has shape \(1, 4, 3\) but expected .* = \(2, 4, 3\)"):
        nn.GRU(2, 3, bidirectional=True)(x, handgrad.zeros(1, 4, 3))
    with pytest.raises(TypeError, match=r"RNN: hx must be a Tensor h0"):
        nn.RNN(2, 3)(x, (handgrad.zeros(1, 4, 3),))


def test_error_dtype_mismatch():
    with pytest.raises(TypeError, match=r"RNN: input has dtype float64 but the parameters are float32"):
        nn.RNN(2, 3)(handgrad.randn(5, 4, 2, dtype="float64"))
    m = nn.GRU(2, 3)
    with pytest.raises(TypeError, match=r"GRU: h0 has dtype float64 but the input is float32"):
        m(handgrad.randn(5, 4, 2), handgrad.zeros(1, 4, 3, dtype="float64"))


def test_error_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"RNN: unknown nonlinearity 'sigmoid'"):
        nn.RNN(2, 3, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"LSTM: hidden_size must be a positive integer, got 0"):
        nn.LSTM(2, 0)
    with pytest.raises(ValueError, match=r"GRU: dropout must be a probability in \[0, 1\], got 1.5"):
        nn.GRU(2, 3, dropout=1.5)
