"""handgrad.distributed: data parallelism over MPI.

In-process tests run a world of one (no MPI; the same code paths: buckets, host copies, sharding). The tests
marked by ``_needs_mpiexec`` start real ranks with ``mpiexec -n 2`` on this machine (``tests/_distributed_worker.py``),
each bounded by ``timeout``; they are skipped with a reason when ``mpiexec`` or ``mpi4py`` is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from _device import ON_DEVICE, device

import handgrad as hg
import handgrad.distributed as dist
import handgrad.functional as F
import handgrad.nn as nn
from handgrad import optim
from handgrad.data.dataloader import DataLoader
from handgrad.data.dataset import TensorDataset
from handgrad.distributed.sampler import DistributedSampler, ShardedStreamLoader, shard_loader
from handgrad.train import Trainer
from handgrad.train.bptt import StreamLoader

WORKER = os.path.join(os.path.dirname(__file__), "_distributed_worker.py")
MPIEXEC = shutil.which("mpiexec")
_needs_mpiexec = pytest.mark.skipif(MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
                                    reason="needs mpiexec and mpi4py (pip install 'handgrad[distributed]')")
# root needs --allow-run-as-root; --oversubscribe: two ranks even where fewer cores are free
MPI_FLAGS = ["--allow-run-as-root", "--oversubscribe"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}


def _mpiexec(args: list[str], limit: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    # timeout -k: the whole job (mpiexec and its ranks) is killed if it ever hangs
    p = subprocess.run(["timeout", "-k", "5", str(limit), MPIEXEC, *MPI_FLAGS, "-n", "2", sys.executable, WORKER,
                        *args], capture_output=True, text=True, env=ENV)
    return p, time.perf_counter() - start


def _single(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["timeout", "60", sys.executable, WORKER, *args], capture_output=True, text=True, env=ENV)


def _weights(folder) -> dict[str, np.ndarray]:
    with np.load(os.path.join(folder, "weights.npz")) as d:
        return {k: d[k] for k in d.files}


# -- a world of one, in this process ---------------------------------------------------------------------------
def test_import_handgrad_does_not_import_mpi4py():
    code = "import sys, handgrad, handgrad.distributed as d; print(d.get_world_size(), 'mpi4py' in sys.modules)"
    env = {k: v for k, v in ENV.items() if k not in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.split() == ["1", "False"], out.stderr


def test_sampler_shards_are_disjoint_cover_and_reshuffle():
    data = np.arange(103)
    shards = [DistributedSampler(data, 4, r, seed=5) for r in range(4)]
    for s in shards:
        s.set_epoch(1)
    idx = [s.indices() for s in shards]
    assert {len(i) for i in idx} == {26}  # padded to 104: equal steps on every rank
    perm = np.random.default_rng([5, 1]).permutation(103)
    # all 103 indices once, plus the first one again as padding
    assert sorted(np.concatenate(idx).tolist()) == sorted(list(range(103)) + [int(perm[0])])
    # rank r takes every 4th index of the epoch's permutation: together one process's order
    assert np.array_equal(np.stack(idx, 1).reshape(-1)[:103], perm)
    for s in shards:
        s.set_epoch(2)
    assert not np.array_equal(shards[0].indices(), idx[0])  # a new order every epoch
    unpadded = [DistributedSampler(data, 4, r, seed=5, pad=False).indices() for r in range(4)]
    assert sorted(np.concatenate(unpadded).tolist()) == list(range(103))  # disjoint, no repeats
    with pytest.raises(ValueError, match="rank must be in"):
        DistributedSampler(data, 2, 2)


def test_stream_shards_are_the_global_streams():
    ids = np.arange(2000) % 37
    full = StreamLoader(ids, 8, 10, seed=1)
    parts = [ShardedStreamLoader(ids, 8, 10, seed=1, rank=r, world_size=2) for r in range(2)]
    for _ in range(30):  # past a wrap: same shift on every rank
        w = next(iter([full._window()]))
        ws = [p._window() for p in parts]
        assert np.array_equal(np.concatenate([x.x for x in ws]), w.x)
        if full._full():
            full._wrap()
            for p in parts:
                p._wrap()
    with pytest.raises(ValueError, match="do not split evenly"):
        ShardedStreamLoader(ids, 5, 10, rank=0, world_size=2)


def test_shard_loader_refuses_what_it_cannot_split():
    ds = TensorDataset(np.zeros((10, 2)), np.zeros(10, dtype=np.int64))
    with pytest.raises(TypeError, match="cannot split a list"):
        shard_loader([1, 2, 3])
    with pytest.raises(TypeError, match="own sampler"):
        shard_loader(DataLoader(ds, batch_size=2, sampler=[0, 1]))


def _model() -> nn.Module:
    hg.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3)).to(dtype=hg.float64)


def test_check_same_model_names_the_difference():
    class TwoRanks(dist.comm.SelfComm):  # rank 1 reports a wider first layer
        def allgather(self, obj):
            other = [(n, (13, 5) if n == "0.weight" else s, d) for n, s, d in obj]
            return [obj, other]

    with pytest.raises(dist.ModelMismatchError, match=r"0\.weight \(12, 5\) float64 on rank 0 vs 0\.weight \(13, 5\)"):
        dist.check_same_model(_model(), TwoRanks())


def test_world_of_one_trainer_and_checkpoint_resume(tmp_path):
    """distributed=True with one rank: same numbers as the rank-independent loop, and its checkpoint resumes
    in a plain (non-distributed) Trainer and back."""
    rng = np.random.default_rng(7)
    ds = TensorDataset(rng.standard_normal((64, 5)), rng.integers(0, 3, 64))
    m = _model()
    tr = Trainer(m, optim.SGD(m.parameters(), lr=0.1), F.cross_entropy, distributed=True, verbose=False)
    assert isinstance(tr.updater, dist.DistributedDataParallel) and tr.is_writer
    tr.fit(DataLoader(ds, batch_size=16, shuffle=True, seed=1), epochs=1)
    path = tr.save_checkpoint(tmp_path / "c.safetensors")
    m2 = _model()
    plain = Trainer(m2, optim.SGD(m2.parameters(), lr=0.1), F.cross_entropy, verbose=False)
    plain.load_checkpoint(path)  # "updater": StandardUpdater in both
    for a, b in zip(m.parameters(), m2.parameters()):
        assert np.array_equal(a.numpy(), b.numpy())


@pytest.mark.skipif(not ON_DEVICE, reason="HANDGRAD_TEST_DEVICE=cpu: no device pass")
def test_gradient_buckets_round_trip_through_the_host_on_a_device():
    """Device gradients are copied to host buckets and back (a world of one: the mean is the gradient)."""
    m = _model().to(device())
    x = hg.Tensor(np.random.default_rng(0).standard_normal((4, 5))).to(device())
    F.cross_entropy(m(x), hg.Tensor(np.array([0, 1, 2, 0])).to(device())).backward()
    before = [hg.engine.backend.to_host(p.grad.array).copy() for p in m.parameters()]
    ddp = dist.DistributedDataParallel(hg.train.StandardUpdater(m, optim.SGD(m.parameters(), lr=0.1),
                                                                F.cross_entropy), bucket_cap_mb=1e-4)
    ddp.allreduce_gradients()
    for p, b in zip(m.parameters(), before):
        assert p.grad.device == device()
        np.testing.assert_array_equal(hg.engine.backend.to_host(p.grad.array), b)


# -- real ranks -------------------------------------------------------------------------------------------------
EQUIVALENCE = ["sgd", "adam", "bptt", "syncbn"]


@pytest.fixture(scope="module")
def equivalence_runs(tmp_path_factory):
    """Every equivalence case once in one process and once on 2 ranks (one launch each: start-up is most of it)."""
    root = tmp_path_factory.mktemp("equivalence")
    p1 = _single([",".join(EQUIVALENCE), str(root / "one")])
    p2, _ = _mpiexec([",".join(EQUIVALENCE), str(root / "two")])
    return root, p1, p2


@_needs_mpiexec
@pytest.mark.parametrize("opt", EQUIVALENCE)
def test_two_ranks_half_batch_equal_one_process_full_batch(equivalence_runs, opt):
    """20 steps (global batch 16: 8 per rank; bptt: 8 streams, 4 per rank; syncbn: with a SyncBatchNorm) on
    2 ranks vs 1 process: weights, running statistics and epoch losses to 1e-12."""
    root, p1, p2 = equivalence_runs
    assert p1.returncode == 0, p1.stderr
    assert p2.returncode == 0, p2.stderr
    a, b = _weights(root / "one" / opt), _weights(root / "two" / opt)
    assert int(a["steps"]) == int(b["steps"]) == 20
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=1e-12, err_msg=k)
    if opt in ("sgd", "adam"):
        assert not np.array_equal(a["0.weight"], _model()[0].weight.numpy())  # it trained


@_needs_mpiexec
@pytest.mark.slow
def test_plain_batch_norm_differs_across_ranks(tmp_path):
    """The documented difference: a plain BatchNorm1d normalises each rank's half batch by itself (as PyTorch's
    DDP without SyncBatchNorm), so 2 ranks do not follow 1 process."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    assert _single(["bn", str(one)]).returncode == 0
    p, _ = _mpiexec(["bn", str(two)])
    assert p.returncode == 0, p.stderr
    a, b = _weights(one), _weights(two)
    assert np.abs(a["0.weight"] - b["0.weight"]).max() > 1e-3


