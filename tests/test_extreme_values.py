"""Every op that saturates, at extreme inputs: forward AND gradient equal to PyTorch's in float32 and float64.

The grid runs from -1e4 to 1e4, log-spaced on both sides, with 0, +-1e-8, +-18 (where (1 + tanh(x/2)) / 2
used to round the float32 sigmoid to 0), +-88 (float32 e^x underflow) and +-1e4. The gradient is taken
with a non-uniform upstream gradient so that a wrong Jacobian cannot hide behind a symmetric sum.

Tolerance: ``|ours - torch| <= atol + rtol |torch|`` with rtol a few ulps (float64 1e-14, float32 2e-6)
and atol the smallest normal number of the dtype, so that a cliff (a 0 where PyTorch has 1e-13, a gradient
0 instead of -1) cannot pass. Only where the formula itself cancels (PyTorch's too: tanh's 1 - y^2 near
|y| = 1, GELU's 1 + erf near erf = -1, softmax's gy - sum gy y) does atol grow to ``cond`` ulps of the
operands' scale, since one ulp of difference in y (NumPy's tanh vs PyTorch's) is amplified there.
"""

from __future__ import annotations

import numpy
import pytest

import handgrad as hg
import handgrad.functional as F
import handgrad.nn as hg_nn

torch = pytest.importorskip("torch")
TF = torch.nn.functional

_POS = numpy.logspace(-8, 4, 25)
GRID = numpy.unique(numpy.concatenate([-_POS, [0.0], _POS, [-88.0, -18.0, 18.0, 88.0, -30.0, 30.0, -104.0]]))
DTYPES = {"float32": (numpy.float32, torch.float32, 2e-6), "float64": (numpy.float64, torch.float64, 1e-14)}


def _close(ours: numpy.ndarray, ref: numpy.ndarray, rtol: float, what: str, atol: float | numpy.ndarray = 0.0) -> None:
    atol = atol + numpy.finfo(ref.dtype).tiny
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} vs PyTorch's {ref.dtype}"
    bad = ~(numpy.abs(ours - ref) <= atol + rtol * numpy.abs(ref))
    bad &= ~(numpy.isnan(ours) & numpy.isnan(ref)) & ~(ours == ref)  # equal infinities / both nan
    if bad.any():
        i = numpy.flatnonzero(bad.ravel())[:5]
        raise AssertionError(f"{what}: at x={GRID.take(i, mode='clip')} (flat {i}) ours {ours.ravel()[i]} "
                             f"vs PyTorch {ref.ravel()[i]}")


