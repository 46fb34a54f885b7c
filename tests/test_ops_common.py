"""Shared checker for the op tests: every op against finite differences AND against PyTorch.

``check_op(hg_fn, torch_fn, arrays)`` runs, on float64 copies of ``arrays`` (all requiring grad unless
``grad=`` says which):
  1. forward: handgrad vs torch, rtol 1e-8;
  2. backward: the gradient of sum(out * G) for a random cotangent G, handgrad vs torch, rtol 1e-8;
  3. ``handgrad.gradcheck`` (central differences, float64);
  4. float32 forward vs torch at float32 tolerances.
Integer/bool arrays are passed through as constants.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from _device import ON_DEVICE, TEST_DEVICE, assert_close_to_cpu, device

import handgrad as hg

RTOL64, ATOL64 = 1e-8, 1e-10
RTOL32, ATOL32 = 2e-5, 2e-6


def _outs(o: Any) -> list[Any]:
    return list(o) if isinstance(o, (tuple, list)) else [o]


def _hg_in(a: Any, dtype: Any, grad: bool) -> Any:
    if isinstance(a, np.ndarray) and a.dtype.kind == "f":
        return hg.tensor(a.astype(dtype), requires_grad=grad)
    if isinstance(a, np.ndarray):
        return hg.tensor(a)
    return a


def _torch_in(a: Any, dtype: Any, grad: bool) -> Any:
    if isinstance(a, np.ndarray) and a.dtype.kind == "f":
        return torch.tensor(a.astype(dtype), requires_grad=grad)
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a.copy())
    return a


def check_op(
    hg_fn: Callable[..., Any],
    torch_fn: Callable[..., Any],
    arrays: Sequence[Any],
    grad: Sequence[bool] | None = None,
    gradcheck: bool = True,
    directions: int | None = None,
    f32: bool = True,
    seed: int = 0,
) -> None:
    arrays = [np.asarray(a) if isinstance(a, np.generic) else a for a in arrays]
    grad = [isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in arrays] if grad is None else list(grad)
    rng = np.random.default_rng(seed)
    hin = [_hg_in(a, np.float64, g) for a, g in zip(arrays, grad)]
    tin = [_torch_in(a, np.float64, g) for a, g in zip(arrays, grad)]
    ho, to = _outs(hg_fn(*hin)), _outs(torch_fn(*tin))
    assert len(ho) == len(to), f"{len(ho)} outputs vs torch's {len(to)}"
    for h, t in zip(ho, to):
        assert tuple(h.shape) == tuple(t.shape), f"shape {h.shape} vs torch {tuple(t.shape)}"
        assert h.dtype == np.dtype(str(t.dtype).replace("torch.", "")), f"dtype {h.dtype} vs torch {t.dtype}"
        np.testing.assert_allclose(h.numpy(), t.detach().numpy(), rtol=RTOL64, atol=ATOL64)
    # backward with a random cotangent on every floating output
    hl, tl = None, None
    for h, t in zip(ho, to):
        if h.dtype.kind != "f" or not t.requires_grad:
            continue
        G = rng.standard_normal(h.shape)
        hl = (h * hg.tensor(G)).sum() if hl is None else hl + (h * hg.tensor(G)).sum()
        tl = (t * torch.tensor(G)).sum() if tl is None else tl + (t * torch.tensor(G)).sum()
    if tl is not None:
        hl.backward()
        tl.backward()
        for i, (h, t, g) in enumerate(zip(hin, tin, grad)):
            if not g:
                continue
            tg = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
            hgv = np.zeros(h.shape) if h.grad is None else h.grad.numpy()
            np.testing.assert_allclose(hgv, tg, rtol=RTOL64, atol=ATOL64, err_msg=f"gradient of input {i}")
        if gradcheck:
            fresh = [_hg_in(a, np.float64, g) for a, g in zip(arrays, grad)]
            assert hg.gradcheck(hg_fn, tuple(fresh), directions=directions)
    if f32:
        h32in = [_hg_in(a, np.float32, g) for a, g in zip(arrays, grad)]
        t32in = [_torch_in(a, np.float32, g) for a, g in zip(arrays, grad)]
        h32, t32 = _outs(hg_fn(*h32in)), _outs(torch_fn(*t32in))
        for h, t in zip(h32, t32):
            if h.dtype.kind == "f":
                assert h.dtype == np.float32, f"float32 input gave {h.dtype}"
            np.testing.assert_allclose(h.numpy(), t.detach().numpy(), rtol=RTOL32, atol=ATOL32)
        # float32 backward, under anomaly mode so that a gradient promoted to float64 inside any op is an error
        if tl is not None and all(np.isfinite(h.numpy()).all() for h in h32 if h.dtype.kind == "f"):
            h32in = [_hg_in(a, np.float32, g) for a, g in zip(arrays, grad)]
            with hg.detect_anomaly(), np.errstate(all="ignore"):
                try:
                    hl = None
                    for h in _outs(hg_fn(*h32in)):
                        if h.dtype.kind == "f" and h.requires_grad:
                            G = hg.tensor(rng.standard_normal(h.shape), dtype="float32")
                            hl = (h * G).sum() if hl is None else hl + (h * G).sum()
                    if hl is not None:
                        hl.backward()
                except FloatingPointError:
                    pass  # inf/NaN inside on purpose (masks): the dtype check needs finite values
            for h, g in zip(h32in, grad):
                if g and h.grad is not None:
                    assert h.grad.dtype == np.float32


    if ON_DEVICE:
        _check_on_device(hg_fn, arrays, grad, seed)


def _check_on_device(hg_fn: Callable[..., Any], arrays: Sequence[Any], grad: Sequence[bool], seed: int) -> None:
    """The op on the test device (``tests/_device.py``: the strict CuPy stand-in unless the environment names
    a GPU) against the same op on NumPy: outputs on that device, forward and backward equal."""
    outs = {}
    for dev in ("cpu", TEST_DEVICE):
        ins = [_hg_in(a, np.float64, g) for a, g in zip(arrays, grad)]
        ins = [x.to(dev).detach().requires_grad_(x.requires_grad) if isinstance(x, hg.Tensor) else x for x in ins]
        o = _outs(hg_fn(*ins))
        rng = np.random.default_rng(seed + 1)
        loss = None
        for h in o:
            if h.dtype.kind == "f" and h.requires_grad:
                term = (h * hg.tensor(rng.standard_normal(h.shape), device=dev)).sum()
                loss = term if loss is None else loss + term
        if loss is not None:
            loss.backward()
        outs[dev] = (o, ins)
    (co, ci), (do, di) = outs["cpu"], outs[TEST_DEVICE]
    for i, (c, d) in enumerate(zip(co, do)):
        assert d.device == device(), f"output {i} is on {d.device}, not on the input device {TEST_DEVICE}"
        assert d.dtype == c.dtype, f"output {i}: dtype {d.dtype} on {TEST_DEVICE} vs {c.dtype} on cpu"
        assert_close_to_cpu(d, c, f"output {i} on {TEST_DEVICE}")
    for i, (c, d) in enumerate(zip(ci, di)):
        if isinstance(c, hg.Tensor) and c.grad is not None:
            assert d.grad is not None, f"no gradient for input {i} on {TEST_DEVICE}"
            assert d.grad.device == device(), f"gradient of input {i} is on {d.grad.device}"
            assert_close_to_cpu(d.grad, c.grad, f"gradient of input {i} on {TEST_DEVICE}")


def randn(*shape: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale


def positive(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.5, 2.0, shape)


def test_check_op_catches_a_wrong_op() -> None:
    """The checker itself must be able to fail."""
    import pytest

    with pytest.raises(AssertionError):
        check_op(lambda x: x * 2.0, lambda x: x * 2.0000001, [randn(3)])
