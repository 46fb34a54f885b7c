"""handgrad.save / handgrad.load: safetensors round-trips, PyTorch interop, atomic writes, readable errors."""

from __future__ import annotations

import math
import os
import struct

import numpy as np
import pytest

import handgrad
from handgrad.serialization import CheckpointError


@pytest.fixture
def path(tmp_path):
    return tmp_path / "ckpt.safetensors"


def _rng():
    return np.random.default_rng(0)


def test_flat_state_dict_round_trip_all_dtypes(path):
    rng = _rng()
    sd = {
        "f64": rng.standard_normal((3, 4)),
        "f32": rng.standard_normal((2, 5)).astype(np.float32),
        "f16": rng.standard_normal(7).astype(np.float16),
        "i64": rng.integers(-(2**40), 2**40, size=(4,), dtype=np.int64),
        "i32": rng.integers(-100, 100, size=(2, 2), dtype=np.int32),
        "i16": np.array([-3, 7], dtype=np.int16),
        "i8": np.array([-128, 127], dtype=np.int8),
        "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "b": np.array([True, False, True]),
        "scalar0d": np.array(2.5),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "noncontig": np.arange(12.0).reshape(3, 4).T,
    }
    handgrad.save(sd, path)
    out = handgrad.load(path)
    assert list(out) == list(sd)  # key order kept
    for k, v in sd.items():
        assert out[k].dtype == v.dtype, k
        assert out[k].shape == v.shape, k
        np.testing.assert_array_equal(out[k], v)
    assert out["scalar0d"].shape == () and out["scalar0d"] == 2.5
    assert out["noncontig"][0, 1] == 4.0  # the transposed values, not the raw memory order
    out["f64"][0, 0] = 123.0  # loaded arrays are writable
    assert out["f64"][0, 0] == 123.0


