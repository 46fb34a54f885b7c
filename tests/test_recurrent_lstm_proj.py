"""nn.LSTM(proj_size=P): the fused projected-LSTM op (LSTMProjSequenceFunction) against torch.nn.LSTM with the
weights copied (outputs, final states and every gradient, incl. variable lengths, bidirectional, stacked,
batch_first, unbatched), float64 gradcheck, float32, and the argument errors PyTorch gives."""

import numpy as np
import pytest
import torch

import handgrad as hg
import handgrad.nn as nn
from handgrad.functional.rnn.lstmp_sequence import LSTMProjSequenceFunction

rng = np.random.default_rng(0)


def _pair(I, H, P, dtype="float64", **kw):
    tdt = getattr(torch, dtype)
    theirs = torch.nn.LSTM(I, H, proj_size=P, dtype=tdt, **kw)
    ours = nn.LSTM(I, H, proj_size=P, dtype=dtype, **kw)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    assert list(ours.state_dict()) == list(theirs.state_dict())
    return ours, theirs


@pytest.mark.parametrize("kw", [dict(), dict(num_layers=2), dict(bidirectional=True),
                                dict(num_layers=2, bidirectional=True, batch_first=True), dict(bias=False)])
@pytest.mark.parametrize("with_state,lengths", [(False, None), (True, None), (True, [5, 2, 4])])
def test_lstm_proj_matches_torch(kw, with_state, lengths):
    I, H, P, T, B = 3, 6, 4, 5, 3
    ours, theirs = _pair(I, H, P, **kw)
    D, L = (2 if kw.get("bidirectional") else 1), kw.get("num_layers", 1)
    bf = kw.get("batch_first", False)
    x = rng.standard_normal((B, T, I) if bf else (T, B, I))
    h0, c0 = rng.standard_normal((L * D, B, P)), rng.standard_normal((L * D, B, H))
    xh, xt = hg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    sh = (hg.tensor(h0, requires_grad=True), hg.tensor(c0, requires_grad=True)) if with_state else None
    st = (torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)) if with_state else None
    oh, (hh, ch) = ours(xh, sh, lengths=lengths)
    if lengths is None:
        ot, (ht, ct) = theirs(xt, st)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=bf,
                                                         enforce_sorted=False)
        po, (ht, ct) = theirs(packed, st)
        ot, _ = torch.nn.utils.rnn.pad_packed_sequence(po, batch_first=bf, total_length=T)
    assert oh.shape == tuple(ot.shape) and oh.shape[-1] == D * P and hh.shape == (L * D, B, P)
    for a, b in ((oh, ot), (hh, ht), (ch, ct)):
        np.testing.assert_allclose(a.array, b.detach().numpy(), rtol=1e-12, atol=1e-13)
    w = [rng.standard_normal(t.shape) for t in (oh, hh, ch)]
    sum((t * hg.tensor(wi)).sum() for t, wi in zip((oh, hh, ch), w)).backward()
    sum((t * torch.tensor(wi)).sum() for t, wi in zip((ot, ht, ct), w)).backward()
    np.testing.assert_allclose(xh.grad.array, xt.grad.numpy(), rtol=1e-11, atol=1e-12)
    if with_state:
        for a, b in zip(sh, st):
            np.testing.assert_allclose(a.grad.array, b.grad.numpy(), rtol=1e-11, atol=1e-12)
    tp = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.array, tp[name].grad.numpy(), rtol=1e-11, atol=1e-12, err_msg=name)


def test_lstm_proj_is_one_fused_node_and_gradchecks():
    m = nn.LSTM(2, 4, proj_size=3, dtype="float64")
    out, _ = m(hg.tensor(rng.standard_normal((4, 2, 2))))
    assert isinstance(out._creator, LSTMProjSequenceFunction)
    args = [hg.tensor(rng.standard_normal(s), requires_grad=True)
            for s in ((4, 2, 2), (2, 3), (2, 4), (16, 2), (16, 3), (16,), (16,), (3, 4))]

    for reverse, lengths in ((False, None), (True, None), (False, np.array([4, 2])), (True, np.array([2, 4]))):
        def f(*a, reverse=reverse, lengths=lengths):
            return LSTMProjSequenceFunction(lengths=lengths, reverse=reverse)(*a)

        hg.gradcheck(f, args)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_lstm_proj_unbatched_and_float32_large_inputs():
    ours, theirs = _pair(3, 5, 2, dtype="float32")
    x = (100 * rng.standard_normal((6, 3))).astype(np.float32)  # saturated gates
    oh, (hh, ch) = ours(hg.tensor(x))
    ot, (ht, ct) = theirs(torch.tensor(x))
    assert oh.dtype == np.float32 and oh.shape == (6, 2) and hh.shape == (1, 2) and ch.shape == (1, 5)
    for a, b in ((oh, ot), (hh, ht), (ch, ct)):
        np.testing.assert_allclose(a.array, b.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_lstm_proj_errors_like_torch():
    with pytest.raises(ValueError, match="proj_size \\(4\\) has to be smaller than hidden_size \\(4\\)"):
        nn.LSTM(2, 4, proj_size=4)
    with pytest.raises(ValueError, match="only supported for LSTM"):
        nn.RNNBase("GRU", 2, 4, proj_size=2)
    m = nn.LSTM(2, 4, proj_size=3)
    x = hg.tensor(np.zeros((3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="h0 has shape \\(1, 2, 4\\).*\\(1, 2, 3\\)"):
        m(x, (hg.tensor(np.zeros((1, 2, 4), np.float32)), hg.tensor(np.zeros((1, 2, 4), np.float32))))
    assert "proj_size=3" in repr(m)
