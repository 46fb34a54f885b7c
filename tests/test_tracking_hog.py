"""Felzenszwalb HOG (``handgrad.vision.hog``) against a direct, line-by-line transcription of the authors'
``features.cc`` in plain Python, and against scikit-image's ``hog`` where the two variants agree."""

from __future__ import annotations

import math

import numpy as np
import pytest

from handgrad.vision.hog import hog_felzenszwalb


def _direct_hog(img: np.ndarray, sbin: int, pad: bool) -> np.ndarray:
    """features.cc, with index arithmetic instead of pointers (x = column, y = row)."""
    img = img.astype(np.float64)
    if img.ndim == 2:
        img = img[:, :, None]
    H, W, C = img.shape
    blocks = (math.floor(H / sbin + 0.5), math.floor(W / sbin + 0.5))  # C's round(): halves away from 0
    hist = np.zeros((blocks[0], blocks[1], 18))
    uu = [math.cos(o * 20 * math.pi / 180) for o in range(9)]
    vv = [math.sin(o * 20 * math.pi / 180) for o in range(9)]
    for x in range(1, blocks[1] * sbin - 1):
        for y in range(1, blocks[0] * sbin - 1):
            sx, sy = min(x, W - 2), min(y, H - 2)
            best = None
            for c in range(C):
                dy = img[sy + 1, sx, c] - img[sy - 1, sx, c]
                dx = img[sy, sx + 1, c] - img[sy, sx - 1, c]
                v = dx * dx + dy * dy
                if best is None or v > best[0]:
                    best = (v, dx, dy)
            v, dx, dy = best
            best_dot, best_o = 0.0, 0
            for o in range(9):
                dot = uu[o] * dx + vv[o] * dy
                if dot > best_dot:
                    best_dot, best_o = dot, o
                elif -dot > best_dot:
                    best_dot, best_o = -dot, o + 9
            xp, yp = (x + 0.5) / sbin - 0.5, (y + 0.5) / sbin - 0.5
            ixp, iyp = math.floor(xp), math.floor(yp)
            vx0, vy0 = xp - ixp, yp - iyp
            v = math.sqrt(v)
            for cx, wx in ((ixp, 1 - vx0), (ixp + 1, vx0)):
                for cy, wy in ((iyp, 1 - vy0), (iyp + 1, vy0)):
                    if 0 <= cx < blocks[1] and 0 <= cy < blocks[0]:
                        hist[cy, cx, best_o] += wx * wy * v
    if pad:
        hist = np.pad(hist, ((1, 1), (1, 1), (0, 0)), mode="edge")
    bh, bw = hist.shape[:2]
    norm = np.array([[sum((hist[i, j, o] + hist[i, j, o + 9]) ** 2 for o in range(9)) for j in range(bw)]
                     for i in range(bh)])
    out = np.zeros((max(bh - 2, 0), max(bw - 2, 0), 31))
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            cy, cx = y + 1, x + 1
            ns = []
            for oy, ox in ((0, 0), (-1, 0), (0, -1), (-1, -1)):  # blocks with the cell at each corner
                e = norm[cy + oy:cy + oy + 2, cx + ox:cx + ox + 2].sum()
                ns.append(1 / math.sqrt(e + 1e-4))
            t = [0.0] * 4
            for o in range(18):
                hs = [min(hist[cy, cx, o] * n, 0.2) for n in ns]
                out[y, x, o] = 0.5 * sum(hs)
                t = [a + b for a, b in zip(t, hs)]
            for o in range(9):
                s = hist[cy, cx, o] + hist[cy, cx, o + 9]
                out[y, x, 18 + o] = 0.5 * sum(min(s * n, 0.2) for n in ns)
            out[y, x, 27:] = [0.2357 * v for v in t]
    return out


@pytest.mark.parametrize("shape,sbin", [((22, 27, 3), 4), ((17, 14), 3), ((24, 24, 3), 8), ((13, 21, 1), 2)])
@pytest.mark.parametrize("pad", [False, True])
def test_hog_matches_direct_transcription(shape, sbin, pad):
    rng = np.random.default_rng(sum(shape) + sbin)
    img = rng.integers(0, 256, size=shape).astype(np.uint8)
    got = hog_felzenszwalb(img, sbin, pad=pad)
    want = _direct_hog(img, sbin, pad)
    assert got.shape == want.shape and got.shape[-1] == 31
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_hog_shapes_and_invariances():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, size=(40, 48, 3)).astype(np.float64)
    f = hog_felzenszwalb(img, 4)
    assert f.shape == (10, 12, 31) and hog_felzenszwalb(img, 4, pad=False).shape == (8, 10, 31)
    # block normalisation: a global contrast change leaves the features (almost: the 1e-4 epsilon) unchanged
    np.testing.assert_allclose(hog_felzenszwalb(img * 3.0, 4), f, atol=2e-4)
    # a flat image has no gradients
    assert np.all(hog_felzenszwalb(np.full((20, 20), 7.0), 4) == 0)
    # grey input equals the same grey in three channels (the strongest channel is any of them)
    g = img[:, :, 0]
    np.testing.assert_allclose(hog_felzenszwalb(g, 4), hog_felzenszwalb(np.repeat(g[:, :, None], 3, 2), 4))
    with pytest.raises(ValueError, match="hog_felzenszwalb: the image must be at least 3x3"):
        hog_felzenszwalb(np.zeros((2, 9)), 4)
    with pytest.raises(ValueError, match="cell_size"):
        hog_felzenszwalb(img, 0)


@pytest.mark.parametrize("k", range(9))
def test_orientation_binning_agrees_with_scikit_image(k):
    """Where the variants agree: for a ramp of gradient direction 20k + 5 degrees, Felzenszwalb's nearest
    of 9 unsigned centres (20k) and scikit-image's 20-degree range bin [20k, 20k + 20) are both bin k, and
    both measure the magnitude as the plain central difference. scikit-image's 1x1-cell L1 normalised
    histograms then equal our 9 unsigned raw histograms normalised the same way (interior cells only:
    ours are bilinearly spread, which a constant gradient field does not change away from the border)."""
    skimage_feature = pytest.importorskip("skimage.feature")
    from handgrad.vision import hog as hogmod

    theta = math.radians(20 * k + 5)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
    img = 3.0 * (np.cos(theta) * xx + np.sin(theta) * yy)
    sk = skimage_feature.hog(img, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(1, 1),
                             block_norm="L1", feature_vector=False)[:, :, 0, 0, :]
    raw = hogmod._histograms(img[:, :, None], 8)
    unsigned = (raw[:, :, :9] + raw[:, :, 9:]) / 64  # scikit-image averages over the cell's pixels
    ours = unsigned / (unsigned.sum(-1, keepdims=True) + 1e-5)  # and its L1 norm adds 1e-5
    np.testing.assert_allclose(ours[1:-1, 1:-1], sk[1:-1, 1:-1], rtol=1e-9, atol=1e-12)
    assert np.argmax(ours[1, 1]) == k
    # the magnitude: the same central difference 2 * 3 * |grad| per pixel in both
    assert np.isclose(raw[1, 1].sum() / 64, 6.0, rtol=1e-9)
