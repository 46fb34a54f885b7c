"""handgrad.utils.data (PyTorch's import path): samplers like torch's, DataLoader(num_workers=N) with real
worker processes (order, per-worker seeds, shared memory, crash and timeout errors that never hang), and
Module.apply's order. Every multi-process test is bounded by a timeout."""

import os
import signal

import numpy as np
import pytest
import torch

import handgrad as hg
import handgrad.nn as nn
from handgrad.utils import data as D


class Squares(D.Dataset):
    """item i = (float32 vector of 2048 copies of i (8 KiB: goes through shared memory), i, worker info)."""

    def __len__(self):
        return 23

    def __getitem__(self, i):
        info = D.get_worker_info()
        return np.full(2048, i, np.float32), i, -1 if info is None else info.id


class Noisy(D.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return np.random.random(), float(hg.rand(1).array[0])


class Crashing(D.Dataset):
    def __init__(self, how):
        self.how = how

    def __len__(self):
        return 10

    def __getitem__(self, i):
        if i == 6:
            if self.how == "raise":
                raise ValueError(f"bad item\nnumber {i}")
            if self.how == "exit":
                os._exit(3)
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "hang":
                import time

                time.sleep(60)
        return np.zeros(3)


def test_torch_import_path_names():
    import handgrad.data

    assert D.DataLoader is handgrad.data.DataLoader and D.TensorDataset is handgrad.data.TensorDataset
    for name in ("Dataset", "TensorDataset", "DataLoader", "Subset", "random_split", "ConcatDataset", "Sampler",
                 "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler", "BatchSampler",
                 "default_collate", "get_worker_info"):
        assert hasattr(torch.utils.data, name) and hasattr(D, name), name


@pytest.mark.parametrize("workers", [0, 3])
def test_workers_preserve_order_and_content(workers):
    loader = D.DataLoader(Squares(), batch_size=4, num_workers=workers, pin_memory=True, timeout=30)
    xs, idx, wids = zip(*list(loader))
    assert len(xs) == len(loader) == 6
    got = np.concatenate([i.array for i in idx])
    np.testing.assert_array_equal(got, np.arange(23))
    for x, i in zip(xs, idx):
        assert x.dtype == np.float32 and x.shape == (len(i.array), 2048)
        np.testing.assert_array_equal(x.array, np.repeat(i.array[:, None], 2048, 1))
    ids = np.concatenate([w.array for w in wids])
    if workers:
        np.testing.assert_array_equal([w.array[0] for w in wids], [k % 3 for k in range(6)])  # round robin
    else:
        assert (ids == -1).all()


def test_workers_with_shuffle_and_samplers_give_the_same_batches_as_in_process():
    ds = D.TensorDataset(np.arange(40.0).reshape(20, 2), np.arange(20))
    for kw in (dict(shuffle=True), dict(sampler=D.WeightedRandomSampler(np.arange(1.0, 21.0), 15)),
               dict(batch_sampler=D.BatchSampler(D.RandomSampler(ds), 6, drop_last=True))):
        runs = []
        for workers in (0, 2):
            hg.manual_seed(5)
            runs.append([b[1].array.copy() for b in D.DataLoader(ds, num_workers=workers, timeout=30,
                                                                 **(dict(batch_size=3) | kw if "batch_sampler" not in
                                                                    kw else kw))])
        assert len(runs[0]) == len(runs[1]) > 1
        for a, b in zip(*runs):
            np.testing.assert_array_equal(a, b)


def test_workers_are_seeded_per_worker_and_reproducibly():
    def draws(seed):
        hg.manual_seed(seed)
        return np.concatenate([np.stack([b[0].array, b[1].array], 1) for b in
                               D.DataLoader(Noisy(), batch_size=2, num_workers=2, timeout=30)])

    a, b, c = draws(1), draws(1), draws(2)
    np.testing.assert_array_equal(a, b)  # same seed: same augmentations
    assert not np.allclose(a, c)
    assert len(np.unique(a[:, 0])) == len(a)  # workers do not repeat each other's streams
    seen = []
    loader = D.DataLoader(Noisy(), batch_size=4, num_workers=2, timeout=30,
                          worker_init_fn=lambda i: np.random.seed(100 + i))
    first = [b[0].array for b in loader]
    seen.append(first)
    np.testing.assert_allclose(first[0][0], np.random.RandomState(100).random_sample())


@pytest.mark.parametrize("how,match", [
    ("raise", r"DataLoader worker 1 raised ValueError while fetching batch 3: bad item number 6"),
    ("exit", r"DataLoader worker 1 \(pid \d+\) exited unexpectedly with exit code 3"),
    ("kill", r"DataLoader worker 1 \(pid \d+\) exited unexpectedly with exit code -9"),
    ("hang", r"DataLoader timed out after 1 seconds waiting for batch 3 from worker 1"),
])
def test_worker_failures_are_one_line_errors_not_hangs(how, match):
    loader = D.DataLoader(Crashing(how), batch_size=2, num_workers=2, timeout=1)
    it = iter(loader)
    got = [next(it) for _ in range(3)]  # batches before the failure arrive normally
    assert len(got) == 3
    with pytest.raises(RuntimeError, match=match) as e:
        next(it)
    assert "\n" not in str(e.value)
    for w in it._workers:  # the workers are gone
        w.join(timeout=5)
        assert not w.is_alive()


def test_worker_init_fn_error_and_bad_arguments():
    def bad_init(i):
        raise ValueError("no GPU here")

    with pytest.raises(RuntimeError, match="raised ValueError in worker_init_fn: no GPU here"):
        list(D.DataLoader(Squares(), num_workers=1, worker_init_fn=bad_init, timeout=30))
    with pytest.raises(ValueError, match="num_workers"):
        D.DataLoader(Squares(), num_workers=-1)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        D.DataLoader(Squares(), batch_size=4, batch_sampler=[[0, 1]])
    with pytest.raises(ValueError, match="persistent_workers need num_workers > 0"):
        D.DataLoader(Squares(), persistent_workers=True)


def test_abandoned_epoch_shuts_its_workers_down_and_leaves_no_shared_memory():
    it = iter(D.DataLoader(Squares(), batch_size=2, num_workers=2, timeout=30))
    next(it)
    workers = list(it._workers)
    pids = [w.pid for w in workers]
    del it
    for w in workers:
        w.join(timeout=5)
        assert not w.is_alive()
    if os.path.isdir("/dev/shm"):
        left = [f for f in os.listdir("/dev/shm") if any(f.startswith(f"handgrad_{p}_") for p in pids)]
        assert left == []  # the prefetched batches' blocks were unlinked


def test_samplers_match_torch_semantics():
    assert list(D.SequentialSampler(range(5))) == list(torch.utils.data.SequentialSampler(range(5)))
    perm = list(D.RandomSampler(range(7), generator=np.random.default_rng(0)))
    assert sorted(perm) == list(range(7))
    long = list(D.RandomSampler(range(4), num_samples=10, generator=0))
    assert len(long) == 10 and sorted(long[:4]) == [0, 1, 2, 3]  # whole permutations first
    assert len(list(D.RandomSampler(range(4), replacement=True, num_samples=9))) == 9
    assert sorted(D.SubsetRandomSampler([3, 8, 9], generator=1)) == [3, 8, 9]
    w = list(D.WeightedRandomSampler([0, 0, 1, 0], 5))
    assert w == [2] * 5
    for n, bs, drop in ((10, 3, False), (10, 3, True), (9, 3, True)):
        ours = list(D.BatchSampler(D.SequentialSampler(range(n)), bs, drop))
        ref = list(torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(range(n)), bs, drop))
        assert ours == ref and len(D.BatchSampler(range(n), bs, drop)) == len(ref)
    with pytest.raises(ValueError, match="without replacement"):
        D.WeightedRandomSampler([1, 0, 1], 3, replacement=False)


