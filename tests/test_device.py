"""Devices: names and errors, moving tensors and modules, per-device generators, thread-local grad mode and
workspace pool, gradcheck on a device. The layer / kernel matrix is in ``test_device_matrix.py``, the short
trainings in ``test_device_training.py`` (all on ``tests/_device.py``'s test device: the strict CuPy
stand-in, or a GPU with ``HANDGRAD_TEST_DEVICE=cuda``)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from _device import ON_DEVICE, TEST_DEVICE, device

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


@needs_device
def test_gradcheck_runs_on_the_device_and_can_fail_there() -> None:
    x = hg.randn(3, 4, dtype="float64", device=TEST_DEVICE, requires_grad=True)
    assert hg.gradcheck(lambda a: (a.tanh() * a).sum(1), (x,))
    assert hg.gradcheck(lambda a: (a.tanh() * a).sum(1), (x,), directions=3)
    with pytest.raises(hg.GradcheckError):  # a gradient that drops a path
        hg.gradcheck(lambda a: a.detach() * a, (x,))
