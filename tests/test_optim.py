"""Optimizers vs torch.optim: same parameters after the same gradient sequence, for every option; state
dicts round-trip to an identical trajectory; error paths."""

import copy

import numpy as np
import pytest
import torch

import handgrad as hg
import handgrad.optim as optim

SHAPES = [(3, 4), (5,)]
STEPS = 8


def _grads(seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]


def _params(seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def _run_ours(cls, kw, init, grads, opt=None, params=None):
    params = params or [hg.tensor(a.copy(), requires_grad=True) for a in init]
    opt = opt or cls(params, **kw)
    for gs in grads:
        for p, g in zip(params, gs):
            # gradient depends on the parameter too, so weight decay / momentum paths interact realistically
            p.grad = hg.tensor(g + 0.3 * p.array)
        opt.step()
    return params, opt


def _run_torch(cls, kw, init, grads):
    params = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = cls(params, **kw)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.tensor(g) + 0.3 * p.detach()
        opt.step()
    return params, opt


CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05)),
    ("SGD", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, maximize=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.02, weight_decay=0.3, amsgrad=True)),
    ("AdamW", dict(lr=0.02, maximize=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-6)),
    ("RMSprop", dict(lr=0.01, momentum=0.8)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, maximize=True)),
]


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_optimizer_matches_torch(name, kw):
    init, grads = _params(), _grads()
    ours, opt = _run_ours(getattr(optim, name), kw, init, grads)
    ref, topt = _run_torch(getattr(torch.optim, name), kw, init, grads)
    moved = 0.0
    for p, q, a in zip(ours, ref, init):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-10, atol=1e-12)
        moved = max(moved, float(np.abs(p.numpy() - a).max()))
    assert moved > 1e-3  # the parameters really moved
    # the state has torch's names and values
    tstate = topt.state_dict()["state"]
    for i, s in opt.state_dict()["state"].items():
        for k, v in s.items():
            if k == "step":
                assert v == int(tstate[i][k])
            else:
                np.testing.assert_allclose(v, tstate[i][k].numpy(), rtol=1e-10, atol=1e-14, err_msg=k)
        assert set(s) == set(tstate[i])


@pytest.mark.parametrize("name,kw", [CASES[2], CASES[8], CASES[12], CASES[18]])
def test_state_dict_resume_gives_identical_trajectory(name, kw):
    cls = getattr(optim, name)
    init, grads = _params(), _grads()
    full, _ = _run_ours(cls, kw, init, grads)
    half, opt = _run_ours(cls, kw, init, grads[:4])
    sd = opt.state_dict()
    snapshot = copy.deepcopy(sd)
    # a fresh optimizer on fresh parameter objects holding the half-way values
    params = [hg.tensor(p.numpy().copy(), requires_grad=True) for p in half]
    opt2 = cls(params, **kw)
    opt2.load_state_dict(sd)
    _run_ours(cls, kw, init, grads[4:], opt=opt2, params=params)
    for p, q in zip(params, full):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    # loading copied the arrays: the saved dict is untouched by the later steps
    for i, s in snapshot["state"].items():
        for k, v in s.items():
            np.testing.assert_array_equal(v, sd["state"][i][k])


def test_state_dict_structure_like_torch():
    init, grads = _params(), _grads()
    _, opt = _run_ours(optim.Adam, dict(lr=0.01), init, grads[:2])
    _, topt = _run_torch(torch.optim.Adam, dict(lr=0.01), init, grads[:2])
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sorted(sd) == sorted(tsd) == ["param_groups", "state"]
    assert sd["param_groups"][0]["params"] == tsd["param_groups"][0]["params"] == [0, 1]
    assert sd["param_groups"][0]["betas"] == tsd["param_groups"][0]["betas"]
    assert isinstance(sd["state"][0]["exp_avg"], np.ndarray)


def test_param_groups_with_own_hyperparameters_and_add_param_group():
    init, grads = _params(), _grads()
    a = [hg.tensor(x.copy(), requires_grad=True) for x in init]
    ta = [torch.tensor(x.copy(), requires_grad=True) for x in init]
    opt = optim.SGD([{"params": [a[0]]}], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": a[1], "lr": 0.01, "momentum": 0.5})
    topt = torch.optim.SGD([{"params": [ta[0]]}, {"params": [ta[1]], "lr": 0.01, "momentum": 0.5}], lr=0.1,
                           momentum=0.9)
    assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[0]["lr"] == 0.1
    assert opt.param_groups[1]["dampening"] == 0
    for gs in grads:
        for p, tp, g in zip(a, ta, gs):
            p.grad, tp.grad = hg.tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
    for p, tp in zip(a, ta):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12)


