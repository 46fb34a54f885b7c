"""Convolutional neural fabric: a PyTorch build of the same trellis (written here from the paper's equations,
every node computed) with the weights copied across -- forward, loss and every gradient equal in float64 --
a finite-difference gradcheck on a tiny fabric, a hand count of the multiply-adds, pruning and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _architecture_helpers import compare_losses_and_grads

import handgrad as hg
from handgrad.architectures.fabric import Fabric, chain_path, edge_list, strongest_path
from handgrad.architectures.flops import count_multiply_adds, multiply_adds_by_module
from handgrad.engine.gradcheck import GradcheckError


class TorchFabric(torch.nn.Module):
    """Every node of the trellis, summed same / finer (stride 2) / coarser (up-sampled) 3x3 convs, BN, ReLU."""

    def __init__(self, cin, classes, L, S, C, size, task, upsample, edges=None):
        super().__init__()
        self.L, self.S, self.task, self.upsample = L, S, task, upsample
        self.edges = edge_list(L, S) if edges is None else list(edges)
        self.stem = torch.nn.Conv2d(cin, C, 3, padding=1, bias=False)
        self.convs = torch.nn.ModuleDict({f"edge_{l}_{a}_{b}": torch.nn.Conv2d(C, C, 3, stride=2 if b > a else 1,
                                                                              padding=1, bias=False)
                                          for l, a, b in self.edges})
        self.norms = torch.nn.ModuleDict({f"node_{l}_{s}": torch.nn.BatchNorm2d(C) for l in range(L) for s in range(S)})
        self.head = torch.nn.Conv2d(C, classes, 3, padding=1)
        self.sizes = [size]
        for _ in range(1, S):
            self.sizes.append(tuple((n + 1) // 2 for n in self.sizes[-1]))

    def node(self, l, s, terms):
        return torch.relu(self.norms[f"node_{l}_{s}"](sum(terms)))

    def forward(self, x):
        h = {(0, 0): self.node(0, 0, [self.stem(x)])}
        for s in range(1, self.S):
            if (0, s - 1, s) in self.edges and (0, s - 1) in h:
                h[(0, s)] = self.node(0, s, [self.convs[f"edge_0_{s - 1}_{s}"](h[(0, s - 1)])])
        for l in range(1, self.L):
            for s in range(self.S):
                terms = []
                for a in (s - 1, s, s + 1):
                    if (l, a, s) in self.edges and (l - 1, a) in h:
                        src = h[(l - 1, a)]
                        if a > s:
                            kw = {"align_corners": False} if self.upsample == "bilinear" else {}
                            src = torch.nn.functional.interpolate(src, size=self.sizes[s], mode=self.upsample, **kw)
                        terms.append(self.convs[f"edge_{l}_{a}_{s}"](src))
                if terms:
                    h[(l, s)] = self.node(l, s, terms)
        out = self.head(h[(self.L - 1, self.S - 1 if self.task == "classify" else 0)])
        return out.mean(dim=(2, 3)) if self.task == "classify" else out


@pytest.mark.parametrize("task,upsample,size", [("classify", "nearest", (8, 8)), ("segment", "bilinear", (9, 7)),
                                                 ("segment", "nearest", (8, 8))])
def test_fabric_equals_torch(task, upsample, size):
    hg.manual_seed(0)
    kw = dict(layers=4, scales=3, channels=3, input_size=size, task=task, upsample=upsample)
    ours = Fabric(2, 4, **kw)
    theirs = TorchFabric(2, 4, 4, 3, 3, size, task, upsample)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, *size))
    y = rng.integers(0, 4, size=(3,) if task == "classify" else (3, *size))
    n = compare_losses_and_grads(ours, theirs, x, y)
    assert n >= len(edge_list(4, 3)) // 2  # plenty of edges really compared


def test_fabric_path_subnetwork_equals_torch():
    edges = chain_path([0, 1, 2, 1, 0])  # U-Net-shaped path through a 5 x 3 trellis
    ours = Fabric(1, 3, layers=5, scales=3, channels=2, input_size=(8, 8), task="segment", edges=edges)
    theirs = TorchFabric(1, 3, 5, 3, 2, (8, 8), "segment", "nearest", edges)
    rng = np.random.default_rng(2)
    compare_losses_and_grads(ours, theirs, rng.standard_normal((2, 1, 8, 8)), rng.integers(0, 3, (2, 8, 8)))
    assert len(ours.convs) == 4


def test_fabric_gradcheck_tiny():
    hg.manual_seed(3)
    m = Fabric(1, 3, layers=2, scales=2, channels=2, input_size=(4, 4)).double()
    x = hg.tensor(np.random.default_rng(3).standard_normal((2, 1, 4, 4)), requires_grad=True)
    assert hg.gradcheck(lambda t: m(t), (x,), eps=1e-6, atol=1e-6, rtol=1e-5)
    # and with respect to one edge's weights (through batch norm and the up-sampling edge)
    conv = m.convs["edge_1_1_0"]
    w0 = conv.weight

    def with_weight(t, w):  # the fabric's output as a function of that edge's weight (gradcheck's copy of it)
        conv._parameters["weight"] = w
        try:
            return m(t)
        finally:
            conv._parameters["weight"] = w0

    assert hg.gradcheck(with_weight, (x.detach(), hg.tensor(w0.numpy(), requires_grad=True)), eps=1e-6, atol=1e-6,
                        rtol=1e-5)
    # the check can fail: an extra term whose backward is wrong (value 0, gradient 1) is caught
    with pytest.raises(GradcheckError):
        hg.gradcheck(lambda t, w: with_weight(t, w) + (w.sum() - w.detach().sum()),
                     (x.detach(), hg.tensor(w0.numpy(), requires_grad=True)))


def test_fabric_multiply_adds_hand_count():
    # L=3, S=3, C=4, 8x8 input: scales 8x8, 4x4, 2x2; a conv 4->4 3x3 costs 144 per output pixel.
    m = Fabric(1, 10, layers=3, scales=3, channels=4, input_size=(8, 8)).eval()
    stem = 64 * 4 * 1 * 9
    layer0 = 16 * 144 + 4 * 144                      # down to 4x4, down to 2x2
    layer1 = 3 * 16 * 144 + 2 * 4 * 144              # node (1,1) from scales 0,1,2; node (1,2) from 1,2
    layer2 = 2 * 4 * 144                             # the output node (2,2) from scales 1,2
    head = 4 * 10 * 4 * 9                            # 3x3 conv to 10 classes on 2x2
    x = hg.tensor(np.zeros((1, 1, 8, 8), np.float32))
    assert count_multiply_adds(m, x) == stem + layer0 + layer1 + layer2 + head == 15840
    seg = Fabric(1, 5, layers=2, scales=2, channels=4, input_size=(8, 8), task="segment").eval()
    # stem + down(0,0,1) + same at 8x8 + up from 4x4 to 8x8 + head 4->5 at 8x8
    assert count_multiply_adds(seg, x) == 64 * 36 + 16 * 144 + 64 * 144 + 64 * 144 + 64 * 5 * 36
    table = multiply_adds_by_module(seg, x)
    assert table["convs.edge_1_1_0"] == 64 * 144 and table["head"] == 64 * 5 * 36


def test_fabric_prune_and_strongest_path():
    hg.manual_seed(4)
    m = Fabric(1, 10, layers=4, scales=3, channels=2, input_size=(8, 8))
    norms = m.edge_norms()
    path, total = strongest_path(norms, 4, 3, 2)
    assert path[-1] == 2 and len(path) == 4
    edges = chain_path(path)
    assert total == pytest.approx(sum(norms[e] for e in edges))
    # brute force over every path confirms the dynamic programme
    import itertools
    best = max(sum(norms[e] for e in chain_path(list(p))) for p in itertools.product(range(3), repeat=4)
               if p[-1] == 2 and all(abs(a - b) <= 1 for a, b in zip(p[1:], p[:-1])))
    assert total == pytest.approx(best)
    x = hg.tensor(np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32))
    full = count_multiply_adds(m.eval(), x)
    m.prune(edges)
    assert count_multiply_adds(m, x) < full
    assert m(x).shape == (2, 10)
    with pytest.raises(ValueError, match="do not connect"):
        m.prune([(1, 0, 0)])


def test_fabric_errors():
    with pytest.raises(ValueError, match=r"6 scales are too deep for a 28x28 input.*0.875x0.875"):
        Fabric(1, 10, scales=6, input_size=(28, 28))
    Fabric(1, 10, layers=1, scales=5, channels=1, input_size=(28, 28))  # 28/16 = 1.75 px: fine
    with pytest.raises(ValueError, match="expected input"):
        Fabric(1, 10, layers=2, scales=2, channels=2, input_size=(8, 8))(hg.zeros((1, 1, 9, 8)))
    with pytest.raises(ValueError, match="do not exist"):
        Fabric(1, 10, layers=2, scales=2, edges=[(5, 0, 0)], input_size=(8, 8))
    with pytest.raises(ValueError, match="not adjacent"):
        chain_path([0, 2])


def test_multiply_adds_of_transposed_conv_and_linear_by_hand():
    from handgrad import nn
    m = nn.Sequential(nn.ConvTranspose2d(2, 3, 3, stride=2), nn.Flatten(), nn.Linear(3 * 9 * 9, 5)).eval()
    x = hg.tensor(np.zeros((2, 2, 4, 4), np.float32))
    # transposed conv priced by its input: 4*4 input pixels * 2 in * 3 out * 9 taps; output 9x9; linear 243 * 5
    assert count_multiply_adds(m, x) == 16 * 2 * 3 * 9 + 243 * 5
    assert m(x).shape == (2, 5)  # the counter leaves the modules as they were


def test_fabric_extreme_float32_inputs_stay_finite():
    m = Fabric(1, 4, layers=3, scales=3, channels=3, input_size=(8, 8), task="segment", upsample="bilinear")
    x = hg.tensor(np.random.default_rng(0).uniform(-1e4, 1e4, (2, 1, 8, 8)).astype(np.float32),
                  requires_grad=True)
    out = m(x)
    (out * out).mean().backward()
    assert out.dtype == np.float32 and np.isfinite(out.numpy()).all() and np.isfinite(x.grad.numpy()).all()


def test_edge_signals_are_the_rms_of_each_edge_output():
    """edge_signals measures what each edge adds into its node's sum: checked against the conv applied by hand
    to the node it reads (layer-0 edge into scale 1: the stem node's output), and the forwards are restored."""
    import handgrad.functional as F
    from handgrad.engine.grad_mode import no_grad
    from handgrad.experiments._fabric_common import edge_signals

    hg.manual_seed(0)
    fab = Fabric(1, 3, layers=2, scales=2, channels=4, input_size=(8, 8))
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    sig = edge_signals(fab, [x[:3], x[3:]])
    assert set(sig) == fab.used_edges() and fab.training
    assert "forward" not in vars(fab.convs["edge_0_0_1"])  # the wrapper is gone
    fab.eval()
    with no_grad():
        node = F.relu(fab.norms["node_0_0"](fab.stem(hg.tensor(x))))
        out = fab.convs["edge_0_0_1"](node).numpy().astype(np.float64)
    assert np.isclose(sig[(0, 0, 1)], np.sqrt((out ** 2).mean()), rtol=1e-6)
