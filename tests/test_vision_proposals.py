"""Felzenszwalb segmentation against scikit-image (a test extra) and selective search's proposals."""

import numpy as np
import pytest

from handgrad.vision.ops import box_iou
from handgrad.vision.proposals import selective_search
from handgrad.vision.proposals.selective_search import color_space
from handgrad.vision.segmentation import felzenszwalb


def _image(seed=0, h=48, w=64):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 60, 3)
    for _ in range(5):  # rectangles of random colour: clear segments
        x, y = rng.integers(0, w - 8), rng.integers(0, h - 8)
        img[y:y + rng.integers(6, 20), x:x + rng.integers(6, 24)] = rng.integers(60, 255, 3)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("scale,sigma,min_size", [(1, 0.8, 20), (100, 0.8, 50), (300, 0.5, 10), (50, 0.0, 5)])
def test_felzenszwalb_equals_skimage(scale, sigma, min_size):
    ski = pytest.importorskip("skimage.segmentation")
    for img in (_image(0), _image(1, 33, 27)):
        ours = felzenszwalb(img, scale, sigma, min_size)
        ref = ski.felzenszwalb(img, scale=scale, sigma=sigma, min_size=min_size)
        np.testing.assert_array_equal(ours, ref)
    if sigma == 0:
        return  # unsmoothed grey levels tie in thousands of edges; the unsorted tie order is not comparable
    grey = _image(2)[..., 0]
    np.testing.assert_array_equal(felzenszwalb(grey, scale, sigma, min_size),
                                  ski.felzenszwalb(grey, scale=scale, sigma=sigma, min_size=min_size,
                                                   channel_axis=None))


def test_felzenszwalb_segments_rectangles_and_errors():
    img = np.zeros((20, 30, 3), np.uint8)
    img[5:15, 10:25] = 200
    lab = felzenszwalb(img, 100, 0.5, 5)
    # the interior is one segment, the background another (blurred edge pixels may form thin segments)
    assert len(np.unique(lab[7:13, 12:23])) == 1 and lab[0, 0] != lab[10, 15] and lab.max() <= 4
    with pytest.raises(ValueError, match="felzenszwalb: expected an"):
        felzenszwalb(np.zeros((2, 2, 2, 2)))


def test_selective_search_finds_the_rectangles():
    img = np.full((64, 64, 3), 30, np.uint8)
    truth = np.array([[5, 8, 25, 30], [34, 30, 60, 58], [40, 4, 52, 16.0]])
    for (x1, y1, x2, y2), c in zip(truth.astype(int), ([220, 40, 40], [40, 200, 60], [50, 60, 230])):
        img[y1:y2, x1:x2] = c
    boxes = selective_search(img, "single")
    assert boxes.shape[1] == 4 and (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 64 and boxes[:, 3].max() <= 64
    assert len(np.unique(boxes, axis=0)) == len(boxes)  # no duplicates
    assert (box_iou(truth, boxes).max(1) > 0.99).all()  # each rectangle is exactly a proposal
    fast = selective_search(img, "fast", max_proposals=50)
    assert len(fast) <= 50 and (box_iou(truth, fast).max(1) > 0.9).all()
    np.testing.assert_array_equal(selective_search(img, "single", seed=3), selective_search(img, "single", seed=3))
    with pytest.raises(ValueError, match="mode must be one of"):
        selective_search(img, "slow")
    with pytest.raises(ValueError, match="RGB uint8"):
        selective_search(img.astype(float))


def test_color_spaces():
    img = _image(3)
    for name, c in (("hsv", 3), ("lab", 3), ("rgI", 3), ("H", 1), ("I", 1), ("rgb", 3)):
        out = color_space(img, name)
        assert out.shape == img.shape[:2] + (c,) and out.dtype == np.uint8
    white = color_space(np.full((1, 1, 3), 255, np.uint8), "lab")[0, 0]
    np.testing.assert_allclose(white, [255, 128, 128], atol=1)  # L = 100, a = b = 0
