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
        with pytest.raises(FloatingPointError, match=r"Log\.forward.*NaN.*test_autograd_core"):
            with np.errstate(invalid="ignore"):
                hg.log(x)
