"""nn.utils.clip_grad_norm_ / clip_grad_value_ vs torch."""

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad.nn.utils import clip_grad_norm_, clip_grad_value_


def _pair(scale, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    grads = [rng.standard_normal(s) * scale for s in shapes]
    ours = [hg.tensor(np.zeros(s), requires_grad=True) for s in shapes]
    theirs = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    for p, t, g in zip(ours, theirs, grads):
        p.grad, t.grad = hg.tensor(g.copy()), torch.tensor(g.copy())
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_clip_grad_norm_matches_torch(norm_type, scale):
    ours, theirs = _pair(scale)
    total = clip_grad_norm_(ours, max_norm=1.5, norm_type=norm_type)
    ref = torch.nn.utils.clip_grad_norm_(theirs, max_norm=1.5, norm_type=norm_type)
    assert isinstance(total, hg.Tensor) and total.shape == ()
    np.testing.assert_allclose(total.item(), ref.item(), rtol=1e-12)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)
    clipped = scale == 10.0
    after = np.linalg.norm(np.concatenate([p.grad.numpy().ravel() for p in ours]), ord=norm_type)
    assert (after < 1.5 + 1e-6) if clipped else (after == pytest.approx(total.item()))


def test_clip_grad_norm_skips_missing_grads_and_accepts_single_tensor():
    p = hg.tensor(np.zeros(2), requires_grad=True)
    q = hg.tensor(np.zeros(2), requires_grad=True)
    p.grad = hg.tensor(np.array([3.0, 4.0]))
    total = clip_grad_norm_([p, q], 1.0)
    assert total.item() == 5.0 and q.grad is None
    np.testing.assert_allclose(p.grad.numpy(), np.array([3.0, 4.0]) / (5 + 1e-6))
    assert clip_grad_norm_(p, 10.0).item() == pytest.approx(1.0, rel=1e-6)
    assert clip_grad_norm_([q], 1.0).item() == 0.0


def test_clip_grad_norm_nonfinite():
    p = hg.tensor(np.zeros(2), requires_grad=True)
    p.grad = hg.tensor(np.array([np.inf, 1.0]))
    with pytest.raises(RuntimeError, match="clip_grad_norm_: the total norm of order 2.0 .* is non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert np.isinf(clip_grad_norm_([p], 1.0).item())


def test_clip_grad_value_matches_torch():
    ours, theirs = _pair(3.0)
    clip_grad_value_(ours, 0.5)
    torch.nn.utils.clip_grad_value_(theirs, 0.5)
    for p, t in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad.numpy(), t.grad.numpy())
    assert max(np.abs(p.grad.numpy()).max() for p in ours) == 0.5
