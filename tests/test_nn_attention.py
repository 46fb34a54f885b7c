"""scaled_dot_product_attention (one fused node), MultiheadAttention and the Transformer modules: gradcheck
in float64 and forward/backward equal to PyTorch's with the weights copied across (state dicts load
both ways under the same key names)."""

import numpy as np
import pytest
import torch

import handgrad as hg
import handgrad.functional as F
import handgrad.nn as nn
from handgrad.functional.attention import ScaledDotProductAttentionFunction, scaled_dot_product_attention_weights

TF = torch.nn.functional
rng = np.random.default_rng(0)


def _pair(*arrays):
    return ([hg.tensor(a.copy(), requires_grad=True) for a in arrays],
            [torch.tensor(a.copy(), requires_grad=True) for a in arrays])


def _close(a, b, tol=1e-10):
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    a = a.array if isinstance(a, hg.Tensor) else a
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def _mask_cases():
    bool_mask = rng.random((4, 6)) > 0.4
    bool_mask[:, 0] = True
    dead = bool_mask.copy()
    dead[2] = False  # a row with nothing to attend to: output 0 (PyTorch's math path)
    return {
        "none": {}, "causal": dict(is_causal=True), "bool": dict(attn_mask=bool_mask), "dead-row": dict(attn_mask=dead),
        "float": dict(attn_mask=rng.standard_normal((4, 6))),
        "float-batched": dict(attn_mask=rng.standard_normal((2, 1, 4, 6))),
        "scale": dict(scale=0.17),
    }


@pytest.mark.parametrize("case", list(_mask_cases()))
def test_sdpa_matches_torch_forward_and_backward(case):
    kw = _mask_cases()[case]
    q, k, v = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((2, 3, 6, 7))
    ours, theirs = _pair(q, k, v)
    hk = {n: hg.tensor(a) if isinstance(a, np.ndarray) else a for n, a in kw.items()}
    tk = {n: torch.tensor(a) if isinstance(a, np.ndarray) else a for n, a in kw.items()}
    o, ot = F.scaled_dot_product_attention(*ours, **hk), TF.scaled_dot_product_attention(*theirs, **tk)
    assert isinstance(o._creator, ScaledDotProductAttentionFunction)  # one fused node
    _close(o, ot, 1e-12)
    w = rng.standard_normal(o.shape)
    (o * hg.tensor(w)).sum().backward()
    (ot * torch.tensor(w)).sum().backward()
    for a, b in zip(ours, theirs):
        _close(a.grad, b.grad.numpy(), 1e-11)


def test_sdpa_float_mask_gets_its_gradient_and_gradchecks():
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 3))
    m = rng.standard_normal((1, 3, 5))
    ours, theirs = _pair(q, k, v, m)
    o = F.scaled_dot_product_attention(*ours[:3], attn_mask=ours[3])
    ot = TF.scaled_dot_product_attention(*theirs[:3], attn_mask=theirs[3])
    (o**2).sum().backward()
    (ot**2).sum().backward()
    _close(ours[3].grad, theirs[3].grad, 1e-11)
    hg.gradcheck(lambda a, b, c, d: F.scaled_dot_product_attention(a, b, c, attn_mask=d, scale=0.7),
                 [hg.tensor(x, requires_grad=True) for x in (q, k, v, m)])
    bm = hg.tensor(rng.random((3, 5)) > 0.3)
    hg.gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=bm),
                 [hg.tensor(x, requires_grad=True) for x in (q, k, v)])
    hg.gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
                 [hg.tensor(x, requires_grad=True) for x in (q, k, v)])


def test_sdpa_dropout_is_inverted_dropout_on_the_weights_and_gradchecks():
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 3))
    args = [hg.tensor(x, requires_grad=True) for x in (q, k, v)]
    hg.manual_seed(3)
    out, wts = scaled_dot_product_attention_weights(*args, dropout_p=0.4)
    ref_p = TF.softmax(torch.tensor(q) @ torch.tensor(k).transpose(-1, -2) / 2.0, dim=-1).numpy()
    dropped = wts.array == 0
    assert 0.1 < dropped.mean() < 0.7
    _close(wts.array[~dropped], (ref_p / 0.6)[~dropped], 1e-12)  # kept weights scaled by 1 / (1 - p)
    _close(out, wts.array @ v, 1e-12)

    def f(a, b, c):
        hg.manual_seed(3)  # the same dropout mask on every evaluation
        o, w = scaled_dot_product_attention_weights(a, b, c, dropout_p=0.4)
        return o, w

    hg.gradcheck(f, args)