@_needs_mpiexec
def test_resume_on_another_number_of_ranks(tmp_path):
    """Epoch 1 on 2 ranks, epoch 2 resumed in 1 process = 2 epochs in 1 process (the shuffles come from
    (seed, epoch), the optimizer state from the checkpoint)."""
    whole, part = tmp_path / "whole", tmp_path / "part"
    whole.mkdir(), part.mkdir()
    assert _single(["sgd", str(whole)]).returncode == 0
    p, _ = _mpiexec(["sgd", str(part), "1"])  # epoch 1 only
    assert p.returncode == 0, p.stderr
    r = _single(["sgd", str(part), "2", str(part / "last.safetensors")])
    assert r.returncode == 0, r.stderr
    a, b = _weights(whole), _weights(part)
    for k in ("0.weight", "2.bias", "loss"):
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=1e-12, err_msg=k)


@_needs_mpiexec
@pytest.mark.parametrize("how", ["raise", "die"])
def test_a_failing_rank_stops_the_job_and_the_checkpoint_survives(tmp_path, how):
    p, took = _mpiexec([how, str(tmp_path)])
    assert p.returncode not in (0, 124, 137), p.stderr  # stopped, not timed out
    assert took < 20, f"took {took:.1f} s"
    if how == "raise":
        assert "handgrad.distributed: rank 1 of 2: failed (RuntimeError: boom in a test rank); stopping all 2 ranks" \
            in p.stderr
    else:
        assert "exited with non-zero status" in p.stderr
    state = hg.load(str(tmp_path / "last.safetensors"))  # epoch 1's checkpoint, whole
    assert int(state["epoch"]) == 1
    assert not (tmp_path / "weights.npz").exists()


