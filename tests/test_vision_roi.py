"""roi_align and roi_pool: float64 gradcheck, and forward/backward against a naive per-RoI loop in PyTorch
ops (torchvision's CPU kernels transcribed sample by sample; autograd of the loop is the oracle)."""

import math

import numpy as np
import pytest
import torch

from handgrad import Tensor, gradcheck
from handgrad.vision.ops import RoIAlign, RoIPool, roi_align, roi_pool


# -- reference loops in PyTorch ops -----------------------------------------------------------------------
def _bilinear_ref(f, y, x):
    """torchvision's bilinear_interpolate on f (C, H, W) at one point: a (C,) tensor."""
    C, H, W = f.shape
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return f.new_zeros(C)
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= H - 1:
        yh = yl = H - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= W - 1:
        xh = xl = W - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * f[:, yl, xl] + hy * lx * f[:, yl, xh] + ly * hx * f[:, yh, xl] + ly * lx * f[:, yh, xh]


def roi_align_ref(x, rois, out, scale, sr, aligned):
    PH, PW = out
    res = []
    for r in rois.tolist():
        b = int(r[0])
        off = 0.5 if aligned else 0.0
        sw, sh = r[1] * scale - off, r[2] * scale - off
        rw, rh = r[3] * scale - off - sw, r[4] * scale - off - sh
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / PH, rw / PW
        gh = sr if sr > 0 else math.ceil(rh / PH)
        gw = sr if sr > 0 else math.ceil(rw / PW)
        count = max(gh * gw, 1)
        bins = []
        for ph in range(PH):
            row = []
            for pw in range(PW):
                acc = x.new_zeros(x.shape[1])
                for iy in range(gh):
                    yy = sh + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        xx = sw + pw * bw + (ix + 0.5) * bw / gw
                        acc = acc + _bilinear_ref(x[b], yy, xx)
                row.append(acc / count)
            bins.append(torch.stack(row, -1))
        res.append(torch.stack(bins, -2))
    return torch.stack(res)


def _cround(v):
    return math.copysign(math.floor(abs(v) + 0.5), v)


def roi_pool_ref(x, rois, out, scale):
    PH, PW = out
    H, W = x.shape[2:]
    res = []
    for r in rois.tolist():
        b = int(r[0])
        sx, sy, ex, ey = (int(_cround(v * scale)) for v in r[1:])
        rw, rh = max(ex - sx + 1, 1), max(ey - sy + 1, 1)
        bh, bw = rh / PH, rw / PW
        bins = []
        for ph in range(PH):
            row = []
            for pw in range(PW):
                hs = min(max(math.floor(ph * bh) + sy, 0), H)
                he = min(max(math.ceil((ph + 1) * bh) + sy, 0), H)
                ws = min(max(math.floor(pw * bw) + sx, 0), W)
                we = min(max(math.ceil((pw + 1) * bw) + sx, 0), W)
                if he <= hs or we <= ws:
                    row.append(x.new_zeros(x.shape[1]))
                else:
                    row.append(x[b, :, hs:he, ws:we].amax(dim=(1, 2)))
            bins.append(torch.stack(row, -1))
        res.append(torch.stack(bins, -2))
    return torch.stack(res)


# -- cases --------------------------------------------------------------------------------------------------
def _rois():
    """Many per image, partly outside, empty (x1 == x2), tiny, large, half-integer corners."""
    return np.array([
        [0, 1.0, 1.0, 6.0, 7.0],
        [0, 2.5, 0.5, 9.5, 4.5],
        [1, -3.0, -2.0, 5.0, 6.0],  # partly outside (top-left)
        [1, 8.0, 6.0, 20.0, 15.0],  # partly outside (bottom-right)
        [0, 4.0, 4.0, 4.0, 4.0],  # empty
        [1, 0.2, 0.3, 1.1, 0.9],  # smaller than a pixel
        [0, 0.0, 0.0, 11.0, 9.0],  # the whole image
        [1, 30.0, 30.0, 40.0, 40.0],  # entirely outside
    ])


def _compare(hg_fn, ref_fn, x_np, rois, out_size, **kw):
    x = Tensor(x_np, requires_grad=True)
    y = hg_fn(x, rois, out_size, **kw)
    xt = torch.tensor(x_np, requires_grad=True)
    yt = ref_fn(xt, torch.tensor(rois), out_size, *kw.values())
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(9).standard_normal(y.shape)
    (y * Tensor(g)).sum().backward()
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale,sr,aligned,out", [
    (1.0, -1, False, (3, 2)), (1.0, 2, True, (2, 2)), (0.5, -1, True, (2, 3)), (0.5, 1, False, (1, 1)),
    (1.0, -1, True, (4, 4)),
])
def test_roi_align_matches_torch_loop(scale, sr, aligned, out):
    x = np.random.default_rng(0).standard_normal((2, 3, 10, 12))
    kw = dict(spatial_scale=scale, sampling_ratio=sr, aligned=aligned)
    _compare(lambda x, r, o, **k: roi_align(x, r, o, **k), roi_align_ref, x, _rois(), out, **kw)