def test_sdpa_grouped_query_attention_matches_torch_and_gradchecks():
    q, k, v = rng.standard_normal((2, 6, 4, 5)), rng.standard_normal((2, 2, 7, 5)), rng.standard_normal((2, 2, 7, 3))
    ours, theirs = _pair(q, k, v)
    o = F.scaled_dot_product_attention(*ours, enable_gqa=True, is_causal=True)
    ot = TF.scaled_dot_product_attention(*theirs, enable_gqa=True, is_causal=True)
    _close(o, ot, 1e-12)
    w = rng.standard_normal(o.shape)
    (o * hg.tensor(w)).sum().backward()
    (ot * torch.tensor(w)).sum().backward()
    for a, b in zip(ours, theirs):
        assert a.grad.shape == a.shape
        _close(a.grad, b.grad, 1e-11)
    shapes = ((1, 4, 2, 3), (1, 2, 3, 3), (1, 2, 3, 2))
    small = [hg.tensor(rng.standard_normal(sh), requires_grad=True) for sh in shapes]
    hg.gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, enable_gqa=True), small)
    with pytest.raises(ValueError, match="multiple of the key/value heads"):
        F.scaled_dot_product_attention(hg.tensor(q[:, :5]), hg.tensor(k), hg.tensor(v), enable_gqa=True)


def test_sdpa_errors():
    q = hg.tensor(rng.standard_normal((2, 3, 4)))
    with pytest.raises(ValueError, match="scaled_dot_product_attention: .*same last dimension"):
        F.scaled_dot_product_attention(q, hg.tensor(rng.standard_normal((2, 5, 3))), q)
    with pytest.raises(ValueError, match="not both"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=hg.tensor(np.ones((3, 3), bool)), is_causal=True)
    with pytest.raises(ValueError, match="attn_mask of shape"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=hg.tensor(np.ones((4, 4), bool)))


def _copy_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    assert list(ours.state_dict()) == list(theirs.state_dict())  # same names, same order


def _compare_module(ours, theirs, inputs, kwargs_h=None, kwargs_t=None, tol=1e-10, out_index=None):
    """Forward equal; backward of a random projection of the output equal for inputs and every parameter."""
    hin, tin = _pair(*inputs)
    oh = ours(*hin, **(kwargs_h or {}))
    ot = theirs(*tin, **(kwargs_t or {}))
    if out_index is not None:
        oh, ot = oh[out_index], ot[out_index]
    _close(oh, ot, tol)
    w = rng.standard_normal(oh.shape)
    (oh * hg.tensor(w)).sum().backward()
    (ot * torch.tensor(w)).sum().backward()
    for a, b in zip(hin, tin):
        _close(a.grad, b.grad, tol)
    tp = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        _close(p.grad, tp[name].grad, tol)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("need_weights,average", [(True, True), (True, False), (False, True)])
def test_multihead_attention_matches_torch(batch_first, need_weights, average):
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=torch.float64)
    ours = nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype="float64")
    _copy_from_torch(ours, theirs)
    L, S, N = 4, 6, 3
    q = rng.standard_normal((N, L, 8) if batch_first else (L, N, 8))
    kv = rng.standard_normal((N, S, 8) if batch_first else (S, N, 8))
    kpm = np.zeros((N, S), bool)
    kpm[0, -2:] = True
    am = rng.random((L, S)) < 0.3
    am[:, 0] = False
    kw = dict(need_weights=need_weights, average_attn_weights=average)
    h_kw = dict(kw, key_padding_mask=hg.tensor(kpm), attn_mask=hg.tensor(am))
    t_kw = dict(kw, key_padding_mask=torch.tensor(kpm), attn_mask=torch.tensor(am))
    _compare_module(ours, theirs, [q, kv, kv.copy()], h_kw, t_kw, out_index=0)
    if need_weights:
        hw = ours(hg.tensor(q), hg.tensor(kv), hg.tensor(kv), **h_kw)[1]
        tw = theirs(torch.tensor(q), torch.tensor(kv), torch.tensor(kv), **t_kw)[1]
        _close(hw, tw, 1e-12)
        assert hw.shape == tuple(tw.shape)


def test_multihead_attention_kdim_vdim_float_masks_unbatched_and_gradcheck():
    torch.manual_seed(1)
    theirs = torch.nn.MultiheadAttention(6, 3, kdim=4, vdim=5, dtype=torch.float64)
    ours = nn.MultiheadAttention(6, 3, kdim=4, vdim=5, dtype="float64")
    _copy_from_torch(ours, theirs)
    am = rng.standard_normal((3 * 2, 3, 5))
    _compare_module(ours, theirs, [rng.standard_normal((3, 2, 6)), rng.standard_normal((5, 2, 4)),
                                   rng.standard_normal((5, 2, 5))],
                    dict(attn_mask=hg.tensor(am)), dict(attn_mask=torch.tensor(am)), out_index=0)
    # unbatched (L, E)
    _compare_module(ours, theirs, [rng.standard_normal((3, 6)), rng.standard_normal((5, 4)),
                                   rng.standard_normal((5, 5))], out_index=0)
    hg.gradcheck(lambda q, k, v: ours(q, k, v)[0],
                 [hg.tensor(rng.standard_normal(s), requires_grad=True) for s in ((2, 1, 6), (3, 1, 4), (3, 1, 5))])


