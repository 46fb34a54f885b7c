"""handgrad.data: datasets, random_split, DataLoader (batching, drop_last, seeded shuffling, collate), transforms."""

from __future__ import annotations

from collections import namedtuple
from functools import partial

import numpy as np
import pytest

import handgrad
from handgrad.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    Subset,
    TensorDataset,
    default_collate,
    random_split,
    transforms,
)


class ListDataset(Dataset):
    """A per-item dataset with no fast path (dicts of mixed leaves)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.calls += 1
        return {"x": np.full((2, 3), float(i)), "y": i, "w": 0.5 * i, "name": f"s{i}", "ok": i % 2 == 0}


def _xy(n=10):
    x = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    y = np.arange(n, dtype=np.int64) * 10
    return x, y


# -- datasets ----------------------------------------------------------------------------------------------
def test_tensor_dataset_items_and_errors():
    x, y = _xy()
    ds = TensorDataset(x, y)
    assert len(ds) == 10
    a, b = ds[3]
    np.testing.assert_array_equal(a, [9.0, 10.0, 11.0])
    assert b == 30
    dt = TensorDataset(handgrad.tensor(x), y)
    t, b = dt[-1]
    assert isinstance(t, handgrad.Tensor) and t.tolist() == [27.0, 28.0, 29.0] and b == 90
    with pytest.raises(ValueError, match=r"TensorDataset: size mismatch.*\(10, 3\), \(9,\)"):
        TensorDataset(x, y[:9])
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()
    with pytest.raises(ValueError, match="0-d"):
        TensorDataset(np.array(1.0))


def test_subset_and_concat():
    x, y = _xy()
    ds = TensorDataset(x, y)
    sub = Subset(ds, [7, 2, 5])
    assert len(sub) == 3 and sub[0][1] == 70 and sub[2][1] == 50
    with pytest.raises(IndexError, match=r"Subset: indices must lie in \[-10, 10\)"):
        Subset(ds, [0, 10])
    cat = ConcatDataset([Subset(ds, [0, 1]), ds])
    assert len(cat) == 12 and cat.cumulative_sizes == [2, 12]
    assert cat[1][1] == 10 and cat[2][1] == 0 and cat[11][1] == 90 and cat[-1][1] == 90
    with pytest.raises(IndexError, match="index 12 out of range for length 12"):
        cat[12]
    with pytest.raises(IndexError, match="index -13 out of range"):
        cat[-13]
    with pytest.raises(ValueError, match="empty"):
        ConcatDataset([])
    both = ds + ds
    assert isinstance(both, ConcatDataset) and len(both) == 20
    # fast path through ConcatDataset: interleaved indices come back in order
    batch = cat._get_batch(np.array([11, 0, 3, 1]))
    np.testing.assert_array_equal(batch[1], [90, 0, 10, 10])
    with pytest.raises(NotImplementedError, match="must implement __getitem__"):
        Dataset()[0]


def test_random_split_sizes_disjoint_and_seeded():
    torch = pytest.importorskip("torch")
    ds = TensorDataset(*_xy(103))
    for lengths in ([0.7, 0.2, 0.1], [0.5, 0.5], [0.33, 0.33, 0.34], [100, 3], [0.1] * 10):
        parts = random_split(ds, lengths, generator=0)
        ref = torch.utils.data.random_split(range(103), lengths, generator=torch.Generator().manual_seed(0))
        assert [len(p) for p in parts] == [len(r) for r in ref], lengths
        idx = np.concatenate([p.indices for p in parts])
        assert sorted(idx.tolist()) == list(range(103))  # disjoint and complete
    a = random_split(ds, [0.8, 0.2], generator=5)
    b = random_split(ds, [0.8, 0.2], generator=np.random.default_rng(5))
    np.testing.assert_array_equal(a[0].indices, b[0].indices)
    handgrad.manual_seed(11)
    c = random_split(ds, [50, 53])
    handgrad.manual_seed(11)
    d = random_split(ds, [50, 53])
    np.testing.assert_array_equal(c[1].indices, d[1].indices)
    assert not np.array_equal(c[0].indices, np.arange(50))  # actually shuffled
    with pytest.raises(ValueError, match=r"sum of input lengths \(100\) does not equal the length of the input "
                                         r"dataset \(103\)"):
        random_split(ds, [50, 50])
    with pytest.raises(ValueError, match="non-negative"):
        random_split(ds, [104, -1])
    with pytest.raises(ValueError, match="fractions summing to 1"):
        random_split(ds, [0.5, 0.4])
    with pytest.raises(TypeError, match="int seed"):
        random_split(ds, [0.5, 0.5], generator="x")


# -- DataLoader --------------------------------------------------------------------------------------------
def test_batching_len_and_drop_last():
    x, y = _xy(10)
    ds = TensorDataset(x, y)
    loader = DataLoader(ds, batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and len(batches) == 3
    assert [b[0].shape for b in batches] == [(4, 3), (4, 3), (2, 3)]
    assert all(isinstance(t, handgrad.Tensor) for b in batches for t in b)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), y)
    assert batches[0][0].dtype == np.float64 and batches[0][1].dtype == np.int64
    dl = DataLoader(ds, batch_size=4, drop_last=True)
    assert len(dl) == 2 and [b[1].tolist() for b in dl] == [[0, 10, 20, 30], [40, 50, 60, 70]]
    assert len(DataLoader(ds, batch_size=20, drop_last=True)) == 0 and list(DataLoader(ds, 20, drop_last=True)) == []
    assert len(DataLoader(ds)) == 10


def test_fast_path_equals_item_path():
    x, y = _xy(37)
    ds = TensorDataset(x, y)
    fast = list(DataLoader(ds, batch_size=8, shuffle=True, seed=3))
    slow = list(DataLoader(ds, batch_size=8, shuffle=True, seed=3, collate_fn=default_collate))
    assert len(fast) == len(slow) == 5
    for (fx, fy), (sx, sy) in zip(fast, slow):
        np.testing.assert_array_equal(fx.numpy(), sx.numpy())
        np.testing.assert_array_equal(fy.numpy(), sy.numpy())
        assert fx.dtype == sx.dtype and fy.dtype == sy.dtype


def test_fast_path_makes_no_per_item_calls():
    class Counting(TensorDataset):
        calls = 0

        def __getitem__(self, i):
            Counting.calls += 1
            return super().__getitem__(i)

    ds = Counting(*_xy(50))
    for _ in DataLoader(Subset(ds, np.arange(40)), batch_size=16, shuffle=True):
        pass
    assert Counting.calls == 0


def test_seeded_shuffling_reproducible():
    ds = TensorDataset(np.arange(100))

    def epoch(loader):
        return np.concatenate([b[0].numpy() for b in loader])

    # handgrad.manual_seed reproduces the global-generator order
    handgrad.manual_seed(0)
    e1 = epoch(DataLoader(ds, batch_size=7, shuffle=True))
    handgrad.manual_seed(0)
    e2 = epoch(DataLoader(ds, batch_size=7, shuffle=True))
    np.testing.assert_array_equal(e1, e2)
    assert sorted(e1.tolist()) == list(range(100)) and not np.array_equal(e1, np.arange(100))
    # a private seed: epochs differ from each other, but a new loader with the same seed repeats them
    la, lb = DataLoader(ds, 10, shuffle=True, seed=42), DataLoader(ds, 10, shuffle=True, seed=42)
    a1, a2 = epoch(la), epoch(la)
    b1, b2 = epoch(lb), epoch(lb)
    assert not np.array_equal(a1, a2)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    np.testing.assert_array_equal(a1, np.random.default_rng(42).permutation(100))  # documented draw
    # the private generator is public (loader.generator): saving and restoring its state replays an epoch
    saved = la.generator.bit_generator.state
    a3 = epoch(la)
    la.generator.bit_generator.state = saved
    np.testing.assert_array_equal(epoch(la), a3)
    assert DataLoader(ds, 10, shuffle=True).generator is None
    # shuffle=False is the identity order
    np.testing.assert_array_equal(epoch(DataLoader(ds, 9)), np.arange(100))
    # an explicit sampler sets the order
    np.testing.assert_array_equal(epoch(DataLoader(ds, 3, sampler=[5, 1, 4])), [5, 1, 4])


def test_collate_dicts_tuples_strings_and_namedtuples():
    ds = ListDataset(5)
    batches = list(DataLoader(ds, batch_size=2))
    assert len(batches) == 3 and ds.calls == 5
    b = batches[0]
    assert set(b) == {"x", "y", "w", "name", "ok"}
    assert b["x"].shape == (2, 2, 3) and b["x"].dtype == np.float64
    assert b["y"].dtype == np.int64 and b["y"].tolist() == [0, 1]
    assert b["w"].dtype == handgrad.get_default_dtype() and b["w"].tolist() == [0.0, 0.5]
    assert b["name"] == ["s0", "s1"]
    assert b["ok"].dtype == np.bool_ and b["ok"].tolist() == [True, False]

    Pair = namedtuple("Pair", "a b")
    items = [(Pair(np.ones(2) * i, i), [np.float32(i), handgrad.tensor([i, i + 1])]) for i in range(3)]
    out = default_collate(items)
    assert isinstance(out, tuple) and isinstance(out[0], Pair) and isinstance(out[1], list)
    np.testing.assert_array_equal(out[0].a.numpy(), [[0, 0], [1, 1], [2, 2]])
    assert out[1][0].dtype == np.float32 and out[1][0].tolist() == [0.0, 1.0, 2.0]
    assert out[1][1].shape == (3, 2)


def test_default_collate_matches_pytorch():
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate as torch_collate

    rng = np.random.default_rng(0)
    items = [{"img": rng.standard_normal((3, 4)), "label": int(rng.integers(10)),
              "pair": (rng.standard_normal(2), np.int64(i))} for i in range(6)]
    ours = default_collate(items)
    theirs = torch_collate(items)
    np.testing.assert_allclose(ours["img"].numpy(), theirs["img"].numpy(), rtol=1e-12)
    assert ours["img"].dtype == np.float64 and theirs["img"].dtype == torch.float64
    np.testing.assert_array_equal(ours["label"].numpy(), theirs["label"].numpy())
    assert ours["label"].dtype == np.int64 and theirs["label"].dtype == torch.int64
    np.testing.assert_allclose(ours["pair"][0].numpy(), theirs["pair"][0].numpy(), rtol=1e-12)
    np.testing.assert_array_equal(ours["pair"][1].numpy(), theirs["pair"][1].numpy())


def test_collate_and_loader_errors():
    with pytest.raises(ValueError, match=r"default_collate: cannot stack items of different shapes \(2,\), "
                                         r"\(3,\) at batch\[0\]"):
        default_collate([(np.zeros(2),), (np.zeros(3),)])
    with pytest.raises(ValueError, match="different keys"):
        default_collate([{"a": 1}, {"b": 1}])
    with pytest.raises(ValueError, match="sequence of length 2"):
        default_collate([(1, 2), (1,)])
    with pytest.raises(TypeError, match="of type object cannot be batched"):
        default_collate([object(), object()])
    with pytest.raises(ValueError, match="empty batch"):
        default_collate([])
    ds = TensorDataset(np.zeros(4))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size should be a positive integer"):
            DataLoader(ds, batch_size=bad)
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(ds, shuffle=True, sampler=[0])
    with pytest.raises(ValueError, match="seed or generator"):
        DataLoader(ds, shuffle=True, seed=1, generator=np.random.default_rng(1))
    with pytest.raises(TypeError, match="needs __len__ and __getitem__"):
        DataLoader(42)


# -- transforms --------------------------------------------------------------------------------------------
def test_to_float_and_normalize():
    img = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    f = transforms.to_float(img)
    assert f.dtype == handgrad.get_default_dtype()
    np.testing.assert_allclose(f, [[0.0, 0.2], [0.4, 1.0]], rtol=1e-6)
    assert transforms.to_float(img, dtype=np.float64)[1, 1] == 1.0
    assert transforms.to_float(np.array([3], dtype=np.int32), dtype="float64")[0] == 3.0
    t = transforms.to_float(handgrad.tensor(img))
    assert isinstance(t, handgrad.Tensor)
    with pytest.raises(TypeError, match="to_float: dtype must be floating"):
        transforms.to_float(img, dtype=np.int32)

    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5))
    mean, std = [0.1, -0.2, 0.3], [1.0, 2.0, 0.5]
    out = transforms.normalize(x, mean, std)
    for c in range(3):
        np.testing.assert_allclose(out[:, c], (x[:, c] - mean[c]) / std[c], rtol=1e-12)
    np.testing.assert_allclose(transforms.normalize(img, 0.5, 0.25), (img / 255.0 - 0.5) / 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match=r"normalize: input \(4, 3, 5, 5\) has no channel axis of size 2"):
        transforms.normalize(x, [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="std contains a zero"):
        transforms.normalize(x, 0.0, 0.0)
    with pytest.raises(ValueError, match="mean has 3 values but std has 2"):
        transforms.normalize(x, mean, [1.0, 1.0])


def test_random_crop_matches_a_loop():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, size=(6, 2, 8, 9)).astype(np.uint8)
    out = transforms.random_crop(x, (5, 6), padding=2, generator=7)
    assert out.shape == (6, 2, 5, 6) and out.dtype == np.uint8
    g = np.random.default_rng(7)
    oy, ox = g.integers(0, 8 + 4 - 5 + 1, size=6), g.integers(0, 9 + 4 - 6 + 1, size=6)
    padded = np.pad(x, [(0, 0), (0, 0), (2, 2), (2, 2)])
    for i in range(6):
        np.testing.assert_array_equal(out[i], padded[i, :, oy[i]:oy[i] + 5, ox[i]:ox[i] + 6])
    # (N, H, W) batches, reflect padding, Tensors in -> Tensors out
    y = rng.standard_normal((5, 7, 7))
    o2 = transforms.random_crop(handgrad.tensor(y), 7, padding=(1, 2), padding_mode="reflect", generator=3)
    g = np.random.default_rng(3)
    oy, ox = g.integers(0, 5, size=5), g.integers(0, 3, size=5)
    ref = np.pad(y, [(0, 0), (2, 2), (1, 1)], mode="reflect")
    assert isinstance(o2, handgrad.Tensor)
    for i in range(5):
        np.testing.assert_array_equal(o2.numpy()[i], ref[i, oy[i]:oy[i] + 7, ox[i]:ox[i] + 7])
    # a single (H, W) image, no padding, draws spread over all offsets
    single = transforms.random_crop(np.arange(16.0).reshape(4, 4), 4)
    np.testing.assert_array_equal(single, np.arange(16.0).reshape(4, 4))
    with pytest.raises(ValueError, match=r"random_crop: crop size \(9, 9\) is larger than the \(padded\) image"):
        transforms.random_crop(x, 9)
    with pytest.raises(ValueError, match="padding_mode"):
        transforms.random_crop(x, 4, padding=1, padding_mode="wrap")
    with pytest.raises(ValueError, match="padding must be"):
        transforms.random_crop(x, 4, padding=(1, 2, 3))
    with pytest.raises(ValueError, match=r"random_crop: expected images"):
        transforms.random_crop(np.zeros(5), 2)


def test_random_horizontal_flip_and_compose():
    x = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    big = np.repeat(x[:1], 2000, axis=0)
    out = transforms.random_horizontal_flip(big, p=0.3, generator=0)
    flipped = np.all(out == big[:, :, ::-1], axis=(1, 2))
    kept = np.all(out == big, axis=(1, 2))
    assert np.all(flipped ^ kept)
    assert abs(flipped.mean() - 0.3) < 0.04  # ~ 4.4 sigma for n = 2000
    flags = np.random.default_rng(0).random(2000) < 0.3
    np.testing.assert_array_equal(flipped, flags)
    np.testing.assert_array_equal(transforms.random_horizontal_flip(x, p=1.0), x[:, :, ::-1])
    np.testing.assert_array_equal(transforms.random_horizontal_flip(x, p=0.0), x)
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        transforms.random_horizontal_flip(x, p=1.5)

    pipeline = transforms.Compose([transforms.to_float, partial(transforms.normalize, mean=0.5, std=0.5)])
    img = np.array([[[0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(pipeline(img), [[[-1.0, 1.0]]])
    assert "to_float" in repr(pipeline)
    with pytest.raises(TypeError, match="is not callable"):
        transforms.Compose([1])
