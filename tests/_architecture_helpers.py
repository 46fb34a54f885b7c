"""Shared checks for the architecture tests (fabric, MSDNet, ResNet): copy a handgrad model's weights into a
PyTorch build with the same parameter names, then compare forward, loss(es) and every gradient in float64."""

from __future__ import annotations

import numpy as np
import torch

import handgrad as hg
import handgrad.functional as F

RTOL, ATOL = 1e-8, 1e-10


def copy_to_torch(ours, theirs):
    """Load ``ours.state_dict()`` into ``theirs`` (same names); every one of our entries must be used."""
    ours_sd = ours.state_dict()
    theirs_sd = theirs.state_dict()
    missing = sorted(set(ours_sd) - set(theirs_sd))
    assert not missing, f"torch model lacks {missing[:5]}"
    extra = sorted(k for k in set(theirs_sd) - set(ours_sd) if not k.endswith("num_batches_tracked"))
    assert not extra, f"handgrad model lacks {extra[:5]}"
    theirs.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours_sd.items()}, strict=False)


def compare_losses_and_grads(ours, theirs, x, y, outputs=lambda o: [o]):
    """Forward both models (train mode: batch norm on the batch) on float64 ``x``; compare every output, every
    output's cross-entropy and, after a backward of the summed losses, every parameter's gradient and the
    input's. ``outputs`` turns a model's result into the list of logits. Returns the number of gradients
    compared."""
    ours.double().train()
    theirs.double().train()
    copy_to_torch(ours, theirs)
    hx = hg.tensor(x, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    ho, to = outputs(ours(hx)), outputs(theirs(tx))
    assert len(ho) == len(to)
    h_total, t_total = None, None
    for i, (a, b) in enumerate(zip(ho, to)):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg=f"output {i}")
        hl = F.cross_entropy(a, hg.tensor(y))
        tl = torch.nn.functional.cross_entropy(b, torch.tensor(y))
        np.testing.assert_allclose(hl.item(), tl.item(), rtol=RTOL, atol=ATOL, err_msg=f"loss {i}")
        h_total = hl if h_total is None else h_total + hl
        t_total = tl if t_total is None else t_total + tl
    h_total.backward()
    t_total.backward()
    np.testing.assert_allclose(hx.grad.numpy(), tx.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg="input grad")
    tparams = dict(theirs.named_parameters())
    n = 0
    for name, p in ours.named_parameters():
        tp = tparams[name]
        if tp.grad is None:
            assert p.grad is None or not np.any(p.grad.numpy()), f"{name}: torch has no gradient, we do"
            continue
        assert p.grad is not None, f"{name}: no gradient"
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=name)
        n += 1
    # the running statistics of batch norm moved the same way (in the norms that feed an output: a PyTorch
    # build that computes every node also updates the statistics of nodes whose result is unused)
    tb = dict(theirs.named_buffers())
    for name, b in ours.named_buffers():
        owner = tparams.get(name.rsplit(".", 1)[0] + ".weight")
        if owner is not None and owner.grad is None:
            continue
        if name in tb and not name.endswith("num_batches_tracked"):
            np.testing.assert_allclose(b.numpy(), tb[name].numpy(), rtol=RTOL, atol=ATOL, err_msg=name)
    return n
