"""The layer and recurrent-kernel matrix on the test device (``tests/_device.py``: the strict CuPy stand-in,
or a GPU with ``HANDGRAD_TEST_DEVICE=cuda``): each entry forward and backward equal to the same computation
on NumPy, every result on the device."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _device import ON_DEVICE, TEST_DEVICE, assert_close_to_cpu, device

import handgrad as hg
import handgrad.functional as F
import handgrad.nn as nn

needs_device = pytest.mark.skipif(not ON_DEVICE, reason="HANDGRAD_TEST_DEVICE=cpu: no device pass")


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