def test_zero_grad_and_params_without_grad_are_skipped():
    p = hg.tensor(np.ones(3), requires_grad=True)
    q = hg.tensor(np.ones(2), requires_grad=True)
    opt = optim.SGD([p, q], lr=0.5)
    p.grad = hg.tensor(np.array([1.0, 2.0, 3.0]))
    opt.step()
    np.testing.assert_allclose(p.numpy(), [0.5, 0.0, -0.5])
    np.testing.assert_allclose(q.numpy(), [1.0, 1.0])  # no grad: untouched
    g = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is g and np.all(g.numpy() == 0)
    opt.zero_grad()
    assert p.grad is None


def test_step_is_in_place_and_records_no_graph():
    p = hg.tensor(np.ones(3), requires_grad=True)
    data = p.array
    opt = optim.Adam([p], lr=0.1)
    p.grad = hg.tensor(np.ones(3))
    opt.step()
    assert p.array is data and p.is_leaf and p.grad_fn is None
    np.testing.assert_allclose(p.numpy(), 0.9 * np.ones(3), rtol=1e-6)  # first Adam step moves by ~lr


def test_closure_is_evaluated_with_grad_and_returned():
    p = hg.tensor(np.array([3.0]), requires_grad=True)
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with hg.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 9.0
    np.testing.assert_allclose(p.numpy(), [1.5])  # 3 - 0.25 * 6


def test_float32_parameters_stay_float32():
    p = hg.randn(4, requires_grad=True)
    for cls in (optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop):
        opt = cls([p], lr=0.01)
        p.grad = hg.randn(4)
        opt.step()
        assert p.dtype == np.float32
        assert all(v.dtype == np.float32 for v in opt.state[p].values() if isinstance(v, np.ndarray))


def test_optimizer_errors():
    p = hg.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match=r"SGD: params must be an iterable.*single Tensor of shape \(2,\)"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="Adam: got an empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="SGD: invalid lr -0.1"):
        optim.SGD([p], lr=-0.1)
    with pytest.raises(ValueError, match="SGD: nesterov momentum requires momentum > 0 and dampening = 0"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Adam: invalid beta parameter at index 1: 1.0"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="RMSprop: invalid alpha"):
        optim.RMSprop([p], alpha=-0.5)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize floating tensors"):
        optim.SGD([hg.tensor([1, 2])], lr=0.1)
    q = hg.tensor(np.ones(3), requires_grad=True)
    sd = optim.SGD([p], lr=0.1).state_dict()
    with pytest.raises(ValueError, match="parameter group 0 has 1 parameters in the state dict but 2"):
        optim.SGD([p, q], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="the state dict has 1 parameter groups, the optimizer has 2"):
        optim.SGD([{"params": [p]}, {"params": [q]}], lr=0.1).load_state_dict(sd)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = hg.tensor(np.ones(2))
    opt.step()
    with pytest.raises(ValueError, match=r"state 'momentum_buffer' of parameter 0 has shape \(2,\).*\(3,\)"):
        optim.SGD([q], lr=0.1, momentum=0.9).load_state_dict(opt.state_dict())


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)), ("AdamW", dict(lr=0.01))])
def test_training_loop_end_to_end_matches_torch(name, kw):
    """Model + loss + backward + optimizer + scheduler: the same losses and parameters as torch, step by step."""
    import handgrad.functional as F
    import handgrad.nn as nn

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((16, 6)), rng.integers(0, 3, 16)
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    ours = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    opt, topt = getattr(optim, name)(ours.parameters(), **kw), getattr(torch.optim, name)(theirs.parameters(), **kw)
    sched = optim.lr_scheduler.StepLR(opt, 2, 0.5)
    tsched = torch.optim.lr_scheduler.StepLR(topt, 2, 0.5)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        topt.zero_grad()
        loss = F.cross_entropy(ours(hg.tensor(x)), hg.tensor(y), label_smoothing=0.1)
        tloss = torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y), label_smoothing=0.1)
        loss.backward()
        tloss.backward()
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-10)
        losses.append(loss.item())
    for (n, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=n)
    assert losses[-1] < losses[0]  # and it trains


@pytest.mark.parametrize("name,kw", [CASES[1], CASES[8], CASES[18]])
def test_torch_optimizer_state_dict_loads_and_continues_identically(name, kw):
    init, grads = _params(), _grads()
    tparams, topt = _run_torch(getattr(torch.optim, name), kw, init, grads[:4])
    params = [hg.tensor(p.detach().numpy().copy(), requires_grad=True) for p in tparams]
    opt = getattr(optim, name)(params, **kw)
    opt.load_state_dict(topt.state_dict())
    assert all(isinstance(s["step"], int) for s in opt.state.values() if "step" in s)
    _run_ours(None, kw, init, grads[4:], opt=opt, params=params)
    for gs in grads[4:]:
        for p, g in zip(tparams, gs):
            p.grad = torch.tensor(g) + 0.3 * p.detach()
        topt.step()
    for p, q in zip(params, tparams):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-10, atol=1e-12)