def _compare(ours_fn, torch_fn, x: numpy.ndarray, dtype: str, rtol_scale: float = 1.0, extra=(),
             cond: float = 0.0, gscale: float = 1.5) -> None:
    """Run both on ``x`` (and the non-differentiated ``extra`` arrays), compare the output and d(w . y)/dx
    (``gscale``: the size of the upstream-gradient terms that the backward sums, for ``cond``'s atol)."""
    np_dt, t_dt, rtol = DTYPES[dtype]
    rtol *= rtol_scale
    atol = cond * numpy.finfo(np_dt).eps * numpy.maximum(1.0, numpy.abs(x))  # 0 unless the formula cancels
    x = x.astype(np_dt)
    a = hg.tensor(x, requires_grad=True)
    t = torch.tensor(x, requires_grad=True)
    ya = ours_fn(a, *[hg.tensor(e.astype(np_dt)) for e in extra])
    yt = torch_fn(t, *[torch.tensor(e.astype(np_dt)) for e in extra])
    _close(ya.numpy(), yt.detach().numpy(), rtol, "forward", atol if atol.shape == ya.shape else atol.max())
    w = numpy.linspace(0.5, 1.5, max(ya.numel(), 1)).reshape(ya.shape).astype(np_dt)
    (ya * hg.tensor(w)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    _close(a.grad.numpy(), t.grad.numpy(), rtol, "gradient", gscale * atol)


ELEMENTWISE = {
    "sigmoid": (hg.sigmoid, torch.sigmoid, 1),
    "tanh": (hg.tanh, torch.tanh, 1, 4),
    "softplus": (F.softplus, TF.softplus, 1),
    "softplus_beta2_thr5": (lambda x: F.softplus(x, 2.0, 5.0), lambda x: TF.softplus(x, 2.0, 5.0), 1),
    "logsigmoid": (F.logsigmoid, TF.logsigmoid, 1),
    "silu": (F.silu, TF.silu, 1),
    "elu": (F.elu, TF.elu, 1),
    "elu_alpha0.5": (lambda x: F.elu(x, 0.5), lambda x: TF.elu(x, 0.5), 1),
    # erf: SciPy's and PyTorch's erf differ by an ulp or two
    "gelu": (F.gelu, TF.gelu, 4, 8),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh"), 4, 8),
}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_extremes(name: str, dtype: str) -> None:
    ours, ref, scale, *cond = ELEMENTWISE[name]
    _compare(ours, ref, GRID, dtype, scale, cond=cond[0] if cond else 0.0)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_sigmoid_tails_are_exact(dtype: str) -> None:
    """The issue's cliff itself: sigmoid(x) ~ e^x far left (not 0), 1 - sigmoid(x) ~ e^-x far right."""
    np_dt = DTYPES[dtype][0]
    x = numpy.array([-18.0, -30.0, -60.0, -87.0], np_dt)
    y = hg.sigmoid(hg.tensor(x)).numpy()
    numpy.testing.assert_allclose(y, numpy.exp(x) / (1 + numpy.exp(x)), rtol=4 * numpy.finfo(np_dt).eps)
    assert (y > 0).all()


ROWS = numpy.stack([GRID[::2][:24], GRID[1::2][:24], numpy.r_[[-1e4, 1e4], numpy.zeros(22)],
                    numpy.r_[[-1e4, -1e4 + 1], numpy.full(22, -9999.0)], numpy.full(24, 88.0)])


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_reductions_extremes(name: str, dtype: str) -> None:
    ours = {"softmax": lambda x: F.softmax(x, dim=1), "log_softmax": lambda x: F.log_softmax(x, dim=1),
            "logsumexp": lambda x: x.logsumexp(1)}[name]
    ref = {"softmax": lambda x: TF.softmax(x, dim=1), "log_softmax": lambda x: TF.log_softmax(x, dim=1),
           "logsumexp": lambda x: x.logsumexp(1)}[name]
    # the backward gy - y sum(gy) cancels: a few ulps of sum |gy| (not of |x|, hence cond / 1e4 at |x| = 1e4)
    _compare(ours, ref, ROWS / 1e4, dtype, 4, cond=4, gscale=1.5 * ROWS.shape[1])
    _compare(ours, ref, ROWS, dtype, 4, cond=4 / 1e4, gscale=1.5 * ROWS.shape[1])
    _compare(ours, ref, ROWS.T.copy(), dtype, 4, cond=4 / 1e4, gscale=1.5 * ROWS.shape[0])


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("target", [0.0, 1.0, 0.3])
def test_bce_of_sigmoid_extremes(target: float, dtype: str) -> None:
    """The issue's siamese case: BCE(sigmoid(x), t), the log clamped at -100 as in PyTorch."""
    t = numpy.full_like(GRID, target)
    _compare(lambda x, tt: F.binary_cross_entropy(hg.sigmoid(x), tt, reduction="none"),
             lambda x, tt: TF.binary_cross_entropy(torch.sigmoid(x), tt, reduction="none"), GRID, dtype, 4, (t,))


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_bce_on_probabilities_clamps_log_at_minus_100(dtype: str) -> None:
    p = numpy.array([0.0, 1e-37, 1e-30, 1e-20, 1e-8, 0.5, 1 - 1e-7, 1.0])
    for target in (0.0, 1.0, 0.25):
        _compare(lambda x, tt: F.binary_cross_entropy(x, tt, reduction="none"),
                 lambda x, tt: TF.binary_cross_entropy(x, tt, reduction="none"), p, dtype, 4,
                 (numpy.full_like(p, target),))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("target", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_bce_with_logits_extremes(target: float, pos_weight: float | None, dtype: str) -> None:
    t = numpy.full_like(GRID, target)
    pw = None if pos_weight is None else numpy.array([pos_weight])

    def ours(x, tt):
        return F.binary_cross_entropy_with_logits(x, tt, reduction="none",
                                                  pos_weight=None if pw is None else hg.tensor(pw.astype(x.dtype)))

    def ref(x, tt):
        return TF.binary_cross_entropy_with_logits(x, tt, reduction="none",
                                                   pos_weight=None if pw is None else torch.tensor(pw).to(x.dtype))

    _compare(ours, ref, GRID, dtype, 4, (t,))


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_cross_entropy_and_nll_extremes(dtype: str) -> None:
    y = numpy.array([0, 23, 1, 5, 0])
    _compare(lambda x: F.cross_entropy(x, hg.tensor(y), reduction="none"),
             lambda x: TF.cross_entropy(x, torch.tensor(y), reduction="none"), ROWS, dtype, 4)
    _compare(lambda x: F.nll_loss(F.log_softmax(x, 1), hg.tensor(y), reduction="none"),
             lambda x: TF.nll_loss(TF.log_softmax(x, 1), torch.tensor(y), reduction="none"), ROWS, dtype, 4)


def _rnn_pair(kind: str, dtype: str, scale: float):
    np_dt, t_dt, _ = DTYPES[dtype]
    ours = getattr(hg_nn, kind)(3, 4, dtype=np_dt)
    ref = getattr(torch.nn, kind)(3, 4).to(t_dt)
    rng = numpy.random.default_rng(0)
    with torch.no_grad():
        for p, q in zip(ours.parameters(), ref.parameters()):
            v = (rng.standard_normal(p.shape) * scale).astype(np_dt)
            p.numpy()[...] = v
            q.copy_(torch.tensor(v))
    return ours, ref


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_fused_recurrent_gates_saturated(kind: str, dtype: str) -> None:
    """Gate pre-activations up to ~1e4: the fused kernels' sigmoids/tanh (via e^x) saturate as PyTorch's."""
    np_dt = DTYPES[dtype][0]
    rtol = 1e-4 if dtype == "float32" else 1e-10
    ours, ref = _rnn_pair(kind, dtype, 300.0)
    x = (numpy.random.default_rng(1).standard_normal((5, 2, 3)) * 10).astype(np_dt)
    xa, xt = hg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ya, yt = ours(xa)[0], ref(xt)[0]
    numpy.testing.assert_allclose(ya.numpy(), yt.detach().numpy(), rtol=rtol, atol=rtol)
    assert numpy.abs(ya.numpy()).max() > 0.9  # really saturated
    w = numpy.linspace(-1, 1, ya.numel()).reshape(ya.shape).astype(np_dt)
    (ya * hg.tensor(w)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    numpy.testing.assert_allclose(xa.grad.numpy(), xt.grad.numpy(), rtol=rtol, atol=rtol * 1e3)
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        numpy.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=rtol, atol=rtol * 1e3, err_msg=name)


@pytest.mark.parametrize("module", ["mdlstm", "hmrnn"])
def test_other_recurrent_gates_use_the_exact_sigmoid(module: str) -> None:
    """The 2-D LSTM and HM-LSTM kernels have no PyTorch twin; their gate sigmoid is the shared exact one
    (it was (1 + tanh(z/2)) / 2 there too: 0 in float32 below -18)."""
    import importlib
    import inspect

    mod = importlib.import_module(f"handgrad.recurrent.{module}")
    assert "sigmoid_array" in inspect.getsource(mod) and "0.5 * (1" not in inspect.getsource(mod)
    if module == "mdlstm":
        z = numpy.array([-30.0, -18.0, 0.0, 30.0], numpy.float32)
        numpy.testing.assert_allclose(mod._sigmoid(z, numpy), torch.sigmoid(torch.tensor(z)).numpy(), rtol=2e-7)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_extremes(log_target: bool, dtype: str) -> None:
    """KL(p || q) with log q from log_softmax of extreme logits, targets with zeros (p log p = 0 at p = 0)."""
    p = numpy.abs(numpy.sin(numpy.arange(ROWS.size))).reshape(ROWS.shape)
    p[:, ::3] = 0.0
    p /= p.sum(axis=1, keepdims=True)
    t = numpy.log(numpy.where(p > 0, p, 1e-300)) if log_target else p
    _compare(lambda x, tt: F.kl_div(F.log_softmax(x, 1), tt, reduction="none", log_target=log_target),
             lambda x, tt: TF.kl_div(TF.log_softmax(x, 1), tt, reduction="none", log_target=log_target),
             ROWS, dtype, 4, (t,), cond=4 / 1e4, gscale=1.5 * ROWS.shape[1])
