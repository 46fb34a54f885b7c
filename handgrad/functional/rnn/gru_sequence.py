"""GRU over a whole sequence as ONE op with hand-written BPTT (``gru_sequence``), and the one-step ``gru_cell``.

PyTorch's GRU (gate order r, z, n; weights ``W_ih (3H, I)``, ``W_hh (3H, H)``, biases ``(3H,)``)::

    r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

In the course's notation the r and z gates are ``sigma(W_*^T [h_{t-1}; x_t; 1])`` with
``W_* = [W_h*^T; W_i*^T; (b_i* + b_h*)^T]``; the candidate keeps the hidden part ``W_hn h + b_hn`` apart
because the reset gate multiplies it (so ``b_hn`` is not interchangeable with ``b_in``).

BPTT, with dh_t = dL/dy_t + carry, a_t the pre-activation of n and hn_t = W_hn h_{t-1} + b_hn::

    da_t  = dh_t * (1 - z_t) * (1 - n_t^2)
    dz_z  = dh_t * (h_{t-1} - n_t) * z (1 - z)       dz_r = da_t * hn_t * r (1 - r)
    input side  dGx_t = [dz_r, dz_z, da_t]           hidden side  dGh_t = [dz_r, dz_z, da_t * r_t]
    dh_{t-1} = dh_t * z_t + dGh_t @ W_hh
    dW_ih = sum dGx^T x,  dW_hh = sum dGh^T h_{t-1},  db_ih = sum dGx,  db_hh = sum dGh   (after the loop)

Speed: one GEMM for all input projections, one recurrent GEMM per step, the r and z gates in one sigmoid pass,
and ``tanh(a) = 2 sigma(2a) - 1`` via ``exp`` with the sign and the 2 folded into pre-scaled weights. The
compiled loops (training, BPTT, and the no-grad ``_infer`` that keeps nothing for a backward) are split over
the batch when NumPy's BLAS has more than one thread, as in ``lstm_sequence``. In float32 (3H a multiple of
32) the GEMMs (input projection, recurrent) run on ``_kernels.gemm_packed`` (weights packed once per call); with
H a multiple of 32, at one BLAS thread, the three recurrences are then whole-sequence compiled calls
(``_unit_split``, as in ``lstm_sequence``).
"""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.tensor import Tensor
from handgrad.functional import _threads
from handgrad.functional.rnn import _kernels, _unit_split
from handgrad.functional.rnn import _workspace as ws
from handgrad.functional.rnn._fused import FusedRecurrenceFunction, gate_scale, input_projection, run_fused