@pytest.mark.parametrize("scale,out", [(1.0, (3, 2)), (0.5, (2, 2)), (0.25, (1, 1)), (1.0, (4, 5))])
def test_roi_pool_matches_torch_loop(scale, out):
    x = np.random.default_rng(1).standard_normal((2, 3, 10, 12))
    _compare(lambda x, r, o, **k: roi_pool(x, r, o, **k), roi_pool_ref, x, _rois(), out, spatial_scale=scale)


def test_gradchecks_float64():
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((2, 2, 6, 7)), requires_grad=True)
    rois = np.array([[0, 0.5, 1.0, 5.0, 4.5], [1, -1.0, 2.0, 4.0, 9.0], [1, 1.2, 1.3, 1.2, 3.0]])
    gradcheck(lambda t: roi_align(t, rois, (2, 2), 1.0, 2, True), (x,))
    gradcheck(lambda t: roi_align(t, rois, 3, 0.5, -1, False), (x,))
    gradcheck(lambda t: roi_pool(t, rois, (2, 3), 1.0), (x,))


def test_box_list_form_one_roi_and_modules():
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((2, 4, 8, 8)))
    a = np.array([[1.0, 1.0, 5.0, 6.0]])
    b = np.array([[0.0, 0.0, 7.0, 7.0], [2.0, 3.0, 4.0, 4.0]])
    as5 = np.array([[0, 1.0, 1.0, 5.0, 6.0], [1, 0, 0, 7, 7], [1, 2, 3, 4, 4]])
    for fn in (lambda r: roi_align(x, r, 2, 1.0, 2, True), lambda r: roi_pool(x, r, 2)):
        np.testing.assert_array_equal(fn([a, b]).numpy(), fn(as5).numpy())
        np.testing.assert_array_equal(fn([Tensor(a), Tensor(b)]).numpy(), fn(Tensor(as5)).numpy())
        assert fn(as5[:1]).shape == (1, 4, 2, 2)
        assert fn(np.zeros((0, 5))).shape == (0, 4, 2, 2)
    np.testing.assert_array_equal(RoIAlign(2, 1.0, 2, True)(x, as5).numpy(), roi_align(x, as5, 2, 1.0, 2, True).numpy())
    np.testing.assert_array_equal(RoIPool((2, 2), 1.0)(x, as5).numpy(), roi_pool(x, as5, 2).numpy())


def test_many_rois_float32_and_overlapping_argmax():
    rng = np.random.default_rng(4)
    x_np = rng.standard_normal((1, 8, 16, 16)).astype(np.float32)
    xy = rng.uniform(-4, 14, (200, 2))
    rois = np.concatenate([np.zeros((200, 1)), xy, xy + rng.uniform(1, 10, (200, 2))], 1)
    x = Tensor(x_np, requires_grad=True)
    y = roi_pool(x, rois, (2, 2))
    assert y.dtype == np.float32
    y.sum().backward()
    xt = torch.tensor(x_np, dtype=torch.float64, requires_grad=True)
    yt = roi_pool_ref(xt, torch.tensor(rois), (2, 2), 1.0)
    yt.sum().backward()
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-5)  # many bins share an argmax
    x.grad = None
    ya = roi_align(x, rois, (2, 2), 1.0, 2, True)
    assert ya.dtype == np.float32 and np.isfinite(ya.numpy()).all()


def test_bad_input():
    x = Tensor(np.zeros((1, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"roi_align: boxes must be a \(K, 5\)"):
        roi_align(x, np.zeros((3, 4)), 2)
    with pytest.raises(ValueError, match=r"roi_pool: boxes\[1\] must have shape \(K_i, 4\)"):
        roi_pool(x, [np.zeros((1, 4)), np.zeros((2, 3))], 2)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(x, np.array([[1, 0, 0, 2, 2.0]]), 2)
    with pytest.raises(ValueError, match="NaN"):
        roi_pool(x, np.array([[0, np.nan, 0, 2, 2.0]]), 2)
    with pytest.raises(ValueError, match=r"input must be \(N, C, H, W\)"):
        roi_align(Tensor(np.zeros((2, 4, 4))), np.zeros((0, 5)), 2)
    with pytest.raises(ValueError, match="output_size must be positive"):
        roi_pool(x, np.zeros((0, 5)), 0)
