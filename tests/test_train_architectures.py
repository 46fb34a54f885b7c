"""LeNet and MLP (handgrad.architectures): forward and backward against PyTorch with the weights copied
across (float64, rtol 1e-8), finite-difference gradient checks, and the error paths."""

from __future__ import annotations

import numpy
import pytest
import torch

import handgrad
import handgrad.functional as F
from handgrad.architectures import MLP, LeNet

RTOL = 1e-8


class TorchLeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 5)
        self.conv2 = torch.nn.Conv2d(32, 64, 5)
        self.fc1 = torch.nn.Linear(1024, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class TorchMLP(torch.nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def compare_with_torch(model, ref, x_np, y_np):
    """Copy model's weights into ref (strictly, so the names match), run CE loss forward+backward on both."""
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)
    x = handgrad.tensor(x_np, requires_grad=True)
    out = model(x)
    loss = F.cross_entropy(out, handgrad.tensor(y_np))
    loss.backward()
    xt = torch.tensor(x_np, requires_grad=True)
    out_t = ref(xt)
    loss_t = torch.nn.functional.cross_entropy(out_t, torch.tensor(y_np))
    loss_t.backward()
    numpy.testing.assert_allclose(out.numpy(), out_t.detach().numpy(), rtol=RTOL, atol=1e-12)
    assert loss.item() == pytest.approx(loss_t.item(), rel=RTOL)
    numpy.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=RTOL, atol=1e-14)
    grads_t = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        numpy.testing.assert_allclose(p.grad.numpy(), grads_t[name].grad.numpy(), rtol=RTOL, atol=1e-14,
                                      err_msg=name)


def with_params(model, fn):
    """``g(x, *params)``: fn(model(x)) with the model's parameters swapped for the given tensors, so that
    gradcheck can perturb the weights as well as the input."""
    slots = [(m, n) for _, m in model.named_modules() for n, p in m._parameters.items() if p is not None]

    def g(x, *params):
        saved = [m._parameters[n] for m, n in slots]
        try:
            for (m, n), p in zip(slots, params):
                m._parameters[n] = p
            return fn(model(x))
        finally:
            for (m, n), p in zip(slots, saved):
                m._parameters[n] = p

    return g, [handgrad.tensor(m._parameters[n].numpy(), requires_grad=True) for m, n in slots]


# -- LeNet ------------------------------------------------------------------------------------------------------
def test_lenet_shapes_and_parameter_count():
    handgrad.manual_seed(0)
    model = LeNet()
    out = model(handgrad.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {
        "conv1.weight": (32, 1, 5, 5), "conv1.bias": (32,), "conv2.weight": (64, 32, 5, 5), "conv2.bias": (64,),
        "fc1.weight": (128, 1024), "fc1.bias": (128,), "fc2.weight": (10, 128), "fc2.bias": (10,),
    }
    assert sum(p.numel() for p in model.parameters()) == 184_586


def test_lenet_matches_torch_forward_and_backward():
    handgrad.manual_seed(1)
    model = LeNet().double()
    r = numpy.random.default_rng(0)
    compare_with_torch(model, TorchLeNet().double(), r.normal(size=(3, 1, 28, 28)), numpy.array([0, 7, 3]))


def test_lenet_gradcheck_input_and_weights():
    handgrad.manual_seed(2)
    model = LeNet().double()
    x = handgrad.tensor(numpy.random.default_rng(1).normal(size=(2, 1, 28, 28)), requires_grad=True)
    y = handgrad.tensor(numpy.array([4, 9]))
    g, params = with_params(model, lambda out: F.cross_entropy(out, y))
    assert handgrad.gradcheck(g, (x, *params), directions=3)


def test_lenet_dropout_only_in_training():
    handgrad.manual_seed(3)
    model = LeNet(dropout=0.5).double()
    x = handgrad.tensor(numpy.random.default_rng(2).normal(size=(4, 1, 28, 28)))
    model.eval()
    a, b = model(x).numpy(), model(x).numpy()
    numpy.testing.assert_array_equal(a, b)
    model.train()
    c = model(x).numpy()
    assert not numpy.allclose(a, c)


def test_lenet_errors():
    with pytest.raises(ValueError, match=r"LeNet: expected input \(N, 1, 28, 28\), got \(2, 1, 32, 32\)"):
        LeNet()(handgrad.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"LeNet: expected input \(N, 1, 28, 28\), got \(2, 3, 28, 28\)"):
        LeNet()(handgrad.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"LeNet: dropout must be in \[0, 1\), got 1.0"):
        LeNet(dropout=1.0)


# -- MLP ----------------------------------------------------------------------------------------------------------
def test_mlp_default_is_784_256_128_10():
    model = MLP()
    assert [tuple(p.shape) for p in model.parameters()] == [(256, 784), (256,), (128, 256), (128,), (10, 128), (10,)]
    assert model(handgrad.randn(5, 1, 28, 28)).shape == (5, 10)  # images are flattened


def test_mlp_matches_torch_forward_and_backward():
    handgrad.manual_seed(4)
    model = MLP(784, (256, 128), 10, dropout=0.3).double().eval()  # eval: dropout off, comparable
    r = numpy.random.default_rng(3)
    compare_with_torch(model, TorchMLP([784, 256, 128, 10]).double(), r.normal(size=(6, 1, 28, 28)),
                       numpy.array([0, 1, 2, 3, 4, 9]))


def test_mlp_gradcheck_elementwise():
    handgrad.manual_seed(5)
    model = MLP(12, (7, 5), 3).double()
    x = handgrad.tensor(numpy.random.default_rng(4).normal(size=(4, 12)), requires_grad=True)
    y = handgrad.tensor(numpy.array([0, 2, 1, 2]))
    g, params = with_params(model, lambda out: F.cross_entropy(out, y))
    assert handgrad.gradcheck(g, (x, *params))


def test_mlp_dropout_is_inverted_and_train_only():
    handgrad.manual_seed(6)
    model = MLP(50, (400,), 1, dropout=0.5).double()
    with handgrad.no_grad():
        model.layers[1].weight.array[...] = 1.0 / 400
        model.layers[1].bias.array[...] = 0.0
        x = handgrad.tensor(numpy.abs(numpy.random.default_rng(5).normal(size=(200, 50))))
        model.eval()
        clean = model(x).numpy()
        model.train()
        noisy = model(x).numpy()
    assert not numpy.allclose(clean, noisy)
    # inverted dropout keeps the expected activation: the mean over 200 x 400 units stays within a few %
    assert noisy.mean() == pytest.approx(clean.mean(), rel=0.03)


def test_mlp_errors():
    with pytest.raises(ValueError, match=r"MLP: expected input \(N, \*\) with 784 features per sample, got \(2, 100\)"):
        MLP()(handgrad.randn(2, 100))
    with pytest.raises(ValueError, match=r"MLP: dropout must be in \[0, 1\), got -0.1"):
        MLP(dropout=-0.1)
    with pytest.raises(ValueError, match=r"MLP: layer sizes must be positive integers, got \[784, 0, 10\]"):
        MLP(784, (0,), 10)
