"""batch_norm / layer_norm / group_norm, dropout, embedding and one_hot vs torch.nn.functional (float64,
forward, all gradients, running statistics) and finite differences; every error path."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from _cnn_helpers import ATOL, RTOL, arrays, compare_torch, gradcheck

import handgrad as hg
import handgrad.functional as F

# -- batch_norm ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6), (3, 3, 4, 5)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_torch_and_updates_running_stats(shape, training, affine):
    rng = np.random.default_rng(0)
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    hrm, hrv = hg.tensor(rm), hg.tensor(rv)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    arrs = arrays(1, shape, (3,) if affine else None, (3,) if affine else None)
    arrs[0] = arrs[0] * 2 + 3  # a non-zero mean and non-unit variance, so the statistics matter
    compare_torch(lambda x, w, b: F.batch_norm(x, hrm, hrv, w, b, training=training, momentum=0.3, eps=1e-3),
                  lambda x, w, b: TF.batch_norm(x, trm, trv, w, b, training=training, momentum=0.3, eps=1e-3), arrs)
    np.testing.assert_allclose(hrm.numpy(), trm.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(hrv.numpy(), trv.numpy(), rtol=RTOL, atol=ATOL)
    if training:  # the unbiased batch variance went into the running estimate
        x = arrs[0]
        axes = (0,) + tuple(range(2, x.ndim))
        np.testing.assert_allclose(hrv.numpy(), 0.7 * rv + 0.3 * x.var(axis=axes, ddof=1), rtol=1e-12)
        np.testing.assert_allclose(hrm.numpy(), 0.7 * rm + 0.3 * x.mean(axis=axes), rtol=1e-12)
    else:
        np.testing.assert_array_equal(hrm.numpy(), rm)


def test_batch_norm_without_running_stats_and_gradcheck():
    compare_torch(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                  lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True),
                  arrays(2, (4, 2, 3, 3), (2,), (2,)))
    gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), arrays(3, (3, 2, 2, 3), (2,), (2,)))
    rm, rv = hg.tensor(np.array([0.1, -0.2])), hg.tensor(np.array([0.5, 2.0]))
    gradcheck(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False), arrays(4, (3, 2, 4), (2,), (2,)))


def test_batch_norm_float32_stats_and_output():
    x = (arrays(5, (8, 4, 5, 5))[0] * 3 + 1).astype(np.float32)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    hrm, hrv = hg.tensor(rm), hg.tensor(rv)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    y = F.batch_norm(hg.tensor(x), hrm, hrv, training=True)
    r = TF.batch_norm(torch.tensor(x), trm, trv, training=True)
    assert y.dtype == np.float32 and hrm.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), r.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hrv.numpy(), trv.numpy(), rtol=1e-5)


def test_batch_norm_errors():
    x = hg.randn(4, 3, 5)
    with pytest.raises(ValueError, match=r"batch_norm: running_mean must have shape \(3,\) for input \(4, 3, 5\), "
                                         r"got \(4,\)"):
        F.batch_norm(x, hg.zeros(4), hg.ones(3))
    with pytest.raises(ValueError, match=r"batch_norm: weight must have shape \(3,\)"):
        F.batch_norm(x, hg.zeros(3), hg.ones(3), weight=hg.ones(2))
    with pytest.raises(ValueError, match=r"batch_norm: expected input of at least 2 dimensions .* got shape \(3,\)"):
        F.batch_norm(hg.randn(3), None, None, training=True)
    with pytest.raises(ValueError, match=r"batch_norm: expected more than 1 value per channel when training, got "
                                         r"input of shape \(1, 3\)"):
        F.batch_norm(hg.randn(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match="batch_norm: running_mean and running_var must be given when training=False"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(TypeError, match="batch_norm: weight dtype float64 differs from input dtype float32"):
        F.batch_norm(x, None, None, weight=hg.ones(3, dtype="float64"), training=True)


# -- layer_norm / group_norm ---------------------------------------------------------------------------------
@pytest.mark.parametrize("normalized", [(5,), (4, 5), 5])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(normalized, affine):
    ns = (normalized,) if isinstance(normalized, int) else normalized
    arrs = arrays(6, (3, 4, 5), ns if affine else None, ns if affine else None)
    compare_torch(lambda x, w, b: F.layer_norm(x, normalized, w, b, eps=1e-4),
                  lambda x, w, b: TF.layer_norm(x, ns, w, b, eps=1e-4), arrs)  # torch wants a tuple


def test_layer_norm_gradcheck():
    gradcheck(lambda x, w, b: F.layer_norm(x, (2, 3), w, b), arrays(7, (2, 2, 3), (2, 3), (2, 3)))
    gradcheck(lambda x: F.layer_norm(x, 4), arrays(8, (3, 4)))


@pytest.mark.parametrize("shape,groups", [((3, 4, 5, 2), 2), ((3, 4, 5), 4), ((2, 6), 3), ((2, 4, 3, 3), 1)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_matches_torch(shape, groups, affine):
    c = shape[1]
    arrs = arrays(9, shape, (c,) if affine else None, (c,) if affine else None)
    compare_torch(lambda x, w, b: F.group_norm(x, groups, w, b), lambda x, w, b: TF.group_norm(x, groups, w, b), arrs)


def test_group_norm_gradcheck():
    gradcheck(lambda x, w, b: F.group_norm(x, 2, w, b), arrays(10, (2, 4, 3), (4,), (4,)))


def test_layer_and_group_norm_errors():
    x = hg.randn(3, 4, 5)
    with pytest.raises(ValueError, match=r"layer_norm: normalized_shape \(4,\) must match the trailing dimensions "
                                         r"of input \(3, 4, 5\)"):
        F.layer_norm(x, 4)
    with pytest.raises(ValueError, match=r"layer_norm: weight must have shape \(5,\), got \(4,\)"):
        F.layer_norm(x, 5, hg.ones(4))
    with pytest.raises(ValueError, match=r"group_norm: num_groups=3 must be a positive int dividing the 4 channels"):
        F.group_norm(x, 3)
    with pytest.raises(ValueError, match=r"group_norm: bias must have shape \(4,\)"):
        F.group_norm(x, 2, bias=hg.zeros(5))


# -- dropout ---------------------------------------------------------------------------------------------------
def test_dropout_is_inverted_reproducible_and_backprops_the_mask():
    x = hg.tensor(np.ones((200, 50)), requires_grad=True)
    hg.manual_seed(0)
    y = F.dropout(x, p=0.3)
    kept = y.numpy() != 0
    np.testing.assert_allclose(y.numpy()[kept], 1 / 0.7)  # survivors scaled by 1/(1-p)
    assert abs(kept.mean() - 0.7) < 0.02
    y.backward(np.full((200, 50), 2.0))
    np.testing.assert_allclose(x.grad.numpy(), 2.0 * y.numpy())  # dx = dy * the same mask
    hg.manual_seed(0)
    np.testing.assert_array_equal(F.dropout(x, p=0.3).numpy(), y.numpy())
    assert F.dropout(x, p=0.3, training=False) is x
    assert F.dropout(x, p=0.0) is x
    np.testing.assert_array_equal(F.dropout(x, p=1.0).numpy(), 0.0)


def test_dropout_gradcheck_with_fixed_mask():
    x = hg.tensor(arrays(11, (4, 5))[0], requires_grad=True)

    def fn(t):
        hg.manual_seed(3)  # the same mask at every evaluation
        return F.dropout(t, p=0.4)

    assert hg.gradcheck(fn, (x,))


@pytest.mark.parametrize("fn,shape,mask_axes", [(F.dropout2d, (6, 8, 3, 3), 2), (F.dropout2d, (6, 8, 5), 2),
                                                 (F.dropout1d, (6, 8, 5), 2), (F.dropout1d, (8, 5), 1)])
def test_channel_dropout_zeros_whole_channels(fn, shape, mask_axes):
    hg.manual_seed(1)
    y = fn(hg.ones(*shape), p=0.5).numpy()
    flat = y.reshape(int(np.prod(shape[:mask_axes])), -1)
    assert ((flat == 0).all(axis=1) | np.isclose(flat, 2.0).all(axis=1)).all()
    assert 0 < (flat[:, 0] == 0).mean() < 1


def test_dropout_errors():
    with pytest.raises(ValueError, match="dropout: dropout probability has to be between 0 and 1, but got 1.5"):
        F.dropout(hg.randn(3), p=1.5)
    with pytest.raises(ValueError, match=r"dropout2d: expected a 4-D input, got shape \(3, 4\)"):
        F.dropout2d(hg.randn(3, 4))
    with pytest.raises(ValueError, match=r"dropout1d: expected a 2-D or 3-D input"):
        F.dropout1d(hg.randn(3, 4, 5, 6))
    with pytest.raises(TypeError, match="dropout: expected a floating input"):
        F.dropout(hg.tensor([1, 2, 3]))


# -- embedding / one_hot -------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
@pytest.mark.parametrize("scale", [False, True])
def test_embedding_matches_torch(padding_idx, scale):
    idx = np.array([[1, 2, 4, 1], [3, 1, 2, 6]])
    w = arrays(12, (7, 3))[0]
    hw, tw = hg.tensor(w, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = F.embedding(hg.tensor(idx), hw, padding_idx=padding_idx, scale_grad_by_freq=scale)
    r = TF.embedding(torch.tensor(idx), tw, padding_idx=padding_idx, scale_grad_by_freq=scale)
    np.testing.assert_allclose(y.numpy(), r.detach().numpy(), rtol=RTOL, atol=ATOL)
    u = arrays(13, (2, 4, 3))[0]
    y.backward(u)
    r.backward(torch.tensor(u))
    np.testing.assert_allclose(hw.grad.numpy(), tw.grad.numpy(), rtol=RTOL, atol=ATOL)
    if padding_idx is not None:
        assert (hw.grad.numpy()[padding_idx] == 0).all()
    assert (hw.grad.numpy()[[0, 5]] == 0).all()  # rows never looked up


def test_embedding_max_norm_renormalises_like_torch():
    idx = np.array([0, 2, 2, 3])
    w = arrays(14, (5, 4))[0] * 3
    hw, tw = hg.tensor(w.copy(), requires_grad=True), torch.tensor(w.copy(), requires_grad=True)
    y = F.embedding(hg.tensor(idx), hw, max_norm=1.5)
    r = TF.embedding(torch.tensor(idx), tw, max_norm=1.5)
    np.testing.assert_allclose(y.numpy(), r.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(hw.numpy(), tw.detach().numpy(), rtol=RTOL, atol=ATOL)  # rows rescaled in place


def test_embedding_gradcheck():
    # (padding_idx deliberately zeroes a true derivative, so it is checked against torch above, not here)
    idx = hg.tensor(np.array([[0, 3], [3, 1]]))
    gradcheck(lambda w: F.embedding(idx, w), arrays(15, (4, 2)))


def test_embedding_errors():
    w = hg.randn(10, 3)
    with pytest.raises(IndexError, match=r"embedding: index 12 is out of range for weight of shape \(10, 3\)"):
        F.embedding(hg.tensor([1, 12]), w)
    with pytest.raises(IndexError, match=r"embedding: index -1 is out of range"):
        F.embedding(hg.tensor([-1, 2]), w)
    with pytest.raises(TypeError, match="embedding: input must hold integer indices, got dtype float32"):
        F.embedding(hg.tensor([1.0]), w)
    with pytest.raises(ValueError, match=r"embedding: weight must be 2-D"):
        F.embedding(hg.tensor([1]), hg.randn(10))
    with pytest.raises(ValueError, match=r"embedding: padding_idx 10 must be within num_embeddings \(10\)"):
        F.embedding(hg.tensor([1]), w, padding_idx=10)
    with pytest.raises(NotImplementedError, match="embedding: sparse=True"):
        F.embedding(hg.tensor([1]), w, sparse=True)


def test_one_hot_matches_torch():
    t = np.array([[0, 3], [2, 1]])
    for n in (-1, 6):
        y = F.one_hot(hg.tensor(t), n)
        assert y.dtype == np.int64 and not y.requires_grad
        np.testing.assert_array_equal(y.numpy(), TF.one_hot(torch.tensor(t), n).numpy())
    with pytest.raises(ValueError, match=r"one_hot: class values must be smaller than num_classes \(3\), got 3"):
        F.one_hot(hg.tensor(t), 3)
    with pytest.raises(ValueError, match="one_hot: class values must be non-negative"):
        F.one_hot(hg.tensor([-1, 2]))
    with pytest.raises(TypeError, match="one_hot: expected an integer tensor"):
        F.one_hot(hg.tensor([1.0]))
