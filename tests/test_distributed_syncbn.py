"""SyncBatchNorm in one process (a world of one: its statistics are the batch's): gradcheck, equal to PyTorch's
BatchNorm forward/backward/running statistics, eval mode, conversion, errors. Its equality across 2 real ranks
with one process is in ``tests/test_distributed.py`` (the ``syncbn`` case)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import handgrad as hg
import handgrad.nn as nn
from handgrad.distributed import SyncBatchNorm, sync_batch_norm


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape) * 3 + 2
    return x, rng.standard_normal(c) + 1, rng.standard_normal(c)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 4)])
def test_gradcheck_training_mode(shape):
    x, w, b = _inputs(shape)
    xs = (hg.tensor(x, requires_grad=True), hg.tensor(w, requires_grad=True), hg.tensor(b, requires_grad=True))
    assert hg.gradcheck(lambda x, w, b: sync_batch_norm(x, None, None, w, b, training=True), xs)


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 4, 4)])
def test_equal_to_torch_batchnorm(shape):
    x, w, b = _inputs(shape, 1)
    tbn = (torch.nn.BatchNorm1d if len(shape) < 4 else torch.nn.BatchNorm2d)(3, momentum=0.3).double()
    hbn = SyncBatchNorm(3, momentum=0.3).to(dtype=hg.float64)
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(w))
        tbn.bias.copy_(torch.from_numpy(b))
    hbn.weight.array[...] = w
    hbn.bias.array[...] = b
    gy = np.random.default_rng(2).standard_normal(shape)
    for _ in range(2):  # two training steps: running statistics too
        tx, hx = torch.tensor(x, requires_grad=True), hg.tensor(x, requires_grad=True)
        ty, hy = tbn(tx), hbn(hx)
        ty.backward(torch.from_numpy(gy))
        hy.backward(hg.tensor(gy))
        np.testing.assert_allclose(hy.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(hx.grad.numpy(), tx.grad.numpy(), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(hbn.weight.grad.numpy(), tbn.weight.grad.numpy(), rtol=1e-10)
        hbn.weight.grad = hbn.bias.grad = None
        tbn.zero_grad()
    np.testing.assert_allclose(hbn.running_mean.numpy(), tbn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(hbn.running_var.numpy(), tbn.running_var.numpy(), rtol=1e-12)
    tbn.eval(), hbn.eval()
    np.testing.assert_allclose(hbn(hg.tensor(x)).numpy(), tbn(torch.from_numpy(x)).detach().numpy(), rtol=1e-10)


def test_convert_keeps_the_parameters_and_errors_are_clear():
    hg.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Sequential(nn.BatchNorm1d(3)))
    w = model[1].weight
    out = SyncBatchNorm.convert_sync_batchnorm(model)
    assert out is model and isinstance(model[1], SyncBatchNorm) and isinstance(model[2][0], SyncBatchNorm)
    assert model[1].weight is w and [n for n, _ in model.named_parameters()][2] == "1.weight"
    with pytest.raises(ValueError, match="sync_batch_norm: expected input of at least 2 dimensions"):
        sync_batch_norm(hg.tensor(np.zeros(3)), None, None, training=True)
    with pytest.raises(ValueError, match=r"weight must have shape \(2,\)"):
        sync_batch_norm(hg.tensor(np.zeros((4, 2))), None, None, hg.tensor(np.ones(3)), training=True)
