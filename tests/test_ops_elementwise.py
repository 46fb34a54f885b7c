"""Element-wise ops: arithmetic with broadcasting and scalars, unary maps, activations.
Each against finite differences and PyTorch (see test_ops_common.check_op)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from test_ops_common import check_op, positive, randn

import handgrad as hg
import handgrad.functional as F

BCAST = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 4)), ((2, 1, 4), (3, 1)), ((), (3,)), ((5,), ())]


@pytest.mark.parametrize("sa,sb", BCAST)
@pytest.mark.parametrize(
    "op",
    [
        (lambda a, b: a + b, lambda a, b: a + b),
        (lambda a, b: a - b, lambda a, b: a - b),
        (lambda a, b: a * b, lambda a, b: a * b),
        (lambda a, b: a / b, lambda a, b: a / b),
        (hg.maximum, torch.maximum),
        (hg.minimum, torch.minimum),
        (lambda a, b: hg.max(a, b), lambda a, b: torch.max(a, b)),
        (lambda a, b: a.add(b) * a.sub(b).mul(b).div(a), lambda a, b: a.add(b) * a.sub(b).mul(b).div(a)),
    ],
    ids=["add", "sub", "mul", "div", "maximum", "minimum", "max2", "methods"],
)
def test_binary_broadcasting(op, sa, sb):
    check_op(op[0], op[1], [randn(*sa, seed=1) + 3.0, randn(*sb, seed=2) + 3.5])


@pytest.mark.parametrize("sa,sb", BCAST[:4])
def test_pow_tensor_exponent(sa, sb):
    check_op(lambda a, b: a**b, lambda a, b: a**b, [positive(*sa, seed=1), randn(*sb, seed=2)])


@pytest.mark.parametrize("p", [2, 3, 0.5, -1.5, 1, 0])
def test_pow_scalar_exponent(p):
    check_op(lambda a: a**p, lambda a: a**p, [positive(3, 4)])
    check_op(lambda a: a.pow(p), lambda a: a.pow(p), [positive(2, 3)])


@pytest.mark.parametrize("c", [2.5, -3, 0.5])
@pytest.mark.parametrize(
    "op",
    [
        lambda a, c: a + c, lambda a, c: c + a, lambda a, c: a - c, lambda a, c: c - a, lambda a, c: a * c,
        lambda a, c: c * a, lambda a, c: a / c, lambda a, c: c / a, lambda a, c: abs(c) ** a, lambda a, c: -a,
    ],
    ids=["radd", "ladd", "rsub", "lsub", "rmul", "lmul", "rdiv", "ldiv", "rpow", "neg"],
)
def test_scalar_operands(op, c):
    check_op(lambda a: op(a, c), lambda a: op(a, c), [positive(3, 4)] if c > 0 else [randn(3, 4) + 4])


def test_numpy_scalar_keeps_tensor_dtype():
    x = hg.tensor([1.0, 2.0])
    assert (x * np.float64(2.0)).dtype == np.float32
    assert (x + 1).dtype == np.float32 and (2.0 / x).dtype == np.float32


def test_maximum_minimum_ties_split_gradient_like_torch():
    a = np.array([1.0, 2.0, 3.0, 2.0])
    b = np.array([1.0, 5.0, 0.0, 2.0])
    for hf, tf in ((hg.maximum, torch.maximum), (hg.minimum, torch.minimum)):
        check_op(hf, tf, [a, b], gradcheck=False)
    x, y = hg.tensor(a, requires_grad=True), hg.tensor(b, requires_grad=True)
    hg.maximum(x, y).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.5, 0.0, 1.0, 0.5])
    np.testing.assert_allclose(y.grad.numpy(), [0.5, 1.0, 0.0, 0.5])


def test_pow_gradient_at_zero_base_and_zero_exponent_like_torch():
    check_op(lambda a, b: a**b, lambda a, b: a**b, [np.array([0.0, 0.0, 2.0]), np.array([2.0, 0.0, 0.0])],
             gradcheck=False)
    check_op(lambda a: a**0, lambda a: a**0, [np.array([0.0, 1.0])], gradcheck=False)


UNARY = [
    ("exp", hg.exp, torch.exp, randn),
    ("log", hg.log, torch.log, positive),
    ("sqrt", hg.sqrt, torch.sqrt, positive),
    ("abs", hg.abs, torch.abs, randn),
    ("sin", hg.sin, torch.sin, randn),
    ("cos", hg.cos, torch.cos, randn),
    ("tanh", hg.tanh, torch.tanh, randn),
    ("sigmoid", hg.sigmoid, torch.sigmoid, randn),
    ("relu", hg.relu, torch.relu, randn),
    ("neg", hg.neg, torch.neg, randn),
    ("square", hg.square, torch.square, randn),
    ("abs_op", abs, abs, randn),
    ("exp_m", lambda x: x.exp(), lambda x: x.exp(), randn),
    ("log_m", lambda x: x.log(), lambda x: x.log(), positive),
    ("sqrt_m", lambda x: x.sqrt(), lambda x: x.sqrt(), positive),
    ("abs_m", lambda x: x.abs(), lambda x: x.abs(), randn),
    ("sin_m", lambda x: x.sin() + x.cos(), lambda x: x.sin() + x.cos(), randn),
    ("act_m", lambda x: x.tanh() * x.sigmoid() + x.relu(), lambda x: x.tanh() * x.sigmoid() + x.relu(), randn),
]


@pytest.mark.parametrize("shape", [(3, 4), (), (2, 3, 2)])
@pytest.mark.parametrize("name,hf,tf,make", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, hf, tf, make, shape):
    check_op(hf, tf, [make(*shape, seed=3) * (3.0 if make is randn else 1.0)])


def test_extreme_inputs_stay_finite():
    x = hg.tensor([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype="float32", requires_grad=True)
    for f in (hg.sigmoid, hg.tanh, F.softplus, F.silu, F.elu, hg.relu, lambda t: F.gelu(t, "tanh")):
        y = f(x)
        assert np.isfinite(y.numpy()).all()
        y.sum().backward()
        assert np.isfinite(x.grad.numpy()).all()
        x.grad = None
    np.testing.assert_allclose(hg.sigmoid(x).numpy(), torch.sigmoid(torch.tensor(x.numpy())).numpy(), atol=1e-7)


CLAMPS = [(-0.5, 0.7), (-0.3, None), (None, 0.2), (0.5, -0.5)]


@pytest.mark.parametrize("lo,hi", CLAMPS)
def test_clamp_scalar_bounds(lo, hi):
    check_op(lambda x: hg.clamp(x, lo, hi), lambda x: torch.clamp(x, lo, hi), [randn(4, 5)])
    check_op(lambda x: x.clip(min=lo, max=hi), lambda x: x.clip(min=lo, max=hi), [randn(3)])


def test_clamp_gradient_passes_at_the_bounds_like_torch():
    a = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    check_op(lambda x: x.clamp(-0.5, 0.5), lambda x: x.clamp(-0.5, 0.5), [a], gradcheck=False)
    x = hg.tensor(a, requires_grad=True)
    x.clamp(-0.5, 0.5).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 1, 1, 1, 0])


@pytest.mark.parametrize("which", ["both", "min", "max"])
def test_clamp_tensor_bounds(which):
    x, lo, hi = randn(3, 4, seed=1), randn(4, seed=2) * 0.5 - 0.3, randn(3, 1, seed=3) * 0.5 + 0.3
    if which == "both":
        check_op(lambda a, b, c: hg.clamp(a, b, c), lambda a, b, c: torch.clamp(a, b, c), [x, lo, hi])
    elif which == "min":
        check_op(lambda a, b: hg.clamp(a, min=b), lambda a, b: torch.clamp(a, min=b), [x, lo])
    else:
        check_op(lambda a, c: a.clamp(max=c), lambda a, c: a.clamp(max=c), [x, hi])


def test_clamp_tensor_bounds_crossed_like_torch():
    x, lo, hi = randn(6, seed=1), np.full(6, 0.4), np.linspace(-1, 1, 6)
    check_op(lambda a, b, c: hg.clamp(a, b, c), lambda a, b, c: torch.clamp(a, b, c), [x, lo, hi], gradcheck=False)


ACTS = [
    ("leaky_relu", lambda x: F.leaky_relu(x), lambda x: tF.leaky_relu(x)),
    ("leaky_relu_0.2", lambda x: F.leaky_relu(x, 0.2, inplace=True), lambda x: tF.leaky_relu(x, 0.2)),
    ("elu", lambda x: F.elu(x), lambda x: tF.elu(x)),
    ("elu_0.5", lambda x: F.elu(x, alpha=0.5), lambda x: tF.elu(x, alpha=0.5)),
    ("gelu", lambda x: F.gelu(x), lambda x: tF.gelu(x)),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), lambda x: tF.gelu(x, approximate="tanh")),
    ("softplus", lambda x: F.softplus(x), lambda x: tF.softplus(x)),
    ("softplus_b2_t1", lambda x: F.softplus(x, beta=2.0, threshold=1.0), lambda x: tF.softplus(x, 2.0, 1.0)),
    ("softplus_b0.5", lambda x: F.softplus(x, beta=0.5, threshold=100.0), lambda x: tF.softplus(x, 0.5, 100.0)),
    ("silu", lambda x: F.silu(x), lambda x: tF.silu(x)),
    ("relu", lambda x: F.relu(x, inplace=True), lambda x: tF.relu(x)),
    ("sigmoid", F.sigmoid, torch.sigmoid),
    ("tanh", F.tanh, torch.tanh),
    ("top_leaky", lambda x: hg.leaky_relu(x, 0.1), lambda x: tF.leaky_relu(x, 0.1)),
    ("top_elu", hg.elu, tF.elu),
    ("top_gelu", hg.gelu, tF.gelu),
    ("top_softplus", hg.softplus, tF.softplus),
    ("top_silu", hg.silu, tF.silu),
]


@pytest.mark.parametrize("name,hf,tf", ACTS, ids=[a[0] for a in ACTS])
def test_activations(name, hf, tf):
    check_op(hf, tf, [randn(4, 5, seed=7, scale=3.0)])


def test_activation_kinks_match_torch():
    """At x == 0 (and at the softplus threshold) the chosen one-sided derivative is torch's."""
    x = np.array([0.0, 0.0, 10.0, -3.0])
    for _, hf, tf in ACTS:
        check_op(hf, tf, [x], gradcheck=False)
    check_op(lambda t: F.softplus(t, 1.0, 10.0), lambda t: tF.softplus(t, 1.0, 10.0), [x], gradcheck=False)


