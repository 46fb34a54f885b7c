"""The graph machinery itself: accumulation, freeing, no_grad, detach, errors."""

import numpy as np
import pytest

import handgrad as hg


def test_gradient_accumulates_over_shared_inputs_and_calls():
    x = hg.tensor([1.0, 2.0, 3.0], dtype="float64", requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 1)
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 4)


def test_graph_is_freed_after_backward_unless_retained():
    x = hg.randn(3, requires_grad=True)
    y = (x * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.ones(3))
    with pytest.raises(RuntimeError, match="freed"):
        y.backward()


def test_no_grad_records_nothing_and_detach_cuts():
    x = hg.randn(3, requires_grad=True)
    with hg.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    z = (x.detach() * 2).sum()
    assert not z.requires_grad


def test_backward_needs_scalar_or_grad():
    x = hg.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2).backward()
    (x * 2).backward(np.ones(3, np.float32))
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.ones(3))


def test_manual_seed_reproducible():
    hg.manual_seed(3)
    a = hg.randn(5).numpy().copy()
    hg.manual_seed(3)
    np.testing.assert_array_equal(a, hg.randn(5).numpy())


def test_default_dtypes():
    assert hg.tensor([1.0, 2.0]).dtype == np.float32
    assert hg.tensor([1, 2]).dtype == np.int64
    assert hg.zeros(2, 3).dtype == np.float32
    assert hg.randn(2, dtype="float64").dtype == np.float64


def test_shape_errors_name_op_and_shapes():
    a, b = hg.randn(2, 3), hg.randn(4, 5)
    with pytest.raises(ValueError, match=r"matmul.*\(2, 3\).*\(4, 5\)"):
        a @ b
    with pytest.raises(ValueError, match=r"add.*\(2, 3\).*\(4, 5\)"):
        a + b
    with pytest.raises(ValueError, match="reshape"):
        a.reshape(4, 2)


def test_detect_anomaly_names_op_and_line():
    x = hg.tensor([-1.0, 1.0], requires_grad=True)
    with hg.detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"LogFunction\.forward.*NaN.*test_autograd_core"):
            with np.errstate(invalid="ignore"):
                hg.log(x)


# -- grad-mode switches ------------------------------------------------------------------------------------
def test_no_grad_as_decorator_with_and_without_parentheses():
    x = hg.randn(3, requires_grad=True)

    @hg.no_grad()
    def f(t):
        return t * 2

    @hg.no_grad
    def g(t):
        return t * 2

    assert not f(x).requires_grad and not g(x).requires_grad
    assert (x * 2).requires_grad and hg.is_grad_enabled()
    assert f.__name__ == "f"


def test_enable_grad_inside_no_grad_and_set_grad_enabled():
    x = hg.randn(3, requires_grad=True)
    with hg.no_grad():
        with hg.enable_grad():
            assert (x * 2).requires_grad
        assert not (x * 2).requires_grad
    with hg.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert hg.is_grad_enabled()
    hg.set_grad_enabled(False)  # a plain call switches at once, like torch
    try:
        assert not hg.is_grad_enabled()
    finally:
        hg.set_grad_enabled(True)
    assert hg.is_grad_enabled()

    @hg.set_grad_enabled(False)
    def h(t):
        return t * 2

    assert hg.is_grad_enabled() and not h(x).requires_grad
    with hg.inference_mode():
        assert not (x * 2).requires_grad


def test_no_grad_restores_mode_after_exception():
    with pytest.raises(ValueError):
        with hg.no_grad():
            raise ValueError
    assert hg.is_grad_enabled()


# -- the backward walk -----------------------------------------------------------------------------------
def test_diamond_and_reuse_match_torch():
    import torch

    a = np.random.default_rng(0).standard_normal((3, 3))
    outs = []
    for lib in (hg, torch):
        x = lib.tensor(a, requires_grad=True)
        h = x.tanh()
        y = (h * h.exp() + h.sigmoid() * x).sum() + (h @ h).sum()
        y.backward()
        outs.append(x.grad.numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12)


def test_deep_chain_has_no_recursion_limit():
    x = hg.tensor([1.0], dtype="float64", requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001**5000], rtol=1e-10)


def test_retain_grad_keeps_non_leaf_gradient():
    x = hg.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    h = x * 3.0
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * h.numpy())
    np.testing.assert_allclose(x.grad.numpy(), 18 * x.numpy())


