"""Vanishing and exploding gradients, made visible: ``||dL/dh_t||`` and ``||dh_T/dh_t||`` for every step t.

A fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` computes the whole sequence in one op, so the per-step
gradients never exist as tensors. ``unroll`` re-runs the same model step by step from its weights
(PyTorch's names ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` and equations)
and threads every state through an identity ``ProbeFunction`` whose backward records the gradient arriving at it.
Because each ``h_t`` feeds both the output at ``t`` and the step ``t + 1``, the probe sees the *total*
derivative ``dL/dh_t = dL/dy_t dy_t/dh_t + dL/dh_{t+1} dh_{t+1}/dh_t`` (BPTT's delta).

For a tanh RNN ``h_t = tanh(z_t)``, ``z_t = W_ih x_t + W_hh h_{t-1} + b``, the Jacobian over a distance is
the course's product

    dh_T/dh_t = prod_{s=T..t+1} diag(1 - h_s^2) W_hh        (``tanh_rnn_jacobians``, explicit)

whose norm shrinks (or grows) geometrically with ``T - t`` when ``||W_hh|| * max|1 - h^2|`` is below (above)
1: the vanishing (exploding) gradient. For an LSTM the state is ``(h_t, c_t)`` and ``jacobian_norms`` uses
the exact ``2H x 2H`` Jacobian ``d(h_T, c_T)/d(h_t, c_t)``; for a GRU the state is ``h_t``. Those are
computed with vector-Jacobian products (one backward pass whose batch holds a basis vector per row), so they
are exact for any cell, not an approximation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy

from handgrad.engine.factories import zeros
from handgrad.engine.function import Function
from handgrad.engine.grad_mode import enable_grad
from handgrad.engine.ops import matmul, sigmoid, stack, tanh
from handgrad.engine.ops.unary import relu
from handgrad.engine.tensor import Tensor


class ProbeFunction(Function):
    """Identity ``y = x`` whose backward stores the incoming gradient: ``store[key] += gy``;  dx = gy."""

    def __init__(self, store: dict[Any, Any], key: Any) -> None:
        self.store, self.key = store, key

    def forward(self, x: Any) -> Any:
        return x

    def backward(self, gy: Any) -> Any:
        prev = self.store.get(self.key)
        self.store[self.key] = gy.copy() if prev is None else prev + gy
        return gy


def _mode(rnn: Any) -> tuple[str, str]:
    """('RNN' | 'LSTM' | 'GRU', nonlinearity) from a handgrad or PyTorch-style recurrent module."""
    mode = str(getattr(rnn, "mode", type(rnn).__name__))
    if mode.startswith("RNN"):
        nl = getattr(rnn, "nonlinearity", "relu" if mode == "RNN_RELU" else "tanh")
        return "RNN", nl
    if mode in ("LSTM", "GRU"):
        return mode, "tanh"
    raise TypeError(f"unroll: expected an RNN, LSTM or GRU module, got {type(rnn).__name__} (mode {mode!r})")


def _layer_weights(rnn: Any, k: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    w_ih = getattr(rnn, f"weight_ih_l{k}", None)
    w_hh = getattr(rnn, f"weight_hh_l{k}", None)
    if w_ih is None or w_hh is None:
        raise AttributeError(f"unroll: {type(rnn).__name__} has no weight_ih_l{k} / weight_hh_l{k}")
    return w_ih, w_hh, getattr(rnn, f"bias_ih_l{k}", None), getattr(rnn, f"bias_hh_l{k}", None)


def _affine(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    y = matmul(x, w.T)
    return y if b is None else y + b


def cell_step(
    mode: str, x: Tensor, state: Any, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
    nonlinearity: str = "tanh", c_hook: Callable[[Tensor], Tensor] | None = None,
) -> Any:
    """One step of PyTorch's cells from primitive ops (so autodiff gives the exact per-step Jacobians).

    RNN: ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``.
    LSTM: ``i, f, g, o`` = chunks of the same affine map; ``c' = s(f) c + s(i) tanh(g)``, ``h' = s(o) tanh(c')``.
    GRU: ``r, z = s(.)``, ``n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn))``, ``h' = (1 - z) n + z h``.
    ``c_hook`` (LSTM) is applied to ``c'`` before ``h'`` is computed from it.
    """
    if mode == "RNN":
        z = _affine(x, w_ih, b_ih) + _affine(state, w_hh, b_hh)
        return tanh(z) if nonlinearity == "tanh" else relu(z)
    if mode == "LSTM":
        h, c = state
        g = _affine(x, w_ih, b_ih) + _affine(h, w_hh, b_hh)
        n = h.shape[-1]
        i, f, gg, o = sigmoid(g[:, :n]), sigmoid(g[:, n : 2 * n]), tanh(g[:, 2 * n : 3 * n]), sigmoid(g[:, 3 * n :])
        c2 = f * c + i * gg
        if c_hook is not None:  # e.g. a ProbeFunction: h' must be computed from what the hook returns
            c2 = c_hook(c2)
        return o * tanh(c2), c2
    gi = _affine(x, w_ih, b_ih)
    gh = _affine(state, w_hh, b_hh)
    n = state.shape[-1]
    r = sigmoid(gi[:, :n] + gh[:, :n])
    z = sigmoid(gi[:, n : 2 * n] + gh[:, n : 2 * n])
    cand = tanh(gi[:, 2 * n :] + r * gh[:, 2 * n :])
    return (1 - z) * cand + z * state


@dataclass
class Unrolled:
    """What ``unroll`` returns: the model's outputs and, per layer, the probed per-step states."""

    output: Tensor  # like the fused module's output (time-major unless batch_first)
    h_n: Any  # (num_layers, B, H), or (h_n, c_n) for an LSTM
    hs: list[list[Tensor]]  # hs[k][t]: layer k's h_t (B, H), passed through a ProbeFunction
    cs: list[list[Tensor]] | None  # LSTM only: the c_t
    grads: dict[Any, Any]  # filled by backward: ("h", k, t) -> dL/dh_t array (B, H); ("c", k, t) for LSTM


