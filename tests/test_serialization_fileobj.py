"""handgrad.save / handgrad.load on file objects (BytesIO, open files) as well as paths, torch.load's
map_location / weights_only keywords, and the one-line refusal to save a whole Module."""

import io

import numpy as np
import pytest
import safetensors.torch
import torch

import handgrad as hg
import handgrad.nn as nn
import handgrad.optim as optim


def _model():
    hg.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_bytesio_round_trip_of_a_nested_checkpoint():
    m = _model()
    opt = optim.Adam(m.parameters(), lr=0.1)
    m(hg.randn(5, 3)).sum().backward()
    opt.step()
    ckpt = {"model": m.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "t": hg.tensor([1.5, 2.5])}
    buf = io.BytesIO()
    hg.save(ckpt, buf)
    assert buf.tell() > 0
    buf.seek(0)
    back = hg.load(buf, map_location="cpu", weights_only=True)
    assert back["epoch"] == 3 and isinstance(back["t"], hg.Tensor)
    for k, v in ckpt["model"].items():
        np.testing.assert_array_equal(back["model"][k], v)
    assert list(back["optimizer"]["state"]) == [0, 1, 2, 3]  # int keys survive
    m2 = _model()
    m2.load_state_dict(back["model"])


def test_file_objects_and_paths_hold_the_same_checkpoint(tmp_path):
    sd = _model().state_dict()
    buf = io.BytesIO()
    hg.save(sd, buf)
    hg.save(sd, tmp_path / "m.safetensors")
    from_path = hg.load(tmp_path / "m.safetensors")
    buf.seek(0)
    from_buf = hg.load(buf)
    assert list(from_path) == list(from_buf) == list(sd)
    for k in sd:
        np.testing.assert_array_equal(from_path[k], from_buf[k])
    with open(tmp_path / "f.safetensors", "wb") as fh:
        hg.save(sd, fh)
    with open(tmp_path / "f.safetensors", "rb") as fh:
        back = hg.load(fh, weights_only=False)
    assert list(back) == list(sd)
    # a flat state dict is what PyTorch's side reads, from the same bytes
    theirs = safetensors.torch.load(buf.getvalue())
    tm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    tm.load_state_dict(theirs)


def test_map_location_forms():
    buf = io.BytesIO()
    hg.save({"w": hg.tensor([1.0, 2.0])}, buf)
    for loc in (None, "cpu", {"cpu": "cpu"}, hg.device("cpu")):
        buf.seek(0)
        out = hg.load(buf, map_location=loc)
        np.testing.assert_array_equal(out["w"].array, [1.0, 2.0])
    buf.seek(0)
    with pytest.raises(TypeError, match="callable map_location"):
        hg.load(buf, map_location=lambda storage, loc: storage)


def test_saving_a_whole_module_or_optimizer_is_refused_in_one_line():
    m = _model()
    with pytest.raises(TypeError, match=r"cannot save a whole Module \(Sequential\); save its state_dict\(\)") as e:
        hg.save(m, io.BytesIO())
    assert "\n" not in str(e.value)
    with pytest.raises(TypeError, match=r"whole Optimizer \(SGD\)"):
        hg.save(optim.SGD(m.parameters(), lr=0.1), io.BytesIO())


def test_bad_file_objects():
    with pytest.raises(hg.serialization.CheckpointError, match="not a readable handgrad checkpoint"):
        hg.load(io.BytesIO(b"\x05\x00"))
    with pytest.raises(TypeError, match="binary mode"):
        hg.load(io.StringIO("abc"))
