"""``handgrad.gradcheck`` itself: it passes correct backwards, and catches wrong ones, naming the input,
the element and both values."""

import numpy as np
import pytest

import handgrad as hg
from handgrad import Function


class WrongScaleFunction(Function):
    """y = x * w; backward deliberately wrong for w at one element."""

    def forward(self, x, w):
        self.x, self.w = x, w
        return x * w

    def backward(self, gy):
        gw = gy * self.x
        gw = gw.copy()
        gw.flat[3] *= 1.01  # a 1% error in one entry
        return gy * self.w, gw


class ForgetsBroadcastFunction(Function):
    """y = x + b (b broadcast over rows); backward returns the right shape but forgets to sum over rows."""

    def forward(self, x, b):
        return x + b

    def backward(self, gy):
        return gy, gy[0]


def _x(*shape, seed=0):
    return hg.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def test_passes_correct_ops_full_and_directional():
    x, w = _x(3, 4), _x(4, seed=1)
    f = lambda a, b: (a * b).tanh().sum(0) / (b * b + 1.0)  # noqa: E731
    assert hg.gradcheck(f, (x, w))
    assert hg.gradcheck(f, (x, w), directions=4)
    # large output: random VJPs instead of the full Jacobian
    assert hg.gradcheck(lambda a: (a[:, :, None] * a[:, None, :]).exp(), _x(5, 6))


def test_catches_one_wrong_entry_and_names_it():
    x, w = _x(2, 3), _x(2, 3, seed=1)
    with pytest.raises(hg.GradcheckError, match=r"input 1 \(shape \(2, 3\)\).*input 1\[1, 0\].*analytic .* numeric"):
        hg.gradcheck(lambda a, b: WrongScaleFunction()(a, b), (x, w))


def test_directional_check_catches_missing_broadcast_sum():
    x, b = _x(4, 3), _x(3, seed=2)
    with pytest.raises(hg.GradcheckError, match="input 1 .*random direction"):
        hg.gradcheck(lambda a, c: ForgetsBroadcastFunction()(a, c), (x, b), directions=3)
    with pytest.raises(hg.GradcheckError, match=r"input 1 \(shape \(3,\)\)"):
        hg.gradcheck(lambda a, c: ForgetsBroadcastFunction()(a, c), (x, b))


def test_leaves_inputs_untouched_and_skips_constants():
    x = _x(3)
    before = x.numpy().copy()
    c = hg.tensor([1.0, 2.0, 3.0], dtype="float64")  # no grad: a constant
    assert hg.gradcheck(lambda a, k, n: (a * k) ** n, (x, c, 2))
    np.testing.assert_array_equal(x.numpy(), before)
    assert x.grad is None


def test_multiple_and_integer_outputs():
    x = _x(3, 4)
    assert hg.gradcheck(lambda a: (a.max(1).values, a.max(1).indices, a.softmax(0)), x)


def test_tolerance_arguments_are_used():
    x, w = _x(2, 3), _x(2, 3, seed=1)
    assert hg.gradcheck(lambda a, b: WrongScaleFunction()(a, b), (x, w), atol=1.0, rtol=0.1)


def test_errors():
    with pytest.raises(ValueError, match="no input is a floating tensor with requires_grad"):
        hg.gradcheck(lambda a: a * 2, hg.ones(3))
    with pytest.raises(ValueError, match="directions must be a positive int"):
        hg.gradcheck(lambda a: a * 2, _x(3), directions=0)
    with pytest.warns(UserWarning, match="not float64"):
        hg.gradcheck(lambda a: a * 2.0, hg.ones(3, requires_grad=True), atol=1e-2, rtol=1e-2, eps=1e-2)
