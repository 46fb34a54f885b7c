"""Adadelta, Adagrad, NAdam, RAdam and LBFGS vs torch.optim: the same parameters (float64, ~1e-12) after the
same gradient sequence, for every option; LBFGS on real closures with and without the strong-Wolfe search."""

import numpy as np
import pytest
import torch

import handgrad as hg
import handgrad.optim as optim

SHAPES = [(3, 4), (5,)]
STEPS = 12


@pytest.fixture(autouse=True)
def _torch_float64():
    # torch keeps NAdam's mu_product (and step counters) in the default dtype: float64 makes them exact
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]
    return init, grads


CASES = [
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1)),
    ("Adadelta", dict(maximize=True)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.3, eps=1e-6)),
    ("Adagrad", dict(maximize=True)),
    ("NAdam", dict()),
    ("NAdam", dict(lr=0.01, betas=(0.8, 0.95), momentum_decay=0.01, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict()),  # rho_t <= 5 for the first steps, then rectified: both branches run
    ("RAdam", dict(lr=0.01, betas=(0.5, 0.6), weight_decay=0.1)),
    ("RAdam", dict(lr=0.01, betas=(0.5, 0.6), weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
]


@pytest.mark.parametrize("name,kw", CASES)
def test_optimizer_matches_torch_step_by_step(name, kw):
    init, grads = _data()
    ours = [hg.tensor(a.copy(), requires_grad=True) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    o1, o2 = getattr(optim, name)(ours, **kw), getattr(torch.optim, name)(theirs, **kw)
    for gs in grads:
        for p, q, g in zip(ours, theirs, gs):
            p.grad = hg.tensor(g + 0.3 * p.array)  # the gradient depends on p: decay paths interact
            q.grad = torch.tensor(g) + 0.3 * q.detach()
        o1.step()
        o2.step()
        for p, q in zip(ours, theirs):
            np.testing.assert_allclose(p.array, q.detach().numpy(), rtol=1e-12, atol=1e-13)
    moved = max(np.abs(p.array - a).max() for p, a in zip(ours, init))
    assert moved > 1e-3  # the comparison is not between two parameters that never moved


@pytest.mark.parametrize("name,kw", CASES[::3])
def test_state_dict_resume_is_identical(name, kw):
    init, grads = _data(1)
    ps = [hg.tensor(a.copy(), requires_grad=True) for a in init]
    opt = getattr(optim, name)(ps, **kw)

    def run(params, o, gs):
        for g in gs:
            for p, gi in zip(params, g):
                p.grad = hg.tensor(gi)
            o.step()

    run(ps, opt, grads[:5])
    sd = opt.state_dict()
    ps2 = [hg.tensor(p.array.copy(), requires_grad=True) for p in ps]
    opt2 = getattr(optim, name)(ps2, **kw)
    opt2.load_state_dict(sd)
    run(ps, opt, grads[5:])
    run(ps2, opt2, grads[5:])
    for a, b in zip(ps, ps2):
        np.testing.assert_array_equal(a.array, b.array)


def _rosenbrock_problem(lib, x0):
    x = lib.tensor(x0.copy(), requires_grad=True)

    def f():
        return ((1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[2]) ** 2 + 10 * (x[2] - x[1] ** 2) ** 2)

    return x, f


def _regression_problem(lib, seed=0):
    rng = np.random.default_rng(seed)
    X, w_true = rng.standard_normal((40, 5)), rng.standard_normal((5, 1))
    y = np.tanh(X @ w_true) + 0.1 * rng.standard_normal((40, 1))
    w = lib.tensor(0.1 * rng.standard_normal((5, 1)), requires_grad=True)
    b = lib.tensor(np.zeros(1), requires_grad=True)
    Xt, yt = lib.tensor(X), lib.tensor(y)

    def f():
        return ((lib.tanh(Xt @ w + b) - yt) ** 2).mean()

    return [w, b], f


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
@pytest.mark.parametrize("kw", [dict(), dict(lr=0.5, max_iter=7, history_size=3), dict(max_iter=4, max_eval=6)])
def test_lbfgs_matches_torch(line_search, kw):
    results = {}
    for lib in (hg, torch):
        params, f = _regression_problem(lib)
        opt = (optim if lib is hg else torch.optim).LBFGS(params, line_search_fn=line_search, **kw)
        losses, evals = [], [0]

        def closure(opt=opt, f=f, evals=evals):
            opt.zero_grad()
            loss = f()
            loss.backward()
            evals[0] += 1
            return loss

        for _ in range(4):
            losses.append(float(opt.step(closure).detach()))
        st = opt.state[params[0]]
        results[lib.__name__] = (losses, [np.array(p.detach().numpy() if lib is torch else p.array) for p in params],
                                 evals[0], st["func_evals"], st["n_iter"])
    (l1, p1, e1, fe1, n1), (l2, p2, e2, fe2, n2) = results["handgrad"], results["torch"]
    assert (e1, fe1, n1) == (e2, fe2, n2)  # same number of closure calls and iterations
    np.testing.assert_allclose(l1, l2, rtol=1e-12, atol=1e-15)
    for a, b in zip(p1, p2):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    assert l1[-1] < 0.8 * l1[0]


def test_lbfgs_strong_wolfe_solves_rosenbrock_like_torch():
    x0 = np.array([-1.2, 1.0, 0.5])
    out = {}
    for lib in (hg, torch):
        x, f = _rosenbrock_problem(lib, x0)
        opt = (optim if lib is hg else torch.optim).LBFGS([x], lr=1, max_iter=50, line_search_fn="strong_wolfe")

        def closure(opt=opt, f=f):
            opt.zero_grad()
            loss = f()
            loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        out[lib.__name__] = np.array(x.detach().numpy() if lib is torch else x.array), opt.state[x]["func_evals"]
    np.testing.assert_allclose(out["handgrad"][0], out["torch"][0], rtol=1e-10, atol=1e-12)
    assert out["handgrad"][1] == out["torch"][1]
    np.testing.assert_allclose(out["handgrad"][0], [1, 1, 1], atol=1e-5)


def test_lbfgs_errors():
    p = hg.tensor(np.zeros(3), requires_grad=True)
    with pytest.raises(ValueError, match="line_search_fn"):
        optim.LBFGS([p], line_search_fn="armijo")
    with pytest.raises(ValueError, match="parameter groups"):
        optim.LBFGS([{"params": [p]}, {"params": [hg.tensor(np.zeros(2), requires_grad=True)]}])
    with pytest.raises(RuntimeError, match="closure"):
        optim.LBFGS([p]).step(None)


@pytest.mark.parametrize("name,kw,msg", [
    ("Adadelta", dict(rho=1.5), "rho"), ("Adagrad", dict(lr_decay=-1), "lr_decay"),
    ("NAdam", dict(betas=(1.0, 0.9)), "beta"), ("RAdam", dict(eps=-1), "eps"),
])
def test_bad_hyperparameters_name_the_optimizer(name, kw, msg):
    with pytest.raises(ValueError, match=f"{name}.*{msg}"):
        getattr(optim, name)([hg.tensor(np.zeros(2), requires_grad=True)], **kw)


def test_lbfgs_state_dict_round_trips_through_a_checkpoint_and_resumes_identically():
    import io

    def make(x0):
        x = hg.tensor(x0.copy(), requires_grad=True)
        opt = optim.LBFGS([x], max_iter=3, history_size=4, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = ((x[0] - 1) ** 2 + 5 * (x[1] - x[0] ** 2) ** 2).sum()
            loss.backward()
            return loss

        return x, opt, closure

    x, opt, closure = make(np.array([[-1.0, 0.5], [0.3, 2.0]]).T)
    opt.step(closure)
    buf = io.BytesIO()
    hg.save(opt.state_dict(), buf)
    buf.seek(0)
    x2, opt2, closure2 = make(x.array)
    opt2.load_state_dict(hg.load(buf))
    for _ in range(2):
        opt.step(closure)
        opt2.step(closure2)
    np.testing.assert_array_equal(x.array, x2.array)
    assert opt2.state[x2]["n_iter"] == opt.state[x]["n_iter"] > 3  # the resumed run really iterated
