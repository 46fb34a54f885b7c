"""Activation modules vs torch.nn (float64 forward and input gradient) + gradcheck; reprs and errors."""

import numpy as np
import pytest
import torch
from test_nn_layers import compare_module, gradcheck_module

import handgrad as hg
import handgrad.nn as nn

rng = np.random.default_rng(0)

ACTS = [
    ("ReLU", {}), ("LeakyReLU", {}), ("LeakyReLU", dict(negative_slope=0.2)), ("ELU", {}), ("ELU", dict(alpha=0.5)),
    ("GELU", {}), ("GELU", dict(approximate="tanh")), ("Softplus", {}), ("Softplus", dict(beta=2.0, threshold=3.0)),
    ("SiLU", {}), ("Sigmoid", {}), ("Tanh", {}), ("Softmax", dict(dim=1)), ("Softmax", dict(dim=-1)),
    ("LogSoftmax", dict(dim=1)), ("LogSoftmax", dict(dim=0)),
]


def _x():
    x = rng.standard_normal((3, 4, 5)) * 3
    x[0, 0, :3] = [0.5, -0.5, 2.5]  # keep away from kinks but cover both sides
    return x


@pytest.mark.parametrize("name,kw", ACTS, ids=[f"{n}{k}" for n, k in ACTS])
def test_activation_vs_torch(name, kw):
    x = _x()
    x[np.abs(x) < 1e-3] = 0.1  # ReLU-type kinks: finite differences need distance from 0
    compare_module(getattr(nn, name)(**kw), getattr(torch.nn, name)(**kw), x)
    gradcheck_module(getattr(nn, name)(**kw), x[:1, :2], directions=None)
    assert repr(getattr(nn, name)(**kw)) == repr(getattr(torch.nn, name)(**kw))


@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 3, 4), (2, 3, 4, 5)])
def test_softmax_implicit_dim_like_torch(shape):
    x = rng.standard_normal(shape)
    with pytest.warns(UserWarning):  # torch warns about the implicit dim
        ref = torch.nn.Softmax()(torch.tensor(x)).numpy()
        lref = torch.nn.LogSoftmax()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(nn.Softmax()(hg.tensor(x)).numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(nn.LogSoftmax()(hg.tensor(x)).numpy(), lref, rtol=1e-12)


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="GELU: approximate must be 'none' or 'tanh', got 'fast'"):
        nn.GELU("fast")
