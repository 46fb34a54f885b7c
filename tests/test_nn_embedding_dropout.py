"""Embedding vs torch.nn.Embedding (padding_idx, max_norm, scale_grad_by_freq, from_pretrained) and
Dropout / Dropout2d statistics, scaling, gradients, eval identity and seeding."""

import numpy as np
import pytest
import torch
from test_nn_layers import copy_from_torch

import handgrad as hg
import handgrad.nn as nn

rng = np.random.default_rng(0)
IDX = np.array([[1, 0, 3, 3], [4, 1, 0, 2]])


@pytest.mark.parametrize(
    "kw", [dict(), dict(padding_idx=0), dict(padding_idx=-2), dict(scale_grad_by_freq=True, padding_idx=1),
           dict(max_norm=1.0), dict(max_norm=0.5, norm_type=1.0)],
)
def test_embedding_vs_torch(kw):
    ours, theirs = nn.Embedding(5, 3, **kw).double(), torch.nn.Embedding(5, 3, **kw).double()
    with torch.no_grad():
        theirs.weight.mul_(2.0)  # norms above max_norm, so renormalisation happens
    copy_from_torch(ours, theirs)
    out, ref = ours(hg.tensor(IDX)), theirs(torch.tensor(IDX))
    assert out.shape == (2, 4, 3)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), rtol=1e-12)  # max_norm in place
    r = rng.standard_normal(ref.shape)
    (out * hg.tensor(r)).sum().backward()
    (ref * torch.tensor(r)).sum().backward()
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-12)
    if kw.get("padding_idx") is not None:
        assert np.all(ours.weight.grad.numpy()[ours.padding_idx] == 0)


def test_embedding_default_init_and_padding_row():
    hg.manual_seed(0)
    m = nn.Embedding(2000, 50, padding_idx=3)
    w = m.weight.numpy()
    assert m.weight.dtype == np.float32 and np.all(w[3] == 0)
    assert abs(w.mean()) < 0.01 and abs(w.std() - 1.0) < 0.01  # N(0, 1) like torch
    assert m.padding_idx == 3 and nn.Embedding(5, 2, padding_idx=-1).padding_idx == 4
    assert repr(nn.Embedding(3, 4, padding_idx=1)) == repr(torch.nn.Embedding(3, 4, padding_idx=1))


def test_embedding_from_pretrained_is_frozen_copy():
    table = hg.tensor(rng.standard_normal((4, 2)))
    m = nn.Embedding.from_pretrained(table)
    assert not m.weight.requires_grad and m.weight.array is not table.array
    np.testing.assert_array_equal(m(hg.tensor([2, 0])).numpy(), table.numpy()[[2, 0]])
    assert nn.Embedding.from_pretrained(table, freeze=False).weight.requires_grad


def test_embedding_errors():
    with pytest.raises(ValueError, match=r"Embedding: padding_idx 5 must be within num_embeddings \(5\)"):
        nn.Embedding(5, 2, padding_idx=5)
    with pytest.raises(ValueError, match=r"Embedding: _weight \(3, 2\) does not match \(5, 2\)"):
        nn.Embedding(5, 2, _weight=hg.zeros(3, 2))
    with pytest.raises(ValueError, match="Embedding: sparse gradients are not supported"):
        nn.Embedding(5, 2, sparse=True)
    with pytest.raises(IndexError, match="embedding"):
        nn.Embedding(5, 2)(hg.tensor([0, 5]))
    if hg.engine.backend._cupy is None:  # without CuPy the device is refused in one line
        with pytest.raises(RuntimeError, match="Embedding: device 'cuda': CuPy is not installed"):
            nn.Embedding(5, 2, device="cuda")
    with pytest.raises(ValueError, match="Embedding: device: unknown device 'tpu'"):
        nn.Embedding(5, 2, device="tpu")


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_statistics_scaling_and_gradient(p):
    hg.manual_seed(0)
    m = nn.Dropout(p)
    x = hg.tensor(np.ones((200, 100)), requires_grad=True)
    y = m(x)
    kept = y.numpy() != 0
    assert abs(1 - kept.mean() - p) < 0.02
    np.testing.assert_allclose(y.numpy()[kept], 1 / (1 - p))
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept / (1 - p))  # the same mask scales the gradient
    m.eval()
    assert np.array_equal(m(x).numpy(), x.numpy())


def test_dropout_edge_probabilities_seeding_and_errors():
    x = hg.randn(4, 5)
    np.testing.assert_array_equal(nn.Dropout(0.0)(x).numpy(), x.numpy())
    assert np.all(nn.Dropout(1.0)(x).numpy() == 0)
    hg.manual_seed(5)
    a = nn.Dropout(0.5)(hg.ones(10, 10)).numpy()
    hg.manual_seed(5)
    np.testing.assert_array_equal(a, nn.Dropout(0.5)(hg.ones(10, 10)).numpy())
    assert repr(nn.Dropout(0.2)) == repr(torch.nn.Dropout(0.2))
    with pytest.raises(ValueError, match="Dropout: dropout probability has to be between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="Dropout2d: dropout probability has to be between 0 and 1, but got -0.1"):
        nn.Dropout2d(-0.1)


def test_dropout2d_zeroes_whole_channels():
    hg.manual_seed(1)
    m = nn.Dropout2d(0.5)
    x = hg.tensor(np.ones((8, 16, 3, 3)), requires_grad=True)
    y = m(x).numpy()
    per_channel = y.reshape(8, 16, 9)
    assert np.all((per_channel == 0).all(axis=2) | (per_channel == 2.0).all(axis=2))
    assert 0.3 < (per_channel[:, :, 0] == 0).mean() < 0.7
    m(x).sum().backward()
    assert set(np.unique(x.grad.numpy())) <= {0.0, 2.0}
    m.eval()
    np.testing.assert_array_equal(m(x).numpy(), x.numpy())
