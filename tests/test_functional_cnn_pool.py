"""max/avg/adaptive pooling and interpolate vs torch.nn.functional (float64, forward and input gradient)
and finite differences; every error path."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from _cnn_helpers import arrays, compare_torch, gradcheck

import handgrad as hg
import handgrad.functional as F

MAX_CASES = [
    dict(kernel_size=2),  # the non-overlapping fast case
    dict(kernel_size=3, stride=2, padding=1),  # overlapping windows with padding
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), ceil_mode=True),
    dict(kernel_size=3, stride=2, ceil_mode=True),  # ceil mode adds a partial last window
    dict(kernel_size=2, stride=3),  # gaps between windows
    dict(kernel_size=(2, 3), stride=1, dilation=2),
    dict(kernel_size=(3, 2), stride=(3, 2), dilation=(1, 3)),  # kernel == stride but dilated: no block path
]


@pytest.mark.parametrize("kw", MAX_CASES)
def test_max_pool2d_matches_torch(kw):
    compare_torch(lambda x: F.max_pool2d(x, **kw), lambda x: TF.max_pool2d(x, **kw), arrays(0, (2, 3, 9, 8)))


@pytest.mark.parametrize("kw", [MAX_CASES[1], MAX_CASES[2]])
def test_max_pool2d_gradcheck(kw):
    gradcheck(lambda x: F.max_pool2d(x, **kw), arrays(1, (1, 2, 7, 6)))


def test_max_pool2d_ties_follow_torch_first_max_rule():
    """After a ReLU whole windows are 0: the gradient goes to the first one in scan order, like torch."""
    x = np.array([[[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 1.0], [2.0, 2.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0]]]])
    for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1)):
        compare_torch(lambda x, kw=kw: F.max_pool2d(x, **kw), lambda x, kw=kw: TF.max_pool2d(x, **kw), [x])


def test_max_pool2d_return_indices_and_unbatched():
    x = arrays(2, (2, 3, 9, 8))[0]
    for kw in MAX_CASES:
        y, ind = F.max_pool2d(hg.tensor(x), return_indices=True, **kw)
        ry, rind = TF.max_pool2d(torch.tensor(x), return_indices=True, **kw)
        np.testing.assert_array_equal(ind.numpy(), rind.numpy())
        assert ind.dtype == np.int64
        np.testing.assert_allclose(y.numpy(), ry.numpy(), rtol=0, atol=0)
    compare_torch(lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), arrays(3, (3, 6, 6)))


def test_max_pool2d_after_conv_channels_last():
    def ours(x, w):
        return F.max_pool2d(hg.relu(F.conv2d(x, w)), 2, ceil_mode=True)

    def theirs(x, w):
        return TF.max_pool2d(torch.relu(TF.conv2d(x, w)), 2, ceil_mode=True)

    compare_torch(ours, theirs, arrays(4, (2, 3, 9, 8), (4, 3, 3, 3)))

    # kernel == stride tiles the conv output exactly: the block backward on channels-last memory, with the
    # ReLU zeros making tied windows
    def ours2(x, w):
        return F.max_pool2d(hg.relu(F.conv2d(x, w)), (2, 3))

    def theirs2(x, w):
        return TF.max_pool2d(torch.relu(TF.conv2d(x, w)), (2, 3))

    compare_torch(ours2, theirs2, arrays(5, (2, 3, 10, 11), (4, 3, 3, 3)))


def test_max_pool2d_propagates_nan():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y = F.max_pool2d(hg.tensor(x, requires_grad=True), 2)
    assert np.isnan(y.numpy()[0, 0, 0, 0]) and y.numpy()[0, 0, 1, 1] == 15.0


AVG_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), divisor_override=5),
    dict(kernel_size=(2, 4), stride=1),
]


@pytest.mark.parametrize("kw", AVG_CASES)
def test_avg_pool2d_matches_torch(kw):
    compare_torch(lambda x: F.avg_pool2d(x, **kw), lambda x: TF.avg_pool2d(x, **kw), arrays(5, (2, 3, 9, 8)))


@pytest.mark.parametrize("kw", [AVG_CASES[4], AVG_CASES[6]])
def test_avg_pool2d_gradcheck(kw):
    gradcheck(lambda x: F.avg_pool2d(x, **kw), arrays(6, (1, 2, 7, 6)))


@pytest.mark.parametrize("out", [(3, 3), (4, 5), 1, (None, 3), (9, 8), (6, 7)])
def test_adaptive_pools_match_torch(out):
    arrs = arrays(7, (2, 3, 9, 8))
    compare_torch(lambda x: F.adaptive_avg_pool2d(x, out), lambda x: TF.adaptive_avg_pool2d(x, out), arrs)
    compare_torch(lambda x: F.adaptive_max_pool2d(x, out), lambda x: TF.adaptive_max_pool2d(x, out), arrs)
    _, ind = F.adaptive_max_pool2d(hg.tensor(arrs[0]), out, return_indices=True)
    _, rind = TF.adaptive_max_pool2d(torch.tensor(arrs[0]), out, return_indices=True)
    np.testing.assert_array_equal(ind.numpy(), rind.numpy())


def test_adaptive_pools_gradcheck_and_unbatched():
    gradcheck(lambda x: F.adaptive_avg_pool2d(x, (3, 4)), arrays(8, (1, 2, 5, 7)))
    gradcheck(lambda x: F.adaptive_max_pool2d(x, (3, 4)), arrays(9, (1, 2, 5, 7)))
    compare_torch(lambda x: F.adaptive_avg_pool2d(x, 2), lambda x: TF.adaptive_avg_pool2d(x, 2), arrays(10, (3, 5, 5)))


def test_pool_errors():
    x = hg.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"max_pool2d: pad should be at most half of effective kernel size.*"
                                         r"padding \(2, 2\), kernel_size \(3, 3\)"):
        F.max_pool2d(x, 3, padding=2)
    with pytest.raises(ValueError, match=r"avg_pool2d: pad should be at most half"):
        F.avg_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"max_pool2d: input of shape \(2, 3, 2, 2\) is too small: output size"):
        F.max_pool2d(hg.randn(2, 3, 2, 2), 3)
    with pytest.raises(ValueError, match=r"max_pool2d: expected 3-D .* got input of shape \(8, 8\)"):
        F.max_pool2d(hg.randn(8, 8), 2)
    with pytest.raises(ValueError, match="max_pool2d: kernel_size .* must be positive"):
        F.max_pool2d(x, 0)
    with pytest.raises(ValueError, match="max_pool2d: padding must be non-negative"):
        F.max_pool2d(x, 2, padding=-1)
    with pytest.raises(TypeError, match="avg_pool2d: kernel_size must be an int or a pair"):
        F.avg_pool2d(x, (2, 2, 2))
    with pytest.raises(ValueError, match="avg_pool2d: divisor_override must be a non-zero int"):
        F.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(TypeError, match="avg_pool2d: expected a floating input"):
        F.avg_pool2d(hg.tensor(np.zeros((1, 1, 4, 4), np.int64)), 2)
    with pytest.raises(ValueError, match="adaptive_avg_pool2d: output_size must be positive"):
        F.adaptive_avg_pool2d(x, (0, 2))
    with pytest.raises(TypeError, match="adaptive_max_pool2d: output_size must be an int or a pair"):
        F.adaptive_max_pool2d(x, (1, 2, 3))


# -- interpolate ---------------------------------------------------------------------------------------------
INTERP_CASES = [
    dict(size=(7, 9), mode="nearest"),
    dict(scale_factor=2, mode="nearest"),
    dict(scale_factor=(1.7, 0.6), mode="nearest"),
    dict(size=(3, 4), mode="nearest-exact"),
    dict(scale_factor=2.5, mode="nearest-exact"),
    dict(size=(7, 9), mode="bilinear", align_corners=True),
    dict(size=(7, 9), mode="bilinear", align_corners=False),
    dict(size=(3, 2), mode="bilinear", align_corners=True),
    dict(size=(3, 2), mode="bilinear", align_corners=False),
    dict(size=(1, 3), mode="bilinear", align_corners=True),
    dict(scale_factor=1.7, mode="bilinear"),
    dict(scale_factor=(0.5, 3), mode="bilinear", align_corners=False),
    dict(scale_factor=1.7, mode="bilinear", recompute_scale_factor=True),
    dict(size=(3, 4), mode="area"),
]


@pytest.mark.parametrize("kw", INTERP_CASES)
def test_interpolate_matches_torch(kw):
    compare_torch(lambda x: F.interpolate(x, **kw), lambda x: TF.interpolate(x, **kw), arrays(11, (2, 3, 5, 6)))


@pytest.mark.parametrize("kw", [INTERP_CASES[2], INTERP_CASES[5], INTERP_CASES[11]])
def test_interpolate_gradcheck(kw):
    gradcheck(lambda x: F.interpolate(x, **kw), arrays(12, (1, 2, 4, 5)))


def test_interpolate_float32_matches_torch_positions():
    """Source positions are computed in float32 for float32 input, as in PyTorch."""
    x = arrays(13, (1, 2, 11, 13))[0].astype(np.float32)
    for kw in (dict(scale_factor=1.3, mode="nearest"), dict(size=(17, 5), mode="bilinear")):
        y = F.interpolate(hg.tensor(x), **kw).numpy()
        np.testing.assert_allclose(y, TF.interpolate(torch.tensor(x), **kw).numpy(), rtol=1e-5, atol=1e-6)


def test_interpolate_errors():
    x = hg.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="interpolate: exactly one of size or scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="interpolate: exactly one of size or scale_factor"):
        F.interpolate(x, size=3, scale_factor=2)
    with pytest.raises(ValueError, match=r"interpolate: only 4-D input .* got input of shape \(2, 4, 4\)"):
        F.interpolate(hg.randn(2, 4, 4), size=3)
    with pytest.raises(ValueError, match="interpolate: mode must be one of"):
        F.interpolate(x, size=3, mode="bicubic")
    with pytest.raises(ValueError, match="interpolate: align_corners option can only be set"):
        F.interpolate(x, size=3, align_corners=True)
    with pytest.raises(ValueError, match="interpolate: size must be positive ints"):
        F.interpolate(x, size=(0, 3))
    with pytest.raises(ValueError, match="interpolate: scale_factor must be positive"):
        F.interpolate(x, scale_factor=-1.0)
    with pytest.raises(ValueError, match="interpolate: scale_factor 0.1 gives an empty output"):
        F.interpolate(x, scale_factor=0.1)
    with pytest.raises(NotImplementedError, match="interpolate: antialias"):
        F.interpolate(x, size=3, mode="bilinear", antialias=True)