def test_backward_with_explicit_grad_and_unused_branch():
    x = hg.tensor([1.0, 2.0, 3.0], dtype="float64", requires_grad=True)
    a, b = x.split(2)
    (a * 2.0).backward(hg.tensor([1.0, -1.0], dtype="float64"))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, -2.0, 0.0])
    del b


class _ThreeInputsFunction(hg.Function):
    def forward(self, a, b, c):
        self.a, self.b, self.c = a, b, c
        return a * b * c

    def backward(self, g):
        n = self.needs_input_grad
        return (g * self.b * self.c if n[0] else None, g * self.a * self.c if n[1] else None,
                g * self.a * self.b if n[2] else None)


def test_function_with_many_inputs_and_needs_input_grad():
    a, b = hg.randn(3, dtype="float64", requires_grad=True), hg.randn(3, dtype="float64")
    c = hg.randn(3, dtype="float64", requires_grad=True)
    fn = _ThreeInputsFunction()
    y = fn(a, b, c)
    assert fn.needs_input_grad == (True, False, True)
    y.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), (b * c).numpy())
    assert b.grad is None
    assert hg.gradcheck(lambda p, q: _ThreeInputsFunction()(p, b, q), (a, c))


class _BadShapeFunction(hg.Function):
    def forward(self, x):
        return x * 2

    def backward(self, g):
        return g.sum(0)


def test_wrong_gradient_shape_names_the_function():
    x = hg.randn(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"_BadShapeFunction\.backward returned a gradient of shape \(3,\) for an "
                                           r"input of shape \(2, 3\)"):
        _BadShapeFunction()(x).sum().backward()


def test_graph_release_drops_saved_arrays():
    x = hg.randn(3, requires_grad=True)
    y = x.exp()
    fn = y.grad_fn
    assert hasattr(fn, "y")
    y.sum().backward()
    assert not hasattr(fn, "y") and fn.inputs is None


def test_detect_anomaly_in_backward_names_op():
    x = hg.tensor([0.0, 1.0], requires_grad=True)
    with hg.detect_anomaly():
        y = x.sqrt().sum()
        with pytest.raises(FloatingPointError, match=r"SqrtFunction\.backward produced inf"):
            with np.errstate(divide="ignore"):
                y.backward()


class _PromotesFunction(hg.Function):
    def forward(self, x):
        return x * 2

    def backward(self, g):
        return g.astype(np.float64) * 2


def test_wrong_gradient_dtype_is_cast_or_reported_under_anomaly():
    x = hg.randn(3, requires_grad=True)
    y = _PromotesFunction()(x).exp()
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), 2 * y.numpy(), rtol=1e-6)
    with hg.detect_anomaly():
        with pytest.raises(TypeError, match=r"_PromotesFunction\.backward returned a float64 gradient for input 0"):
            _PromotesFunction()(x).sum().backward()


def test_factories_and_conversions():
    hg.manual_seed(0)
    np.testing.assert_array_equal(hg.eye(2, 3).numpy(), np.eye(2, 3))
    np.testing.assert_allclose(hg.linspace(0, 1, 5).numpy(), [0, 0.25, 0.5, 0.75, 1])
    assert hg.empty(2, 3).shape == (2, 3) and hg.empty(2, 3).dtype == np.float32
    x = hg.randn(2, 3, dtype="float64")
    assert hg.randn_like(x).dtype == np.float64 and hg.rand_like(x).shape == (2, 3)
    np.testing.assert_array_equal(hg.full_like(x, 7).numpy(), np.full((2, 3), 7.0))
    a = np.arange(4.0)
    t = hg.from_numpy(a)
    a[0] = 9
    assert t.numpy()[0] == 9 and t.dtype == np.float64
    p = hg.randperm(6).numpy()
    assert sorted(p.tolist()) == list(range(6)) and p.dtype == np.int64
    assert x.int().dtype == np.int32 and (x > 0).bool().dtype == np.bool_ and x.type_as(hg.ones(1)).dtype == np.float32
    assert x.is_floating_point() and not x.long().is_floating_point()
    with pytest.raises(TypeError, match="from_numpy: expected a numpy.ndarray"):
        hg.from_numpy([1, 2])


def test_numpy_interop():
    t = hg.tensor([1.0, 2.0], requires_grad=True)
    np.testing.assert_array_equal(np.asarray(t), [1.0, 2.0])
    assert np.asarray(t, dtype="float64").dtype == np.float64
    y = np.ones(2, np.float32) * t  # ndarray on the left defers to Tensor
    assert isinstance(y, hg.Tensor) and y.requires_grad
