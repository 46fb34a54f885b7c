"""``gradcheck``: compare every hand-written backward with central finite differences in float64.

Full check (default): for every element j of every floating input that requires grad, the numeric
column ``(f(x + eps e_j) - f(x - eps e_j)) / (2 eps)`` of the Jacobian is computed. If the outputs have at
most ``_FULL_JACOBIAN_MAX`` elements in all, the analytic Jacobian is built row by row (one backward per
output element) and compared entry by entry; otherwise both sides are projected on a few random output
cotangents u (analytic: the VJP u^T J from one backward; numeric: u^T of each numeric column).

Cheap check (``directions=k``): k random input directions v per input, compared as
``(f(x + eps v) - f(x - eps v)) / (2 eps) . u`` against ``<VJP_u, v>`` for a random cotangent u.

A mismatch raises ``GradcheckError`` naming the input, the worst element, analytic and numeric values.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy

from handgrad.engine.backend import device_of_array
from handgrad.engine.grad_mode import enable_grad
from handgrad.engine.tensor import Tensor

_FULL_JACOBIAN_MAX = 64  # outputs up to this size: the exact Jacobian; above: random VJPs
_N_RANDOM_VJPS = 3


class GradcheckError(RuntimeError):
    """The analytic gradient of a function disagrees with finite differences."""


def _as_tuple(x: Any) -> tuple[Any, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _float_outputs(out: Any) -> list[Tensor]:
    return [o for o in _as_tuple(out) if isinstance(o, Tensor) and o.dtype.kind == "f"]


def _flat_outputs(fn: Callable[..., Any], args: Sequence[Any]) -> numpy.ndarray:
    outs = _float_outputs(fn(*args))
    if not outs:
        return numpy.zeros(0)
    return numpy.concatenate([numpy.asarray(o.numpy(), dtype=numpy.float64).ravel() for o in outs])


def _vjp(fn: Callable[..., Any], args: Sequence[Any], u: numpy.ndarray, wrt: list[int]) -> list[numpy.ndarray]:
    """u^T J for each input in ``wrt``, by one backward through the hand-written ops."""
    for i in wrt:
        args[i].grad = None
    with enable_grad():
        outs = _float_outputs(fn(*args))
    total: Tensor | None = None
    pos = 0
    for o in outs:
        n = o.numel()
        if o.requires_grad:
            w = Tensor(o.device.send(u[pos : pos + n].reshape(o.shape).astype(o.dtype)))  # on the output's device
            term = (o * w).sum()
            total = term if total is None else total + term
        pos += n
    if total is not None:
        total.backward()
    grads = []
    for i in wrt:
        g = args[i].grad
        grads.append(numpy.zeros(args[i].shape) if g is None else numpy.asarray(g.numpy(), numpy.float64))
        args[i].grad = None
    return grads


def _fail(name: str, where: str, analytic: float, numeric: float, atol: float, rtol: float, extra: str = "") -> None:
    raise GradcheckError(
        f"gradcheck: {name}: analytic and numeric gradients differ at {where}: analytic {analytic:.10g}, "
        f"numeric {numeric:.10g} (|diff| {abs(analytic - numeric):.3g} > atol {atol:g} + rtol {rtol:g} * |numeric|)"
        + extra
    )


def _compare(a: numpy.ndarray, n: numpy.ndarray, atol: float, rtol: float) -> tuple[bool, int]:
    bad = numpy.abs(a - n) - (atol + rtol * numpy.abs(n))
    bad = numpy.where(numpy.isnan(a) != numpy.isnan(n), numpy.inf, numpy.nan_to_num(bad, nan=-1.0))
    worst = int(numpy.argmax(bad)) if bad.size else 0
    return (not bad.size or bad.flat[worst] <= 0), worst


def gradcheck(
    fn: Callable[..., Any],
    inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-8,
    rtol: float = 1e-6,
    directions: int | None = None,
    seed: int = 0,
) -> bool:
    """Check ``fn(*inputs)``'s backward against central differences; True, or ``GradcheckError``.

    ``inputs`` is a Tensor or a tuple of arguments; the floating tensors among them with
    ``requires_grad=True`` are checked (they should be float64). ``fn`` returns a Tensor or a tuple of
    them; non-floating outputs are ignored. ``directions=k`` replaces the element-by-element check with
    k random directional derivatives per input (for large inputs).
    """
    args = list(_as_tuple(inputs))
    wrt = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad and a.dtype.kind == "f"]
    if not wrt:
        raise ValueError("gradcheck: no input is a floating tensor with requires_grad=True")
    for i in wrt:
        if args[i].dtype != numpy.float64:
            warnings.warn(f"gradcheck: input {i} is {args[i].dtype}, not float64: finite differences will be "
                          "inaccurate", stacklevel=2)
        # private leaf copies: perturbing them and filling .grad leaves the caller's tensors alone
        leaf = Tensor._from_op(args[i].array.copy(), None, 0)
        leaf.requires_grad = True
        args[i] = leaf
    rng = numpy.random.default_rng(seed)
    with enable_grad():
        y0 = _flat_outputs(fn, args)
    m = y0.size
    if directions is not None:
        return _check_directions(fn, args, wrt, m, int(directions), eps, atol, rtol, rng)

    full = m <= _FULL_JACOBIAN_MAX
    us = numpy.eye(m) if full else rng.standard_normal((_N_RANDOM_VJPS, m))
    analytic = [_vjp(fn, args, u, wrt) for u in us]  # analytic[r][k]: u_r^T J for input wrt[k]
    for k, i in enumerate(wrt):
        data = args[i].array
        flat = data.reshape(-1)  # a view: writes go into the leaf
        if not numpy.shares_memory(flat, data):  # pragma: no cover - non-contiguous copy
            raise RuntimeError("gradcheck: could not perturb the input in place")
        num = numpy.empty((len(us), flat.size))
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            with enable_grad():
                yp = _flat_outputs(fn, args)
            flat[j] = old - eps
            with enable_grad():
                ym = _flat_outputs(fn, args)
            flat[j] = old
            num[:, j] = us @ ((yp - ym) / (2 * eps))
        ana = numpy.stack([analytic[r][k].reshape(-1) for r in range(len(us))])
        ok, worst = _compare(ana, num, atol, rtol)
        if not ok:
            r, j = divmod(worst, flat.size)
            elem = tuple(int(v) for v in numpy.unravel_index(j, data.shape)) if data.ndim else ()
            where = f"d output[{r}] / d input {i}{list(elem)}" if full else \
                f"input {i}{list(elem)} (random output cotangent {r})"
            _fail(f"input {i} (shape {tuple(data.shape)})", where, ana.flat[worst], num.flat[worst], atol, rtol)
    return True


def _check_directions(fn: Callable[..., Any], args: list[Any], wrt: list[int], m: int, k: int, eps: float,
                      atol: float, rtol: float, rng: numpy.random.Generator) -> bool:
    if k <= 0:
        raise ValueError(f"gradcheck: directions must be a positive int, got {k}")
    u = rng.standard_normal(m)
    grads = _vjp(fn, args, u, wrt)
    for g, i in zip(grads, wrt):
        data = args[i].array
        base = data.copy()
        for r in range(k):
            v = rng.standard_normal(data.shape)
            data[...] = base + eps * device_of_array(data).send(v)
            with enable_grad():
                yp = _flat_outputs(fn, args)
            data[...] = base - eps * device_of_array(data).send(v)
            with enable_grad():
                ym = _flat_outputs(fn, args)
            data[...] = base
            numeric = float(u @ ((yp - ym) / (2 * eps)))
            analytic = float(numpy.sum(g * v))
            if not abs(analytic - numeric) <= atol + rtol * abs(numeric):
                _fail(f"input {i} (shape {tuple(data.shape)})", f"random direction {r}", analytic, numeric,
                      atol, rtol, extra="; check element by element (directions=None) to find the entry")
    return True
