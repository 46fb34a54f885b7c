"""SearchCNN and SiamRPN: the networks against PyTorch replicas (weights copied, float64, forward and every
parameter's gradient), the losses against PyTorch's, the training examples' labels, and the trackers'
crop-to-image geometry with stand-in networks whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad as hg
from handgrad.tracking.search_cnn import SearchCNN, SearchCNNNet, search_cnn_loss
from handgrad.tracking.search_cnn import make_example as cnn_example
from handgrad.tracking.siamrpn import SiamRPN, SiamRPNNet, make_anchors, siamrpn_loss
from handgrad.tracking.siamrpn import make_example as rpn_example
from handgrad.vision.ops import box_iou, decode_boxes

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _params(net):
    return dict(net.named_parameters())


def _torch_params(net):
    return {k: torch.tensor(p.numpy(), requires_grad=True) for k, p in net.named_parameters()}


def _torch_backbone(p, x, prefix):
    x = TF.relu(TF.conv2d(x, p[f"{prefix}.0.weight"], p[f"{prefix}.0.bias"], stride=2))
    x = TF.relu(TF.conv2d(x, p[f"{prefix}.2.weight"], p[f"{prefix}.2.bias"]))
    x = TF.max_pool2d(x, 2)
    return TF.relu(TF.conv2d(x, p[f"{prefix}.5.weight"], p[f"{prefix}.5.bias"]))


def _check_grads(net, tp, rtol=1e-8):
    for k, p in _params(net).items():
        np.testing.assert_allclose(p.grad.numpy(), tp[k].grad.numpy(), rtol=rtol, atol=1e-10, err_msg=k)


@pytest.mark.parametrize("xcorr", ["depthwise", "up"])
def test_siamrpn_net_and_loss_match_torch(xcorr):
    hg.manual_seed(0)
    net = SiamRPNNet(xcorr=xcorr)
    for p in net.parameters():  # float64 weights for a tight comparison
        p.array = p.array.astype(np.float64)
    rng = np.random.default_rng(0)
    z, x = rng.normal(size=(2, 3, 32, 32)), rng.normal(size=(2, 3, 64, 64))
    anchors = make_anchors(64, 9, (0.5, 1.0, 2.0), 16)
    labels = rng.choice([-1.0, 0.0, 1.0], size=(2, 243), p=[0.6, 0.3, 0.1])
    offsets = rng.normal(size=(2, 243, 4)) * 0.3
    out = net(hg.tensor(z), hg.tensor(x))
    loss = siamrpn_loss(out, (hg.tensor(labels), hg.tensor(offsets)))
    loss.backward()

    tp = _torch_params(net)
    tz, tx = torch.tensor(z), torch.tensor(x)
    fz, fx = _torch_backbone(tp, tz, "backbone"), _torch_backbone(tp, tx, "backbone")

    def conv(name, a):
        return TF.conv2d(a, tp[f"{name}.weight"], tp[f"{name}.bias"])

    def dw(a, b):  # depth-wise correlation = grouped conv2d
        B, C, H, W = a.shape
        return TF.conv2d(a.reshape(1, B * C, H, W), b.reshape(B * C, 1, *b.shape[2:]), groups=B * C).reshape(
            B, C, H - b.shape[2] + 1, W - b.shape[3] + 1)

    def up(a, k):  # up-channel correlation
        B, C, H, W = a.shape
        O = k.shape[1] // C
        return TF.conv2d(a.reshape(1, B * C, H, W), k.reshape(B * O, C, *k.shape[2:]), groups=B).reshape(
            B, O, H - k.shape[2] + 1, W - k.shape[3] + 1)

    if xcorr == "depthwise":
        cls = conv("cls_head.2", TF.relu(conv("cls_head.0", dw(conv("cls_x", fx), conv("cls_z", fz)))))
        reg = conv("reg_head.2", TF.relu(conv("reg_head.0", dw(conv("reg_x", fx), conv("reg_z", fz)))))
    else:
        cls = up(conv("cls_x", fx), conv("cls_z", fz))
        reg = conv("reg_adjust", up(conv("reg_x", fx), conv("reg_z", fz)))
    np.testing.assert_allclose(out[0].numpy(), cls.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out[1].numpy(), reg.detach().numpy(), rtol=1e-9, atol=1e-12)
    # the loss: BCE over labelled anchors + smooth L1 (beta 1/9) over positives, anchor order (k, row, col)
    s = cls.reshape(2, -1)
    d = reg.reshape(2, 3, 4, 9, 9).permute(0, 1, 3, 4, 2).reshape(2, -1, 4)
    lab = torch.tensor(labels)
    valid, pos = (lab >= 0).double(), (lab > 0).double()
    bce = (TF.binary_cross_entropy_with_logits(s, lab.clamp(min=0), reduction="none") * valid).sum() / valid.sum()
    sl1 = TF.smooth_l1_loss(d, torch.tensor(offsets), reduction="none", beta=1 / 9).sum(2)
    tloss = bce + (sl1 * pos).sum() / pos.sum()
    tloss.backward()
    assert abs(float(loss.item()) - float(tloss.detach())) < 1e-9
    _check_grads(net, tp)
    assert len(anchors) == 243


def test_search_cnn_net_and_loss_match_torch():
    hg.manual_seed(1)
    net = SearchCNNNet()
    for p in net.parameters():
        p.array = p.array.astype(np.float64)
    rng = np.random.default_rng(1)
    z, x, t = rng.normal(size=(2, 3, 48, 48)), rng.normal(size=(2, 3, 48, 48)), rng.random((2, 4))
    out = net(hg.tensor(z), hg.tensor(x))
    loss = search_cnn_loss(out, hg.tensor(t))
    loss.backward()
    tp = _torch_params(net)
    a = _torch_backbone(tp, torch.tensor(z), "features").flatten(1)
    b = _torch_backbone(tp, torch.tensor(x), "features").flatten(1)
    h = TF.relu(TF.linear(torch.cat([a, b], 1), tp["head.0.weight"], tp["head.0.bias"]))
    o = TF.linear(h, tp["head.2.weight"], tp["head.2.bias"])
    tl = (o - torch.tensor(t)).abs().mean()
    tl.backward()
    np.testing.assert_allclose(out.numpy(), o.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert abs(float(loss.item()) - float(tl.detach())) < 1e-10
    _check_grads(net, tp)


def _frame(seed=0, shape=(200, 260)):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    f = gaussian_filter(rng.random((*shape, 3)) * 255, (2, 2, 0))
    return ((f - f.min()) / np.ptp(f) * 255).astype(np.uint8)


def test_siamrpn_examples_label_the_anchors_on_the_object():
    rng = np.random.default_rng(3)
    f = _frame()
    anchors = make_anchors(64, 9, (0.5, 1.0, 2.0), 16)
    for _ in range(20):
        box = (rng.uniform(40, 150), rng.uniform(40, 110), rng.uniform(15, 40), rng.uniform(15, 40))
        z, x, lab, off = rpn_example(f, box, f, box, rng, anchors)
        assert z.shape == (3, 32, 32) and x.shape == (3, 64, 64) and abs(z).max() <= 0.5
        assert 1 <= (lab == 1).sum() <= 16 and (lab >= 0).sum() <= 64
        # decoding the positives' targets from their anchors gives one and the same box: the object's
        dec = np.asarray(decode_boxes(off[lab == 1].astype(np.float64), anchors[lab == 1]))
        assert np.ptp(dec, axis=0).max() < 1e-6
        iou = np.asarray(box_iou(anchors, dec[:1]))[:, 0]
        assert (iou[lab == 0] < 0.3).all() and ((iou[lab == 1] > 0.6).all() or (lab == 1).sum() == 1)


def test_siamrpn_negative_pairs_label_every_sampled_anchor_negative():
    rng = np.random.default_rng(7)
    f, g = _frame(1), _frame(2)
    anchors = make_anchors(64, 9, (0.5, 1.0, 2.0), 16)
    z, x, lab, off = rpn_example(f, (60, 50, 30, 30), g, (100, 80, 25, 35), rng, anchors, negative=True)
    assert (lab == 0).sum() == 64 and (lab == 1).sum() == 0 and not off.any()
    assert not np.allclose(x, rpn_example(f, (60, 50, 30, 30), f, (60, 50, 30, 30), rng, anchors)[1])


class _FakeRPN:
    """Scores 10 at one anchor (0 elsewhere) and zero offsets: the tracker must move onto that anchor."""

    def __init__(self, best):
        self.best = best

    def eval(self):
        return self

    def __call__(self, z, x):
        cls = np.full((1, 3, 9, 9), -10.0, np.float32)
        cls.reshape(-1)[self.best] = 10.0
        return hg.tensor(cls), hg.tensor(np.zeros((1, 12, 9, 9), np.float32))


def test_siamrpn_tracker_maps_the_best_anchor_back_to_the_frame():
    f = _frame(5)
    box = (100.0, 80.0, 30.0, 30.0)  # square: s_z = 60, s_x = 120, crop scale 64/120
    best = 1 * 81 + 6 * 9 + 2  # ratio 1, row 6, column 2: crop centre + 4 * (-2, +2) px
    t = SiamRPN(window_influence=0.0, penalty_k=0.0, lr=1.0)
    t.net = _FakeRPN(best)
    t.init(f, box)
    ok, b = t.update(f)
    k = 64 / 120
    assert ok and abs(b[0] + b[2] / 2 - (115 - 8 / k)) < 1e-6 and abs(b[1] + b[3] / 2 - (95 + 8 / k)) < 1e-6
    assert abs(b[2] - 16 / k) < 1e-6  # the ratio-1 anchor (16 crop px) at lr 1
    # with the cosine window dominating, the centre anchor wins instead
    t2 = SiamRPN(window_influence=1.0)
    t2.net = _FakeRPN(best)
    t2.init(f, box)
    _, b2 = t2.update(f)
    assert abs(b2[0] + b2[2] / 2 - 115) < 1e-6 and abs(b2[1] + b2[3] / 2 - 95) < 1e-6


def test_search_cnn_examples_and_tracker_geometry(tmp_path):
    rng = np.random.default_rng(4)
    f = _frame(6)
    box = (90.0, 70.0, 40.0, 30.0)
    z, x, t = cnn_example(f, box, f, box, rng)
    assert z.shape == x.shape == (3, 48, 48) and t.shape == (4,)
    assert 0 < t[0] < t[2] < 1 and 0 < t[1] < t[3] < 1  # the object stays inside the search crop

    class Fake(SearchCNNNet):
        def forward(self, template, search):  # the box moved by a quarter of the crop to the right
            return hg.tensor(np.array([[0.5, 0.25, 1.0, 0.75]], np.float32))

    tr = SearchCNN(Fake())
    tr.init(f, box)
    _, b = tr.update(f)
    np.testing.assert_allclose(b, (110.0, 70.0, 40.0, 30.0), atol=1e-5)  # crop 80x60 -> +20 px in x
    tr.save(str(tmp_path / "w.safetensors"))
    assert isinstance(SearchCNN.load(str(tmp_path / "w.safetensors")).net, SearchCNNNet)
    with pytest.raises(ValueError, match="holds no siamrpn weights"):
        SiamRPN.load(str(tmp_path / "w.safetensors"))
