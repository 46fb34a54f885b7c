"""Layers vs torch.nn with weights copied across (float64): forward, input and parameter gradients, plus
finite-difference checks through the module, default initialisation, shape errors."""

import math

import numpy as np
import pytest
import torch

import handgrad as hg
import handgrad.nn as nn

RTOL, ATOL = 1e-8, 1e-10


def copy_from_torch(ours, theirs):
    """Load torch's state dict into ours: also proves the parameter / buffer names match PyTorch's."""
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def compare_module(ours, theirs, x, seed=0, check_input_grad=True, train=True):
    """Copy the weights, run both in float64 and compare output, input gradient and every parameter gradient."""
    theirs = theirs.double()
    ours = ours.double()
    copy_from_torch(ours, theirs)
    ours.train(train)
    theirs.train(train)
    hx = hg.tensor(x, requires_grad=check_input_grad)
    tx = torch.tensor(x, requires_grad=check_input_grad)
    out, ref = ours(hx), theirs(tx)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=RTOL, atol=ATOL)
    r = np.random.default_rng(seed).standard_normal(ref.shape)
    (out * hg.tensor(r)).sum().backward()
    (ref * torch.tensor(r)).sum().backward()
    if check_input_grad:
        np.testing.assert_allclose(hx.grad.numpy(), tx.grad.numpy(), rtol=RTOL, atol=ATOL)
    tparams = dict(theirs.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert names == list(tparams)
    for n, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tparams[n].grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=n)
    for (n, b), (tn, tb) in zip(ours.named_buffers(), theirs.named_buffers()):
        assert n == tn
        np.testing.assert_allclose(b.numpy(), tb.numpy(), rtol=RTOL, atol=ATOL, err_msg=n)
    return out


def gradcheck_module(m, x, directions=None):
    """handgrad.gradcheck through a module: input and all parameters are the checked variables."""
    m = m.double()
    names = [n for n, _ in m.named_parameters()]
    owners = {}
    for mn, mod in m.named_modules():
        for pn in mod._parameters:
            owners[f"{mn}.{pn}" if mn else pn] = (mod, pn)

    def fn(inp, *ps):
        saved = {n: owners[n][0]._parameters[owners[n][1]] for n in names}
        try:
            for n, p in zip(names, ps):
                owners[n][0]._parameters[owners[n][1]] = p
            return m(inp)
        finally:
            for n in names:
                owners[n][0]._parameters[owners[n][1]] = saved[n]

    params = [hg.tensor(p.numpy().copy(), requires_grad=True) for _, p in m.named_parameters()]
    assert hg.gradcheck(fn, (hg.tensor(x, requires_grad=True), *params), directions=directions)


rng = np.random.default_rng(0)


# -- Linear / Identity / Flatten ---------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (4,)])
def test_linear_vs_torch(bias, shape):
    compare_module(nn.Linear(4, 3, bias=bias), torch.nn.Linear(4, 3, bias=bias), rng.standard_normal(shape))


def test_linear_gradcheck_and_repr():
    gradcheck_module(nn.Linear(3, 2), rng.standard_normal((4, 3)))
    assert repr(nn.Linear(3, 2, bias=False)) == "Linear(in_features=3, out_features=2, bias=False)"
    assert nn.Linear(3, 2, bias=False).bias is None
    assert [n for n, _ in nn.Linear(3, 2).named_parameters()] == ["weight", "bias"]


def test_linear_default_init_bounds_and_dtype():
    hg.manual_seed(0)
    m = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w, b = m.weight.numpy(), m.bias.numpy()
    assert m.weight.dtype == np.float32 and m.weight.shape == (300, 400)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound  # U(-a, a) has std a / sqrt(3)
    assert np.abs(b).max() <= bound and abs(b.mean()) < 0.1 * bound
    assert nn.Linear(3, 2, dtype="float64").weight.dtype == np.float64
    hg.manual_seed(0)
    np.testing.assert_array_equal(nn.Linear(400, 300).weight.numpy(), w)  # manual_seed reproduces


def test_linear_wrong_in_features_names_layer_and_shapes():
    with pytest.raises(ValueError, match=r"Linear\(in_features=4, out_features=3\): input \(2, 5\) must have 4"):
        nn.Linear(4, 3)(hg.randn(2, 5))
    with pytest.raises(ValueError, match="Linear: feature sizes must be non-negative"):
        nn.Linear(-1, 3)


def test_identity_flatten_unflatten():
    x = rng.standard_normal((2, 3, 4, 5))
    assert nn.Identity(54, unused=1)(hg.tensor(x)).numpy() is not None
    for args in [(), (0, -1), (2, 3), (1, 2)]:
        out = nn.Flatten(*args)(hg.tensor(x))
        ref = torch.nn.Flatten(*args)(torch.tensor(x))
        assert out.shape == tuple(ref.shape)
        np.testing.assert_array_equal(out.numpy(), ref.numpy())
    y = hg.tensor(rng.standard_normal((2, 12)), requires_grad=True)
    out = nn.Unflatten(1, (3, -1))(y)
    assert out.shape == (2, 3, 4)
    out.sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), np.ones((2, 12)))
    assert nn.Unflatten(-1, (2, 2, 3))(y).shape == (2, 2, 2, 3)
    with pytest.raises(ValueError, match=r"Unflatten: cannot split dim 1 of size 12 \(input \(2, 12\)\) into \(5, 2\)"):
        nn.Unflatten(1, (5, 2))(y)
    with pytest.raises(IndexError, match=r"Flatten: dims \(1, 5\) are out of range for input \(2, 12\)"):
        nn.Flatten(1, 5)(y)