@_needs_mpiexec
def test_mismatched_model_is_named(tmp_path):
    p, took = _mpiexec(["mismatch", str(tmp_path)])
    assert p.returncode != 0 and took < 20
    assert "rank 1's model differs from rank 0's: 0.weight (12, 5) float64 on rank 0 vs 0.weight (13, 5) float64 " \
           "on rank 1" in p.stderr


@_needs_mpiexec
@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet-fashion", "char-lm"])
def test_command_line_runs_on_two_ranks(tmp_path, name):
    """``mpiexec -n 2 handgrad run NAME --quick --distributed``: rank 0 alone prints and writes the out dir."""
    out = tmp_path / "run"
    exe = shutil.which("handgrad")
    if exe is None:
        pytest.skip("the handgrad console script is not installed (pip install -e .)")
    p = subprocess.run(["timeout", "-k", "5", "300", MPIEXEC, *MPI_FLAGS, "-n", "2", exe, "run", name, "--quick",
                        "--distributed", "--out", str(out)], capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("results: ") == 1  # printed by rank 0 only
    for f in ("results.json", "history.json", "last.safetensors", "learning_curves.png"):
        assert (out / f).exists(), f
    assert int(hg.load(str(out / "last.safetensors"))["updater_state"]["world_size"]) == 2


@_needs_mpiexec
@pytest.mark.slow
def test_command_line_error_on_the_ranks_stops_the_job(tmp_path):
    """A user error under --distributed stops every rank (no hang), one line per rank, exit status 2."""
    exe = shutil.which("handgrad")
    if exe is None:
        pytest.skip("the handgrad console script is not installed (pip install -e .)")
    start = time.perf_counter()
    p = subprocess.run(["timeout", "-k", "5", "120", MPIEXEC, *MPI_FLAGS, "-n", "2", exe, "run", "lenet-fashion",
                        "--quick", "--distributed", "--out", str(tmp_path / "run"), "--resume", str(tmp_path / "no")],
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 2 and time.perf_counter() - start < 60, p.stderr[-2000:]
    assert "rank 0 of 2: failed (ExperimentError: --resume: no checkpoint at" in p.stderr
    assert not (tmp_path / "run").exists()