def test_nested_checkpoint_round_trip_keeps_structure_and_int_keys(path):
    rng = _rng()
    w = rng.standard_normal((4, 3))
    ckpt = {
        "model": {"fc.weight": w, "fc.bias": np.zeros(4, np.float32)},
        "optimizer": {
            "state": {0: {"step": np.float64(3.0), "exp_avg": np.ones((4, 3))}, 1: {"step": np.float64(3.0)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1], "amsgrad": False}],
        },
        "epoch": 3,
        "history": [{"loss": 1.25, "acc": 0.5}, {"loss": float("nan"), "acc": None}],
        "name": "run-α",
        "best": float("inf"),
        "grad_t": handgrad.tensor(np.array([1.0, -2.0]), requires_grad=True),
        "plain_t": handgrad.tensor(np.array([[3, 4]], dtype=np.int64)),
        "empty_dict": {},
        "empty_list": [],
    }
    handgrad.save(ckpt, path)
    out = handgrad.load(path)

    assert list(out) == list(ckpt)
    np.testing.assert_array_equal(out["model"]["fc.weight"], w)
    assert out["model"]["fc.bias"].dtype == np.float32
    state = out["optimizer"]["state"]
    assert list(state) == [0, 1] and all(type(k) is int for k in state)
    assert type(state[0]["step"]) is np.float64 and state[0]["step"] == 3.0
    np.testing.assert_array_equal(state[0]["exp_avg"], np.ones((4, 3)))
    group = out["optimizer"]["param_groups"][0]
    assert group == {"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1], "amsgrad": False}
    assert isinstance(group["betas"], tuple)
    assert out["epoch"] == 3 and type(out["epoch"]) is int
    assert out["history"][0] == {"loss": 1.25, "acc": 0.5}
    assert math.isnan(out["history"][1]["loss"]) and out["history"][1]["acc"] is None
    assert out["name"] == "run-α" and out["best"] == float("inf")
    assert isinstance(out["grad_t"], handgrad.Tensor) and out["grad_t"].requires_grad
    np.testing.assert_array_equal(out["grad_t"].numpy(), [1.0, -2.0])
    assert isinstance(out["plain_t"], handgrad.Tensor) and not out["plain_t"].requires_grad
    assert out["plain_t"].dtype == np.int64
    assert out["empty_dict"] == {} and out["empty_list"] == []


def test_non_array_root_and_key_clash(path):
    handgrad.save([1, "two", None], path)
    assert handgrad.load(path) == [1, "two", None]
    # "a.b" and "a" -> "b" flatten to the same dotted name: both must survive.
    obj = {"a.b": np.array([1.0]), "a": {"b": np.array([2.0])}}
    handgrad.save(obj, path)
    out = handgrad.load(path)
    assert out["a.b"][0] == 1.0 and out["a"]["b"][0] == 2.0


def test_module_state_dict_round_trip_into_module(path):
    from handgrad.nn.module import Module
    from handgrad.nn.parameter import Parameter

    class Tiny(Module):
        def __init__(self, seed: int) -> None:
            super().__init__()
            r = np.random.default_rng(seed)
            self.weight = Parameter(r.standard_normal((3, 2)))
            self.bias = Parameter(r.standard_normal(3))

    a, b = Tiny(1), Tiny(2)
    handgrad.save({"model": a.state_dict(), "epoch": 7}, path)
    ckpt = handgrad.load_into(b, path)
    assert ckpt["epoch"] == 7
    np.testing.assert_array_equal(b.weight.numpy(), a.weight.numpy())
    np.testing.assert_array_equal(b.bias.numpy(), a.bias.numpy())
    with pytest.raises(KeyError, match="has no entry 'nope'"):
        handgrad.load_into(b, path, key="nope")


def test_pytorch_reads_the_file_and_handgrad_reads_pytorch_files(path, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    rng = _rng()
    lin = torch.nn.Linear(5, 3).double()
    sd = {k: v.detach().numpy().copy() for k, v in lin.state_dict().items()}
    handgrad.save(sd, path)
    got = load_file(str(path))
    assert set(got) == {"weight", "bias"}
    fresh = torch.nn.Linear(5, 3).double()
    fresh.load_state_dict(got)  # strict: names, shapes and dtypes line up with PyTorch's own
    x = torch.from_numpy(rng.standard_normal((2, 5)))
    torch.testing.assert_close(fresh(x), lin(x), rtol=1e-12, atol=0)

    # nested checkpoint: PyTorch sees dotted names, with the int optimizer keys as path parts
    handgrad.save({"model": sd, "optimizer": {"state": {0: {"exp_avg": np.full(3, 0.5)}}}, "epoch": 2}, path)
    got = load_file(str(path))
    assert set(got) == {"model.weight", "model.bias", "optimizer.state.0.exp_avg"}
    assert got["optimizer.state.0.exp_avg"].dtype == torch.float64
    np.testing.assert_array_equal(got["optimizer.state.0.exp_avg"].numpy(), [0.5, 0.5, 0.5])

    # and the other way: a file PyTorch wrote loads as a flat dict of arrays
    other = tmp_path / "torch.safetensors"
    save_file({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "s": torch.tensor(4)}, str(other))
    back = handgrad.load(other)
    np.testing.assert_array_equal(back["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert back["s"].shape == () and back["s"].dtype == np.int64 and back["s"] == 4


def test_crash_during_write_keeps_the_old_file(path, monkeypatch):
    handgrad.save({"w": np.arange(3.0), "epoch": 1}, path)
    before = path.read_bytes()

    def boom(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", boom)  # the write has happened, the rename has not
    with pytest.raises(OSError, match="disk on fire"):
        handgrad.save({"w": np.arange(1000.0), "epoch": 2}, path)
    monkeypatch.undo()

    assert path.read_bytes() == before
    out = handgrad.load(path)
    assert out["epoch"] == 1
    np.testing.assert_array_equal(out["w"], [0.0, 1.0, 2.0])
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left behind


def test_crash_during_rename_keeps_the_old_file(path, monkeypatch):
    handgrad.save({"epoch": 1}, path)

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        handgrad.save({"epoch": 2}, path)
    monkeypatch.undo()
    assert handgrad.load(path) == {"epoch": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_save_gives_plain_file_permissions(path):
    handgrad.save({"a": np.zeros(1)}, path)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "has 0 bytes"),
        (b"\x01\x02", "has 2 bytes"),
        (b"hello, this is not a checkpoint at all", "header claims"),
        (struct.pack("<Q", 10) + b"not json!!", "header is not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    ],
)
def test_garbage_files_raise_one_readable_error(path, content, reason):
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"handgrad.load: '.*ckpt.safetensors' is not a readable handgrad "
                                              rf"checkpoint \(.*{reason}"):
        handgrad.load(path)


def test_truncated_file_raises_readable_error(path):
    handgrad.save({"w": np.arange(100.0), "epoch": 3}, path)
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) - 400, 20):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"handgrad.load: '.*' is not a readable handgrad checkpoint \("):
            handgrad.load(path)


def test_corrupt_header_and_structure_raise_readable_errors(path):
    handgrad.save({"w": np.arange(4.0)}, path)
    data = bytearray(path.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    header = bytes(data[8:8 + n])
    # a data offset that runs past the buffer
    bad = header.replace(b'"data_offsets":[0,32]', b'"data_offsets":[0,40]')
    assert bad != header
    path.write_bytes(bytes(data[:8]) + bad + bytes(data[8 + n:]))
    with pytest.raises(CheckpointError, match="not a readable handgrad checkpoint"):
        handgrad.load(path)
    # a structure that points at a tensor the file lacks
    bad = header.replace(b'{\\"__tensor__\\":\\"w\\"', b'{\\"__tensor__\\":\\"q\\"')
    assert bad != header
    path.write_bytes(bytes(data[:8]) + bad + bytes(data[8 + n:]))
    with pytest.raises(CheckpointError, match="refers to tensor 'q'"):
        handgrad.load(path)


def test_load_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="handgrad.load: no checkpoint at"):
        handgrad.load(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="it is a directory"):
        handgrad.load(tmp_path)


def test_save_refuses_what_it_cannot_store(path, tmp_path):
    with pytest.raises(TypeError, match=r"handgrad.save: cannot store the set at 'opt.x'"):
        handgrad.save({"opt": {"x": {1, 2}}}, path)
    with pytest.raises(TypeError, match=r"handgrad.save: dict at 'a' has a key \(1, 2\) of type tuple"):
        handgrad.save({"a": {(1, 2): 3}}, path)
    with pytest.raises(TypeError, match=r"the array at 'names' has dtype <U1"):
        handgrad.save({"names": np.array(["a", "b"])}, path)
    with pytest.raises(TypeError, match=r"the array at 'c' has dtype complex128"):
        handgrad.save({"c": np.zeros(2, dtype=complex)}, path)
    with pytest.raises(FileNotFoundError, match="handgrad.save: directory"):
        handgrad.save({"a": np.zeros(1)}, tmp_path / "missing_dir" / "x.safetensors")
    assert not path.exists()  # nothing half-written by the refused saves


def test_big_endian_arrays_are_stored_little_endian(path):
    a = np.arange(5, dtype=">f8")
    handgrad.save({"a": a}, path)
    out = handgrad.load(path)
    np.testing.assert_array_equal(out["a"], np.arange(5.0))
    assert out["a"].dtype == np.dtype("<f8")
