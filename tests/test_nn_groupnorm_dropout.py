"""nn.GroupNorm vs torch.nn.GroupNorm (forward/backward, float64 and float32 with large inputs, gradcheck),
and channel dropout (Dropout1d / Dropout2d) on batched and unbatched input with PyTorch's mask layouts."""

import contextlib

import numpy as np
import pytest
import torch

import handgrad as hg
import handgrad.nn as nn

rng = np.random.default_rng(0)


@pytest.mark.parametrize("shape,groups,affine", [((3, 6, 4, 5), 3, True), ((2, 4, 7), 2, False), ((2, 8), 4, True),
                                                 ((2, 6, 2, 2, 3), 1, True), ((2, 6, 3), 6, True)])
@pytest.mark.parametrize("dtype,scale,tol", [("float64", 1.0, 1e-11), ("float32", 1e4, 2e-4)])
def test_group_norm_matches_torch(shape, groups, affine, dtype, scale, tol):
    C = shape[1]
    ours = nn.GroupNorm(groups, C, affine=affine, dtype=dtype)
    theirs = torch.nn.GroupNorm(groups, C, affine=affine, dtype=getattr(torch, dtype))
    if affine:
        w, b = rng.standard_normal(C), rng.standard_normal(C)
        theirs.load_state_dict({"weight": torch.tensor(w, dtype=getattr(torch, dtype)),
                                "bias": torch.tensor(b, dtype=getattr(torch, dtype))})
        ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = (scale * rng.standard_normal(shape)).astype(dtype)
    xh, xt = hg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, yt = ours(xh), theirs(xt)
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y.array, yt.detach().numpy(), rtol=tol, atol=tol)
    g = rng.standard_normal(shape).astype(dtype)
    (y * hg.tensor(g)).sum().backward()
    (yt * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(xh.grad.array, xt.grad.numpy(), rtol=tol, atol=tol / scale)
    if affine:
        np.testing.assert_allclose(ours.weight.grad.array, theirs.weight.grad.numpy(), rtol=tol, atol=tol * 10)
        np.testing.assert_allclose(ours.bias.grad.array, theirs.bias.grad.numpy(), rtol=tol, atol=tol * 10)


def test_group_norm_gradcheck_and_errors():
    m = nn.GroupNorm(2, 4, dtype="float64")
    m.weight.array[:] = rng.standard_normal(4)
    hg.gradcheck(lambda x: m(x), [hg.tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)])
    with pytest.raises(ValueError, match="GroupNorm: num_channels \\(6\\) must be divisible by num_groups \\(4\\)"):
        nn.GroupNorm(4, 6)
    assert list(m.state_dict()) == list(torch.nn.GroupNorm(2, 4).state_dict())


def _zero_pattern(mod, x):
    out = mod(x)
    out = out.array if isinstance(out, hg.Tensor) else out.numpy()
    return out == 0


@pytest.mark.parametrize("cls,shape,mask_axes", [
    ("Dropout1d", (4, 6, 9), 2),   # batched (N, C, L): one draw per (N, C)
    ("Dropout1d", (6, 9), 1),      # unbatched (C, L): one draw per channel
    ("Dropout2d", (4, 6, 3, 3), 2),
    ("Dropout2d", (6, 3, 9), 2),   # 3-D: PyTorch reads it as (N, C, L) (channel-wise 1-D dropout)
])
def test_channel_dropout_masks_like_torch(cls, shape, mask_axes):
    x = np.ones(shape)
    hg.manual_seed(0)
    torch.manual_seed(0)
    ours, theirs = getattr(nn, cls)(0.5), getattr(torch.nn, cls)(0.5)
    with pytest.warns(UserWarning) if (cls == "Dropout2d" and len(shape) == 3) else contextlib.nullcontext():
        zt = _zero_pattern(theirs, torch.tensor(x))
    zh = _zero_pattern(ours, hg.tensor(x))
    for z in (zh, zt):
        # whole channels are dropped: constant over the axes after the masked ones
        flat = z.reshape(int(np.prod(shape[:mask_axes])), -1)
        assert (flat.all(axis=1) | ~flat.any(axis=1)).all()
        assert 0.1 < flat[:, 0].mean() < 0.9
    y = ours(hg.tensor(x)).array
    np.testing.assert_array_equal(np.unique(y), [0.0, 2.0])  # kept values scaled by 1 / (1 - p)
    ours.eval()
    np.testing.assert_array_equal(ours(hg.tensor(x)).array, x)


def test_dropout1d_rejects_other_ranks_like_torch():
    with pytest.raises(ValueError, match="dropout1d"):
        nn.Dropout1d()(hg.tensor(np.ones((2, 3, 4, 5))))
    with pytest.raises(RuntimeError):
        torch.nn.Dropout1d()(torch.ones(2, 3, 4, 5))
