"""linear, conv2d, conv_transpose2d vs torch.nn.functional (float64, forward and all gradients) and
finite differences; every error path."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from _cnn_helpers import arrays, compare_torch, gradcheck

import handgrad as hg
import handgrad.functional as F

# -- linear ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("xshape", [(4, 5), (2, 3, 5), (5,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(xshape, bias):
    arrs = arrays(0, xshape, (3, 5), (3,) if bias else None)
    compare_torch(F.linear, TF.linear, arrs)


def test_linear_gradcheck():
    gradcheck(F.linear, arrays(1, (2, 3, 4), (2, 4), (2,)))
    gradcheck(lambda x, w: F.linear(x, w), arrays(2, (3, 4), (2, 4)))


def test_linear_errors():
    x, w = hg.randn(4, 5), hg.randn(3, 6)
    with pytest.raises(ValueError, match=r"linear: input \(4, 5\) has 5 features but weight \(3, 6\) expects 6"):
        F.linear(x, w)
    with pytest.raises(ValueError, match="linear: weight must be 2-D"):
        F.linear(x, hg.randn(3))
    with pytest.raises(ValueError, match=r"linear: bias must have shape \(3,\)"):
        F.linear(x, hg.randn(3, 5), hg.randn(4))
    with pytest.raises(TypeError, match="linear: dtypes differ"):
        F.linear(x, hg.randn(3, 5, dtype="float64"))


# -- conv2d ------------------------------------------------------------------------------------------------
CONV_CASES = [
    # (x shape, w shape, kwargs)
    ((2, 3, 7, 8), (4, 3, 3, 3), {}),
    ((2, 3, 7, 8), (4, 3, 3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))),  # rectangular kernel
    ((2, 6, 7, 8), (4, 3, 3, 3), dict(stride=2, padding=1, groups=2)),
    ((2, 6, 9, 7), (6, 2, 2, 3), dict(stride=(1, 2), padding=(2, 1), dilation=2, groups=3)),
    ((2, 4, 6, 6), (8, 1, 3, 3), dict(padding="same", groups=4)),  # depthwise, multiplier 2
    ((2, 3, 7, 6), (5, 3, 4, 2), dict(padding="same", dilation=(1, 3))),  # odd total padding: extra bottom/right
    ((2, 3, 6, 6), (4, 3, 2, 2), dict(stride=2, padding="valid")),  # kernel == stride: col2im tiles
    ((2, 3, 8, 8), (4, 3, 1, 1), dict(stride=3)),
    ((1, 2, 5, 5), (3, 2, 5, 5), {}),  # kernel as large as the input
    # kw*C >= 16: col2im takes its (kernel row, output column) block path
    ((2, 8, 7, 9), (4, 8, 3, 3), dict(stride=(1, 2), padding=1)),
    ((2, 8, 6, 8), (4, 8, 2, 2), dict(stride=2)),  # ... with disjoint blocks
]


@pytest.mark.parametrize("xs,ws,kw", CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_matches_torch(xs, ws, kw, bias):
    arrs = arrays(3, xs, ws, (ws[0],) if bias else None)
    with warnings.catch_warnings():  # torch warns about even kernels with padding="same"
        warnings.simplefilter("ignore", UserWarning)
        compare_torch(lambda x, w, b: F.conv2d(x, w, b, **kw), lambda x, w, b: TF.conv2d(x, w, b, **kw), arrs)


@pytest.mark.parametrize("xs,ws,kw", [CONV_CASES[1], CONV_CASES[3], CONV_CASES[5]])
def test_conv2d_gradcheck(xs, ws, kw):
    xs = (1,) + xs[1:3] + (min(xs[3], 6),)
    gradcheck(lambda x, w, b: F.conv2d(x, w, b, **kw), arrays(4, xs, ws, (ws[0],)))


def test_conv2d_unbatched_and_only_some_grads():
    compare_torch(lambda x, w: F.conv2d(x, w, padding=1), lambda x, w: TF.conv2d(x, w, padding=1),
                  arrays(5, (3, 6, 5), (2, 3, 3, 3)))
    # weight-only and input-only gradients take different branches of the backward
    compare_torch(lambda x, w, b: F.conv2d(x, w, b, stride=2), lambda x, w, b: TF.conv2d(x, w, b, stride=2),
                  arrays(6, (2, 3, 7, 7), (4, 3, 3, 3), (4,)), grad=[False, True, True])
    compare_torch(lambda x, w: F.conv2d(x, w, groups=3), lambda x, w: TF.conv2d(x, w, groups=3),
                  arrays(7, (2, 3, 7, 7), (6, 1, 3, 3)), grad=[True, False])


def test_conv2d_channels_last_input_chain_matches_torch():
    """A conv output (channels-last memory) fed into a second conv and a reshape keeps NCHW semantics."""
    def ours(x, w1, w2):
        return F.conv2d(hg.relu(F.conv2d(x, w1, padding=1)), w2, stride=2).reshape(2, -1)

    def theirs(x, w1, w2):
        return TF.conv2d(torch.relu(TF.conv2d(x, w1, padding=1)), w2, stride=2).reshape(2, -1)

    y = compare_torch(ours, theirs, arrays(8, (2, 3, 6, 6), (5, 3, 3, 3), (4, 5, 2, 2)))
    assert y.shape == (2, 36)


def test_conv2d_float32():
    x, w, b = (a.astype(np.float32) for a in arrays(9, (2, 3, 8, 8), (4, 3, 3, 3), (4,)))
    y = F.conv2d(hg.tensor(x), hg.tensor(w), hg.tensor(b), padding=1)
    assert y.dtype == np.float32
    ref = TF.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), padding=1).numpy()
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_conv2d_errors():
    x = hg.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"conv2d: input \(2, 3, 8, 8\) has 3 channels but weight \(4, 5, 3, 3\) "
                                         r"expects 5"):
        F.conv2d(x, hg.randn(4, 5, 3, 3))
    with pytest.raises(ValueError, match=r"conv2d: expected 3-D .* or 4-D .* got input of shape \(8, 8\)"):
        F.conv2d(hg.randn(8, 8), hg.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"conv2d: weight must be 4-D, got weight of shape \(4, 3, 3\)"):
        F.conv2d(x, hg.randn(4, 3, 3))
    with pytest.raises(ValueError, match=r"conv2d: kernel of size \(9, 9\).*larger than the padded input \(8, 8\)"):
        F.conv2d(x, hg.randn(4, 3, 9, 9))
    with pytest.raises(ValueError, match=r"conv2d: kernel of size \(5, 5\).*dilation \(2, 2\).*padded input \(4, 4\)"):
        F.conv2d(hg.randn(1, 3, 4, 4), hg.randn(4, 3, 3, 3), dilation=2)
    with pytest.raises(ValueError, match=r"conv2d: input \(2, 3, 8, 8\) has 3 channels, not divisible by groups=2"):
        F.conv2d(x, hg.randn(4, 1, 3, 3), groups=2)
    with pytest.raises(ValueError, match=r"conv2d: weight \(3, 2, 3, 3\) has 3 output channels, not divisible by "
                                         r"groups=2"):
        F.conv2d(hg.randn(2, 4, 8, 8), hg.randn(3, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match="conv2d: groups must be a positive int"):
        F.conv2d(x, hg.randn(4, 3, 3, 3), groups=0)
    with pytest.raises(ValueError, match=r"conv2d: bias must have shape \(4,\)"):
        F.conv2d(x, hg.randn(4, 3, 3, 3), hg.randn(3))
    with pytest.raises(ValueError, match="conv2d: padding='same' is not supported for strided"):
        F.conv2d(x, hg.randn(4, 3, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="conv2d: padding must be an int, a pair, 'valid' or 'same'"):
        F.conv2d(x, hg.randn(4, 3, 3, 3), padding="full")
    with pytest.raises(ValueError, match="conv2d: stride must be positive"):
        F.conv2d(x, hg.randn(4, 3, 3, 3), stride=0)
    with pytest.raises(ValueError, match="conv2d: padding must be non-negative"):
        F.conv2d(x, hg.randn(4, 3, 3, 3), padding=-1)
    with pytest.raises(TypeError, match="conv2d: stride must be an int or a pair"):
        F.conv2d(x, hg.randn(4, 3, 3, 3), stride=(1, 2, 3))
    with pytest.raises(TypeError, match="conv2d: input dtype float32 and weight dtype float64 differ"):
        F.conv2d(x, hg.randn(4, 3, 3, 3, dtype="float64"))


# -- conv_transpose2d --------------------------------------------------------------------------------------
CONVT_CASES = [
    ((2, 3, 4, 5), (3, 4, 3, 3), {}),
    ((2, 4, 5, 4), (4, 3, 3, 2), dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2)),
    ((2, 4, 5, 4), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1, dilation=2)),
    ((2, 6, 3, 4), (6, 1, 2, 2), dict(stride=2, groups=3)),  # kernel == stride: disjoint scatter
    ((2, 2, 4, 4), (2, 3, 3, 2), dict(stride=1, padding=(1, 1), dilation=(2, 1), output_padding=(1, 0))),
    ((2, 3, 4, 3), (3, 8, 3, 3), dict(stride=2, padding=1, output_padding=1)),  # col2im block path
    ((2, 3, 4, 3), (3, 8, 2, 2), dict(stride=2)),  # ... with disjoint blocks
]


@pytest.mark.parametrize("xs,ws,kw", CONVT_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose2d_matches_torch(xs, ws, kw, bias):
    g = kw.get("groups", 1)
    arrs = arrays(10, xs, ws, (ws[1] * g,) if bias else None)
    compare_torch(lambda x, w, b: F.conv_transpose2d(x, w, b, **kw),
                  lambda x, w, b: TF.conv_transpose2d(x, w, b, **kw), arrs)


@pytest.mark.parametrize("xs,ws,kw", [CONVT_CASES[1], CONVT_CASES[2]])
def test_conv_transpose2d_gradcheck(xs, ws, kw):
    g = kw.get("groups", 1)
    gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, **kw), arrays(11, (1,) + xs[1:], ws, (ws[1] * g,)))


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)> for the same weight."""
    x, w, y = arrays(12, (2, 3, 9, 8), (4, 3, 3, 3), (2, 4, 5, 4))
    kw = dict(stride=2, padding=1)
    lhs = float((F.conv2d(hg.tensor(x), hg.tensor(w), **kw).numpy() * y).sum())
    rhs = float((x * F.conv_transpose2d(hg.tensor(y), hg.tensor(w), output_padding=(0, 1), **kw).numpy()).sum())
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


