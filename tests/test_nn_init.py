"""nn.init: gains and fans equal PyTorch's, sample statistics match the formulas, seeding reproduces, errors."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

import handgrad as hg
from handgrad.nn import init


@pytest.mark.parametrize(
    "name,param",
    [("linear", None), ("conv2d", None), ("conv_transpose2d", None), ("sigmoid", None), ("tanh", None),
     ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("selu", None)],
)
def test_calculate_gain_matches_torch(name, param):
    assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param), rel=1e-15)


@pytest.mark.parametrize("shape", [(3, 5), (8, 4, 3, 3), (6, 2, 5)])
def test_fans_match_torch(shape):
    assert init._calculate_fan_in_and_fan_out(hg.zeros(*shape)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))


def _big(*shape):
    return hg.zeros(*shape, dtype="float64")


def test_uniform_and_normal_statistics():
    hg.manual_seed(0)
    u = init.uniform_(_big(200, 300), -2.0, 3.0).numpy()
    assert u.min() >= -2 and u.max() <= 3 and abs(u.mean() - 0.5) < 0.02 and abs(u.std() - 5 / math.sqrt(12)) < 0.01
    n = init.normal_(_big(200, 300), 1.5, 0.5).numpy()
    assert abs(n.mean() - 1.5) < 0.005 and abs(n.std() - 0.5) < 0.005


def test_xavier_statistics():
    hg.manual_seed(1)
    fan_in, fan_out = 300 * 9, 200 * 9
    w = init.xavier_uniform_(_big(200, 300, 3, 3), gain=2.0).numpy()
    a = 2.0 * math.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(w).max() <= a and np.abs(w).max() > 0.999 * a
    assert abs(w.std() - a / math.sqrt(3)) < 0.005 * a
    w = init.xavier_normal_(_big(200, 300)).numpy()
    std = math.sqrt(2.0 / 500)
    assert abs(w.std() - std) < 0.01 * std and abs(w.mean()) < 0.01 * std


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_statistics(mode):
    hg.manual_seed(2)
    t = _big(256, 128, 3, 3)
    fan = 128 * 9 if mode == "fan_in" else 256 * 9
    w = init.kaiming_uniform_(t, a=0, mode=mode, nonlinearity="relu").numpy()
    bound = math.sqrt(2.0) * math.sqrt(3.0 / fan)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.999 * bound
    w = init.kaiming_normal_(t, mode=mode, nonlinearity="relu").numpy()
    assert abs(w.std() - math.sqrt(2.0 / fan)) < 0.01 * math.sqrt(2.0 / fan)
    # PyTorch's layer default a=sqrt(5) gives the bound 1/sqrt(fan_in)
    w = init.kaiming_uniform_(_big(64, 500), a=math.sqrt(5)).numpy()
    assert np.abs(w).max() <= 1 / math.sqrt(500) < 1.001 * np.abs(w).max()


@pytest.mark.parametrize("shape", [(5, 8), (8, 5), (6, 2, 3, 3)])
def test_orthogonal(shape):
    hg.manual_seed(3)
    w = init.orthogonal_(_big(*shape), gain=2.0).numpy().reshape(shape[0], -1)
    rows, cols = w.shape
    gram = w @ w.T if rows <= cols else w.T @ w
    np.testing.assert_allclose(gram, 4.0 * np.eye(min(rows, cols)), atol=1e-12)


def test_trunc_normal_matches_truncated_distribution():
    hg.manual_seed(4)
    w = init.trunc_normal_(_big(300, 300), mean=0.5, std=1.0, a=-1.0, b=1.5).numpy()
    assert w.min() >= -1.0 and w.max() <= 1.5
    ref = scipy.stats.truncnorm(-1.5, 1.0, loc=0.5, scale=1.0)
    assert abs(w.mean() - ref.mean()) < 0.01 and abs(w.std() - ref.std()) < 0.01


def test_constant_zeros_ones_eye_in_place_and_dtype():
    t = hg.zeros(3, 4)
    data = t.array
    assert init.constant_(t, 0.25) is t and t.array is data and t.dtype == np.float32
    assert np.all(t.numpy() == 0.25)
    assert np.all(init.ones_(t).numpy() == 1) and np.all(init.zeros_(t).numpy() == 0)
    np.testing.assert_array_equal(init.eye_(t).numpy(), np.eye(3, 4))
    init.kaiming_uniform_(t)
    assert t.dtype == np.float32


def test_manual_seed_reproduces_every_random_init():
    fns = [init.uniform_, init.normal_, init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_,
           init.kaiming_normal_, init.orthogonal_, init.trunc_normal_]
    hg.manual_seed(7)
    first = [f(_big(4, 5)).numpy().copy() for f in fns]
    hg.manual_seed(7)
    second = [f(_big(4, 5)).numpy().copy() for f in fns]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])


def test_init_errors():
    with pytest.raises(ValueError, match=r"fan in and fan out can not be computed.*\(5,\)"):
        init.xavier_uniform_(hg.zeros(5))
    with pytest.raises(ValueError, match="calculate_gain: unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="kaiming init: mode 'fan_avg' not supported"):
        init.kaiming_normal_(hg.zeros(3, 3), mode="fan_avg")
    with pytest.raises(ValueError, match=r"orthogonal_: only tensors with 2 or more dimensions.*\(4,\)"):
        init.orthogonal_(hg.zeros(4))
    with pytest.raises(ValueError, match="uniform_: lower bound a=2 exceeds upper bound b=1"):
        init.uniform_(hg.zeros(3), 2, 1)
    with pytest.raises(ValueError, match="eye_: only 2-d tensors"):
        init.eye_(hg.zeros(2, 2, 2))
