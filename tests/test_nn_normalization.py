"""BatchNorm1d / BatchNorm2d / LayerNorm vs torch.nn with weights copied: train and eval, running statistics
over several batches, momentum=None, affine / track_running_stats off; gradcheck; errors."""

import numpy as np
import pytest
import torch
from test_nn_layers import compare_module, copy_from_torch, gradcheck_module

import handgrad as hg
import handgrad.nn as nn

rng = np.random.default_rng(0)
RTOL, ATOL = 1e-8, 1e-10

BN = [("BatchNorm1d", (8, 3)), ("BatchNorm1d", (4, 3, 5)), ("BatchNorm2d", (4, 3, 5, 2))]
OPTS = [dict(), dict(momentum=None), dict(affine=False), dict(track_running_stats=False), dict(eps=1e-3, momentum=0.3),
        dict(bias=False)]


@pytest.mark.parametrize("name,shape", BN)
@pytest.mark.parametrize("kw", OPTS, ids=[str(o) for o in OPTS])
def test_batchnorm_train_then_eval_vs_torch(name, shape, kw):
    ours, theirs = getattr(nn, name)(3, **kw).double(), getattr(torch.nn, name)(3, **kw).double()
    if kw.get("affine", True):  # non-trivial affine parameters
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            if theirs.bias is not None:
                theirs.bias.uniform_(-0.5, 0.5)
    copy_from_torch(ours, theirs)
    for step in range(3):  # several training batches: the running statistics accumulate
        x = rng.standard_normal(shape) * (1 + step) + step
        compare_module(ours, theirs, x, seed=step, train=True) if step == 0 else _forward_train(ours, theirs, x)
    if kw.get("track_running_stats", True):
        assert int(ours.num_batches_tracked.item()) == 3 == int(theirs.num_batches_tracked)
        np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), rtol=RTOL)
        np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=RTOL)
        assert not np.allclose(ours.running_mean.numpy(), 0)
    else:
        assert ours.running_mean is None and list(ours.state_dict()) == list(theirs.state_dict())
    # eval: running statistics (or batch statistics when they are not tracked); gradients too
    x = rng.standard_normal(shape)
    _zero(ours, theirs)
    compare_module(ours, theirs, x, seed=9, train=False)


def _forward_train(ours, theirs, x):
    out, ref = ours(hg.tensor(x)), theirs(torch.tensor(x))
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=RTOL, atol=ATOL)


def _zero(ours, theirs):
    ours.zero_grad()
    theirs.zero_grad()


def test_batchnorm_gradcheck_train_and_eval():
    m = nn.BatchNorm2d(2)
    m.weight.array[...] = [1.5, 0.7]
    m.bias.array[...] = [0.1, -0.2]
    gradcheck_module(m, rng.standard_normal((3, 2, 2, 2)), directions=6)
    m.eval()
    m.running_mean.array[...] = [0.3, -0.1]
    gradcheck_module(m, rng.standard_normal((3, 2, 2, 2)), directions=6)
    gradcheck_module(nn.BatchNorm1d(3), rng.standard_normal((5, 3)))


def test_batchnorm_eval_uses_running_statistics_exactly():
    m = nn.BatchNorm1d(2, dtype="float64").eval()
    m.running_mean.array[...] = [1.0, -2.0]
    m.running_var.array[...] = [4.0, 0.25]
    x = np.array([[3.0, -1.0], [1.0, -2.0]])
    np.testing.assert_allclose(m(hg.tensor(x)).numpy(), (x - [1.0, -2.0]) / np.sqrt(np.array([4.0, 0.25]) + 1e-5))
    assert int(m.num_batches_tracked.item()) == 0  # eval does not count batches


def test_batchnorm_state_dict_matches_torch_and_errors():
    assert list(nn.BatchNorm2d(4).state_dict()) == list(torch.nn.BatchNorm2d(4).state_dict())
    assert repr(nn.BatchNorm2d(4)) == repr(torch.nn.BatchNorm2d(4))
    assert repr(nn.LayerNorm(3)) == repr(torch.nn.LayerNorm(3))
    assert list(nn.BatchNorm1d(2, bias=False).state_dict()) == list(torch.nn.BatchNorm1d(2, bias=False).state_dict())
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected 4D input, got 3D input \(2, 3, 4\)"):
        nn.BatchNorm2d(3)(hg.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected 2D or 3D input, got 4D input"):
        nn.BatchNorm1d(3)(hg.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(num_features=3\): input \(2, 4\) has 4 channels in dim 1"):
        nn.BatchNorm1d(3)(hg.randn(2, 4))


LN = [((4, 5), 5, {}), ((2, 3, 4), (3, 4), {}), ((3, 6), 6, dict(elementwise_affine=False)),
      ((2, 3, 4), 4, dict(bias=False, eps=1e-3))]


@pytest.mark.parametrize("shape,ns,kw", LN, ids=[str(c) for c in LN])
def test_layernorm_vs_torch(shape, ns, kw):
    theirs = torch.nn.LayerNorm(ns, **kw)
    if theirs.weight is not None:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            if theirs.bias is not None:
                theirs.bias.uniform_(-0.5, 0.5)
    compare_module(nn.LayerNorm(ns, **kw), theirs, rng.standard_normal(shape) * 3 + 1)


def test_layernorm_gradcheck_and_errors():
    m = nn.LayerNorm((2, 3))
    m.weight.array[...] = rng.uniform(0.5, 1.5, (2, 3))
    gradcheck_module(m, rng.standard_normal((2, 2, 3)))
    assert m.normalized_shape == (2, 3) and [n for n, _ in m.named_parameters()] == ["weight", "bias"]
    with pytest.raises(ValueError, match=r"LayerNorm\(normalized_shape=\(2, 3\)\): input \(4, 3, 2\) must end with"):
        m(hg.randn(4, 3, 2))