def test_unary_errors_name_the_op():
    with pytest.raises(TypeError, match="sqrt"):
        hg.sqrt(np.ones(3))
    with pytest.raises(ValueError, match="clamp: at least one"):
        hg.clamp(hg.ones(3))
    with pytest.raises(ValueError, match=r"gelu: approximate"):
        F.gelu(hg.ones(3), approximate="erf")
    with pytest.raises(TypeError, match="leaky_relu: expected a floating"):
        F.leaky_relu(hg.tensor([1, 2]))
    with pytest.raises(ValueError, match="softplus: beta"):
        F.softplus(hg.ones(3), beta=0)
    with pytest.raises(ValueError, match=r"clamp.*do not broadcast"):
        hg.clamp(hg.ones(3), hg.ones(2, 3))


def test_binary_errors_name_op_and_shapes():
    a, b = hg.randn(2, 3), hg.randn(4, 3)
    for op, name in [(hg.add, "add"), (hg.sub, "sub"), (hg.mul, "mul"), (hg.div, "div"), (hg.maximum, "maximum"),
                     (hg.minimum, "minimum"), (hg.pow, "pow")]:
        with pytest.raises(ValueError, match=rf"{name}: shapes \(2, 3\) and \(4, 3\)"):
            op(a, b)
    with pytest.raises(TypeError, match="mul: operands have different dtypes"):
        hg.randn(3) * hg.randn(3, dtype="float64")
