"""The shared Fashion-MNIST split / loaders of handgrad/experiments/_common.py (the registry and the parser are
tested in test_cli_registry.py)."""

from __future__ import annotations

import numpy
import pytest
from _markers import have_fashion_mnist, needs_fashion_mnist

from handgrad.errors import ExperimentError
from handgrad.experiments import _common

needs_data = needs_fashion_mnist


@needs_data
def test_fashion_split_is_seeded_disjoint_and_normalised():
    a = _common.fashion_mnist_splits(None, seed=0, val_size=300, train_size=700, test_size=200)
    b = _common.fashion_mnist_splits(None, seed=0, val_size=300, train_size=700, test_size=200)
    c = _common.fashion_mnist_splits(None, seed=1, val_size=300, train_size=700, test_size=200)
    assert a.sizes() == {"n_train": 700, "n_val": 300, "n_test": 200}
    assert a.x_train.shape == (700, 1, 28, 28) and a.x_train.dtype == numpy.float32
    assert a.y_train.dtype == numpy.int64 and set(numpy.unique(a.y_train)) == set(range(10))
    numpy.testing.assert_array_equal(a.x_train, b.x_train)  # same seed, same split
    assert not numpy.array_equal(a.x_train, c.x_train)
    numpy.testing.assert_array_equal(a.x_test, c.x_test)  # the test set does not depend on the seed
    # no image is both in train and in val (compare raw bytes of each image)
    train_keys = {x.tobytes() for x in a.x_train}
    assert not any(x.tobytes() in train_keys for x in a.x_val)
    # normalised with the Fashion-MNIST constants: pixels 0 and 255 map to these two values
    lo, hi = (0 - _common.FASHION_MEAN) / _common.FASHION_STD, (1 - _common.FASHION_MEAN) / _common.FASHION_STD
    assert a.x_train.min() == pytest.approx(lo, rel=1e-6) and a.x_train.max() == pytest.approx(hi, rel=1e-6)
    assert abs(float(a.x_train.mean())) < 0.1 and 0.85 < float(a.x_train.std()) < 1.15


@needs_data
def test_loaders_shuffle_train_only():
    s = _common.fashion_mnist_splits(None, seed=0, val_size=50, train_size=60, test_size=40)
    train, val, test = _common.loaders(s, batch_size=60, seed=0, eval_batch_size=100)
    (xb, yb), = list(train)
    assert xb.shape == (60, 1, 28, 28) and not numpy.array_equal(yb.numpy(), s.y_train)  # shuffled
    assert sorted(yb.numpy().tolist()) == sorted(s.y_train.tolist())
    (xv, yv), = list(val)
    numpy.testing.assert_array_equal(yv.numpy(), s.y_val)  # in order
    assert len(test) == 1


def test_split_errors(tmp_path):
    with pytest.raises(ExperimentError, match="FashionMNIST: dataset not found"):
        _common.fashion_mnist_splits(str(tmp_path), seed=0)
    if have_fashion_mnist():
        with pytest.raises(ExperimentError, match="validation size 60000 leaves no training images"):
            _common.fashion_mnist_splits(None, seed=0, val_size=60000)
        with pytest.raises(ExperimentError, match="asked for 59000 training images but only 54000"):
            _common.fashion_mnist_splits(None, seed=0, val_size=6000, train_size=59000)
