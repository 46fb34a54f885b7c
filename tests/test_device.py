"""Devices: names and errors, moving tensors and modules, per-device generators, thread-local grad mode, and
the layer / recurrent-kernel / training matrix on the test device (``tests/_device.py``: the strict CuPy
stand-in, or a GPU with ``HANDGRAD_TEST_DEVICE=cuda``), each against the same computation on NumPy."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _device import ON_DEVICE, TEST_DEVICE, assert_close_to_cpu, device

import handgrad as hg
import handgrad.functional as F
import handgrad.nn as nn
from handgrad.engine import backend
from handgrad.engine._strict import StrictArray, StrictError
from handgrad.engine._strict import xp as sxp
from handgrad.engine.random import get_rng

needs_device = pytest.mark.skipif(not ON_DEVICE, reason="HANDGRAD_TEST_DEVICE=cpu: no device pass")


# -- names, errors ------------------------------------------------------------------------------------------
def test_device_names_and_equality() -> None:
    assert hg.device("cpu") == backend.CPU == "cpu"
    assert str(hg.device("strict")) == "strict" and repr(hg.device("cpu")) == "device(type='cpu')"
    assert hg.device(hg.device("strict")) is backend.STRICT
    assert hg.tensor([1.0]).device == hg.device("cpu")
    assert hg.zeros(2, device="strict").device == "strict"
    with pytest.raises(ValueError, match=r"device: unknown device 'tpu' \(expected 'cpu', 'cuda', 'cuda:N'"):
        hg.device("tpu")
    with pytest.raises(ValueError, match=r"cannot read the GPU number in 'cuda:x'"):
        hg.device("cuda:x")


@pytest.mark.skipif(backend._cupy is not None, reason="CuPy is installed")
def test_cuda_without_cupy_is_one_clear_line() -> None:
    with pytest.raises(RuntimeError) as e:
        hg.ones(2).to("cuda")
    msg = str(e.value)
    assert "\n" not in msg and "CuPy is not installed" in msg and "'cuda'" in msg
    with pytest.raises(RuntimeError, match="Linear: device 'cuda:1': CuPy is not installed"):
        nn.Linear(2, 2, device="cuda:1")
    with pytest.raises(RuntimeError, match="CuPy is not installed"):
        nn.Linear(2, 2).to("cuda")


def test_mixing_devices_names_the_op_and_both_devices() -> None:
    a, b = hg.ones(3), hg.ones(3, device="strict")
    with pytest.raises(RuntimeError, match=r"AddFunction: input 0 is on cpu but input 1 is on strict"):
        a + b
    with pytest.raises(RuntimeError, match=r"MatMulFunction: input 0 is on strict but input 1 is on cpu"):
        b.reshape(1, 3) @ a.reshape(3, 1)
    with pytest.raises(RuntimeError, match=r"on cpu but input 2 is on strict"):
        hg.cat([a, a, b])
    with pytest.raises(RuntimeError, match="setitem: the value is on cpu but the tensor is on strict"):
        b[0:2] = np.ones(2)  # a host array into a device tensor: refused, not silently copied


def test_strict_arrays_refuse_numpy_like_cupy() -> None:
    a = sxp.asarray(np.arange(3.0))
    assert isinstance(a, StrictArray) and isinstance(a.sum(), StrictArray)  # 0-d, never a NumPy scalar
    for bad in (lambda: a + np.ones(3), lambda: np.ones(3) * a, lambda: sxp.where(np.ones(3) > 0, a, a),
                lambda: a[np.array([0, 1])], lambda: np.asarray(a), lambda: sxp.concatenate([a, np.ones(1)])):
        with pytest.raises(StrictError):
            bad()
    with pytest.raises(TypeError):  # CuPy's as_strided has no writeable=
        sxp.lib.stride_tricks.as_strided(a, shape=(2,), strides=(8,), writeable=False)
    with pytest.raises(StrictError, match="numpy.einsum_path has no CuPy counterpart"):
        np.einsum_path("i,i", a, a)  # a NumPy function outside the stand-in's list
    assert not hasattr(sxp, "errstate") and not hasattr(sxp, "fromiter")
    assert float(np.exp(a)[1]) == pytest.approx(np.e)  # NumPy ufuncs forward to the strict module
    assert backend.to_host(a).tolist() == [0.0, 1.0, 2.0] and hg.get_array_module(a) is sxp
    with pytest.raises(TypeError, match="can't convert a strict tensor to a NumPy array implicitly"):
        np.asarray(hg.ones(2, device="strict"))


# -- tensors and modules move -------------------------------------------------------------------------------
def test_tensor_to_is_differentiable_and_keeps_dtype() -> None:
    x = hg.tensor([1.0, -2.0, 3.0], dtype="float64", requires_grad=True)
    y = x.to("strict")
    assert y.device == "strict" and y.dtype == np.float64 and y.grad_fn is not None
    assert x.to("cpu") is x and x.cpu() is x
    (y * y).sum().backward()
    assert x.grad.device == "cpu" and x.grad.numpy().tolist() == [2.0, -4.0, 6.0]
    z = x.to("strict", "float32")
    assert z.dtype == np.float32 and z.device == "strict"
    assert x.to(device="strict", dtype="float32").dtype == np.float32
    assert x.detach().to(z).device == "strict"
    with pytest.raises(TypeError, match=r"Tensor.to: 'gpu0' is neither a device"):
        x.to("gpu0")


def test_every_factory_takes_device() -> None:
    d = "strict"
    made = [hg.tensor([1, 2], device=d), hg.as_tensor(np.ones(2), device=d), hg.zeros(2, device=d),
            hg.ones(2, device=d), hg.full((2,), 3.0, device=d), hg.empty(2, device=d), hg.arange(3, device=d),
            hg.eye(2, device=d), hg.linspace(0, 1, 3, device=d), hg.randn(2, device=d), hg.rand(2, device=d),
            hg.randint(0, 5, (2,), device=d), hg.randperm(4, device=d)]
    like = hg.ones(2, device=d)
    made += [hg.zeros_like(like), hg.ones_like(like), hg.full_like(like, 2.0), hg.randn_like(like),
             hg.rand_like(like), hg.zeros_like(hg.ones(2), device=d)]
    assert all(t.device == d for t in made)
    assert hg.zeros_like(like, device="cpu").device == "cpu"


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_module_to_round_trip_keeps_identity_and_values() -> None:
    hg.manual_seed(0)
    m = _mlp()
    before = {k: v.copy() for k, v in m.state_dict().items()}
    params = list(m.parameters())
    m.to("strict")
    assert all(p.device == "strict" for p in m.parameters()) and list(m.parameters()) == params
    assert m[1].running_mean.device == "strict" and m[1].num_batches_tracked.dtype == np.int64
    out = m(hg.randn(5, 3).to("strict"))
    out.sum().backward()
    assert all(p.grad.device == "strict" for p in m.parameters())
    m.to(device="cpu", dtype="float64")
    assert all(p.device == "cpu" and p.dtype == np.float64 and p.grad.dtype == np.float64 for p in m.parameters())
    assert m[1].num_batches_tracked.dtype == np.int64  # integer buffers keep their dtype
    m.float()
    for k, v in m.state_dict().items():
        if k.endswith(("weight", "bias")):
            np.testing.assert_array_equal(v, before[k])
    with pytest.raises(TypeError, match="Sequential.to: only floating dtypes"):
        m.to("int64")


def test_layers_take_device_and_init_equals_cpu() -> None:
    hg.manual_seed(3)
    a = nn.Conv2d(2, 3, 3, device="strict")
    hg.manual_seed(3)
    b = nn.Conv2d(2, 3, 3)
    assert a.weight.device == "strict"
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    assert nn.Embedding(4, 2, device="strict").weight.device == "strict"
    assert nn.LayerNorm(3, device="strict").weight.device == "strict"
    hg.manual_seed(4)
    lstm = nn.LSTM(3, 4, 2, device="strict")
    hg.manual_seed(4)
    np.testing.assert_array_equal(lstm.weight_hh_l1.numpy(), nn.LSTM(3, 4, 2).weight_hh_l1.numpy())
    assert all(m.weight_ih.device == "strict" for m in (nn.RNNCell(2, 3, device="strict"),
                                                        nn.GRUCell(2, 3, device="strict")))
    assert nn.GRU(2, 3, device="strict").weight_ih_l0.device == "strict"
    assert nn.GroupNorm(2, 4, device="strict").weight.device == "strict"
    assert all(p.device == "strict" for p in nn.TransformerEncoderLayer(4, 2, 8, device="strict").parameters())


def test_state_dict_loads_across_devices() -> None:
    hg.manual_seed(1)
    src = _mlp().to("strict")
    sd = src.state_dict()  # host copies, whatever the device
    assert all(type(v) is np.ndarray for v in sd.values())
    dst = _mlp()
    dst.load_state_dict(sd)  # device -> CPU model
    assert all(p.device == "cpu" for p in dst.parameters())
    dst2 = _mlp().to("strict")
    dst2.load_state_dict({k: hg.tensor(v) for k, v in sd.items()})  # CPU tensors -> device model
    assert all(p.device == "strict" for p in dst2.parameters()) and dst2[1].running_var.device == "strict"
    for k, v in dst2.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])


def test_send_recurses_over_batches() -> None:
    batch = {"x": hg.ones(2), "pair": (np.zeros(3), [hg.zeros(1), "name", 7]), "n": None}
    out = backend.send(batch, "strict")
    assert out["x"].device == "strict" and isinstance(out["pair"][0], StrictArray)
    assert out["pair"][1][0].device == "strict" and out["pair"][1][1:] == ["name", 7] and out["n"] is None
    back = backend.send(out, "cpu")
    assert back["x"].device == "cpu" and type(back["pair"][0]) is np.ndarray


# -- randomness ---------------------------------------------------------------------------------------------
def test_one_generator_per_device_seeded_by_manual_seed() -> None:
    def draws() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hg.manual_seed(7)
        c = hg.randn(4).numpy()
        s = hg.randn(4, device="strict").numpy()
        m = F.dropout(hg.ones(50, device="strict"), 0.5).numpy()  # the mask is drawn on the device
        return c, s, m

    c1, s1, m1 = draws()
    c2, s2, m2 = draws()
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(m1, m2)
    assert 0 < (m1 == 0).sum() < 50
    hg.manual_seed(7)
    hg.randn(4, device="strict")  # the device's stream does not move the CPU's
    np.testing.assert_array_equal(hg.randn(4).numpy(), c1)
    assert isinstance(get_rng("strict").random(2), StrictArray)


@needs_device
def test_training_masks_are_drawn_on_the_device_and_reproducible() -> None:
    from handgrad.recurrent.zoneout import ZoneoutRNN

    def run() -> list[np.ndarray]:
        hg.manual_seed(5)
        rnn = ZoneoutRNN("LSTM", 3, 4, zoneout_h=0.3, zoneout_c=0.2).to(TEST_DEVICE)
        mha = nn.MultiheadAttention(4, 2, dropout=0.5, batch_first=True).to(TEST_DEVICE)
        x = hg.randn(5, 2, 3, device=TEST_DEVICE)
        out = [rnn(x)[0], mha(*(hg.randn(2, 3, 4, device=TEST_DEVICE),) * 3)[0],
               nn.Dropout2d(0.5)(hg.ones(2, 3, 2, 2, device=TEST_DEVICE))]
        assert all(o.device == device() for o in out)
        return [o.numpy() for o in out]

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


# -- threads ------------------------------------------------------------------------------------------------
def test_grad_mode_is_per_thread() -> None:
    inside: list[bool] = []
    ready, done = threading.Event(), threading.Event()

    def worker() -> None:
        ready.wait()
        x = hg.ones(2, requires_grad=True)
        inside.append(hg.is_grad_enabled() and (x * 2).requires_grad)
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    with hg.no_grad():
        ready.set()
        done.wait(10)
        assert not hg.is_grad_enabled()
    t.join()
    assert inside == [True]  # the other thread's no_grad did not switch this one off


def test_workspace_pool_is_per_thread() -> None:
    """An array one thread gives back is never handed to another thread (whose op might still be writing)."""
    from handgrad.functional.rnn import _workspace as ws

    given = ws.empty(np, (7, 3), np.float64)
    ws.give(given)  # now in this thread's pool
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(ws.empty(np, (7, 3), np.float64)))
    t.start()
    t.join()
    assert got[0] is not given  # the other thread allocated its own
    assert ws.empty(np, (7, 3), np.float64) is given  # this thread gets its array back
    ws.clear()


# -- the layer matrix on the test device ---------------------------------------------------------------------
def _run(module: nn.Module | Callable[..., Any], inputs: list[Any], dev: str, seed: int = 0) -> tuple[Any, ...]:
    """Forward on ``dev``, backward of sum(out * G): (outputs, input grads, parameter grads)."""
    ins = [hg.tensor(a, requires_grad=a.dtype.kind == "f", device=dev) if isinstance(a, np.ndarray) else a
           for a in inputs]
    outs = module(*ins)
    outs = [o for o in (outs if isinstance(outs, (tuple, list)) else [outs]) if isinstance(o, hg.Tensor)]
    rng = np.random.default_rng(seed)
    loss = None
    for o in outs:
        if o.requires_grad:
            term = (o * hg.tensor(rng.standard_normal(o.shape), dtype=o.dtype, device=dev)).sum()
            loss = term if loss is None else loss + term
    if loss is not None:
        loss.backward()
    params = list(module.parameters()) if isinstance(module, nn.Module) else []
    return outs, [t.grad for t in ins if isinstance(t, hg.Tensor) and t.requires_grad], [p.grad for p in params]


def check_on_device(make: Callable[[], Any], inputs: list[Any]) -> None:
    """``make()`` (a module or function, built under a fixed seed) on the CPU and on the test device: outputs,
    input gradients and parameter gradients equal; every result on the device."""
    hg.manual_seed(0)
    cpu_mod = make()
    dev_mod = copy.deepcopy(cpu_mod)
    if isinstance(dev_mod, nn.Module):
        dev_mod.to(TEST_DEVICE)
    co, cg, cp = _run(cpu_mod, inputs, "cpu")
    do, dg, dp = _run(dev_mod, inputs, TEST_DEVICE)
    for i, (c, d) in enumerate(zip(co, do)):
        assert d.device == device(), f"output {i} on {d.device}"
        assert_close_to_cpu(d, c, f"output {i}")
    for i, (c, d) in enumerate(zip(cg + cp, dg + dp)):
        if c is None:
            assert d is None
            continue
        assert d.device == device(), f"gradient {i} on {d.device}"
        assert_close_to_cpu(d, c, f"gradient {i}")


def _r(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _loss(fn: Callable[..., Any], target: np.ndarray) -> Callable[[hg.Tensor], Any]:
    return lambda x: fn(x, hg.tensor(target, device=x.device))


LAYERS: dict[str, tuple[Callable[[], Any], list[Any]]] = {
    "linear": (lambda: nn.Linear(5, 3, dtype="float64"), [_r(4, 5)]),
    "conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, dtype="float64"), [_r(2, 3, 8, 8)]),
    "conv2d_groups_dilation": (lambda: nn.Conv2d(4, 4, 3, groups=2, dilation=2, dtype="float64"), [_r(1, 4, 9, 9)]),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1,
                                                    dtype="float64"), [_r(2, 4, 5, 5)]),
    "max_pool2d": (lambda: nn.MaxPool2d(2), [_r(2, 3, 6, 6)]),
    "avg_pool2d": (lambda: nn.AvgPool2d(3, stride=2, padding=1), [_r(2, 3, 7, 7)]),
    "adaptive_avg_pool2d": (lambda: nn.AdaptiveAvgPool2d((3, 2)), [_r(2, 3, 7, 5)]),
    "adaptive_max_pool2d": (lambda: (lambda x: F.adaptive_max_pool2d(x, (2, 3))), [_r(2, 3, 7, 5)]),
    "batch_norm2d": (lambda: nn.BatchNorm2d(3, dtype="float64"), [_r(4, 3, 5, 5)]),
    "batch_norm1d_eval": (lambda: nn.BatchNorm1d(5, dtype="float64").eval(), [_r(4, 5)]),
    "layer_norm": (lambda: nn.LayerNorm(5, dtype="float64"), [_r(4, 5)]),
    "group_norm": (lambda: nn.GroupNorm(2, 4, dtype="float64"), [_r(3, 4, 5)]),
    "embedding": (lambda: nn.Embedding(10, 4, padding_idx=0, dtype="float64"), [np.array([[0, 3, 3], [9, 1, 0]])]),
    "activations": (lambda: nn.Sequential(nn.ELU(), nn.GELU(), nn.LeakyReLU(0.1), nn.SiLU(), nn.Softplus(),
                                          nn.Tanh(), nn.Sigmoid(), nn.LogSigmoid()), [_r(3, 4)]),
    "softmax": (lambda: nn.Sequential(nn.Softmax(dim=1), nn.LogSoftmax(dim=0)), [_r(3, 4)]),
    "attention": (lambda: nn.MultiheadAttention(8, 2, batch_first=True, dtype="float64"),
                  [_r(2, 3, 8), _r(2, 4, 8, seed=1), _r(2, 4, 8, seed=2)]),
    "transformer_layer": (lambda: nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0,
                                                             batch_first=True, dtype="float64"), [_r(2, 3, 8)]),
    "cross_entropy": (lambda: _loss(lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1, ignore_index=2),
                                    np.array([0, 2, 1, 3])), [_r(4, 5)]),
    "nll_bce_mse": (lambda: (lambda x: F.nll_loss(F.log_softmax(x, 1), hg.tensor([1, 0, 2], device=x.device))
                             + F.binary_cross_entropy_with_logits(x, hg.tensor(_r(3, 3) > 0, dtype=x.dtype,
                                                                                device=x.device))
                             + F.mse_loss(x, hg.zeros_like(x)) + F.smooth_l1_loss(x, hg.ones_like(x))
                             + F.l1_loss(x, hg.zeros_like(x))), [_r(3, 3)]),
    "interpolate": (lambda: (lambda x: [F.interpolate(x, scale_factor=2, mode=m) for m in ("nearest", "bilinear")]
                             + [F.interpolate(x, size=(5, 3), mode="bilinear", align_corners=True)]),
                    [_r(2, 3, 4, 4)]),
    "rnn_lstm_gru": (lambda: nn.ModuleList([nn.RNN(3, 4, 2, batch_first=True), nn.LSTM(3, 4, bidirectional=True),
                                            nn.GRU(3, 4, batch_first=True)]).double(), [_r(2, 5, 3)]),
    "cells": (lambda: nn.ModuleList([nn.RNNCell(3, 4), nn.LSTMCell(3, 4), nn.GRUCell(3, 4)]).double(), [_r(2, 3)]),
    # the fused recurrent kernels with variable lengths (padded steps), both directions, two layers
    "lstm_gru_lengths": (lambda: _WithLengths(nn.ModuleList([nn.LSTM(3, 4, 2, bidirectional=True),
                                                             nn.GRU(3, 4, bidirectional=True),
                                                             nn.RNN(3, 4, nonlinearity="relu")]).double()),
                         [_r(5, 3, 3)]),
    "clockwork": (lambda: _Clockwork().double(), [_r(6, 2, 3)]),
    "mdlstm": (lambda: _Mdlstm().double(), [_r(2, 3, 4, 3)]),
    "hmlstm": (lambda: _Hmlstm().double(), [_r(2, 5, 3)]),
    "zoneout": (lambda: _Zoneout().double(), [_r(4, 2, 3)]),
    "seq2seq_attention": (lambda: _Attention().double(), [_r(2, 3, 4), _r(2, 5, 6, seed=1)]),
    "inplace": (lambda: _inplace_chain, [_r(3, 4)]),
}


def _inplace_chain(x: hg.Tensor) -> hg.Tensor:
    y = x * 1.0
    y.add_(2.0).mul_(x).clamp_(-3.0, 3.0)
    y.masked_fill_(x > 1.0, 0.5)
    y.index_add_(0, hg.tensor([0, 2], device=x.device), x[:2] * 2.0)
    return y


class _WithLengths(nn.Module):
    def __init__(self, mods: nn.ModuleList) -> None:
        super().__init__()
        self.mods = mods

    def forward(self, x: hg.Tensor) -> list[hg.Tensor]:
        outs = []
        for m in self.mods:
            y, h = m(x, lengths=[5, 2, 4])
            outs += [y] + (list(h) if isinstance(h, tuple) else [h])
        return outs


class _Clockwork(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from handgrad.recurrent.clockwork import ClockworkRNN

        self.rnn = ClockworkRNN(3, 2, 3, periods=[1, 2, 4])

    def forward(self, x: hg.Tensor) -> Any:
        return list(self.rnn(x))


class _Mdlstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from handgrad.recurrent.mdlstm import MDLSTM2d

        self.rnn = MDLSTM2d(3, 4, directions=4)

    def forward(self, x: hg.Tensor) -> Any:
        return self.rnn(x)


class _Hmlstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from handgrad.recurrent.hmrnn import HMLSTM

        self.rnn = HMLSTM(3, (4, 3))

    def forward(self, x: hg.Tensor) -> Any:
        hs, z, _ = self.rnn(x)
        return list(hs) + [z]


class _Zoneout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from handgrad.recurrent.zoneout import ZoneoutRNN

        self.rnn = ZoneoutRNN("LSTM", 3, 4, num_layers=2, zoneout_h=0.2, zoneout_c=0.1)
        self.rnn.eval()  # the training masks come from each device's own generator

    def forward(self, x: hg.Tensor) -> Any:
        out = self.rnn(x)
        return list(out) if isinstance(out, tuple) else out


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from handgrad.seq2seq.attention import AdditiveAttention, MultiplicativeAttention

        self.add, self.mul = AdditiveAttention(4, 6, 5), MultiplicativeAttention(4, 6)

    def forward(self, q: hg.Tensor, keys: hg.Tensor) -> Any:
        mask = hg.tensor(np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool), device=q.device)
        return [*self.add(q, keys, mask), *self.mul(q, keys, mask)]


class _Each(nn.Module):
    """Run every module of a ModuleList on the input (for one matrix entry)."""

    def __init__(self, mods: nn.ModuleList) -> None:
        super().__init__()
        self.mods = mods

    def forward(self, x: hg.Tensor) -> list[hg.Tensor]:
        outs = []
        for m in self.mods:
            o = m(x)
            if isinstance(o, tuple):
                o = o[0]
            outs.append(o[0] if isinstance(o, tuple) else o)
        return outs


@needs_device
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_on_device(name: str) -> None:
    make, inputs = LAYERS[name]

    def build() -> Any:
        m = make()
        return _Each(m) if isinstance(m, nn.ModuleList) else m

    check_on_device(build, inputs)


# -- short training runs on the test device -------------------------------------------------------------------
def _train(make: Callable[[], nn.Module], step: Callable[[nn.Module, str], hg.Tensor], dev: str,
           steps: int = 3, opt: str = "adam") -> tuple[list[float], dict[str, np.ndarray]]:
    hg.manual_seed(0)
    model = make().to(dev)
    optim = hg.optim.Adam(model.parameters(), lr=1e-2) if opt == "adam" else \
        hg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        optim.zero_grad()
        loss = step(model, dev)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        losses.append(float(loss.item()))
    return losses, model.state_dict()


def _same_training(make: Callable[[], nn.Module], step: Callable[[nn.Module, str], hg.Tensor], **kw: Any) -> None:
    c_losses, c_state = _train(make, step, "cpu", **kw)
    d_losses, d_state = _train(make, step, TEST_DEVICE, **kw)
    np.testing.assert_allclose(d_losses, c_losses, rtol=1e-5 if TEST_DEVICE == "strict" else 1e-4)
    for k in c_state:
        assert_close_to_cpu(d_state[k], c_state[k], k, rtol=1e-4, atol=1e-6)
    assert c_losses[-1] < c_losses[0]


@needs_device
def test_lenet_trains_on_device() -> None:
    from handgrad.architectures.lenet import LeNet

    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = np.arange(8) % 10

    def step(model: nn.Module, dev: str) -> hg.Tensor:
        xb, yb = backend.send((hg.tensor(x), hg.tensor(y)), dev)  # what the training loop does per batch
        return F.cross_entropy(model(xb), yb)

    _same_training(LeNet, step, opt="sgd")


@needs_device
def test_lstm_language_model_trains_on_device() -> None:
    """Truncated BPTT with a carried (detached) state, as the char-LM does."""
    V, T, B = 11, 6, 3
    ids = np.random.default_rng(1).integers(0, V, (T + 1, B))

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.rnn, self.out = nn.Embedding(V, 8), nn.LSTM(8, 12, 2), nn.Linear(12, V)
            self.state: Any = None

        def forward(self, x: hg.Tensor) -> hg.Tensor:
            y, state = self.rnn(F.dropout(self.emb(x), 0.0), self.state)
            self.state = tuple(s.detach() for s in state)
            return self.out(y)

    def step(model: nn.Module, dev: str) -> hg.Tensor:
        x, t = hg.tensor(ids[:-1], device=dev), hg.tensor(ids[1:], device=dev)
        return F.cross_entropy(model(x).reshape(T * B, V), t.reshape(-1))

    _same_training(LM, step)


@needs_device
def test_seq2seq_trains_and_decodes_on_device() -> None:
    from handgrad.seq2seq.decoding import beam_search, greedy_decode
    from handgrad.seq2seq.model import Seq2Seq

    rng = np.random.default_rng(2)
    src = rng.integers(4, 12, (3, 5))
    src[2, 3:] = 0  # padding (pad id 0)
    lengths = np.array([5, 5, 3])
    tgt = rng.integers(4, 13, (3, 6))

    def make() -> nn.Module:
        return Seq2Seq(12, 13, embedding_size=8, hidden_size=8)

    def step(model: nn.Module, dev: str) -> hg.Tensor:
        logits, _ = model(hg.tensor(src, device=dev), lengths, hg.tensor(tgt[:, :-1], device=dev))
        return F.cross_entropy(logits.reshape(-1, 13), hg.tensor(tgt[:, 1:], device=dev).reshape(-1), ignore_index=0)

    _same_training(make, step)
    outs = {}
    for dev in ("cpu", TEST_DEVICE):
        hg.manual_seed(0)
        model = make().to(dev).eval()
        with hg.no_grad():
            stepf, st, select = model.decoder_step_fn(hg.tensor(src, device=dev), lengths)
            greedy = greedy_decode(stepf, st, 3, 1, 2, 7)
            stepf, st, select = model.decoder_step_fn(hg.tensor(src, device=dev), lengths)
            beams = beam_search(stepf, st, 3, 1, 2, 7, beam_size=2, select=select)
        outs[dev] = (greedy, beams)
    assert outs[TEST_DEVICE][0] == outs["cpu"][0]
    assert str(outs[TEST_DEVICE][1]) == str(outs["cpu"][1])
    from handgrad.seq2seq.training import attention_weights, decode_ids

    res = {}
    for dev in ("cpu", TEST_DEVICE):  # the library's own host-side decoding helpers, fed host data
        hg.manual_seed(0)
        model = make().to(dev)
        res[dev] = (decode_ids(model, [[5, 6, 7], [8, 9]], 6, beam_size=2), attention_weights(model, [5, 6, 7], [4]))
    assert res[TEST_DEVICE][0] == res["cpu"][0]
    assert type(res[TEST_DEVICE][1]) is np.ndarray
    np.testing.assert_allclose(res[TEST_DEVICE][1], res["cpu"][1], rtol=1e-5)


@needs_device
def test_attention_masks_given_as_host_arrays_go_to_the_device() -> None:
    def make() -> nn.Module:
        class M(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.mha = nn.MultiheadAttention(4, 2, batch_first=True, dtype="float64")

            def forward(self, q: hg.Tensor) -> Any:
                pad = np.array([[False, False, True], [False, False, False]])
                causal = np.triu(np.ones((3, 3), bool), 1)
                return [self.mha(q, q, q, key_padding_mask=pad, attn_mask=causal)[0],
                        F.scaled_dot_product_attention(q, q, q, attn_mask=~causal)]

        return M()

    check_on_device(make, [_r(2, 3, 4)])


@needs_device
def test_trainer_sends_batches_to_the_model_device() -> None:
    """``Trainer`` + ``DataLoader`` with the model on the test device: the loop moves each host batch there
    (``backend.send``) and gives the CPU run's history."""
    from handgrad.data import DataLoader, TensorDataset
    from handgrad.train import Trainer

    x = np.random.default_rng(3).standard_normal((24, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    histories = {}
    for dev in ("cpu", TEST_DEVICE):
        hg.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).to(dev)
        loader = DataLoader(TensorDataset(hg.tensor(x), hg.tensor(y)), batch_size=8, shuffle=True, seed=1)
        trainer = Trainer(model, hg.optim.Adam(model.parameters(), lr=1e-2), F.cross_entropy, verbose=False,
                          progress=False)
        hist = trainer.fit(loader, loader, epochs=2)
        histories[dev] = [hist[k] for k in ("loss", "val_loss", "val_accuracy")]
        assert all(p.device == dev for p in model.parameters())
    assert np.allclose(np.asarray(histories[TEST_DEVICE], float), np.asarray(histories["cpu"], float), rtol=1e-5)


@needs_device
def test_gradcheck_runs_on_the_device_and_can_fail_there() -> None:
    x = hg.randn(3, 4, dtype="float64", device=TEST_DEVICE, requires_grad=True)
    assert hg.gradcheck(lambda a: (a.tanh() * a).sum(1), (x,))
    assert hg.gradcheck(lambda a: (a.tanh() * a).sum(1), (x,), directions=3)
    with pytest.raises(hg.GradcheckError):  # a gradient that drops a path
        hg.gradcheck(lambda a: a.detach() * a, (x,))