def unroll(rnn: Any, input: Tensor, hx: Any = None, c_total: bool = True) -> Unrolled:
    """Run ``rnn`` (``nn.RNN``/``nn.LSTM``/``nn.GRU``, unidirectional) on ``input`` one step at a time.

    ``input (T, B, I)`` (``(B, T, I)`` if ``rnn.batch_first``); ``hx`` as for the module. The result equals the
    fused forward; after ``loss.backward()`` the ``grads`` dict holds ``dL/dh_t`` for every layer and step.
    LSTM: with ``c_total`` the ``("c", k, t)`` entries are the total ``dL/dc_t = dL/dh_t o_t tanh'(c_t) +
    dL/dc_{t+1} f_{t+1}`` (BPTT's cell delta); without, only the second term (``c_t`` taken as a state
    variable beside ``h_t``, what the state Jacobian needs).
    """
    mode, nl = _mode(rnn)
    if getattr(rnn, "bidirectional", False):
        raise ValueError("unroll: bidirectional modules are not supported (the per-step state is ambiguous)")
    if input.ndim != 3:
        raise ValueError(f"unroll: input must be 3-D (seq_len, batch, features), got shape {input.shape}")
    batch_first = bool(getattr(rnn, "batch_first", False))
    x = input.transpose(0, 1) if batch_first else input
    n_layers = int(getattr(rnn, "num_layers", 1))
    hidden = int(rnn.hidden_size)
    if x.shape[-1] != _layer_weights(rnn, 0)[0].shape[1]:
        raise ValueError(
            f"unroll: input has {x.shape[-1]} features but weight_ih_l0 is {_layer_weights(rnn, 0)[0].shape}"
        )
    seq_len, batch = x.shape[0], x.shape[1]
    grads: dict[Any, Any] = {}
    hs: list[list[Tensor]] = []
    cs: list[list[Tensor]] | None = [] if mode == "LSTM" else None
    last_h, last_c = [], []
    with enable_grad():
        for k in range(n_layers):
            w = _layer_weights(rnn, k)
            if hx is None:
                h = zeros(batch, hidden, dtype=x.dtype, device=x.device)
                c = zeros(batch, hidden, dtype=x.dtype, device=x.device)
            elif mode == "LSTM":
                h, c = hx[0][k], hx[1][k]
            else:
                h, c = hx[k], None
            # the initial state requires grad so that the graph (and so every probe) is recorded even when
            # no parameter or input does
            h = h if h.requires_grad else Tensor(h.array, requires_grad=True)
            if c is not None and not c.requires_grad:
                c = Tensor(c.array, requires_grad=True)
            layer_h: list[Tensor] = []
            layer_c: list[Tensor] = []
            for t in range(seq_len):
                if mode == "LSTM":
                    if c_total:  # probe c_t before h_t = o tanh(c_t) reads it: it sees the total dL/dc_t
                        h, c = cell_step(mode, x[t], (h, c), *w, c_hook=ProbeFunction(grads, ("c", k, t)))
                    else:  # probe after: only the c_{t+1} path, i.e. c_t as a state variable independent of h_t
                        h, c = cell_step(mode, x[t], (h, c), *w)
                        c = ProbeFunction(grads, ("c", k, t))(c)
                    layer_c.append(c)
                else:
                    h = cell_step(mode, x[t], h, *w, nonlinearity=nl)
                h = ProbeFunction(grads, ("h", k, t))(h)
                layer_h.append(h)
            hs.append(layer_h)
            if cs is not None:
                cs.append(layer_c)
            last_h.append(h)
            last_c.append(c)
            x = stack(layer_h, 0)
    out = x.transpose(0, 1) if batch_first else x
    h_n = stack(last_h, 0)
    return Unrolled(out, (h_n, stack(last_c, 0)) if mode == "LSTM" else h_n, hs, cs, grads)


