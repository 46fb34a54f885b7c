"""Loss modules vs torch.nn loss modules (same constructor arguments), buffers and errors."""

import numpy as np
import pytest
import torch

import handgrad as hg
import handgrad.nn as nn

rng = np.random.default_rng(0)
W = rng.uniform(0.5, 2.0, 4)


def _logits():
    return rng.standard_normal((6, 4)), np.array([0, 3, 1, -100, 2, 3])


def _reg():
    return rng.standard_normal((3, 5)), rng.standard_normal((3, 5))


def _bce():
    return rng.uniform(0.05, 0.95, (3, 4)), rng.uniform(0, 1, (3, 4))


def _logit_bce():
    return rng.standard_normal((3, 4)) * 3, rng.uniform(0, 1, (3, 4))


def _kl():
    return np.log(rng.dirichlet(np.ones(4), 3)), rng.dirichlet(np.ones(4), 3)


CASES = [
    ("CrossEntropyLoss", {}, _logits, True),
    ("CrossEntropyLoss", dict(weight=W, label_smoothing=0.1, reduction="sum"), _logits, True),
    ("CrossEntropyLoss", dict(ignore_index=3, reduction="none"), _logits, True),
    ("NLLLoss", dict(weight=W), _logits, True),
    ("MSELoss", {}, _reg, False),
    ("MSELoss", dict(reduction="sum"), _reg, False),
    ("L1Loss", dict(reduction="none"), _reg, False),
    ("SmoothL1Loss", dict(beta=0.5), _reg, False),
    ("HuberLoss", dict(delta=0.3, reduction="sum"), _reg, False),
    ("BCELoss", dict(weight=rng.uniform(0.5, 2, 4)), _bce, False),
    ("BCEWithLogitsLoss", dict(pos_weight=rng.uniform(0.5, 2, 4), reduction="sum"), _logit_bce, False),
    ("KLDivLoss", dict(reduction="batchmean"), _kl, False),
    ("KLDivLoss", dict(reduction="sum", log_target=True), _kl, False),
]


@pytest.mark.parametrize("name,kw,data,integer_target", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_loss_module_matches_torch(name, kw, data, integer_target):
    x, t = data()
    if name == "KLDivLoss" and kw.get("log_target"):
        t = np.log(t)
    if "ignore_index" in kw:
        t = np.where(t == -100, kw["ignore_index"], t)
    hkw = {k: hg.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    tkw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    ours, theirs = getattr(nn, name)(**hkw), getattr(torch.nn, name)(**tkw)
    hx, tx = hg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, ref = ours(hx, hg.tensor(t)), theirs(tx, torch.tensor(t))
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-10)
    r = rng.standard_normal(ref.shape)
    (out * hg.tensor(r)).sum().backward()
    (ref * torch.tensor(r)).sum().backward()
    np.testing.assert_allclose(hx.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    # weights are buffers, as in torch: same state_dict keys
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_loss_module_repr_and_errors():
    assert repr(nn.MSELoss(reduction="sum")) == "MSELoss(reduction='sum')"
    assert nn.CrossEntropyLoss(size_average=False).reduction == "sum"
    with pytest.raises(ValueError, match="MSELoss: reduction must be one of 'none', 'mean', 'sum', got 'batchmean'"):
        nn.MSELoss(reduction="batchmean")
    assert nn.KLDivLoss(reduction="batchmean").reduction == "batchmean"
    with pytest.raises(IndexError, match=r"cross_entropy: target \(2,\) holds class 4"):
        nn.CrossEntropyLoss()(hg.randn(2, 4), hg.tensor([0, 4]))