def test_multihead_attention_gradcheck_parameters():
    m = nn.MultiheadAttention(4, 2, dtype="float64")
    x = hg.tensor(rng.standard_normal((3, 2, 4)))

    def f(w, b):
        m._parameters["in_proj_weight"], m._parameters["in_proj_bias"] = w, b  # route the checked tensors
        return m(x, x, x, need_weights=True)  # both outputs: the weights' gradient path is checked too

    hg.gradcheck(f, [hg.tensor(m.in_proj_weight.array.copy(), requires_grad=True),
                     hg.tensor(rng.standard_normal(12), requires_grad=True)])


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_decoder_layers_match_torch(norm_first, activation):
    torch.manual_seed(2)
    kw = dict(dim_feedforward=16, dropout=0.0, activation=activation, norm_first=norm_first)
    te = torch.nn.TransformerEncoderLayer(8, 2, dtype=torch.float64, **kw)
    he = nn.TransformerEncoderLayer(8, 2, dtype="float64", **kw)
    _copy_from_torch(he, te)
    src = rng.standard_normal((5, 2, 8))
    causal = hg.Tensor(nn.Transformer.generate_square_subsequent_mask(5, dtype="float64").array)
    tcausal = torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    kpm = np.zeros((2, 5))
    kpm[1, -1] = -np.inf  # a float padding mask, as the float causal mask (PyTorch wants one kind)
    _compare_module(he, te, [src], dict(src_mask=causal, src_key_padding_mask=hg.tensor(kpm)),
                    dict(src_mask=tcausal, src_key_padding_mask=torch.tensor(kpm)))
    td = torch.nn.TransformerDecoderLayer(8, 2, dtype=torch.float64, **kw)
    hd = nn.TransformerDecoderLayer(8, 2, dtype="float64", **kw)
    _copy_from_torch(hd, td)
    _compare_module(hd, td, [rng.standard_normal((4, 2, 8)), src], dict(tgt_mask=hg.Tensor(causal.array[:4, :4])),
                    dict(tgt_mask=tcausal[:4, :4]))


def test_transformer_matches_torch_and_state_dict_loads_both_ways():
    torch.manual_seed(3)
    kw = dict(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=12, dropout=0.0,
              batch_first=True)
    theirs = torch.nn.Transformer(dtype=torch.float64, **kw)
    ours = nn.Transformer(dtype="float64", **kw)
    _copy_from_torch(ours, theirs)
    tmask = nn.Transformer.generate_square_subsequent_mask(3, dtype="float64")
    _compare_module(ours, theirs, [rng.standard_normal((2, 5, 8)), rng.standard_normal((2, 3, 8))],
                    dict(tgt_mask=tmask), dict(tgt_mask=torch.tensor(tmask.array)))
    back = torch.nn.Transformer(dtype=torch.float64, **kw)
    back.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    for a, b in zip(back.state_dict().values(), ours.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b)


def test_transformer_encoder_gradchecks_and_dropout_changes_training_only():
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, dtype="float64")
    enc = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(4, dtype="float64"))
    assert enc.layers[0].linear1.weight is not enc.layers[1].linear1.weight  # deep copies
    hg.gradcheck(lambda x: enc(x), [hg.tensor(rng.standard_normal((3, 2, 4)), requires_grad=True)])
    drop = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.5, dtype="float64")
    x = hg.tensor(rng.standard_normal((3, 2, 4)))
    drop.eval()
    np.testing.assert_array_equal(drop(x).array, drop(x).array)
    drop.train()
    assert not np.allclose(drop(x).array, drop(x).array)


def test_attention_module_errors():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        nn.MultiheadAttention(6, 4)
    m = nn.MultiheadAttention(4, 2)
    with pytest.raises(ValueError, match="attn_mask must have shape"):
        x = hg.tensor(np.zeros((3, 2, 4), np.float32))
        m(x, x, x, attn_mask=hg.tensor(np.zeros((2, 2), bool)))
    with pytest.raises(RuntimeError, match="activation"):
        nn.TransformerEncoderLayer(4, 2, activation="swish")