@dataclass
class GradientFlow:
    """``dL/dh_t`` of one layer at every step: arrays indexed by t = 0..T-1 (``distance = T - 1 - t``)."""

    grad_h: numpy.ndarray  # (T, B, H)
    grad_norm: numpy.ndarray  # (T,): mean over the batch of ||dL/dh_t||_2
    grad_c: numpy.ndarray | None  # LSTM: (T, B, H) the total dL/dc_t
    loss: float

    @property
    def distance(self) -> numpy.ndarray:
        return numpy.arange(len(self.grad_norm))[::-1].copy()


def hidden_state_gradients(
    rnn: Any,
    input: Tensor,
    loss_fn: Callable[[Tensor, Any], Tensor],
    hx: Any = None,
    layer: int = -1,
) -> GradientFlow:
    """``dL/dh_t`` for t = 0..T-1 of layer ``layer`` (default: the top), for the loss ``loss_fn(output, h_n)``.

    ``output`` and ``h_n`` are what the fused module would return; e.g. a many-to-one regressor gives
    ``loss_fn = lambda out, h_n: mse_loss(head(out[-1]), y)``. Parameter gradients are accumulated as a side
    effect (call ``zero_grad`` afterwards if that matters).
    """
    u = unroll(rnn, input, hx)
    n_layers = len(u.hs)
    if not -n_layers <= layer < n_layers:
        raise IndexError(f"hidden_state_gradients: layer {layer} out of range for {n_layers} layer(s)")
    k = layer % n_layers
    loss = loss_fn(u.output, u.h_n)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(f"hidden_state_gradients: loss_fn must return a one-element Tensor, got {type(loss).__name__}")
    loss.backward()
    seq_len = len(u.hs[k])
    shape = u.hs[k][0].shape

    def collect(kind: str) -> numpy.ndarray:
        out = numpy.zeros((seq_len, *shape))
        for t in range(seq_len):
            g = u.grads.get((kind, k, t))
            if g is not None:
                out[t] = numpy.asarray(g)
        return out

    gh = collect("h")
    gc = collect("c") if u.cs is not None else None
    return GradientFlow(gh, numpy.linalg.norm(gh, axis=-1).mean(axis=1), gc, float(loss.item()))


