"""Vanishing-gradient diagnostics: per-step dL/dh_t and dh_T/dh_t against PyTorch autograd and the course's
explicit Jacobian product."""

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad.nn import Module, Parameter
from handgrad.recurrent.diagnostics import (
    ProbeFunction,
    cell_step,
    hidden_state_gradients,
    jacobian_norms,
    tanh_rnn_jacobians,
    unroll,
)

TORCH_CLS = {"RNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}


class TorchWeights(Module):
    """A handgrad module holding a torch RNN's weights under PyTorch's names (the fused nn.* modules use
    the same names, so the diagnostics read either)."""

    def __init__(self, tm: torch.nn.Module) -> None:
        super().__init__()
        self.mode, self.hidden_size, self.num_layers = tm.mode, tm.hidden_size, tm.num_layers
        self.batch_first = tm.batch_first
        if tm.mode.startswith("RNN"):
            self.nonlinearity = tm.nonlinearity
        for n, p in tm.named_parameters():
            setattr(self, n, Parameter(p.detach().numpy().astype(np.float64)))


def _torch_step(tm, k, x, state, c_hook=None):
    w = [getattr(tm, f"{n}_l{k}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    if tm.mode == "LSTM":  # written out so that c_t is a tensor that h_t is computed from
        g = x @ w[0].T + w[2] + state[0] @ w[1].T + w[3]
        i, f, gg, o = g.chunk(4, 1)
        c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(gg)
        if c_hook is not None:
            c_hook(c)
        return torch.sigmoid(o) * torch.tanh(c), c
    if tm.mode == "GRU":
        return torch._VF.gru_cell(x, state, *w)
    return torch._VF.rnn_tanh_cell(x, state, *w)


def _torch_unroll(tm, x, retain=True):
    """Unrolled torch forward with every per-step state kept (retain_grad): the oracle for dL/dh_t."""
    seq, batch = x.shape[0], x.shape[1]
    hs, cs = [], []
    inp = x
    for k in range(tm.num_layers):
        h = torch.zeros(batch, tm.hidden_size, dtype=x.dtype)
        c = torch.zeros_like(h)
        lh, lc = [], []
        for t in range(seq):
            if tm.mode == "LSTM":
                h, c = _torch_step(tm, k, inp[t], (h, c), c_hook=lambda c: c.retain_grad())
                lc.append(c)
            else:
                h = _torch_step(tm, k, inp[t], h)
            h.retain_grad()
            lh.append(h)
        hs.append(lh)
        cs.append(lc)
        inp = torch.stack(lh)
    return inp, hs, cs


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_unroll_matches_torch_fused_forward(mode):
    torch.manual_seed(0)
    tm = TORCH_CLS[mode](3, 4, num_layers=2).double()
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    u = unroll(TorchWeights(tm), hg.tensor(x))
    out, state = tm(torch.tensor(x))
    np.testing.assert_allclose(u.output.numpy(), out.detach().numpy(), rtol=1e-10, atol=1e-12)
    h_n = u.h_n[0] if mode == "LSTM" else u.h_n
    t_hn = state[0] if mode == "LSTM" else state
    np.testing.assert_allclose(h_n.numpy(), t_hn.detach().numpy(), rtol=1e-10, atol=1e-12)
    if mode == "LSTM":
        np.testing.assert_allclose(u.h_n[1].numpy(), state[1].detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("layer", [0, 1])
def test_hidden_state_gradients_match_torch_retain_grad(mode, layer):
    torch.manual_seed(1)
    tm = TORCH_CLS[mode](3, 5, num_layers=2).double()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 3, 3))
    target = rng.standard_normal((3, 5))
    m = TorchWeights(tm)

    def loss_fn(out, h_n):  # many-to-one plus a term on every output: both paths reach each h_t
        d = out[-1] - hg.tensor(target)
        return (d * d).mean() + 0.1 * out.sum()

    gf = hidden_state_gradients(m, hg.tensor(x), loss_fn, layer=layer)
    out, hs, cs = _torch_unroll(tm, torch.tensor(x))
    loss = ((out[-1] - torch.tensor(target)) ** 2).mean() + 0.1 * out.sum()
    loss.backward()
    expect = np.stack([h.grad.numpy() for h in hs[layer]])
    np.testing.assert_allclose(gf.grad_h, expect, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(gf.grad_norm, np.linalg.norm(expect, axis=-1).mean(1), rtol=1e-8)
    assert gf.loss == pytest.approx(loss.item(), rel=1e-10)
    if mode == "LSTM":
        np.testing.assert_allclose(gf.grad_c, np.stack([c.grad.numpy() for c in cs[layer]]), rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(gf.distance, np.arange(7)[::-1])


def test_tanh_rnn_jacobian_equals_explicit_course_product_and_torch():
    torch.manual_seed(2)
    tm = torch.nn.RNN(3, 4, num_layers=1).double()
    x = np.random.default_rng(2).standard_normal((6, 2, 3))
    m = TorchWeights(tm)
    norms, jac = jacobian_norms(m, hg.tensor(x), return_jacobians=True)
    u = unroll(m, hg.tensor(x))
    hs = np.stack([h.numpy() for h in u.hs[0]])
    explicit = tanh_rnn_jacobians(m.weight_hh_l0.numpy(), hs)
    np.testing.assert_allclose(jac, explicit, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(jac[-1], np.broadcast_to(np.eye(4), (2, 4, 4)))
    np.testing.assert_allclose(norms, np.linalg.norm(explicit, 2, axis=(-2, -1)).mean(1), rtol=1e-10)
    # torch oracle for one distance: d h_5 / d h_1 of sample 0 by torch.autograd.functional.jacobian
    xt = torch.tensor(x)

    def run_from(h1):
        h = h1
        for t in range(2, 6):
            h = _torch_step(tm, 0, xt[t, :1], h[None])[0]
        return h

    h1 = torch.tensor(hs[1, :1][0])
    jt = torch.autograd.functional.jacobian(run_from, h1).numpy()
    np.testing.assert_allclose(jac[1, 0], jt, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_gated_jacobians_match_torch_autograd(mode):
    torch.manual_seed(3)
    tm = TORCH_CLS[mode](2, 3, num_layers=1).double()
    x = np.random.default_rng(3).standard_normal((5, 2, 2))
    m = TorchWeights(tm)
    norms, jac = jacobian_norms(m, hg.tensor(x), return_jacobians=True, ord="fro")
    u = unroll(m, hg.tensor(x))
    xt = torch.tensor(x)
    hidden = 3
    for t in (0, 2):
        for b in (0, 1):
            if mode == "LSTM":
                s0 = torch.tensor(np.concatenate([u.hs[0][t].numpy()[b], u.cs[0][t].numpy()[b]]))

                def run(s, b=b, t=t):
                    h, c = s[None, :hidden], s[None, hidden:]
                    for tt in range(t + 1, 5):
                        h, c = _torch_step(tm, 0, xt[tt, b : b + 1], (h, c))
                    return torch.cat([h[0], c[0]])
            else:
                s0 = torch.tensor(u.hs[0][t].numpy()[b])

                def run(s, b=b, t=t):
                    h = s[None]
                    for tt in range(t + 1, 5):
                        h = _torch_step(tm, 0, xt[tt, b : b + 1], h)
                    return h[0]

            jt = torch.autograd.functional.jacobian(run, s0).numpy()
            np.testing.assert_allclose(jac[t, b], jt, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(norms, np.linalg.norm(jac, "fro", axis=(-2, -1)).mean(1), rtol=1e-12)


def test_jacobian_norms_leave_parameter_grads_alone_and_vanish_for_small_weights():
    torch.manual_seed(4)
    tm = torch.nn.RNN(2, 4).double()
    with torch.no_grad():
        tm.weight_hh_l0.mul_(0.3)  # ||W_hh|| < 1: the product must shrink geometrically
    m = TorchWeights(tm)
    m.weight_hh_l0.grad = hg.tensor(np.full((4, 4), 7.0))
    x = hg.tensor(np.random.default_rng(4).standard_normal((30, 2, 2)))
    norms = jacobian_norms(m, x)
    assert m.weight_hh_l0.grad.numpy()[0, 0] == 7.0 and m.weight_ih_l0.grad is None
    assert norms[-1] == pytest.approx(1.0)
    spectral = np.linalg.norm(m.weight_hh_l0.numpy(), 2)
    # ||J_t|| <= ||W_hh||^(T-1-t) since |1 - h^2| <= 1
    bound = spectral ** np.arange(29, -1, -1)
    assert np.all(norms <= bound + 1e-12)
    assert norms[0] < 1e-8


def test_batch_first_and_initial_state_are_honoured():
    torch.manual_seed(5)
    tm = torch.nn.GRU(2, 3, batch_first=True).double()
    m = TorchWeights(tm)
    x = np.random.default_rng(5).standard_normal((2, 4, 2))
    h0 = np.random.default_rng(6).standard_normal((1, 2, 3))
    u = unroll(m, hg.tensor(x), hg.tensor(h0))
    out, _ = tm(torch.tensor(x), torch.tensor(h0))
    np.testing.assert_allclose(u.output.numpy(), out.detach().numpy(), rtol=1e-10)
    n1 = jacobian_norms(m, hg.tensor(x), hg.tensor(h0))
    assert n1.shape == (4,) and n1[-1] == pytest.approx(1.0)


def test_probe_and_stack_gradcheck():
    rng = np.random.default_rng(7)
    store = {}
    a = hg.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = hg.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    y = hg.stack([ProbeFunction(store, "a")(a), b], 1)
    assert y.shape == (2, 2, 3)
    gy = rng.standard_normal((2, 2, 3))
    (y * hg.tensor(gy)).sum().backward()
    np.testing.assert_allclose(store["a"], gy[:, 0])
    np.testing.assert_allclose(a.grad.numpy(), gy[:, 0])
    np.testing.assert_allclose(b.grad.numpy(), gy[:, 1])
    assert hg.gradcheck(lambda p, q: hg.stack([p, q * 2.0], -1), (a, b))
    assert hg.gradcheck(lambda p: ProbeFunction({}, "k")(p) * p, (a,))


def test_cell_step_gradcheck_against_finite_differences():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3))
    h = rng.standard_normal((2, 4))
    w_ih, w_hh = rng.standard_normal((12, 3)) * 0.5, rng.standard_normal((12, 4)) * 0.5
    b = rng.standard_normal(12) * 0.1

    def f(hv):
        return cell_step("GRU", hg.tensor(x), hg.tensor(hv), *(hg.tensor(w) for w in (w_ih, w_hh, b, b))).numpy()

    ht = hg.tensor(h, requires_grad=True)
    out = cell_step("GRU", hg.tensor(x), ht, *(hg.tensor(w) for w in (w_ih, w_hh, b, b)))
    gy = rng.standard_normal(out.shape)
    (out * hg.tensor(gy)).sum().backward()
    num = np.zeros_like(h)
    eps = 1e-6
    for idx in np.ndindex(h.shape):
        hp, hm = h.copy(), h.copy()
        hp[idx] += eps
        hm[idx] -= eps
        num[idx] = ((f(hp) - f(hm)) * gy).sum() / (2 * eps)
    np.testing.assert_allclose(ht.grad.numpy(), num, rtol=1e-7, atol=1e-9)


def test_errors_name_the_function_and_shapes():
    torch.manual_seed(0)
    m = TorchWeights(torch.nn.RNN(3, 4).double())
    with pytest.raises(ValueError, match=r"unroll: input must be 3-D.*\(5, 3\)"):
        unroll(m, hg.tensor(np.zeros((5, 3))))
    with pytest.raises(ValueError, match=r"unroll: input has 2 features.*\(4, 3\)"):
        unroll(m, hg.tensor(np.zeros((5, 1, 2))))
    with pytest.raises(IndexError, match="hidden_state_gradients: layer 3 out of range"):
        hidden_state_gradients(m, hg.tensor(np.zeros((5, 1, 3))), lambda o, h: o.sum(), layer=3)
    with pytest.raises(ValueError, match="one-element Tensor"):
        hidden_state_gradients(m, hg.tensor(np.zeros((5, 1, 3))), lambda o, h: o)
    with pytest.raises(IndexError, match="jacobian_norms: layer -2 out of range"):
        jacobian_norms(m, hg.tensor(np.zeros((5, 1, 3))), layer=-2)
    with pytest.raises(ValueError, match="jacobian_norms: input must be 3-D"):
        jacobian_norms(m, hg.tensor(np.zeros((5, 3))))
    with pytest.raises(TypeError, match="unroll: expected an RNN, LSTM or GRU"):
        unroll(Module(), hg.tensor(np.zeros((5, 1, 3))))
    with pytest.raises(ValueError, match=r"tanh_rnn_jacobians: need weight_hh \(H, H\)"):
        tanh_rnn_jacobians(np.zeros((3, 3)), np.zeros((5, 2, 4)))
    bi = TorchWeights(torch.nn.RNN(3, 4).double())
    bi.bidirectional = True
    with pytest.raises(ValueError, match="unroll: bidirectional"):
        unroll(bi, hg.tensor(np.zeros((5, 1, 3))))


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_unroll_of_handgrad_fused_module_gives_its_outputs_and_parameter_grads(mode):
    from handgrad import nn

    hg.manual_seed(0)
    m = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}[mode](3, 4, num_layers=2, batch_first=True).double()
    x = hg.tensor(np.random.default_rng(9).standard_normal((2, 6, 3)))
    out, _ = m(x)
    (out[:, -1] * out[:, -1]).sum().backward()
    fused_grads = {n: p.grad.numpy().copy() for n, p in m.named_parameters()}
    m.zero_grad()
    gf = hidden_state_gradients(m, x, lambda o, h_n: (o[:, -1] * o[:, -1]).sum())
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), fused_grads[n], rtol=1e-9, atol=1e-12)
    # many-to-one: dL/dh_T of the top layer is just dL/dy_T = 2 y_T
    np.testing.assert_allclose(gf.grad_h[-1], 2 * out.numpy()[:, -1], rtol=1e-10)
    assert gf.grad_norm.shape == (6,)
