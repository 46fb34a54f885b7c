#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: install the CuPy extra, run the gpu-marked tests and the device tests on the
# GPU, then time one training step of LeNet (batch 128) and of a 2 x 256 char-LSTM (50 steps x 32 streams) on
# the GPU against PyTorch on the CPU and handgrad on the CPU, and print one table. Under 10 minutes.
#
#   bash benchmarks/gpu_check.sh              (GPU_CHECK_DEVICE=strict: the same on the CuPy stand-in, no GPU)
#
# Exit status: non-zero if a test fails. Never run as part of the default test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
status=0
if [ "$DEVICE" = cuda ]; then
    nvidia-smi -L || { echo "gpu_check: no NVIDIA GPU (nvidia-smi failed)" >&2; exit 2; }
    timeout 240 python -m pip install -q -e ".[gpu,test]" || { echo "gpu_check: installing the [gpu] extra failed" >&2; exit 2; }
    python -c "import cupy; print('CuPy', cupy.__version__, 'on', cupy.cuda.runtime.getDeviceProperties(0)['name'].decode())"
fi
echo "== gpu tests (tests/test_distributed_gpu.py, device $DEVICE)"
HANDGRAD_GPU_TEST_DEVICE="$DEVICE" timeout 180 python -m pytest -q -m gpu tests/test_distributed_gpu.py -p no:cacheprovider || status=1
echo "== device tests on $DEVICE (tests/test_device*.py)"
HANDGRAD_TEST_DEVICE="$DEVICE" timeout 240 python -m pytest -q -x tests/test_device*.py -p no:cacheprovider || status=1
echo "== one training step: handgrad on $DEVICE vs PyTorch CPU vs handgrad CPU ($OMP_NUM_THREADS CPU threads)"
GPU_CHECK_DEVICE="$DEVICE" timeout 180 python - <<'PY' || status=1
import os, statistics, time

import numpy as np
import torch

import handgrad as hg
import handgrad.functional as F
import handgrad.nn as nn
from handgrad.architectures import LeNet
from handgrad.engine import backend

DEV = os.environ["GPU_CHECK_DEVICE"]


def sync(dev):
    if dev == "cuda":
        import cupy
        cupy.cuda.Device().synchronize()


class CharLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.rnn, self.head = nn.Embedding(65, 64), nn.LSTM(64, 256, num_layers=2), nn.Linear(256, 65)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        return self.head(out.reshape(-1, 256))


class TorchCharLSTM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.rnn = torch.nn.Embedding(65, 64), torch.nn.LSTM(64, 256, num_layers=2)
        self.head = torch.nn.Linear(256, 65)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        return self.head(out.reshape(-1, 256))


def torch_lenet():
    c = torch.nn
    return c.Sequential(c.Conv2d(1, 32, 5), c.ReLU(), c.MaxPool2d(2), c.Conv2d(32, 64, 5), c.ReLU(), c.MaxPool2d(2),
                        c.Flatten(), c.Linear(1024, 128), c.ReLU(), c.Linear(128, 10))


def data(name):
    rng = np.random.default_rng(0)
    if name == "LeNet b128":
        return rng.standard_normal((128, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 128)
    return rng.integers(0, 65, (50, 32)), rng.integers(0, 65, 50 * 32)


def time_handgrad(name, dev, steps=10):
    hg.manual_seed(0)
    model = (LeNet() if name.startswith("LeNet") else CharLSTM()).to(dev)
    opt = hg.optim.SGD(model.parameters(), lr=0.01)
    x, y = backend.send((hg.tensor(data(name)[0]), hg.tensor(data(name)[1])), dev)
    times = []
    for i in range(steps + 2):
        sync(dev)
        t = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sync(dev)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_torch(name, steps=10):
    torch.manual_seed(0)
    model = torch_lenet() if name.startswith("LeNet") else TorchCharLSTM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = (torch.from_numpy(a) for a in data(name))
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
print(f"\n| step (median of 10) | handgrad {DEV} | PyTorch CPU | handgrad CPU | {DEV} vs handgrad CPU |")
print("|---|---|---|---|---|")
for name in ("LeNet b128", "char-LSTM 2x256 T50 B32"):
    g, t, c = time_handgrad(name, DEV), time_torch(name), time_handgrad(name, "cpu")
    print(f"| {name} | {g * 1e3:.1f} ms | {t * 1e3:.1f} ms | {c * 1e3:.1f} ms | {c / g:.1f}x |")
PY
echo "gpu_check: $([ $status = 0 ] && echo 'all passed' || echo 'FAILURES above')"
exit $status