class GRUSequenceFunction(FusedRecurrenceFunction):
    """Fused GRU layer-direction: ``(x, h0, W_ih, W_hh[, b_ih, b_hh]) -> (output, h_n)``."""

    n_states = 1
    n_gates = 3
    _saved = ("G", "HN", "Hs")

    def _forward(self, x: Any, states: list[Any], w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> tuple[Any]:
        xp = get_array_module(x)
        T, B, I = x.shape
        H = w_hh.shape[1]
        H2 = 2 * H
        dt = x.dtype
        sizes = self.sch.sizes
        scale = gate_scale(xp, dt, H, (-1.0, -1.0, -2.0))  # stored: -z for r and z, -2a for n
        w_hh_s = w_hh * scale[:, None]
        G = ws.empty(xp, (T, B, 3 * H), dt)
        b_in = b_hn_s = None
        if b_ih is not None:
            b_in = b_ih.copy()
            b_in[:H2] += b_hh[:H2]  # the r and z biases only ever appear summed
            b_in *= scale
            b_hn_s = b_hh[H2:] * -2.0
        infer = not any(self.needs_input_grad) and _kernels.usable(xp, G)
        input_projection(x, w_ih * scale[:, None], b_in, G, packed=True)  # float32: the packed GEMM
        Hs = (ws.zeros if self.sch.padded else ws.empty)(xp, (T + 1, B, H), dt)
        Hs[0] = states[0]
        if infer and _kernels.usable(xp, Hs):
            return self._infer(G, Hs, w_hh_s, b_hn_s)
        HN = ws.empty(xp, (T, B, H), dt)  # -2 (W_hn h_{t-1} + b_hn), kept for the backward
        R = ws.empty(xp, (B, 3 * H), dt)
        tmp = ws.empty(xp, (B, H), dt)
        fast = _kernels.usable(xp, G, Hs, HN, R)  # the compiled step (same numbers, one pass)
        if fast:
            b_hn_k = xp.zeros(H, dt) if b_hn_s is None else xp.ascontiguousarray(b_hn_s)
            # float32: W_hh_s^T packed in one pass (pack_rows); else its contiguous transpose for matmul
            packed = _kernels.pack_rows(w_hh_s) if _kernels.packable(xp, w_hh_s.T) else None
            w_hh_t = xp.ascontiguousarray(w_hh_s.T) if packed is None else None  # (H, 3H): see lstm_sequence

            units_ = _unit_split.usable(packed, H)  # decided here: inside a split, BLAS runs 1 thread

            def rows(lo: int, hi: int) -> None:  # the whole recurrence of batch rows [lo, hi) (lstm_sequence)
                if units_:  # one compiled loop, split over units (see _unit_split)
                    _unit_split.run(_unit_split.gru_fwd_seq, H, T * B * 3 * H * H, G, Hs, HN, packed, R, b_hn_k,
                                    xp.asarray(sizes, dtype=xp.int64))
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
                    _kernels.gru_fwd(G[t, lo:n], r, b_hn_k, HN[t, lo:n], Hs[t, lo:n], Hs[t + 1, lo:n])

            if units_:
                rows(0, B)
            else:
                _threads.run(rows, B)
        for t in range(T if not fast else 0):  # the NumPy reference loop (no steps left if compiled)
            n = sizes[t]
            g = G[t, :n]
            r_ = R[:n]
            hp = Hs[t, :n]
            xp.matmul(w_hh_s, hp.T, out=r_.T)  # the NumPy reference keeps its pinned GEMM layout
            hn = HN[t, :n]
            if b_hn_s is not None:
                xp.add(r_[:, H2:], b_hn_s, out=hn)
            else:
                hn[...] = r_[:, H2:]
            rz = g[:, :H2]
            rz += r_[:, :H2]
            xp.exp(rz, out=rz)
            rz += 1
            xp.divide(1, rz, out=rz)  # [r, z]  (divide is faster than reciprocal in NumPy)
            a = g[:, H2:]
            u = tmp[:n]
            xp.multiply(rz[:, :H], hn, out=u)
            a += u  # -2 (W_in x + b_in + r * (W_hn h + b_hn))
            xp.exp(a, out=a)
            a += 1
            xp.divide(2, a, out=a)
            a -= 1  # n = tanh(.)
            h = Hs[t + 1, :n]
            xp.subtract(hp, a, out=h)
            h *= rz[:, H:]
            h += a  # h = n + z (h_{t-1} - n)
        ws.give(R, tmp)
        self.x, self.G, self.HN, self.Hs, self.w_ih, self.w_hh = x, G, HN, Hs, w_ih, w_hh
        return (Hs,)

    def _infer(self, G: Any, Hs: Any, w_hh_s: Any, b_hn_s: Any) -> tuple[Any]:
        """The no-grad forward (compiled path): one numba pass per step, nothing saved for a backward (no
        ``HN``, the gates never written back), the recurrent GEMM ``h_{t-1} @ W_hh_s^T`` into one reused
        buffer with the transposed weight made contiguous once (the faster layout, see ``lstm_sequence``)."""
        xp = get_array_module(G)
        T, B, G3 = G.shape
        H = G3 // 3
        dt = G.dtype
        sizes = self.sch.sizes
        b_hn_k = xp.zeros(H, dt) if b_hn_s is None else xp.ascontiguousarray(b_hn_s)
        # float32: W_hh_s^T packed in one pass (pack_rows); else its contiguous transpose for matmul
        packed = _kernels.pack_rows(w_hh_s) if _kernels.packable(xp, w_hh_s.T) else None
        w_hh_t = xp.ascontiguousarray(w_hh_s.T) if packed is None else None
        R = ws.empty(xp, (B, G3), dt)
        sizes_a = xp.asarray(sizes, dtype=xp.int64)

        if _unit_split.usable(packed, H):  # all T steps in one compiled call (see _unit_split)
            _unit_split.run(_unit_split.gru_infer_seq, H, T * B * G3 * H, G, Hs, packed, R, b_hn_k, sizes_a)
            ws.give(G, R)
            return (Hs,)

        def rows(lo: int, hi: int) -> None:  # the whole recurrence of batch rows [lo, hi)
            if packed is not None:  # all T steps in one compiled call (HANDGRAD_UNIT_SPLIT=0: split over rows)
                _kernels.gru_infer_rows(G, Hs, packed, R, b_hn_k, sizes_a, lo, hi)
                return
            for t in range(T):
                n = min(sizes[t], hi)
                if n <= lo:
                    break
                r = R[lo:n]
                xp.matmul(Hs[t, lo:n], w_hh_t, out=r)
                _kernels.gru_infer(G[t, lo:n], r, b_hn_k, Hs[t, lo:n], Hs[t + 1, lo:n])

        _threads.run(rows, B)
        ws.give(G, R)
        return (Hs,)

    def _backward(self, gy: Any, gfinal: list[Any]) -> tuple:
        x, G, HN, Hs, w_hh = self.x, self.G, self.HN, self.Hs, self.w_hh
        xp = get_array_module(x)
        T, B, I = x.shape
        H = w_hh.shape[1]
        H2 = 2 * H
        dt = x.dtype
        sizes = self.sch.sizes
        (dh,) = gfinal
        alloc = ws.zeros if self.sch.padded else ws.empty
        dGx = alloc(xp, (T, B, 3 * H), dt)
        dGh = alloc(xp, (T, B, 3 * H), dt)
        a_buf = ws.empty(xp, (B, H), dt)
        b_buf = ws.empty(xp, (B, H), dt)
        d_buf = ws.empty(xp, (B, H2), dt)
        fast = _kernels.usable(xp, G, dh, dGx, dGh, b_buf)
        if fast:
            packed = _kernels.pack_columns(w_hh) if _kernels.packable(xp, w_hh) else None  # float32

            units_ = _unit_split.usable(packed, H)  # decided here: inside a split, BLAS runs 1 thread

            def rows(lo: int, hi: int) -> None:  # the whole BPTT of batch rows [lo, hi) (rows are independent)
                if units_:  # one compiled loop, split over units (see _unit_split)
                    g = xp.zeros((1, 1, 1), dt) if gy is None else xp.ascontiguousarray(gy)
                    _unit_split.run(_unit_split.gru_bwd_seq, H, T * B * 3 * H * H, G, HN, Hs, dh, dGx, dGh, b_buf,
                                    g, gy is not None, packed, xp.asarray(sizes, dtype=xp.int64))
                    return
                for t in range(T - 1, -1, -1):
                    n = min(sizes[t], hi)
                    if n <= lo:
                        continue  # these rows start at an earlier step (lengths)
                    dht = dh[lo:n]
                    if gy is not None:
                        dht += gy[t, lo:n]
                    bz = b_buf[lo:n]
                    _kernels.gru_bwd(G[t, lo:n], HN[t, lo:n], Hs[t, lo:n], dht, dGx[t, lo:n], dGh[t, lo:n], bz)
                    if packed is not None:
                        _kernels.gemm_packed(dGh[t, lo:n], packed, dht)
                    else:
                        xp.matmul(dGh[t, lo:n], w_hh, out=dht)
                    dht += bz  # dh_{t-1} = dh z + dGh @ W_hh

            if units_:
                rows(0, B)
            else:
                _threads.run(rows, B)
        for t in range(T - 1 if not fast else -1, -1, -1):  # the NumPy reference loop (empty if compiled)
            n = sizes[t]
            dht = dh[:n]
            if gy is not None:
                dht += gy[t, :n]
            g = G[t, :n]
            rz = g[:, :H2]
            r, z, nn = g[:, :H], g[:, H:H2], g[:, H2:]
            dx = dGx[t, :n]
            dhh = dGh[t, :n]
            xp.subtract(Hs[t, :n], nn, out=dx[:, H:H2])
            dx[:, H:H2] *= dht  # dL/dz
            a = a_buf[:n]
            xp.multiply(nn, nn, out=a)
            xp.subtract(1, a, out=a)
            a *= dht
            bz = b_buf[:n]
            xp.subtract(1, z, out=bz)
            xp.multiply(a, bz, out=dx[:, H2:])  # da = dh (1 - z)(1 - n^2)
            xp.multiply(dx[:, H2:], r, out=dhh[:, H2:])  # d(W_hn h + b_hn) = da * r
            xp.multiply(dx[:, H2:], HN[t, :n], out=dx[:, :H])
            dx[:, :H] *= -0.5  # dL/dr = da * (W_hn h + b_hn), HN holds -2 times it
            d = d_buf[:n]
            xp.subtract(1, rz, out=d)
            d *= rz
            dx[:, :H2] *= d  # through the r and z sigmoids at once
            dhh[:, :H2] = dx[:, :H2]
            xp.multiply(dht, z, out=bz)
            xp.matmul(dhh, w_hh, out=dht)
            dht += bz  # dh_{t-1} = dh z + dGh @ W_hh
        need = self.needs_input_grad
        dGx2 = dGx.reshape(T * B, 3 * H)
        dGh2 = dGh.reshape(T * B, 3 * H)
        gx = (dGx2 @ self.w_ih).reshape(T, B, I) if need[0] else None
        gw_ih = dGx2.T @ x.reshape(T * B, I) if need[2] else None
        gw_hh = dGh2.T @ Hs[:-1].reshape(T * B, H) if need[3] else None
        gb_ih = gb_hh = None
        if self.has_bias:
            gb_ih = dGx2.sum(axis=0)
            gb_hh = dGh2.sum(axis=0)
        ws.give(dGx, dGh, a_buf, b_buf, d_buf)
        return gx, [dh], gw_ih, gw_hh, gb_ih, gb_hh


def gru_sequence(
    input: Tensor,
    hx: Tensor | None,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    lengths: Any = None,
    reverse: bool = False,
) -> tuple[Tensor, Tensor]:
    """One GRU layer-direction over a whole sequence: one graph node, hand-written BPTT backward.

    input (T, B, I); hx = h0 (B, H) or None for zeros; weight_ih (3H, I); weight_hh (3H, H); biases (3H,) or
    None. ``lengths`` (B,) ints in [1, T]: steps past a sequence's length keep its state and output zeros
    (PyTorch's packed-sequence numbers). ``reverse=True`` runs each sequence from its own last valid step back
    to step 0. Returns ``output (T, B, H)`` and ``h_n (B, H)``.
    """
    fn = GRUSequenceFunction(reverse=reverse)
    return run_fused(fn, "gru_sequence", input, [hx], weight_ih, weight_hh, bias_ih, bias_hh, lengths)


def gru_cell(
    input: Tensor,
    hx: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> Tensor:
    """One GRU step (``torch.gru_cell``): input (B, I), hx (B, H) or None -> h' (B, H). One op."""
    return run_fused(GRUSequenceFunction(cell=True), "gru_cell", input, [hx], w_ih, w_hh, b_ih, b_hh, None)
