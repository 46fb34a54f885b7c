"""Learning-rate schedulers vs torch.optim.lr_scheduler: identical lr sequences, state_dict resume, errors."""

import numpy as np
import pytest
import torch

import handgrad as hg
import handgrad.optim as optim
from handgrad.optim import lr_scheduler as S


def _pair(lrs=(0.1, 0.03)):
    p = [hg.tensor(np.ones(2), requires_grad=True) for _ in lrs]
    tp = [torch.ones(2, requires_grad=True) for _ in lrs]
    opt = optim.SGD([{"params": [a], "lr": lr} for a, lr in zip(p, lrs)], lr=1.0, momentum=0.9)
    topt = torch.optim.SGD([{"params": [a], "lr": lr} for a, lr in zip(tp, lrs)], lr=1.0, momentum=0.9)
    return opt, topt


def _sequence(sched, opt, n, metrics=None):
    out = [sched.get_last_lr()]
    for i in range(n):
        opt.step()
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[i])
        out.append(sched.get_last_lr())
        assert out[-1] == [g["lr"] for g in opt.param_groups]
    return np.array(out)


def _lam(e):
    return 0.95**e + 0.01 * e


CASES = {
    "step": (S.StepLR, torch.optim.lr_scheduler.StepLR, dict(step_size=4, gamma=0.5)),
    "multistep": (S.MultiStepLR, torch.optim.lr_scheduler.MultiStepLR, dict(milestones=[3, 7, 7, 12], gamma=0.3)),
    "exponential": (S.ExponentialLR, torch.optim.lr_scheduler.ExponentialLR, dict(gamma=0.9)),
    "cosine": (S.CosineAnnealingLR, torch.optim.lr_scheduler.CosineAnnealingLR, dict(T_max=7, eta_min=0.001)),
    "cosine0": (S.CosineAnnealingLR, torch.optim.lr_scheduler.CosineAnnealingLR, dict(T_max=5)),
    "lambda": (S.LambdaLR, torch.optim.lr_scheduler.LambdaLR, dict(lr_lambda=_lam)),
}


@pytest.mark.parametrize("name", CASES)
def test_scheduler_lr_sequence_matches_torch(name):
    ours_cls, torch_cls, kw = CASES[name]
    opt, topt = _pair()
    ours = _sequence(ours_cls(opt, **kw), opt, 25)
    ref = _sequence(torch_cls(topt, **kw), topt, 25)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)
    assert len(np.unique(ours[:, 0])) > 2  # the schedule really changes the lr


def test_chained_schedulers_match_torch():
    opt, topt = _pair()
    a, b = S.StepLR(opt, 3, 0.5), S.ExponentialLR(opt, 0.9)
    ta, tb = torch.optim.lr_scheduler.StepLR(topt, 3, 0.5), torch.optim.lr_scheduler.ExponentialLR(topt, 0.9)
    for _ in range(12):
        opt.step()
        topt.step()
        a.step(), b.step(), ta.step(), tb.step()
        np.testing.assert_allclose(b.get_last_lr(), tb.get_last_lr(), rtol=1e-12)


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(mode="max", factor=0.5, patience=1, threshold=0.1, threshold_mode="abs", cooldown=2),
     dict(patience=0, min_lr=[0.02, 0.0], factor=0.2), dict(mode="max", threshold=0.01, patience=2)],
)
def test_reduce_lr_on_plateau_matches_torch(kw):
    metrics = [5.0, 4.0, 4.0, 3.99999, 4.1, 4.2, 2.0, 2.0, 2.0, 2.0, 2.0, 2.5, 1.0] + [1.0] * 15
    opt, topt = _pair()
    ours = _sequence(S.ReduceLROnPlateau(opt, **kw), opt, len(metrics), metrics)
    ref = _sequence(torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw), topt, len(metrics), metrics)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    assert ours[-1, 0] < ours[0, 0]


@pytest.mark.parametrize("name", ["step", "multistep", "cosine", "lambda"])
def test_scheduler_state_dict_resume(name):
    cls, _, kw = CASES[name]
    opt, _ = _pair()
    full = _sequence(cls(opt, **kw), opt, 20)
    opt, _ = _pair()
    sched = cls(opt, **kw)
    _sequence(sched, opt, 9)
    sd, osd = sched.state_dict(), opt.state_dict()
    assert "optimizer" not in sd
    opt2, _ = _pair()
    opt2.load_state_dict(osd)
    sched2 = cls(opt2, **kw)
    sched2.load_state_dict(sd)
    rest = _sequence(sched2, opt2, 11)
    np.testing.assert_allclose(rest, full[9:], rtol=1e-15)


def test_reduce_on_plateau_state_dict_resume():
    metrics = [3.0, 3.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    opt, _ = _pair()
    full = _sequence(S.ReduceLROnPlateau(opt, patience=1), opt, 8, metrics)
    opt, _ = _pair()
    s = S.ReduceLROnPlateau(opt, patience=1)
    _sequence(s, opt, 4, metrics)
    opt2, _ = _pair()
    opt2.load_state_dict(opt.state_dict())
    s2 = S.ReduceLROnPlateau(opt2, patience=1)
    s2.load_state_dict(s.state_dict())
    np.testing.assert_allclose(_sequence(s2, opt2, 4, metrics[4:]), full[4:])


def test_scheduler_errors():
    opt, _ = _pair()
    with pytest.raises(TypeError, match="StepLR: list is not an Optimizer"):
        S.StepLR([], 3)
    with pytest.raises(KeyError, match="initial_lr"):
        S.StepLR(opt, 3, last_epoch=5)
    with pytest.raises(ValueError, match="StepLR: step_size must be a positive integer, got 0"):
        S.StepLR(opt, 0)
    with pytest.raises(ValueError, match="CosineAnnealingLR: T_max must be a positive integer"):
        S.CosineAnnealingLR(opt, 0)
    with pytest.raises(ValueError, match="LambdaLR: expected 2 lr_lambdas, but got 1"):
        S.LambdaLR(opt, [_lam])
    with pytest.raises(ValueError, match="ReduceLROnPlateau: factor should be < 1.0"):
        S.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="ReduceLROnPlateau: mode 'up' is unknown"):
        S.ReduceLROnPlateau(opt, mode="up")
    with pytest.raises(ValueError, match="ReduceLROnPlateau: expected 2 min_lrs, got 3"):
        S.ReduceLROnPlateau(opt, min_lr=[0, 0, 0])