def test_module_apply_visits_children_first_in_pytorch_order():
    def build(lib):
        m = lib.nn.Sequential(lib.nn.Linear(2, 3), lib.nn.Sequential(lib.nn.ReLU(), lib.nn.Linear(3, 3)),
                              lib.nn.Tanh())
        shared = lib.nn.Linear(3, 1)
        m.add_module("head", shared)
        m.add_module("head2", shared)
        return m

    orders = {}
    for lib in (hg, torch):
        seen = orders[lib.__name__] = []
        build(lib).apply(lambda mod, seen=seen: seen.append(type(mod).__name__))
    assert orders["handgrad"] == orders["torch"]
    assert orders["handgrad"] == ["Linear", "ReLU", "Linear", "Sequential", "Tanh", "Linear", "Sequential"]
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    net.apply(lambda mod: nn.init.zeros_(mod.weight) if isinstance(mod, nn.Linear) else None)
    assert all((p.array == 0).all() for n, p in net.named_parameters() if n.endswith("weight"))


def _stream_class(lib):
    data = lib.utils.data

    class Stream(data.IterableDataset):
        """Numbers start..stop-1, split between workers by get_worker_info (PyTorch's documented recipe),
        with a different length per worker so that exhausted workers must be skipped."""

        def __init__(self, start, stop):
            self.start, self.stop = start, stop

        def __iter__(self):
            info = data.get_worker_info()
            if info is None:
                return iter(range(self.start, self.stop))
            per = -(-(self.stop - self.start) // info.num_workers)
            lo = self.start + info.id * per
            return iter(range(lo, min(lo + per, self.stop)))

    return Stream


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers,drop_last", [(0, False), (2, False), (3, True), (3, False)])
def test_iterable_dataset_batches_like_torch(workers, drop_last):
    ours = [b.array.tolist() for b in D.DataLoader(_stream_class(hg)(0, 17), batch_size=4, num_workers=workers,
                                                  drop_last=drop_last, timeout=30)]
    theirs = [b.tolist() for b in torch.utils.data.DataLoader(_stream_class(torch)(0, 17), batch_size=4,
                                                               num_workers=workers, drop_last=drop_last)]
    assert ours == theirs
    items = sorted(sum(ours, []))
    assert items == list(range(17)) if not drop_last else set(items) < set(range(17))  # each item once


def test_iterable_dataset_errors_and_chain():
    s = _stream_class(hg)(0, 5)
    with pytest.raises(ValueError, match="IterableDataset: expected unspecified shuffle option"):
        D.DataLoader(s, shuffle=True)
    with pytest.raises(TypeError, match="defines no __len__"):
        len(D.DataLoader(s))
    with pytest.raises(TypeError, match="cannot be indexed"):
        s[0]
    chained = [b.array.tolist() for b in D.DataLoader(s + _stream_class(hg)(10, 12), batch_size=3)]
    assert chained == [[0, 1, 2], [3, 4, 10], [11]]
    with pytest.raises(RuntimeError, match="raised ZeroDivisionError while fetching a batch: division by zero"):
        list(D.DataLoader(_Broken(), batch_size=2, num_workers=1, timeout=30))


class _Broken(D.IterableDataset):
    def __iter__(self):
        yield 1
        yield 1 / 0
