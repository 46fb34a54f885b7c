"""OneCycleLR, LinearLR, CosineAnnealingWarmRestarts, CyclicLR, PolynomialLR, SequentialLR and
ChainedScheduler vs torch.optim.lr_scheduler: lr (and cycled momentum) equal step by step to ~1e-12."""

import warnings

import numpy as np
import pytest
import torch

import handgrad as hg
import handgrad.optim as optim
from handgrad.optim import lr_scheduler as S

T = torch.optim.lr_scheduler


def _pair(kind="SGD", lrs=(0.1, 0.03)):
    p = [hg.tensor(np.ones(2), requires_grad=True) for _ in lrs]
    tp = [torch.ones(2, requires_grad=True) for _ in lrs]
    kw = dict(lr=1.0, momentum=0.9) if kind == "SGD" else dict(lr=1.0)
    opt = getattr(optim, kind)([{"params": [a], "lr": lr} for a, lr in zip(p, lrs)], **kw)
    topt = getattr(torch.optim, kind)([{"params": [a], "lr": lr} for a, lr in zip(tp, lrs)], **kw)
    return opt, topt


def _momentum(opt):
    return [g["momentum"] if "momentum" in g else g["betas"][0] for g in opt.param_groups]


def _trace(sched, opt, n, epochs=None):
    out = [sched.get_last_lr() + _momentum(opt)]
    for i in range(n):
        opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's deprecation warning for step(epoch)
            sched.step() if epochs is None else sched.step(epochs[i])
        out.append(sched.get_last_lr() + _momentum(opt))
        assert out[-1][:2] == [g["lr"] for g in opt.param_groups]
    return np.array(out)


CASES = {
    "linear": ("LinearLR", dict(start_factor=0.25, end_factor=0.9, total_iters=6)),
    "linear-default": ("LinearLR", dict()),
    "poly": ("PolynomialLR", dict(total_iters=9, power=2.0)),
    "poly-linear": ("PolynomialLR", dict(total_iters=4)),
    "warm-restarts": ("CosineAnnealingWarmRestarts", dict(T_0=4, eta_min=0.001)),
    "warm-restarts-mult": ("CosineAnnealingWarmRestarts", dict(T_0=3, T_mult=2)),
    "cyclic": ("CyclicLR", dict(base_lr=0.01, max_lr=0.2, step_size_up=3, step_size_down=5)),
    "cyclic2": ("CyclicLR", dict(base_lr=[0.01, 0.02], max_lr=0.2, step_size_up=4, mode="triangular2")),
    "cyclic-exp": ("CyclicLR", dict(base_lr=0.01, max_lr=0.2, step_size_up=2, mode="exp_range", gamma=0.9,
                                    cycle_momentum=False)),
    "onecycle": ("OneCycleLR", dict(max_lr=0.5, total_steps=25)),
    "onecycle-linear3": ("OneCycleLR", dict(max_lr=[0.5, 0.2], epochs=5, steps_per_epoch=5, pct_start=0.4,
                                            anneal_strategy="linear", three_phase=True, div_factor=10.0)),
}


# momentum cycling of Adam's betas[0] matters only for the cyclic schedules
PAIRS = [(n, "SGD") for n in CASES] + [(n, "Adam") for n in CASES if CASES[n][0] in ("CyclicLR", "OneCycleLR")]


@pytest.mark.parametrize("name,kind", PAIRS)
def test_scheduler_matches_torch(name, kind):
    cls, kw = CASES[name]
    opt, topt = _pair(kind)
    n = 24 if cls == "OneCycleLR" else 30
    ours = _trace(getattr(S, cls)(opt, **kw), opt, n)
    ref = _trace(getattr(T, cls)(topt, **kw), topt, n)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)
    assert len(np.unique(np.round(ours[:, 0], 12))) > 3  # the schedule really moves the lr


def test_warm_restarts_fractional_epochs_match_torch():
    epochs = [0.5 * i for i in range(1, 40)]
    for mult in (1, 2):
        opt, topt = _pair()
        ours = _trace(S.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=mult), opt, len(epochs), epochs)
        ref = _trace(T.CosineAnnealingWarmRestarts(topt, T_0=3, T_mult=mult), topt, len(epochs), epochs)
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


def _seq(mod, opt):
    warm = mod.LinearLR(opt, start_factor=0.1, total_iters=4)
    decay = mod.ExponentialLR(opt, gamma=0.8)
    step = mod.StepLR(opt, step_size=3, gamma=0.5)
    return mod.SequentialLR(opt, [warm, decay, step], milestones=[5, 12])


def _chain(mod, opt):
    return mod.ChainedScheduler([mod.LinearLR(opt, start_factor=0.2, total_iters=5),
                                 mod.CosineAnnealingLR(opt, T_max=8), mod.PolynomialLR(opt, total_iters=20)])


@pytest.mark.parametrize("build", [_seq, _chain])
def test_composed_schedulers_match_torch(build):
    opt, topt = _pair()
    ours = _trace(build(S, opt), opt, 22)
    ref = _trace(build(T, topt), topt, 22)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("build", [_seq, _chain, lambda m, o: m.OneCycleLR(o, max_lr=0.3, total_steps=30),
                                   lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=3)])
def test_state_dict_resume_continues_identically(build):
    opt, _ = _pair()
    sched = build(S, opt)
    _trace(sched, opt, 7)
    sd = sched.state_dict()
    osd = opt.state_dict()
    opt2, _ = _pair()
    sched2 = build(S, opt2)
    opt2.load_state_dict(osd)
    sched2.load_state_dict(sd)
    np.testing.assert_array_equal(_trace(sched, opt, 10), _trace(sched2, opt2, 10))


def test_scheduler_errors():
    opt, _ = _pair()
    with pytest.raises(ValueError, match="total_steps"):
        S.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        S.OneCycleLR(optim.Adagrad([hg.tensor(np.ones(2), requires_grad=True)]), max_lr=0.1, total_steps=5)
    with pytest.raises(ValueError, match="T_0"):
        S.CosineAnnealingWarmRestarts(opt, T_0=0)
    with pytest.raises(ValueError, match="start_factor"):
        S.LinearLR(opt, start_factor=0)
    with pytest.raises(ValueError, match="milestone"):
        S.SequentialLR(opt, [S.StepLR(opt, 2)], milestones=[3])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        S.ChainedScheduler([S.ReduceLROnPlateau(opt)])
    sched = S.OneCycleLR(opt, max_lr=0.1, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="total steps is 3"):
        sched.step()
