"""Module machinery and containers: registration, names like PyTorch's, state_dict / load_state_dict
(refusing missing, unexpected and mis-shaped keys by name), train/eval, Sequential / ModuleList / ModuleDict."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

import handgrad as hg
import handgrad.nn as nn


class Net(nn.Module):
    def __init__(self, lib):
        super().__init__()
        self.features = lib.Sequential(lib.Conv2d(1, 2, 3), lib.BatchNorm2d(2), lib.ReLU(), lib.Flatten())
        self.heads = lib.ModuleList([lib.Linear(8, 3), lib.Linear(8, 2, bias=False)])
        self.extra = lib.ModuleDict({"emb": lib.Embedding(5, 4, padding_idx=0), "ln": lib.LayerNorm(4)})


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        lib = torch.nn
        self.features = lib.Sequential(lib.Conv2d(1, 2, 3), lib.BatchNorm2d(2), lib.ReLU(), lib.Flatten())
        self.heads = lib.ModuleList([lib.Linear(8, 3), lib.Linear(8, 2, bias=False)])
        self.extra = lib.ModuleDict({"emb": lib.Embedding(5, 4, padding_idx=0), "ln": lib.LayerNorm(4)})


def test_names_and_shapes_match_torch_and_state_dict_round_trips():
    ours, theirs = Net(nn), TorchNet()
    sd, tsd = ours.state_dict(), theirs.state_dict()
    assert list(sd) == list(tsd)
    for k in sd:
        assert sd[k].shape == tuple(tsd[k].shape), k
        assert sd[k].dtype.kind == ("i" if k.endswith("num_batches_tracked") else "f")
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    # torch -> handgrad: every value lands in the right place
    ours.load_state_dict({k: v.numpy() for k, v in tsd.items()})
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(v, tsd[k].numpy().astype(v.dtype))
    # handgrad -> torch
    theirs2 = TorchNet()
    theirs2.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    # state_dict returns copies
    sd = ours.state_dict()
    sd["heads.0.weight"][...] = 7
    assert not np.any(ours.heads[0].weight.numpy() == 7)


def test_load_state_dict_refuses_missing_unexpected_and_mis_shaped_keys_by_name():
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    before = m.state_dict()
    sd = m.state_dict()
    del sd["1.bias"]
    sd["2.weight"] = np.zeros((2, 2))
    sd["0.weight"] = np.zeros((4, 5))
    with pytest.raises(RuntimeError) as e:
        m.load_state_dict(sd)
    msg = str(e.value)
    assert "0.weight: checkpoint (4, 5) vs model (4, 3)" in msg
    assert "missing keys: 1.bias" in msg and "unexpected keys: 2.weight" in msg
    for k, v in m.state_dict().items():  # nothing was changed
        np.testing.assert_array_equal(v, before[k])
    # strict=False loads what matches and reports the rest
    sd = m.state_dict()
    del sd["1.bias"]
    sd["0.bias"] = np.ones(4)
    sd["junk"] = np.ones(1)
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert missing == ["1.bias"] and unexpected == ["junk"]
    np.testing.assert_array_equal(m[0].bias.numpy(), np.ones(4))


def test_load_state_dict_keeps_dtype_and_parameter_identity():
    m = nn.Linear(3, 2)
    w = m.weight
    m.load_state_dict({"weight": np.ones((2, 3)), "bias": np.zeros(2)})  # float64 arrays into float32 params
    assert m.weight is w and w.dtype == np.float32 and np.all(w.numpy() == 1)


def test_train_eval_propagates_and_zero_grad():
    m = Net(nn)
    m.eval()
    assert all(not mod.training for mod in m.modules())
    m.train()
    assert all(mod.training for mod in m.modules())
    lin = nn.Linear(2, 2)
    lin(hg.randn(3, 2)).sum().backward()
    assert lin.weight.grad is not None
    lin.zero_grad(set_to_none=False)
    assert np.all(lin.weight.grad.numpy() == 0)
    lin.zero_grad()
    assert lin.weight.grad is None


def test_sequential_indexing_slicing_and_editing():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
    sub = s[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c] and sub[1] is c
    x = hg.randn(4, 2)
    np.testing.assert_allclose(s(x).numpy(), c(b(a(x))).numpy())
    d = nn.Tanh()
    s.append(d)
    assert len(s) == 4 and s[3] is d and list(s.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    del s[1]
    assert list(s) == [a, c, d] and list(s._modules) == ["0", "1", "2"]
    s.insert(1, b)
    assert list(s) == [a, b, c, d]
    s[3] = nn.Identity()
    assert isinstance(s[3], nn.Identity)
    s.extend([nn.Sigmoid()])
    assert len(s) == 5
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"] and isinstance(named[1], nn.ReLU)
    assert "(fc): Linear(in_features=2, out_features=2, bias=True)" in repr(named)
    with pytest.raises(IndexError, match="Sequential: index 5 is out of range for 5 modules"):
        s[5]
    with pytest.raises(TypeError, match="Sequential: int is not a Module subclass"):
        nn.Sequential(nn.ReLU(), 3)


def test_module_list_and_dict_register_parameters():
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(list(ml.parameters())) == 6 and len(ml) == 3
    ml.append(nn.Linear(2, 1))
    ml += [nn.ReLU()]
    assert len(ml) == 5 and isinstance(ml[-1], nn.ReLU)
    ml.insert(0, nn.Tanh())
    assert isinstance(ml[0], nn.Tanh) and len(ml) == 6
    del ml[0]
    assert isinstance(ml[0], nn.Linear) and list(ml._modules) == [str(i) for i in range(5)]
    assert isinstance(ml[1:3], nn.ModuleList) and len(ml[1:3]) == 2
    with pytest.raises(NotImplementedError, match="ModuleList has no forward"):
        ml(hg.randn(1))
    md = nn.ModuleDict({"a": nn.Linear(2, 2)})
    md["b"] = nn.Linear(2, 3)
    md.update([("c", nn.ReLU())])
    assert list(md) == ["a", "b", "c"] and "b" in md and len(md) == 3
    assert [k for k, _ in md.named_parameters()] == ["a.weight", "a.bias", "b.weight", "b.bias"]
    assert isinstance(md.pop("c"), nn.ReLU) and list(md.keys()) == ["a", "b"]
    with pytest.raises(KeyError, match="ModuleDict: no module named 'z'"):
        md["z"]
    with pytest.raises(TypeError, match="ModuleDict: keys must be strings"):
        md[1] = nn.ReLU()


def test_parameters_shared_once_and_buffers_listed():
    lin = nn.Linear(2, 2)
    s = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(s.parameters())) == 2
    bn = nn.BatchNorm1d(3)
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    assert bn.num_batches_tracked.dtype == np.int64


def test_to_double_casts_parameters_and_float_buffers_only():
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).double()
    assert all(p.dtype == np.float64 for p in m.parameters())
    assert m[1].running_mean.dtype == np.float64 and m[1].num_batches_tracked.dtype == np.int64


def test_parameter_order_is_depth_first_like_torch():
    class M(nn.Module):
        def __init__(self, lib):
            super().__init__()
            self.a = lib.Sequential(lib.Linear(2, 2), lib.Sequential(lib.Linear(2, 3)))
            self.b = lib.Linear(3, 2)

    class T(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 3)))
            self.b = torch.nn.Linear(3, 2)

    ours, theirs = M(nn), T()
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [p.shape for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]


def test_assigning_wrong_types_to_registered_names_is_refused():
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="Linear: cannot assign Tensor as parameter 'weight'"):
        lin.weight = hg.zeros(2, 2)
    lin.bias = None
    assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]
    s = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="Sequential: cannot assign int as child module '0'"):
        setattr(s, "0", 3)