# -- convolutions ------------------------------------------------------------------------------------------
CONV_CASES = [
    dict(kernel_size=3),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1)),
    dict(kernel_size=3, padding="same", bias=False),
    dict(kernel_size=1, groups=2),
]


@pytest.mark.parametrize("kw", CONV_CASES, ids=[str(k) for k in CONV_CASES])
def test_conv2d_vs_torch(kw):
    compare_module(nn.Conv2d(4, 6, **kw), torch.nn.Conv2d(4, 6, **kw), rng.standard_normal((2, 4, 7, 6)))


TCONV_CASES = [
    dict(kernel_size=3),
    dict(kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(kernel_size=(2, 3), stride=(2, 1), dilation=(1, 2), bias=False),
    dict(kernel_size=2, stride=2, groups=2),
]


@pytest.mark.parametrize("kw", TCONV_CASES, ids=[str(k) for k in TCONV_CASES])
def test_conv_transpose2d_vs_torch(kw):
    compare_module(nn.ConvTranspose2d(4, 6, **kw), torch.nn.ConvTranspose2d(4, 6, **kw),
                   rng.standard_normal((2, 4, 5, 4)))


def test_conv_transpose2d_output_size_vs_torch():
    m, t = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).double(), torch.nn.ConvTranspose2d(3, 2, 3, 2, 1).double()
    copy_from_torch(m, t)
    x = rng.standard_normal((1, 3, 4, 5))
    out = m(hg.tensor(x), output_size=(8, 10))
    ref = t(torch.tensor(x), output_size=(8, 10))
    assert out.shape == (1, 2, 8, 10)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=RTOL)
    with pytest.raises(ValueError, match=r"ConvTranspose2d: requested output_size \(11, 10\) is not reachable"):
        m(hg.tensor(x), output_size=(11, 10))


def test_conv_gradcheck_and_unbatched_input():
    gradcheck_module(nn.Conv2d(2, 3, 3, stride=2, padding=1), rng.standard_normal((2, 2, 5, 5)), directions=4)
    gradcheck_module(nn.ConvTranspose2d(2, 3, 3, stride=2), rng.standard_normal((1, 2, 3, 3)), directions=4)
    m = nn.Conv2d(2, 3, 3)
    x = hg.randn(2, 5, 5)
    np.testing.assert_allclose(m(x).numpy(), m(x.reshape(1, 2, 5, 5)).numpy()[0], rtol=1e-6)


def test_conv_default_init_like_torch():
    hg.manual_seed(1)
    m = nn.Conv2d(8, 16, 3)
    t = torch.nn.Conv2d(8, 16, 3)
    bound = 1 / math.sqrt(8 * 9)
    assert m.weight.shape == tuple(t.weight.shape) and m.bias.shape == tuple(t.bias.shape)
    assert np.abs(m.weight.numpy()).max() <= bound < 1.05 * np.abs(m.weight.numpy()).max()
    assert np.abs(m.bias.numpy()).max() <= bound
    tc = nn.ConvTranspose2d(8, 4, 3, groups=2)
    assert tc.weight.shape == (8, 2, 3, 3)
    assert np.abs(tc.weight.numpy()).max() <= 1 / math.sqrt(2 * 9)


def test_conv_errors():
    with pytest.raises(ValueError, match=r"Conv2d\(in_channels=3\): input \(2, 4, 8, 8\) has 4 channels, expected 3"):
        nn.Conv2d(3, 5, 3)(hg.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"Conv2d: expected a 3-D \(C, H, W\) or 4-D .* got \(2, 3\)"):
        nn.Conv2d(3, 5, 3)(hg.randn(2, 3))
    with pytest.raises(ValueError, match="Conv2d: in_channels=3 must be divisible by groups=2"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="Conv2d: padding_mode 'reflect' is not supported"):
        nn.Conv2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="Conv2d: padding='same' is not supported for strided"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="ConvTranspose2d: output_padding"):
        nn.ConvTranspose2d(3, 4, 3, stride=1, output_padding=1)


# -- pooling -----------------------------------------------------------------------------------------------
POOLS = [
    ("MaxPool2d", dict(kernel_size=2)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("MaxPool2d", dict(kernel_size=2, stride=1, dilation=2, ceil_mode=True)),
    ("AvgPool2d", dict(kernel_size=2)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("AvgPool2d", dict(kernel_size=2, divisor_override=3)),
    ("AdaptiveAvgPool2d", dict(output_size=(3, 2))),
    ("AdaptiveAvgPool2d", dict(output_size=1)),
    ("AdaptiveAvgPool2d", dict(output_size=(None, 4))),
]


@pytest.mark.parametrize("name,kw", POOLS, ids=[f"{n}{k}" for n, k in POOLS])
def test_pooling_vs_torch(name, kw):
    compare_module(getattr(nn, name)(**kw), getattr(torch.nn, name)(**kw), rng.standard_normal((2, 3, 7, 6)))


def test_maxpool_return_indices_like_torch():
    x = rng.standard_normal((1, 2, 4, 4))
    out, idx = nn.MaxPool2d(2, return_indices=True)(hg.tensor(x))
    tout, tidx = torch.nn.MaxPool2d(2, return_indices=True)(torch.tensor(x))
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    np.testing.assert_allclose(out.numpy(), tout.numpy())
