"""LSTM over a whole sequence as ONE op with hand-written BPTT (``lstm_sequence``), and the one-step ``lstm_cell``.

The course writes each gate as ``W_*^T [h_{t-1}; x_t; 1]``; stacking the four gates gives one matrix
``W = [W_h; W_x; W_1] in R^{(H+I+1) x 4H}``. PyTorch (and handgrad) store the same numbers as
``W_hh = W_h^T (4H, H)``, ``W_ih = W_x^T (4H, I)`` and ``W_1 = b_ih + b_hh`` (two biases, for cuDNN
compatibility; only their sum matters), gates in the order i, f, g, o::

    z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh              (B, 4H)  = W^T [h_{t-1}; x_t; 1]
    i_t = sigma(z_i)   f_t = sigma(z_f)   g_t = c~_t = tanh(z_g)   o_t = sigma(z_o)
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

BPTT, with ``dh_t`` = dL/dy_t + (carry from t+1) and ``dc_t`` = (carry from t+1)::

    dc_t  += dh_t * o_t * (1 - tanh^2(c_t))
    dz_o   = dh_t * tanh(c_t) * o (1 - o)      dz_i = dc_t * g_t * i (1 - i)
    dz_g   = dc_t * i_t * (1 - g^2)             dz_f = dc_t * c_{t-1} * f (1 - f)
    dc_{t-1} = dc_t * f_t        (the course's dc_t/dc_{t-1} = diag(f_t): no squashing, no W)
    dh_{t-1} = dz_t @ W_hh
    dW_ih = sum_t dz_t^T x_t,  dW_hh = sum_t dz_t^T h_{t-1},  db = sum_t dz_t   (one GEMM each, after the loop)

Speed. One GEMM computes every step's input projection ``X (T*B, I) @ W_ih^T``; each step adds one
recurrent GEMM. All four gates then go through ONE sigmoid pass: the weights are pre-scaled so that the
stored pre-activation is ``-z`` for i, f, o and ``-2 z`` for g, giving ``s = 1 / (1 + exp(stored))`` =
``sigma(z)`` resp. ``sigma(2 z)``, and ``tanh(z) = 2 sigma(2z) - 1`` is fixed up on the g slice only.
(NumPy's ``exp`` is much faster than its ``tanh``; ``tanh(c)`` uses the same identity.) The gate buffer keeps
the sigmoids ``s``, so the backward multiplies all 4H columns by ``s (1 - s)`` in one pass; the g column's
extra factor 4 (``d/dz [2 sigma(2z) - 1] = 4 s (1 - s)``) is folded into the weights that column meets
(``W_hh`` in the loop, ``W_ih`` and the weight gradients after it), never into a (T, B, H) array.
Without gradients (no input requires grad, or ``no_grad``) the compiled path keeps nothing for a backward:
``_infer`` updates one ``c`` buffer in place and stores only the outputs ``h_t`` (``_kernels.lstm_infer``);
in float32 its GEMMs (input projection and recurrent) run on ``_kernels.gemm_packed`` with the weights packed
once per call, the whole recurrence of a row range in one compiled call (``_kernels.lstm_infer_rows``). The
training forward's ``h W_hh^T`` and the BPTT's ``dz W_hh`` use the same packed GEMM (float32).
Threads: the sequences of a batch are independent in both loops (only the weight gradients mix them, after
the loops), so with more than one BLAS thread the compiled loops are split over the batch
(``functional/_threads.run``): each thread runs all T steps of its rows, its GEMMs at one BLAS thread and the
gate kernels without the GIL. That is one fork-join per sequence instead of one per GEMM (OpenBLAS's) plus a
serial gate pass per step; on a loaded 2-core machine the 2-thread training step went from 1154 to 383 ms.
``HANDGRAD_CNN_THREADS=0`` (the switch of ``_threads``) turns the split off. On the packed path (float32, H a
multiple of 32) at one BLAS thread the three loops are instead whole-sequence compiled calls (``_unit_split``;
no Python per step; splitting their hidden units between threads with a barrier per step measured slower than
the row split at 2 threads, so that is opt-in: ``HANDGRAD_UNIT_SPLIT=2``). There each step's input projection
is done inside the loop too (no-grad:
into one reused (B, 4H) buffer, the (T, B, 4H) projections never stored; training: into ``S[t]``, still in cache
for the gate pass). Elsewhere the float32 input projection runs on the packed GEMM, rows split over threads.
"""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.tensor import Tensor
from handgrad.functional import _threads
from handgrad.functional.rnn import _kernels, _unit_split
from handgrad.functional.rnn import _workspace as ws
from handgrad.functional.rnn._fused import FusedRecurrenceFunction, gate_scale, input_projection, run_fused


