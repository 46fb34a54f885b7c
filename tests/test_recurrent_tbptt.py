"""Truncated BPTT helpers: detach_state on tensors and containers, tbptt_windows, and a carried-and-detached
LSTM state over several windows giving PyTorch's numbers window by window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import handgrad
from handgrad import nn
from handgrad.engine.tensor import Tensor
from handgrad.recurrent import detach_state, tbptt_windows


def test_detach_state_keeps_values_and_containers():
    a = handgrad.randn(2, 3, requires_grad=True)
    h, c = a * 2, a * 3
    assert h.grad_fn is not None
    dh, dc = detach_state((h, c))
    assert dh.grad_fn is None and not dh.requires_grad and dh.array is h.array and dc.array is c.array
    nested = detach_state([h, {"c": c, "none": None}])
    assert isinstance(nested, list) and nested[1]["c"].grad_fn is None and nested[1]["none"] is None
    assert detach_state(None) is None
    assert detach_state(h).grad_fn is None


def test_detach_state_rejects_other_types():
    with pytest.raises(TypeError, match=r"detach_state: expected a Tensor, None, or a tuple/list/dict .* got ndarray"):
        detach_state(np.zeros(3))


def test_windows():
    stream = np.arange(10 * 2).reshape(10, 2)
    wins = list(tbptt_windows(stream, bptt=4))
    assert [w[0].shape for w in wins] == [(4, 2), (4, 2), (1, 2)]
    np.testing.assert_array_equal(wins[0][1].array, stream[1:5])
    np.testing.assert_array_equal(wins[2][0].array, stream[8:9])
    np.testing.assert_array_equal(wins[2][1].array, stream[9:10])
    with pytest.raises(ValueError, match=r"tbptt_windows: bptt must be a positive integer, got 0"):
        list(tbptt_windows(stream, 0))
    with pytest.raises(ValueError, match=r"tbptt_windows: the stream needs at least 2 steps"):
        list(tbptt_windows(stream[:1], 3))


def test_truncated_bptt_matches_torch_window_by_window():
    torch.manual_seed(0)
    T, B, I, H = 9, 3, 2, 4
    tm = torch.nn.LSTM(I, H).double()
    hm = nn.LSTM(I, H).double()
    hm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    xs = torch.randn(T, B, I, dtype=torch.float64)
    t_state = h_state = None
    for start in range(0, T, 4):
        x = xs[start : start + 4]
        tm.zero_grad()
        hm.zero_grad()
        t_state = None if t_state is None else tuple(s.detach() for s in t_state)
        out, t_state = tm(x, t_state)
        (out.pow(2).sum() + t_state[1].sum()).backward()
        h_state = detach_state(h_state)
        hout, h_state = hm(Tensor(x.numpy()), h_state)
        ((hout * hout).sum() + h_state[1].sum()).backward()
        np.testing.assert_allclose(hout.array, out.detach().numpy(), rtol=1e-10, atol=1e-12)
        for name, p in tm.named_parameters():  # the gradient of this window only: stopped at the boundary
            np.testing.assert_allclose(getattr(hm, name).grad.array, p.grad.numpy(), rtol=1e-10, atol=1e-12)