@pytest.mark.parametrize("dtype,tol", [("float32", 2e-4), ("float64", 1e-10)])
def test_sdpa_saturated_scores_match_torch(dtype, tol):
    """Scores up to ~1e4 (inputs -1e2..1e2, one-hot-like softmax rows): no overflow, same values and
    gradients as PyTorch in float32 and float64."""
    q = rng.uniform(-1e2, 1e2, (2, 4, 8)).astype(dtype)
    k = rng.uniform(-1e2, 1e2, (2, 6, 8)).astype(dtype)
    v = rng.standard_normal((2, 6, 3)).astype(dtype)
    mask = rng.uniform(-1e4, 1e4, (4, 6)).astype(dtype)
    ours, theirs = _pair(q, k, v)
    o = F.scaled_dot_product_attention(*ours, attn_mask=hg.tensor(mask))
    ot = TF.scaled_dot_product_attention(*theirs, attn_mask=torch.tensor(mask))
    assert o.dtype == np.dtype(dtype) and np.isfinite(o.array).all()
    np.testing.assert_allclose(o.array, ot.detach().numpy(), rtol=tol, atol=tol)
    w = rng.standard_normal(o.shape).astype(dtype)
    (o * hg.tensor(w)).sum().backward()
    (ot * torch.tensor(w)).sum().backward()
    for a, b in zip(ours, theirs):
        assert a.grad.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a.grad.array, b.grad.numpy(), rtol=tol, atol=tol * 10)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
def test_decoder_and_full_transformer_gradcheck_and_load_a_torch_state_dict_directly():
    torch.manual_seed(4)
    theirs = torch.nn.Transformer(d_model=4, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=6,
                                  dropout=0.0, norm_first=True, activation="gelu", dtype=torch.float64)
    ours = nn.Transformer(d_model=4, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=6,
                          dropout=0.0, norm_first=True, activation="gelu", dtype="float64")
    ours.load_state_dict(theirs.state_dict())  # torch tensors, as a PyTorch user would pass them
    src, tgt = rng.standard_normal((3, 2, 4)), rng.standard_normal((2, 2, 4))
    _close(ours(hg.tensor(src), hg.tensor(tgt)), theirs(torch.tensor(src), torch.tensor(tgt)), 1e-12)
    hg.gradcheck(lambda s, t: ours(s, t), [hg.tensor(src, requires_grad=True), hg.tensor(tgt, requires_grad=True)])
    dec = nn.TransformerDecoderLayer(4, 2, dim_feedforward=6, dropout=0.0, dtype="float64")
    kpm = hg.tensor(np.array([[False, False, True], [False, False, False]]))
    hg.gradcheck(lambda t, m: dec(t, m, memory_key_padding_mask=kpm, tgt_is_causal=True),
                 [hg.tensor(tgt, requires_grad=True), hg.tensor(src, requires_grad=True)])


@pytest.mark.parametrize("kw", [dict(add_bias_kv=True), dict(add_zero_attn=True),
                                dict(add_bias_kv=True, add_zero_attn=True, batch_first=True)])
def test_multihead_attention_bias_kv_and_zero_attn_match_torch(kw):
    torch.manual_seed(5)
    theirs = torch.nn.MultiheadAttention(6, 2, dtype=torch.float64, **kw)
    ours = nn.MultiheadAttention(6, 2, dtype="float64", **kw)
    _copy_from_torch(ours, theirs)
    bf = kw.get("batch_first", False)
    q = rng.standard_normal((2, 3, 6) if bf else (3, 2, 6))
    kv = rng.standard_normal((2, 4, 6) if bf else (4, 2, 6))
    kpm = np.zeros((2, 4), bool)
    kpm[1, -1] = True
    am = rng.random((3, 4)) < 0.3
    h_kw = dict(key_padding_mask=hg.tensor(kpm), attn_mask=hg.tensor(am), average_attn_weights=False)
    t_kw = dict(key_padding_mask=torch.tensor(kpm), attn_mask=torch.tensor(am), average_attn_weights=False)
    _compare_module(ours, theirs, [q, kv, kv.copy()], h_kw, t_kw, out_index=0)
    hw = ours(hg.tensor(q), hg.tensor(kv), hg.tensor(kv), **h_kw)[1]
    tw = theirs(torch.tensor(q), torch.tensor(kv), torch.tensor(kv), **t_kw)[1]
    assert hw.shape == tuple(tw.shape) == (2, 2, 3, 4 + kw.get("add_bias_kv", 0) + kw.get("add_zero_attn", 0))
    _close(hw, tw, 1e-12)
    hg.gradcheck(lambda a, b: ours(a, b, b)[0], [hg.tensor(q, requires_grad=True), hg.tensor(kv, requires_grad=True)])
