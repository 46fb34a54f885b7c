"""COCO RLE against pycocotools (a test extra), mask IoU and pasting against brute force."""

import numpy as np
import pytest

from handgrad.vision.mask import (
    decode_rle,
    encode_rle,
    mask_iou,
    mask_to_box,
    paste_mask_in_image,
    rle_area,
    rle_from_string,
    rle_to_string,
)


def random_masks(rng, n):
    out = []
    for t in range(n):
        h, w = rng.integers(1, 40, 2)
        m = rng.random((h, w)) < rng.random()
        if t % 5 == 0:
            m[:] = False
        if t % 7 == 0:
            m[:] = True
        out.append(m)
    return out


def test_rle_roundtrip_and_known_counts():
    m = np.array([[0, 1], [1, 1], [0, 0]], bool)  # column-major: 0 1 0 | 1 1 0 -> runs 1,1,1,2,1
    assert encode_rle(m, compressed=False)["counts"] == [1, 1, 1, 2, 1]
    starts_one = np.ones((2, 2), bool)
    assert encode_rle(starts_one, compressed=False)["counts"] == [0, 4]
    for m in random_masks(np.random.default_rng(0), 100):
        r = encode_rle(m)
        np.testing.assert_array_equal(decode_rle(r), m)
        np.testing.assert_array_equal(decode_rle(encode_rle(m, False)), m)
        assert rle_area(r) == m.sum()
    counts = [5, 1000, 3, 70000, 2, 1, 0, 40]
    assert rle_from_string(rle_to_string(counts)) == counts


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_rle_matches_pycocotools():
    mu = pytest.importorskip("pycocotools.mask")
    for m in random_masks(np.random.default_rng(1), 100):
        ref = mu.encode(np.asfortranarray(m.astype(np.uint8)))
        r = encode_rle(m)
        assert r["counts"] == ref["counts"].decode()
        assert r["size"] == list(ref["size"])
        np.testing.assert_array_equal(mu.decode({"size": r["size"], "counts": r["counts"].encode()}), m)


def test_rle_bad_input():
    with pytest.raises(ValueError, match="expected h\\*w = 4"):
        decode_rle({"size": [2, 2], "counts": [1, 1]})
    with pytest.raises(ValueError, match="2-D"):
        encode_rle(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="truncated"):
        rle_from_string("0" + chr(48 + 0x20))


def test_mask_to_box_and_iou():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    np.testing.assert_array_equal(mask_to_box(m), [3, 2, 9, 5])
    np.testing.assert_array_equal(mask_to_box(np.zeros((4, 4), bool)), [0, 0, 0, 0])
    rng = np.random.default_rng(2)
    a, b = rng.random((5, 8, 9)) < 0.4, rng.random((3, 8, 9)) < 0.6
    b[0] = False
    want = np.array([[(x & y).sum() / (x | y).sum() if (x | y).any() else 0.0 for y in b] for x in a])
    np.testing.assert_allclose(mask_iou(a, b), want)


def test_paste_mask():
    out = paste_mask_in_image(np.ones((14, 14)), np.array([-3, 2, 5, 6.0]), 8, 8)
    want = np.zeros((8, 8), bool)
    want[2:6, 0:5] = True
    np.testing.assert_array_equal(out, want)


def test_paste_mask_is_aligned_with_the_roi_align_targets():
    """A fractional box: the mask's cells are centred where roi_align(aligned=True) sampled them (the left
    half of a 4-cell mask in [2.2, 10.2) covers the pixels whose centres lie left of 6.2 and within half a
    cell of the box), and a ground-truth mask survives mask_targets (28x28) + paste almost unchanged."""
    from handgrad.vision.models.mask_rcnn import mask_targets

    m = np.zeros((4, 4))
    m[:, :2] = 1.0
    out = paste_mask_in_image(m, np.array([2.2, 0.0, 10.2, 4.0]), 4, 14)
    want = np.zeros((4, 14), bool)
    want[:, 2:6] = True
    np.testing.assert_array_equal(out, want)
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    gt = ((xx - 30.3) / 17.1) ** 2 + ((yy - 33.6) / 9.4) ** 2 <= 1.0
    box = np.array([13.2, 24.2, 47.4, 43.0])
    t = mask_targets(gt[None], box[None], np.array([0]), 28)[0]
    back = paste_mask_in_image(t, box, 64, 64)
    assert (back & gt).sum() / (back | gt).sum() > 0.95
    with pytest.raises(ValueError, match=r"paste_mask_in_image: mask must be \(m, m\)"):
        paste_mask_in_image(np.ones(4), box, 8, 8)
