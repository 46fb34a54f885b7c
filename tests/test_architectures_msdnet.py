"""MSDNet and the (early-exit) ResNet: PyTorch builds with the weights copied across -- every exit's logits and
loss and every gradient equal in float64 -- gradcheck, multiply-add hand counts, anytime / budgeted-batch
evaluation and the errors (exits at layers that do not exist, a budget outside the curve)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _architecture_helpers import compare_losses_and_grads

import handgrad as hg
from handgrad.architectures.anytime import (
    MultiExitUpdater,
    budgeted_batch,
    budgeted_batch_curve,
    exit_costs,
    multi_exit_loss,
)
from handgrad.architectures.flops import count_multiply_adds
from handgrad.architectures.msdnet import MSDNet
from handgrad.architectures.resnet import ResNet

tnn = torch.nn


class TConvBNReLU(tnn.Module):
    def __init__(self, cin, cout, stride=1, bottleneck=None):
        super().__init__()
        mid = cin
        self.reduce = None
        if bottleneck is not None:
            mid = min(cin, bottleneck * cout)
            self.reduce, self.reduce_bn = tnn.Conv2d(cin, mid, 1, bias=False), tnn.BatchNorm2d(mid)
        self.conv, self.bn = tnn.Conv2d(mid, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout)

    def forward(self, x):
        if self.reduce is not None:
            x = torch.relu(self.reduce_bn(self.reduce(x)))
        return torch.relu(self.bn(self.conv(x)))


class TUnit(tnn.Module):
    def __init__(self, finer, c, growth, bottleneck):
        super().__init__()
        self.down = None if finer is None else TConvBNReLU(finer, growth // 2, 2, bottleneck)
        self.normal = TConvBNReLU(c, growth if finer is None else growth - growth // 2, 1, bottleneck)


class TExit(tnn.Module):
    def __init__(self, cin, classes, ch):
        super().__init__()
        self.conv1, self.bn1 = tnn.Conv2d(cin, ch, 3, 2, 1, bias=False), tnn.BatchNorm2d(ch)
        self.conv2, self.bn2 = tnn.Conv2d(ch, ch, 3, 2, 1, bias=False), tnn.BatchNorm2d(ch)
        self.fc = tnn.Linear(ch, classes)

    def forward(self, x):
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


class TorchMSDNet(tnn.Module):
    """Written from the paper: x_s^l = [x_s^{l-1}, down(x_{s-1}^{l-1}), normal(x_s^{l-1})]; exits on the coarsest."""

    def __init__(self, cin, classes, S, L, C, k, g, bottleneck, exits, ch):
        super().__init__()
        c = [C * f for f in g]
        self.exits = exits
        self.first = tnn.ModuleList([TConvBNReLU(cin if s == 0 else c[s - 1], c[s], 1 if s == 0 else 2)
                                     for s in range(S)])
        self.layers = tnn.ModuleList()
        self.S = S
        for layer in range(2, exits[-1] + 1):
            self.layers.append(tnn.ModuleDict({f"scale{s}": TUnit(None if s == 0 else c[s - 1], c[s], k * g[s],
                                                                  bottleneck)
                                               for s in range(S) if s >= S - 1 - (exits[-1] - layer)}))
            c = [c[s] + k * g[s] for s in range(S)]
        self.classifiers = tnn.ModuleList([TExit(C * g[-1] + (e - 1) * k * g[-1], classes, ch) for e in exits])

    def forward(self, x):
        maps = []
        for s, u in enumerate(self.first):
            maps.append(u(x if s == 0 else maps[-1]))
        outs = []
        for layer in range(1, self.exits[-1] + 1):
            if layer > 1:
                units = self.layers[layer - 2]
                new = [None] * self.S
                for key, u in units.items():
                    s = int(key[5:])
                    parts = [maps[s]] + ([u.down(maps[s - 1])] if s else []) + [u.normal(maps[s])]
                    new[s] = torch.cat(parts, 1)
                maps = new
            if layer in self.exits:
                outs.append(self.classifiers[self.exits.index(layer)](maps[-1]))
        return outs


class TBlock(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout)
        self.conv2, self.bn2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False), tnn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj, self.proj_bn = tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.proj is None else self.proj_bn(self.proj(x))))


class THead(tnn.Module):
    def __init__(self, c, classes):
        super().__init__()
        self.fc = tnn.Linear(c, classes)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


class TorchResNet(tnn.Module):
    def __init__(self, cin, classes, blocks, widths, exits, ch):
        super().__init__()
        self.stem, self.stem_bn = tnn.Conv2d(cin, widths[0], 3, 1, 1, bias=False), tnn.BatchNorm2d(widths[0])
        self.blocks, bw, c = tnn.ModuleList(), [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                self.blocks.append(TBlock(c, w, 2 if i > 0 and j == 0 else 1))
                c = w
                bw.append(w)
        self.exits = [e for e in exits if e != len(bw)] + [len(bw)]
        self.classifiers = tnn.ModuleList([TExit(bw[e - 1], classes, ch) for e in self.exits[:-1]]
                                          + [THead(c, classes)])

    def forward(self, x):
        h, outs = torch.relu(self.stem_bn(self.stem(x))), []
        for b, block in enumerate(self.blocks, 1):
            h = block(h)
            if b in self.exits:
                outs.append(self.classifiers[self.exits.index(b)](h))
        return outs


@pytest.mark.parametrize("bottleneck,size", [(2, (12, 12)), (None, (11, 9))])
def test_msdnet_every_exit_equals_torch(bottleneck, size):
    hg.manual_seed(0)
    kw = dict(scales=3, layers=5, channels=2, growth=2, grow_factor=[1, 2, 2], bottleneck=bottleneck,
              exits=[1, 3, 4], classifier_channels=4)
    ours = MSDNet(2, 3, input_size=size, **kw)
    theirs = TorchMSDNet(2, 3, 3, 5, 2, 2, [1, 2, 2], bottleneck, [1, 3, 4], 4)
    assert len(ours.layers) == 3  # layer 5 is after the last exit: not built
    rng = np.random.default_rng(0)
    n = compare_losses_and_grads(ours, theirs, rng.standard_normal((3, 2, *size)), rng.integers(0, 3, 3),
                                 outputs=list)
    assert n == len(list(theirs.parameters()))


def test_resnet_with_exits_equals_torch():
    hg.manual_seed(1)
    ours = ResNet(1, 4, blocks=(2, 1, 1), widths=(3, 4, 5), exits=[1, 3], classifier_channels=3)
    theirs = TorchResNet(1, 4, (2, 1, 1), (3, 4, 5), [1, 3], 3)
    rng = np.random.default_rng(1)
    n = compare_losses_and_grads(ours, theirs, rng.standard_normal((3, 1, 8, 8)), rng.integers(0, 4, 3),
                                 outputs=list)
    assert n == len(list(theirs.parameters()))
    plain = ResNet(1, 4, blocks=(1, 1), widths=(3, 4))
    compare_losses_and_grads(plain, TorchResNet(1, 4, (1, 1), (3, 4), [], 3), rng.standard_normal((2, 1, 8, 8)),
                             rng.integers(0, 4, 2), outputs=lambda o: o if isinstance(o, list) else [o])
    assert isinstance(plain(hg.zeros((1, 1, 8, 8), dtype="float64")), hg.Tensor)  # no exits: plain logits


def test_msdnet_gradcheck_tiny():
    hg.manual_seed(2)
    m = MSDNet(1, 2, input_size=(4, 4), scales=2, layers=2, channels=1, growth=2, bottleneck=None, exits=[1, 2],
               classifier_channels=2).double()
    x = hg.tensor(np.random.default_rng(2).standard_normal((3, 1, 4, 4)), requires_grad=True)
    assert hg.gradcheck(lambda t: tuple(m(t)), (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_multiply_adds_hand_count():
    # MSDNet, 4x4 input, S=2 (4x4, 2x2), channels 1, growth 2, g = (1, 2), no bottleneck, exits after 1 and 2,
    # classifier width 2. Conv cost = H_out * W_out * C_out * C_in * 9.
    m = MSDNet(1, 3, input_size=(4, 4), scales=2, layers=2, channels=1, growth=2, bottleneck=None, exits=[1, 2],
               classifier_channels=2).eval()
    first = 16 * 1 * 1 * 9 + 4 * 2 * 1 * 9                 # scale 0: 1 -> 1; scale 1: stride 2, 1 -> 2
    # layer 2 is the last: only the coarsest scale is computed (scale 0 would reach no exit): down 1->2 (2x2),
    # normal 2->2
    layer2 = 4 * 2 * 1 * 9 + 4 * 2 * 2 * 9
    exit1 = 1 * 2 * 2 * 9 + 1 * 2 * 2 * 9 + 2 * 3           # 2x2 -> 1x1 (2 -> 2), 1x1 -> 1x1 (2 -> 2), fc 2 -> 3
    exit2 = 1 * 2 * 6 * 9 + 1 * 2 * 2 * 9 + 2 * 3           # the coarsest scale now has 2 + 4 = 6 channels
    x = hg.tensor(np.zeros((1, 1, 4, 4), np.float32))
    costs = exit_costs(m, x)
    assert costs["anytime"] == [first + exit1, first + layer2 + exit2]
    assert costs["cumulative"] == [first + exit1, first + layer2 + exit1 + exit2]
    # ResNet-(1,1): stem 1->2 at 4x4; block 2->2 (two convs); block 2->3 stride 2 (2x2) + projection; fc 3 -> 5
    r = ResNet(1, 5, blocks=(1, 1), widths=(2, 3)).eval()
    assert count_multiply_adds(r, x) == (16 * 2 * 9 + 2 * 16 * 2 * 2 * 9 + 4 * 3 * 2 * 9 + 4 * 3 * 3 * 9
                                         + 4 * 3 * 2 + 3 * 5)


@pytest.mark.parametrize("rule", ["geometric", "shared"])
def test_budgeted_batch_thresholds(rule):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)

    def probs(acc_conf):
        out = []
        for conf in acc_conf:
            p = rng.dirichlet(np.ones(3), size=200) * (1 - conf)
            p[np.arange(200), labels] += conf
            out.append(p)
        return np.stack(out)

    val, test = probs([0.2, 0.5, 0.9]), probs([0.2, 0.5, 0.9])
    costs = [10.0, 25.0, 60.0]
    lo = budgeted_batch(val, test, labels, costs, 10.0, rule)
    hi = budgeted_batch(val, test, labels, costs, 60.0, rule)
    assert lo["val_cost"] == 10.0 and lo["exit_fractions"][0] > 0.9  # test samples may be less sure than all val
    assert hi["val_cost"] == 60.0 and hi["exit_fractions"][-1] == 1.0 and hi["test_accuracy"] == 1.0
    if rule == "geometric":  # q near 1 puts everyone at exit 1; the top of the range has no finite q
        assert lo["q"] > 0.99 and hi["q"] is None and lo["exit_shares"][0] > 0.99
    curve = budgeted_batch_curve(val, test, labels, costs, points=6, rule=rule)
    assert all(a["val_cost"] <= b["val_cost"] + 1e-9 for a, b in zip(curve, curve[1:]))  # cost grows with budget
    assert all(c["val_cost"] <= c["budget"] + 1e-9 for c in curve)
    if rule == "geometric":  # the budget is reached on validation: within one sample's move to a later exit
        assert all(c["val_cost"] >= c["budget"] - (60.0 - 10.0) / 200 - 1e-9 for c in curve)
    with pytest.raises(ValueError, match=r"budget 70 multiply-adds per image is outside the curve's range \[10, 60\]"):
        budgeted_batch(val, test, labels, costs, 70.0, rule)
    with pytest.raises(ValueError, match="budget 5 "):
        budgeted_batch(val, test, labels, costs, 5.0, rule)


def test_geometric_exit_shares_and_thresholds():
    from handgrad.architectures.anytime import geometric_exit_shares, geometric_thresholds
    s = geometric_exit_shares(0.5, 4)
    np.testing.assert_allclose(s, np.array([8, 4, 2, 1]) / 15)
    np.testing.assert_allclose(geometric_exit_shares(0.0, 4), np.full(4, 0.25))
    assert np.all(np.diff(geometric_exit_shares(-1.0, 4)) > 0)  # q < 0: later exits take more
    assert geometric_exit_shares(1 - 1e-12, 3)[0] > 0.999999
    with pytest.raises(ValueError, match="q must be < 1, got 1.5"):
        geometric_exit_shares(1.5, 3)
    # 3 exits, 6 samples; confidences chosen so the counts are checkable by hand
    conf = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
                     [0.1, 0.2, 0.95, 0.3, 0.85, 0.99],
                     [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])
    probs = np.stack([conf, 1 - conf], axis=2)  # max over the two classes is conf where conf >= 0.5
    probs = np.where(conf[..., None] >= 0.5, probs, probs[..., ::-1])
    th = geometric_thresholds(probs, [2 / 6, 3 / 6, 1 / 6])
    # exit 1: the 2 most confident (0.9, 0.8) -> t_1 = 0.8; exit 2 among samples 2..5 (max-conf 0.95, 0.7, 0.85,
    # 0.99): the 3 most confident -> t_2 = 0.85; the last takes the rest
    np.testing.assert_allclose(th[:2], [0.8, 0.85])
    assert th[2] == -np.inf
    with pytest.raises(ValueError, match="rule must be 'geometric' or 'shared', got 'median'"):
        budgeted_batch(probs, probs, np.zeros(6, int), [1.0, 2.0, 3.0], 2.0, "median")


def test_budgeted_batch_test_cost_follows_the_budget():
    """Thresholds chosen on one sample of 2,000 hold on another drawn alike: the test average cost lands near the
    budget for both rules."""
    rng = np.random.default_rng(1)
    n = 2000
    labels = rng.integers(0, 2, n)

    def exit_probs(acc, conf_right, conf_wrong):
        right = rng.random(n) < acc
        conf = np.where(right, conf_right(n), conf_wrong(n))
        p = np.empty((n, 2))
        p[np.arange(n), labels] = np.where(right, conf, 1 - conf)
        p[np.arange(n), 1 - labels] = 1 - p[np.arange(n), labels]
        return p

    def make():
        return np.stack([exit_probs(0.7, lambda k: rng.uniform(0.9, 1.0, k), lambda k: rng.uniform(0.9, 1.0, k)),
                         exit_probs(0.95, lambda k: rng.uniform(0.5, 1.0, k), lambda k: rng.uniform(0.5, 0.6, k))])

    val, test = make(), make()
    costs = [1.0, 3.0]
    for b in (1.5, 2.0, 2.5):
        g = budgeted_batch(val, test, labels, costs, b, "geometric")
        sh = budgeted_batch(val, test, labels, costs, b, "shared")
        assert g["val_cost"] <= b + 1e-9 and sh["val_cost"] <= b + 1e-9
        assert abs(g["test_cost"] - b) < 0.1 and abs(sh["test_cost"] - b) < 0.1
        assert g["exit_fractions"][0] + g["exit_fractions"][1] == 1.0


def test_multi_exit_updater_steps():
    from handgrad.optim import SGD
    hg.manual_seed(3)
    m = MSDNet(1, 3, input_size=(8, 8), scales=2, layers=3, channels=2, growth=2, exits=[2, 3], classifier_channels=4)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    up = MultiExitUpdater(m, SGD(m.parameters(), lr=0.1), weights=[0.5, 1.0])
    r = up.update((x, y))
    outs = m(hg.tensor(x))
    assert r["output"].shape == (4, 3) and np.isfinite(r["loss"])
    with pytest.raises(ValueError, match="2 weights for 1 exits"):
        multi_exit_loss(outs[:1], hg.tensor(y), [1, 2])


def test_exit_errors():
    with pytest.raises(ValueError, match=r"there are 4 layers.*layer\(s\) \[6\] do not exist"):
        MSDNet(layers=4, exits=[2, 6])
    with pytest.raises(ValueError, match=r"layer\(s\) \[0\] do not exist"):
        MSDNet(layers=4, exits=[0, 4])
    with pytest.raises(ValueError, match=r"block\(s\) \[9\] do not exist"):
        ResNet(blocks=(1, 1, 1), exits=[9])
    with pytest.raises(ValueError, match="6 scales are too deep for a 28x28"):
        MSDNet(scales=6)
    with pytest.raises(ValueError, match="max_exit must be in 1..2"):
        MSDNet(1, 3, input_size=(8, 8), scales=2, layers=2, exits=[1, 2])(hg.zeros((1, 1, 8, 8)), max_exit=3)


def test_truncated_forward_gives_the_same_early_exits():
    hg.manual_seed(5)
    x = hg.tensor(np.random.default_rng(5).standard_normal((2, 1, 12, 12)))
    for m in (MSDNet(1, 3, input_size=(12, 12), scales=3, layers=5, channels=2, growth=2, exits=[1, 3, 5],
                     classifier_channels=4).double().eval(),
              ResNet(1, 3, blocks=(1, 1, 1), widths=(2, 3, 4), exits=[1, 2]).double().eval()):
        full = m(x)
        for k in (1, 2):
            part = m(x, max_exit=k)
            assert len(part) == k
            np.testing.assert_allclose(part[-1].numpy(), full[k - 1].numpy(), rtol=1e-12, atol=1e-12)


def test_extreme_float32_inputs_stay_finite():
    for m in (MSDNet(1, 3, input_size=(8, 8), scales=2, layers=3, channels=2, growth=2, exits=[2, 3],
                     classifier_channels=4),
              ResNet(1, 3, blocks=(1, 1), widths=(2, 3), exits=[1])):
        x = hg.tensor(np.random.default_rng(1).uniform(-1e4, 1e4, (3, 1, 8, 8)).astype(np.float32),
                      requires_grad=True)
        outs = m(x)
        multi_exit_loss(outs, hg.tensor(np.array([0, 1, 2]))).backward()
        assert all(np.isfinite(o.numpy()).all() for o in outs) and np.isfinite(x.grad.numpy()).all()


def test_shared_threshold_counts_equal_the_per_candidate_loop():
    """The shared rule's validation costs are counted for every candidate threshold at once; a direct loop over
    the candidates (each one applied with _exit_index) must pick the same threshold, with ties included."""
    from handgrad.architectures.anytime import _exit_index, _shared_threshold

    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(5) * 0.4, size=(4, 300))  # (K, N, C)
    probs[1, :40] = probs[0, :40]  # ties between exits and samples
    costs = np.array([1e6, 3e6, 7e6, 1.2e7])
    cands = np.unique(np.concatenate([probs[:-1].max(axis=2).ravel(), [np.inf]]))
    direct = np.array([costs[_exit_index(probs, np.full(4, t))].mean() for t in cands])
    for budget in np.linspace(costs[0], costs[-1], 9):
        ok = np.nonzero(direct <= budget + 1e-9)[0]
        want = float(cands[ok[-1]]) if len(ok) else float(cands[0])
        assert _shared_threshold(probs, costs, budget)[1]["threshold"] == want
