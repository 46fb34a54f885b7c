"""Random programs of views, in-place writes (through views or into bases) and uses, run on handgrad and on
PyTorch (issue 10): each must give the same loss and gradients, or fail in both with the same kind of error
(a saved tensor modified in place, and so on). Complements the hand-picked cases of test_inplace_views.py."""

from __future__ import annotations

import random

import numpy as np
import pytest

import handgrad as hg

torch = pytest.importorskip("torch")

VIEWS = [
    lambda t: t[1] if t.dim() >= 1 and t.shape[0] > 1 else None,
    lambda t: t[:, 1:] if t.dim() == 2 and t.shape[1] > 1 else None,
    lambda t: t.t() if t.dim() == 2 else None,
    lambda t: t.transpose(0, -1) if t.dim() >= 1 else None,
    lambda t: t.view(-1) if t.is_contiguous() else None,
    lambda t: t.unsqueeze(0),
    lambda t: t.narrow(0, 0, 1) if t.dim() >= 1 else None,
    lambda t: t[::2] if t.dim() >= 1 else None,
]
WRITES = [
    lambda t, o: t.mul_(1.5),
    lambda t, o: t.add_(o(t.shape)),
    lambda t, o: t.mul_(o(t.shape)),
    lambda t, o: t.copy_(o(t.shape)),
    lambda t, o: t.zero_(),
    lambda t, o: t.clamp_(-0.5, 0.7),
    lambda t, o: t.__setitem__(0, o(t.shape[1:])) if t.dim() >= 1 else None,
]
ERRORS = ["modified by an inplace", "view of a leaf", "multiple views", "single memory location", "no_grad mode"]


def _program(L, seed: int) -> list[np.ndarray]:
    rng = random.Random(seed)
    x = L.tensor(np.random.default_rng(seed).uniform(-1, 1, (3, 4)), requires_grad=True)
    w = L.tensor(np.random.default_rng(seed + 1).uniform(-1, 1, (3, 4)), requires_grad=True)
    flat = w.reshape(-1)

    def other(shape):  # an operand that requires grad, of the written tensor's shape
        n = int(np.prod(shape)) if len(shape) else 1
        return (flat[:n] * 1).reshape(shape) if len(shape) else flat[0] * 1

    tensors = [x.sin() if rng.random() < 0.5 else x * 2]
    outs = []
    for _ in range(rng.randint(2, 7)):
        r, t = rng.random(), rng.choice(tensors)
        if r < 0.45:
            v = rng.choice(VIEWS)(t)
            if v is not None:
                tensors.append(v)
        elif r < 0.85:
            rng.choice(WRITES)(t, other)
        else:
            outs.append((t * 1.3).sum() if rng.random() < 0.5 else t.cos().sum())
    outs.append(sum((t * (i + 1.0)).sum() for i, t in enumerate(tensors)))
    loss = sum(outs)
    loss.backward()
    return [loss.detach().numpy()] + [np.zeros((3, 4)) if a.grad is None else a.grad.numpy() for a in (x, w)]


def _outcome(L, seed: int):
    try:
        return "ok", _program(L, seed)
    except RuntimeError as e:
        return "error", [k for k in ERRORS if k in str(e)]


@pytest.mark.parametrize("block", range(4))
def test_random_view_programs_match_torch(block: int) -> None:
    outcomes = {"ok": 0, "error": 0}
    for seed in range(block * 60, (block + 1) * 60):
        (hs, hr), (ts, tr) = _outcome(hg, seed), _outcome(torch, seed)
        assert hs == ts, f"seed {seed}: handgrad {hs} {hr if hs == 'error' else ''}, torch {ts}"
        outcomes[hs] += 1
        if hs == "error":
            assert hr == tr and hr, f"seed {seed}: handgrad's error {hr}, torch's {tr}"
            continue
        for a, b in zip(hr, tr, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"seed {seed}")
    assert outcomes["ok"] > 40  # most programs run through (the errors are the minority)
