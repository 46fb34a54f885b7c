"""The GPU path (``device="cuda"`` through CuPy), on a real GPU: marked ``gpu``; skipped with a one-line reason
where there is no GPU or no CuPy (``pip install 'handgrad[gpu]'``; ``benchmarks/gpu_check.sh`` runs them).

``HANDGRAD_GPU_TEST_DEVICE=strict`` runs the same tests on the strict CuPy stand-in
(``handgrad/engine/_strict.py``), which is how their logic is checked on a machine without a GPU. On a GPU
float64 results agree with the CPU's to ~1e-10 (cuBLAS and CuPy's reductions sum in other orders).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import handgrad as hg
import handgrad.distributed as dist
import handgrad.functional as F
import handgrad.nn as nn
from handgrad import optim
from handgrad.data.dataloader import DataLoader
from handgrad.data.dataset import TensorDataset
from handgrad.engine import backend
from handgrad.train import StandardUpdater, Trainer

DEVICE = os.environ.get("HANDGRAD_GPU_TEST_DEVICE", "cuda").strip().lower()


def _gpu_missing() -> str | None:
    if DEVICE != "cuda":
        return None
    try:
        import cupy
    except ImportError:
        return "no CuPy (pip install 'handgrad[gpu]')"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no GPU"
    except Exception as e:  # noqa: BLE001 -- no driver: CUDARuntimeError
        return f"no usable GPU ({type(e).__name__})"
    return None


_why = _gpu_missing()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_why is not None, reason=f"needs a GPU: {_why}")]
RTOL = 1e-12 if DEVICE == "strict" else 1e-9


def _host(t) -> np.ndarray:
    return t.numpy() if isinstance(t, hg.Tensor) else backend.to_host(t)


def test_tensors_move_to_the_gpu_and_back():
    x = hg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    g = x.to(DEVICE)
    assert g.device == hg.device(DEVICE) and not isinstance(g.array, np.ndarray)
    y = (g * g).sum()
    y.backward()
    np.testing.assert_allclose(_host(x.grad), 2 * np.arange(6.0).reshape(2, 3), rtol=RTOL)
    assert y.to("cpu").item() == 55.0


def _steps(make, batch, device: str, n: int = 3) -> dict[str, np.ndarray]:
    hg.manual_seed(0)
    model = make().to(dtype=hg.float64).to(device)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    x, y = backend.send(batch, device)
    for _ in range(n):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: _host(v) for k, v in model.state_dict().items()}


class _LSTMLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out.reshape(-1, 16))


@pytest.mark.parametrize("name", ["lenet", "lstm"])
def test_training_steps_on_the_gpu_equal_the_cpu(name):
    from handgrad.architectures import LeNet

    rng = np.random.default_rng(0)
    if name == "lenet":
        make, batch = LeNet, (hg.tensor(rng.standard_normal((6, 1, 28, 28))), hg.tensor(np.arange(6) % 10))
    else:
        make, batch = _LSTMLM, (hg.tensor(rng.standard_normal((7, 3, 8))), hg.tensor(rng.integers(0, 5, 21)))
    cpu, gpu = _steps(make, batch, "cpu"), _steps(make, batch, DEVICE)
    for k in cpu:
        np.testing.assert_allclose(gpu[k], cpu[k], rtol=RTOL, atol=RTOL, err_msg=k)


def test_data_parallel_step_on_the_gpu():
    """DistributedDataParallel with GPU gradients (host round trip for MPI) + the Trainer on the GPU."""
    rng = np.random.default_rng(1)
    ds = TensorDataset(rng.standard_normal((32, 5)), rng.integers(0, 3, 32))
    weights = {}
    for device in ("cpu", DEVICE):
        hg.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype=hg.float64).to(device)
        up = dist.DistributedDataParallel(StandardUpdater(model, optim.SGD(model.parameters(), lr=0.1),
                                                          F.cross_entropy), bucket_cap_mb=1e-4)
        Trainer(updater=up, verbose=False).fit(DataLoader(ds, batch_size=8, shuffle=True, seed=0), epochs=2)
        weights[device] = {k: _host(v) for k, v in model.state_dict().items()}
    for k in weights["cpu"]:
        np.testing.assert_allclose(weights[DEVICE][k], weights["cpu"][k], rtol=RTOL, atol=RTOL, err_msg=k)