class LSTMSequenceFunction(FusedRecurrenceFunction):
    """Fused LSTM layer-direction: ``(x, h0, c0, W_ih, W_hh[, b_ih, b_hh]) -> (output, h_n, c_n)``."""

    n_states = 2
    n_gates = 4
    _saved = ("S", "Hs", "Cs", "TC", "GG")

    def _forward(self, x: Any, states: list[Any], w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> tuple[Any, Any]:
        xp = get_array_module(x)
        T, B, I = x.shape
        H = w_hh.shape[1]
        sizes = self.sch.sizes
        dt = x.dtype
        scale = gate_scale(xp, dt, H, (-1.0, -1.0, -2.0, -1.0))
        w_hh_s = w_hh * scale[:, None]
        alloc = ws.zeros if self.sch.padded else ws.empty  # padded outputs must read zero
        w_ih_s = w_ih * scale[:, None]
        b_s = None if b_ih is None else (b_ih + b_hh) * scale
        infer = not any(self.needs_input_grad) and _kernels.usable(xp, x)
        # the unit-split loops (float32, H a multiple of 32) project each step's input themselves
        units = _kernels.usable(xp, x) and _kernels.packable(xp, w_hh_s.T) and _unit_split.usable(True, H)
        if infer and units:
            return self._infer_units(x, states, w_ih_s, b_s, w_hh_s)
        # all steps' input projections in one GEMM: S = -(X W_ih^T + b) (g rows doubled)
        S = ws.empty(xp, (T, B, 4 * H), dt)
        units = units and _kernels.usable(xp, S)  # (the compiled path below then runs: ``fast``)
        if not units:
            input_projection(x, w_ih_s, b_s, S, packed=True)
        if infer:
            return self._infer(S, states, w_hh_s)
        Hs = alloc(xp, (T + 1, B, H), dt)
        Cs = alloc(xp, (T + 1, B, H), dt)
        TC = alloc(xp, (T, B, H), dt)  # tanh(c_t), reused by the backward
        GG = alloc(xp, (T, B, H), dt)  # g_t = tanh(z_g), reused by the backward
        Hs[0] = states[0]
        Cs[0] = states[1]
        R = ws.empty(xp, (B, 4 * H), dt)
        tmp = ws.empty(xp, (B, H), dt)
        H2, H3 = 2 * H, 3 * H
        fast = _kernels.usable(xp, S, Hs, Cs, TC, GG, R)  # the compiled step (same numbers, one pass)
        if fast:
            # float32: W_hh_s^T packed in one pass (pack_rows); else its contiguous transpose for matmul
            packed = _kernels.pack_rows(w_hh_s) if _kernels.packable(xp, w_hh_s.T) else None
            w_hh_t = xp.ascontiguousarray(w_hh_s.T) if packed is None else None  # (H, 4H): see _infer

            def rows(lo: int, hi: int) -> None:  # the whole recurrence of batch rows [lo, hi)
                if units:  # one compiled loop, split over units, input projection included (see _unit_split)
                    sizes_a = xp.asarray(sizes, dtype=xp.int64)
                    bias = xp.zeros(4 * H, dt) if b_s is None else xp.ascontiguousarray(b_s, dtype=dt)
                    _unit_split.run(_unit_split.lstm_fwd_seq, H, T * B * 4 * H * (H + I), x,
                                    _kernels.pack_rows(w_ih_s), bias, S, Hs, Cs, TC, GG, packed, R, sizes_a)
                    return
                for t in range(T):
                    n = min(sizes[t], hi)  # sizes never grow with t
                    if n <= lo:
                        break
                    r = R[lo:n]
                    if packed is not None:
                        _kernels.gemm_packed(Hs[t, lo:n], packed, r)
                    else:
                        xp.matmul(Hs[t, lo:n], w_hh_t, out=r)
                    _kernels.lstm_fwd(S[t, lo:n], r, Cs[t, lo:n], Cs[t + 1, lo:n], TC[t, lo:n], GG[t, lo:n],
                                      Hs[t + 1, lo:n])

            if units:
                rows(0, B)
            else:
                _threads.run(rows, B)
        for t in range(T if not fast else 0):  # the NumPy reference loop (no steps left if compiled)
            n = sizes[t]
            s = S[t, :n]
            r = R[:n]
            # r = h_{t-1} @ W_hh_s^T, written through r.T (the NumPy reference keeps its pinned GEMM layout)
            xp.matmul(w_hh_s, Hs[t, :n].T, out=r.T)
            s += r
            xp.exp(s, out=s)
            s += 1
            xp.divide(1, s, out=s)  # s = [sigma(z_i), sigma(z_f), sigma(2 z_g), sigma(z_o)]
            g = GG[t, :n]
            xp.multiply(s[:, H2:H3], 2, out=g)
            g -= 1  # g = tanh(z_g)
            u = tmp[:n]
            xp.multiply(s[:, :H], g, out=u)  # i * g
            c = Cs[t + 1, :n]
            xp.multiply(s[:, H:H2], Cs[t, :n], out=c)
            c += u
            tc = TC[t, :n]
            xp.multiply(c, -2, out=tc)
            xp.exp(tc, out=tc)
            tc += 1
            xp.divide(2, tc, out=tc)
            tc -= 1  # tanh(c) = 2 sigma(2c) - 1
            xp.multiply(s[:, H3:], tc, out=Hs[t + 1, :n])
        ws.give(R, tmp)
        self.x, self.S, self.Hs, self.Cs, self.TC, self.GG = x, S, Hs, Cs, TC, GG
        self.w_ih, self.w_hh = w_ih, w_hh
        return Hs, Cs

    def _infer(self, S: Any, states: list[Any], w_hh_s: Any) -> tuple[Any, Any]:
        """The no-grad forward (compiled path): nothing saved for a backward, one numba pass per step.

        Only ``h`` is kept for every step (it is the output); ``c`` lives in one (B, H) buffer updated in
        place, and the gate sigmoids, ``g`` and ``tanh(c)`` are never stored. The recurrent GEMM writes into
        one reused (B, 4H) buffer as ``h_{t-1} (n, H) @ W_hh_s^T (H, 4H)`` with the transposed weight made
        contiguous once per call: measured on OpenBLAS SkylakeX (T100 B32 H256), 100 such GEMMs take 22 ms
        against 35 ms for ``W_hh_s @ h^T`` written through ``r.T`` (the layout of the NumPy reference).
        In float32 (4H a multiple of 32) the GEMM is ``_kernels.gemm_packed`` instead, on ``W_hh_s^T`` packed once
        per call into column blocks: 100 such GEMMs take 14.5 ms against 27 ms in OpenBLAS, which re-packs the
        weight on every call.
        """
        xp = get_array_module(S)
        T, B, G = S.shape
        H = G // 4
        dt = S.dtype
        sizes = self.sch.sizes
        Hs = (ws.zeros if self.sch.padded else ws.empty)(xp, (T + 1, B, H), dt)
        Hs[0] = states[0]
        c = xp.array(states[1], dtype=dt, copy=True)  # may be the caller's c0: never written in place
        # float32: W_hh_s^T packed in one pass (pack_rows); else its contiguous transpose for matmul
        packed = _kernels.pack_rows(w_hh_s) if _kernels.packable(xp, w_hh_s.T) else None
        w_hh_t = xp.ascontiguousarray(w_hh_s.T) if packed is None else None
        R = ws.empty(xp, (B, G), dt)

        sizes_a = xp.asarray(sizes, dtype=xp.int64)

        def rows(lo: int, hi: int) -> None:  # the whole recurrence of batch rows [lo, hi)
            if packed is not None:  # all T steps in one compiled call (HANDGRAD_UNIT_SPLIT=0: split over rows)
                _kernels.lstm_infer_rows(S, Hs, packed, R, c, sizes_a, lo, hi)
                return
            for t in range(T):
                n = min(sizes[t], hi)  # sizes never grow with t
                if n <= lo:
                    break
                r = R[lo:n]
                xp.matmul(Hs[t, lo:n], w_hh_t, out=r)
                _kernels.lstm_infer(S[t, lo:n], r, c[lo:n], Hs[t + 1, lo:n])

        _threads.run(rows, B)
        ws.give(S, R)
        # rows past their length are not updated, so c holds every row's final cell state; broadcast_to gives
        # it the (T+1, B, H) shape of the states that Schedule.final indexes (any step -> the same c)
        return Hs, xp.broadcast_to(c, (T + 1, B, H))

    def _infer_units(self, x: Any, states: list[Any], w_ih_s: Any, b_s: Any, w_hh_s: Any) -> tuple[Any, Any]:
        """The no-grad forward on the unit-split path (float32, H a multiple of 32): ``_infer``'s recurrence with
        each step's input projection done in the same compiled loop (``_unit_split.lstm_infer_seq``), so the
        (T, B, 4H) projections are never stored."""
        xp = get_array_module(x)
        T, B, I = x.shape
        H = w_hh_s.shape[1]
        dt = x.dtype
        Hs = (ws.zeros if self.sch.padded else ws.empty)(xp, (T + 1, B, H), dt)
        Hs[0] = states[0]
        c = xp.array(states[1], dtype=dt, copy=True)  # may be the caller's c0: never written in place
        bias = xp.zeros(4 * H, dt) if b_s is None else xp.ascontiguousarray(b_s, dtype=dt)
        SX, R = ws.empty(xp, (B, 4 * H), dt), ws.empty(xp, (B, 4 * H), dt)
        sizes_a = xp.asarray(self.sch.sizes, dtype=xp.int64)
        _unit_split.run(_unit_split.lstm_infer_seq, H, T * B * 4 * H * (H + I), x, _kernels.pack_rows(w_ih_s), bias,
                        Hs, _kernels.pack_rows(w_hh_s), SX, R, c, sizes_a)
        ws.give(SX, R)
        return Hs, xp.broadcast_to(c, (T + 1, B, H))

    def _backward(self, gy: Any, gfinal: list[Any]) -> tuple:
        x, S, Hs, Cs, TC, GG, w_hh = self.x, self.S, self.Hs, self.Cs, self.TC, self.GG, self.w_hh
        xp = get_array_module(x)
        T, B, I = x.shape
        H = w_hh.shape[1]
        H2, H3 = 2 * H, 3 * H
        dt = x.dtype
        sizes = self.sch.sizes
        # The g column of dZ is kept at 1/4 of its true value (so that one s (1 - s) pass serves all four gates:
        # d/dz [2 sigma(2z) - 1] = 4 s (1 - s)); the 4 is folded into the weights it meets instead.
        col = gate_scale(xp, dt, H, (1.0, 1.0, 4.0, 1.0))
        w_hh4 = w_hh * col[:, None]
        dh, dc = gfinal  # (B, H) each, accumulated in place; rows past a sequence's end wait for their step
        dZ = (ws.zeros if self.sch.padded else ws.empty)(xp, (T, B, 4 * H), dt)
        a_buf = ws.empty(xp, (B, H), dt)
        d_buf = ws.empty(xp, (B, 4 * H), dt)
        fast = _kernels.usable(xp, S, dh, dc, dZ)
        if fast:
            packed = _kernels.pack_columns(w_hh4) if _kernels.packable(xp, w_hh4) else None  # float32

            units_ = _unit_split.usable(packed, H)  # decided here: inside a split, BLAS runs 1 thread

            def rows(lo: int, hi: int) -> None:  # the whole BPTT of batch rows [lo, hi) (rows are independent)
                if units_:  # one compiled loop, split over units (see _unit_split)
                    g = xp.zeros((1, 1, 1), dt) if gy is None else xp.ascontiguousarray(gy)
                    _unit_split.run(_unit_split.lstm_bwd_seq, H, T * B * 4 * H * H, S, TC, Hs, GG, Cs, dh, dc, dZ,
                                    g, gy is not None, packed, xp.asarray(sizes, dtype=xp.int64))
                    return
                for t in range(T - 1, -1, -1):
                    n = min(sizes[t], hi)
                    if n <= lo:
                        continue  # these rows start at an earlier step (lengths)
                    dht = dh[lo:n]
                    if gy is not None:
                        dht += gy[t, lo:n]
                    dz = dZ[t, lo:n]
                    _kernels.lstm_bwd(S[t, lo:n], TC[t, lo:n], Hs[t + 1, lo:n], GG[t, lo:n], Cs[t, lo:n], dht,
                                      dc[lo:n], dz)
                    if packed is not None:
                        _kernels.gemm_packed(dz, packed, dht)  # carry: dh_{t-1} = dz_t @ W_hh
                    else:
                        xp.matmul(dz, w_hh4, out=dht)  # carry: dh_{t-1} = dz_t @ W_hh

            if units_:
                rows(0, B)
            else:
                _threads.run(rows, B)
        for t in range(T - 1 if not fast else -1, -1, -1):  # the NumPy reference loop (empty if compiled)
            n = sizes[t]
            s = S[t, :n]
            tc = TC[t, :n]
            dht = dh[:n]
            dct = dc[:n]
            if gy is not None:
                dht += gy[t, :n]
            dz = dZ[t, :n]
            xp.multiply(dht, tc, out=dz[:, H3:])  # dL/do
            a = a_buf[:n]
            xp.multiply(Hs[t + 1, :n], tc, out=a)
            xp.subtract(s[:, H3:], a, out=a)  # o (1 - tanh^2 c) = o - h tanh(c)
            a *= dht
            dct += a  # dL/dc_t, total
            xp.multiply(dct, GG[t, :n], out=dz[:, :H])  # dL/di
            xp.multiply(dct, s[:, :H], out=dz[:, H2:H3])  # dL/dg (/4, see above)
            xp.multiply(dct, Cs[t, :n], out=dz[:, H:H2])  # dL/df
            dct *= s[:, H:H2]  # carry: dc_{t-1} = dc_t * f_t
            d = d_buf[:n]
            xp.subtract(1, s, out=d)
            d *= s
            dz *= d  # through all four sigmoids at once
            xp.matmul(dz, w_hh4, out=dht)  # carry: dh_{t-1} = dz_t @ W_hh
        ws.give(a_buf, d_buf)
        out = _weight_grads(self, dZ, x, Hs, [dh, dc], col)
        ws.give(dZ)
        return out


def _weight_grads(fn: FusedRecurrenceFunction, dZ: Any, x: Any, Hs: Any, gstates: list[Any], col: Any = None) -> tuple:
    """After the BPTT loop: the input gradient and all weight gradients in one large GEMM each.

    The weight gradients are the course's ``dW = sum_t [h_{t-1}; x_t; 1] dz_t^T`` for ``W = [W_h; W_x; W_1]``:
    ONE GEMM ``dZ^T @ [H_prev, X, 1]`` over all T*B rows gives ``dW_hh``, ``dW_ih`` and the bias gradient
    side by side. ``col`` (G*H,), if given, is a per-column factor by which dZ is smaller than the true
    pre-activation gradient; it is applied to the (small) weights and weight gradients rather than to dZ.
    """
    xp = get_array_module(dZ)
    T, B, I = x.shape
    G = dZ.shape[-1]
    H = Hs.shape[-1]
    need = fn.needs_input_grad
    ns = fn.n_states
    dZ2 = dZ.reshape(T * B, G)
    w_ih = fn.w_ih if col is None else fn.w_ih * col[:, None]
    gx = (dZ2 @ w_ih).reshape(T, B, I) if need[0] else None
    K = H + I + (1 if fn.has_bias else 0)
    A = ws.empty(xp, (T * B, K), dZ.dtype)  # rows [h_{t-1}, x_t, 1]
    A[:, :H] = Hs[:-1].reshape(T * B, H)
    A[:, H : H + I] = x.reshape(T * B, I)
    if fn.has_bias:
        A[:, -1] = 1
    gW = dZ2.T @ A
    ws.give(A)
    if col is not None:
        gW *= col[:, None]
    gw_hh = xp.ascontiguousarray(gW[:, :H]) if need[ns + 2] else None
    gw_ih = xp.ascontiguousarray(gW[:, H : H + I]) if need[ns + 1] else None
    gb_ih = gb_hh = None
    if fn.has_bias:
        gb_ih = gW[:, -1].copy()
        gb_hh = gb_ih.copy()
    return gx, gstates, gw_ih, gw_hh, gb_ih, gb_hh


def lstm_sequence(
    input: Tensor,
    hx: tuple[Tensor, Tensor] | None,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    lengths: Any = None,
    reverse: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer-direction over a whole sequence, one graph node with a hand-written BPTT backward.

    input (T, B, I); hx = (h0, c0), each (B, H), or None for zeros; weight_ih (4H, I); weight_hh (4H, H);
    biases (4H,) or None. ``lengths`` (B,) ints in [1, T]: steps ``t >= lengths[b]`` leave sequence b's state
    unchanged and output zeros (PyTorch's packed-sequence numbers). ``reverse=True`` runs each sequence from
    its own last valid step back to step 0 (the backward half of a bidirectional layer).

    Returns ``output (T, B, H)``, ``h_n (B, H)``, ``c_n (B, H)``; gradients flow from all three.
    """
    h0, c0 = (None, None) if hx is None else hx
    return run_fused(
        LSTMSequenceFunction(reverse=reverse), "lstm_sequence", input, [h0, c0], weight_ih, weight_hh, bias_ih, bias_hh,
        lengths,
    )


def lstm_cell(
    input: Tensor,
    hx: tuple[Tensor, Tensor] | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step (``torch.lstm_cell``): input (B, I), hx = (h, c) each (B, H) or None -> (h', c').

    The same kernel as ``lstm_sequence`` with T = 1: one op, hand-written backward.
    """
    h, c = (None, None) if hx is None else hx
    return run_fused(LSTMSequenceFunction(cell=True), "lstm_cell", input, [h, c], w_ih, w_hh, b_ih, b_hh, None)