def jacobian_norms(
    rnn: Any, input: Tensor, hx: Any = None, layer: int = -1, ord: Any = 2, return_jacobians: bool = False
) -> Any:
    """``||d s_T / d s_t||`` for t = 0..T-1, averaged over the batch; ``s = h`` (RNN, GRU) or ``(h, c)`` (LSTM).

    Exact: the batch is repeated once per state component ``i`` and a single backward pass seeded with the
    basis vector ``e_i`` at ``s_T`` makes the probes at ``s_t`` record row ``i`` of ``J_t = ds_T/ds_t``
    (a vector-Jacobian product per row). ``ord`` is NumPy's matrix norm (2 = spectral, 'fro').
    Returns ``norms (T,)``, or ``(norms, J)`` with ``J (T, B, S, S)`` when ``return_jacobians``.
    """
    mode, _ = _mode(rnn)
    x = input.transpose(0, 1) if getattr(rnn, "batch_first", False) else input
    if x.ndim != 3:
        raise ValueError(f"jacobian_norms: input must be 3-D (seq_len, batch, features), got shape {input.shape}")
    hidden = int(rnn.hidden_size)
    s = 2 * hidden if mode == "LSTM" else hidden
    batch = x.shape[1]
    # repeat each sample s times along the batch (sample b, basis row i -> batch row b * s + i)
    rep = x.array.repeat(s, axis=1)
    x_rep = Tensor(rep)
    if getattr(rnn, "batch_first", False):
        x_rep = x_rep.transpose(0, 1)
    hx_rep = None
    if hx is not None:
        if mode == "LSTM":
            hx_rep = (Tensor(hx[0].array.repeat(s, axis=1)), Tensor(hx[1].array.repeat(s, axis=1)))
        else:
            hx_rep = Tensor(hx.array.repeat(s, axis=1))
    params = list(rnn.parameters()) if hasattr(rnn, "parameters") else []
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        jac = _jacobians(rnn, mode, x_rep, hx_rep, layer, hidden, s, batch, rep.dtype)
    finally:  # this probing must not leave gradients on the model's parameters
        for p, g in zip(params, saved):
            p.grad = g
    norms = numpy.linalg.norm(jac, ord=ord, axis=(-2, -1)).mean(axis=1)
    return (norms, jac) if return_jacobians else norms


def _jacobians(
    rnn: Any, mode: str, x_rep: Tensor, hx_rep: Any, layer: int, hidden: int, s: int, batch: int, dtype: Any
) -> numpy.ndarray:
    """``J (T, B, S, S)`` from one backward pass over the repeated batch (see ``jacobian_norms``)."""
    u = unroll(rnn, x_rep, hx_rep, c_total=False)
    n_layers = len(u.hs)
    if not -n_layers <= layer < n_layers:
        raise IndexError(f"jacobian_norms: layer {layer} out of range for {n_layers} layer(s)")
    k = layer % n_layers
    seq_len = len(u.hs[k])
    eye = numpy.tile(numpy.eye(s, dtype=dtype), (batch, 1))  # (B*s, s)
    h_last = u.hs[k][-1]
    if mode == "LSTM":
        c_last = u.cs[k][-1]  # type: ignore[index]
        # one backward through both: seed h_T with the first H basis columns and c_T with the last H
        total = (h_last * Tensor(eye[:, :hidden])).sum() + (c_last * Tensor(eye[:, hidden:])).sum()
    else:
        total = (h_last * Tensor(eye)).sum()
    total.backward()
    jac = numpy.zeros((seq_len, batch, s, s))
    for t in range(seq_len):
        gh = u.grads.get(("h", k, t))
        rows = numpy.zeros((batch * s, s))
        if gh is not None:
            rows[:, :hidden] = gh
        if mode == "LSTM":
            gc = u.grads.get(("c", k, t))
            if gc is not None:
                rows[:, hidden:] = gc
        jac[t] = rows.reshape(batch, s, s)
    return jac


def tanh_rnn_jacobians(weight_hh: numpy.ndarray, hs: numpy.ndarray) -> numpy.ndarray:
    """The course's explicit product for a one-layer tanh RNN: ``J_t = dh_T/dh_t`` for t = 0..T-1.

    ``weight_hh (H, H)``, ``hs (T, B, H)`` the states ``h_t = tanh(z_t)``. Since ``dh_s/dh_{s-1} =
    diag(1 - h_s^2) W_hh``, ``J_{T-1} = I`` and ``J_t = J_{t+1} diag(1 - h_{t+1}^2) W_hh``. Returns ``(T, B, H, H)``.
    (Back-propagation multiplies a row vector by ``J_t``, i.e. applies the transposed factors
    ``W_hh^T diag(1 - tanh^2(z_s))`` of the decks, one per step.)
    """
    w = numpy.asarray(weight_hh, numpy.float64)
    hs = numpy.asarray(hs, numpy.float64)
    if hs.ndim != 3 or w.shape != (hs.shape[2], hs.shape[2]):
        raise ValueError(f"tanh_rnn_jacobians: need weight_hh (H, H) and hs (T, B, H), got {w.shape} and {hs.shape}")
    seq_len, batch, hidden = hs.shape
    out = numpy.zeros((seq_len, batch, hidden, hidden))
    out[-1] = numpy.eye(hidden)
    for t in range(seq_len - 2, -1, -1):
        step = (1 - hs[t + 1] ** 2)[:, :, None] * w  # diag(1 - h_{t+1}^2) W_hh, per sample (B, H, H)
        out[t] = out[t + 1] @ step
    return out
