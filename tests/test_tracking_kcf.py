"""KCF: the Fourier-domain solution against brute-force ridge regression over all circulant shifts, and the
tracker on sequences with known motion."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad.tracking import KCF
from handgrad.tracking.kcf import _rfft2, detect, gaussian_labels, kernel_correlation, subpixel_peak, train_filter

KW = {"sigma": 0.7, "degree": 3, "offset": 1.0}


def _kappa(a: np.ndarray, b: np.ndarray, kernel: str, n: int) -> float:
    """The kernel on two whole (vectorised) samples, with the KCF code's 1/n normalisation."""
    if kernel == "linear":
        return float(a.ravel() @ b.ravel()) / n
    if kernel == "polynomial":
        return (float(a.ravel() @ b.ravel()) / n + KW["offset"]) ** KW["degree"]
    return float(np.exp(-np.sum((a - b) ** 2) / (KW["sigma"] ** 2 * n)))


def _shifts(x: np.ndarray) -> list[np.ndarray]:
    """P^i x for every 2-D cyclic shift i = (a, b), row-major over (a, b)."""
    h, w = x.shape[:2]
    return [np.roll(x, (a, b), axis=(0, 1)) for a in range(h) for b in range(w)]


@pytest.mark.parametrize("kernel", ["gaussian", "polynomial", "linear"])
@pytest.mark.parametrize("shape", [(5, 6, 3), (4, 4, 1), (7, 3, 2)])
def test_fourier_training_equals_brute_force_ridge_regression(kernel, shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    y = rng.normal(size=shape[:2])  # any labels: the training identity holds for all
    lam = 0.3
    n = x.size
    samples = _shifts(x)
    K = np.array([[_kappa(a, b, kernel, n) for b in samples] for a in samples])
    alpha = np.linalg.solve(K + lam * np.eye(len(samples)), y.ravel())
    _, alphaf = train_filter(x, _rfft2(y[:, :, None])[:, :, 0], kernel, lam, **KW)
    alpha_fft = np.fft.irfft2(alphaf, s=shape[:2])
    np.testing.assert_allclose(alpha_fft.ravel(), alpha, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kernel", ["gaussian", "polynomial", "linear"])
def test_fourier_detection_equals_brute_force_scores_of_all_shifts(kernel):
    rng = np.random.default_rng(1)
    shape = (6, 5, 2)
    x, z = rng.normal(size=shape), rng.normal(size=shape)
    y = rng.normal(size=shape[:2])
    lam, n = 0.1, x.size
    samples = _shifts(x)
    K = np.array([[_kappa(a, b, kernel, n) for b in samples] for a in samples])
    alpha = np.linalg.solve(K + lam * np.eye(n // shape[2]), y.ravel())
    # score of z shifted back by d (z[m + d]) under the regression f(v) = sum_i alpha_i kappa(P^i x, v)
    h, w = shape[:2]
    brute = np.array([[sum(a * _kappa(s, np.roll(z, (-dy, -dx), axis=(0, 1)), kernel, n)
                           for a, s in zip(alpha, samples)) for dx in range(w)] for dy in range(h)])
    xf, alphaf = train_filter(x, _rfft2(y[:, :, None])[:, :, 0], kernel, lam, **KW)
    resp = detect(xf, alphaf, float(np.sum(x * x)), z, kernel, **KW)
    np.testing.assert_allclose(resp, brute, rtol=1e-9, atol=1e-11)


def test_kernel_correlation_matches_direct_kernel_values():
    rng = np.random.default_rng(2)
    x, z = rng.normal(size=(4, 5, 3)), rng.normal(size=(4, 5, 3))
    for kernel in ("gaussian", "polynomial", "linear"):
        kf = kernel_correlation(_rfft2(x), _rfft2(z), x.shape, kernel, xx=float(np.sum(x * x)),
                                zz=float(np.sum(z * z)), **KW)
        k = np.fft.irfft2(kf, s=(4, 5))
        direct = np.array([[_kappa(x, np.roll(z, (-a, -b), axis=(0, 1)), kernel, x.size) for b in range(5)]
                           for a in range(4)])
        np.testing.assert_allclose(k, direct, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="kernel_correlation: kernel"):
        kernel_correlation(_rfft2(x), _rfft2(z), x.shape, "rbf")


def test_labels_symmetric_with_peak_at_origin():
    y = gaussian_labels((6, 7), 1.3)
    assert y[0, 0] == 1.0 and y.max() == 1.0
    np.testing.assert_allclose(y, np.roll(y[::-1, ::-1], (1, 1), axis=(0, 1)))  # y[-d] == y[d]


def test_subpixel_peak_recovers_an_off_grid_maximum():
    h, w = 16, 12
    for ty, tx in [(0.3, -0.4), (-2.25, 3.1), (5.45, -4.8)]:
        dy = np.fft.fftfreq(h, 1 / h)[:, None] - ty
        dx = np.fft.fftfreq(w, 1 / w)[None, :] - tx
        resp = 1.0 - 0.05 * (dy ** 2 + dx ** 2)  # a parabola: the refinement is exact near its top
        fy, fx, peak = subpixel_peak(resp)
        assert abs(fy - ty) < 1e-9 and abs(fx - tx) < 1e-9, (fy, fx, ty, tx)


def _photo(seed: int = 0, size: tuple[int, int] = (400, 520)) -> np.ndarray:
    """A textured colour image: smoothed noise (no data needed)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random((*size, 3)), sigma=(2.5, 2.5, 0)) * 255
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def _pan_sequence(n: int = 30):
    img = _photo()
    frames, boxes = [], []
    for t in range(n):
        ox, oy = 60 + 2 * t, 40 + int(round(6 * np.sin(t / 4)))
        frames.append(np.ascontiguousarray(img[oy:oy + 240, ox:ox + 320]))
        boxes.append((200 - ox, 150 - oy, 48, 40))
    return frames, boxes


@pytest.mark.parametrize("features,kernel", [("hog", "gaussian"), ("hog", "linear"), ("gray", "gaussian"),
                                             ("gray", "polynomial")])
def test_tracker_follows_a_camera_pan(features, kernel):
    frames, boxes = _pan_sequence()
    tr = KCF(features, kernel)
    assert tr.init(frames[0], boxes[0])
    for f, g in zip(frames[1:], boxes[1:]):
        ok, b = tr.update(f)
        assert ok
        err = np.hypot(b[0] + b[2] / 2 - g[0] - g[2] / 2, b[1] + b[3] / 2 - g[1] - g[3] / 2)
        assert err < 2.0, (features, kernel, err)


def test_scale_search_follows_a_zoom():
    from handgrad.tracking._image import subwindow

    img = _photo(3)
    frames, sizes = [], []
    for t in range(40):  # zoom in: the photo's 200x150 centre grows by 1% per frame
        z = 1.01 ** t
        frames.append(np.clip(subwindow(img, (260, 200), (320 / z, 240 / z), (320, 240)), 0, 255).astype(np.uint8))
        sizes.append(60 * z)
    tr = KCF("hog")
    tr.init(frames[0], (160 - 30, 120 - 30, 60, 60))
    for f in frames[1:]:
        ok, b = tr.update(f)
    assert abs(b[2] / sizes[-1] - 1) < 0.08, (b, sizes[-1])
    assert abs(b[0] + b[2] / 2 - 160) < 3 and abs(b[1] + b[3] / 2 - 120) < 3
    fixed = KCF("hog", num_scales=1)
    fixed.init(frames[0], (130, 90, 60, 60))
    for f in frames[1:]:
        fixed.update(f)
    assert fixed.box[2] == 60  # without the search the size cannot change: the test above measures it


def test_bad_inputs_are_named():
    frame = np.zeros((50, 60, 3), np.uint8)
    tr = KCF()
    with pytest.raises(ValueError, match=r"KCF.init: the box .* lies outside the 60x50 frame"):
        tr.init(frame, (70, 10, 5, 5))
    with pytest.raises(ValueError, match="KCF.init: the box needs"):
        tr.init(frame, (1, 1, 0, 5))
    with pytest.raises(ValueError, match="uint8"):
        tr.init(frame.astype(np.float32), (1, 1, 5, 5))
    with pytest.raises(ValueError, match="H x W x 3"):
        tr.init(np.zeros((5, 5, 4), np.uint8), (1, 1, 2, 2))
    with pytest.raises(RuntimeError, match="init"):
        KCF().update(frame)
    with pytest.raises(ValueError, match="features"):
        KCF("sift")
