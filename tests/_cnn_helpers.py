"""Shared checks for the CNN functional tests: handgrad vs torch.nn.functional in float64 (forward and
every gradient, with weights copied across) and finite-difference gradchecks."""

from __future__ import annotations

import numpy as np
import torch

import handgrad as hg

RTOL, ATOL = 1e-8, 1e-10


def arrays(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [None if s is None else rng.standard_normal(s) for s in shapes]


def compare_torch(ours, theirs, arrs, seed=0, grad=None):
    """Run ``ours(*hg tensors)`` and ``theirs(*torch tensors)`` on the same float64 arrays (None passes
    through); compare the outputs and, after a backward of a random cotangent, the gradient of every array
    (``grad[i]`` False skips input i's gradient). Returns our output."""
    grad = grad or [True] * len(arrs)
    hs = [None if a is None else hg.tensor(a, requires_grad=g) for a, g in zip(arrs, grad)]
    ts = [None if a is None else torch.tensor(a, requires_grad=g) for a, g in zip(arrs, grad)]
    y, r = ours(*hs), theirs(*ts)
    assert y.shape == tuple(r.shape), (y.shape, tuple(r.shape))
    np.testing.assert_allclose(y.numpy(), r.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg="forward")
    u = np.random.default_rng(seed + 1).standard_normal(r.shape)
    y.backward(u)
    r.backward(torch.tensor(u))
    checked = 0
    for i, (h, t) in enumerate(zip(hs, ts)):
        if h is None or not h.requires_grad:
            continue
        assert h.grad is not None, f"no gradient for input {i}"
        np.testing.assert_allclose(h.grad.numpy(), t.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=f"grad {i}")
        checked += 1
    assert checked == sum(1 for a, g in zip(arrs, grad) if a is not None and g)
    return y


def gradcheck(fn, arrs, **kw):
    """handgrad.gradcheck over float64 copies of the arrays (None passes through)."""
    ts = [None if a is None else hg.tensor(a, requires_grad=True) for a in arrs]
    assert hg.gradcheck(fn, tuple(ts), **kw)