def test_conv_transpose2d_unbatched():
    compare_torch(lambda x, w: F.conv_transpose2d(x, w, stride=2), lambda x, w: TF.conv_transpose2d(x, w, stride=2),
                  arrays(13, (3, 4, 4), (3, 2, 3, 3)))


def test_conv_transpose2d_errors():
    x = hg.randn(2, 4, 5, 5)
    with pytest.raises(ValueError, match=r"conv_transpose2d: input \(2, 4, 5, 5\) has 4 channels but weight "
                                         r"\(3, 2, 3, 3\) expects 3"):
        F.conv_transpose2d(x, hg.randn(3, 2, 3, 3))
    with pytest.raises(ValueError, match="conv_transpose2d: output_padding .* must be smaller than either stride"):
        F.conv_transpose2d(x, hg.randn(4, 2, 3, 3), stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"conv_transpose2d: input \(2, 4, 5, 5\) channels \(4\) .* divisible by "
                                         r"groups=3"):
        F.conv_transpose2d(x, hg.randn(4, 2, 3, 3), groups=3)
    with pytest.raises(ValueError, match=r"conv_transpose2d: output size \(-1, -1\) is too small"):
        F.conv_transpose2d(hg.randn(1, 4, 1, 1), hg.randn(4, 2, 1, 1), padding=1)
    with pytest.raises(ValueError, match=r"conv_transpose2d: bias must have shape \(4,\)"):
        F.conv_transpose2d(x, hg.randn(4, 2, 3, 3), hg.randn(2), groups=2)
    with pytest.raises(ValueError, match=r"conv_transpose2d: expected 3-D"):
        F.conv_transpose2d(hg.randn(4, 5), hg.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match=r"conv_transpose2d: stride must be positive, got \(0, 0\)"):
        F.conv_transpose2d(x, hg.randn(4, 2, 3, 3), stride=0)
    with pytest.raises(ValueError, match=r"conv_transpose2d: output_padding must be non-negative"):
        F.conv_transpose2d(x, hg.randn(4, 2, 3, 3), stride=2, output_padding=-1)


def test_int_like_arguments():
    """NumPy integers and 1-element sequences are accepted where PyTorch takes an int; bools are not."""
    x = hg.randn(1, 2, 6, 6)
    w = hg.randn(3, 2, 3, 3)
    assert F.conv2d(x, w, stride=(np.int64(2), 1)).shape == (1, 3, 2, 4)
    assert F.conv2d(x, w, padding=[1]).shape == (1, 3, 6, 6)
    with pytest.raises(TypeError, match="conv2d: dilation must be an int or a pair of ints, got True"):
        F.conv2d(x, w, dilation=True)
