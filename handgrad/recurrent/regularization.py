"""Regularisation for recurrent networks: where dropout may go, and gradient clipping that reports itself.

* **Zaremba et al. (2014)**: dropout only on the non-recurrent connections -- on the inputs, between
  stacked layers and on the outputs -- never on ``h_{t-1} -> h_t``, where a fresh mask at every step
  would wipe the memory out. ``RegularizedRNN(..., variational=False)``.
* **Gal & Ghahramani (2016), variational / locked dropout**: one mask per sequence, shared by all time
  steps: ``y[t, b, f] = x[t, b, f] * m[b, f] / (1 - p)`` with ``m ~ Bernoulli(1 - p)``.
  ``LockedDropout`` / ``locked_dropout``; ``RegularizedRNN(..., variational=True)``.
* **Embedding dropout** (Gal & Ghahramani 2016): drop whole rows of the embedding matrix, i.e. a word
  type is dropped at every position it occurs in the batch: ``E' = diag(m) E / (1 - p)``, ``m_v ~ Bernoulli(1 - p)``.
* **Zoneout** lives in ``handgrad.recurrent.zoneout``; **weight decay** is the optimizer's
  ``weight_decay`` argument; **gradient clipping** by the global norm is ``nn.utils.clip_grad_norm_``, and
  ``ClipTracker`` here counts how often it actually clipped.

All dropouts are inverted (scaled by ``1/(1-p)`` in training) so that ``E[y] = x`` and evaluation is the
identity.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy

from handgrad import nn
from handgrad.engine.ops.arithmetic import MulConstantFunction
from handgrad.engine.ops.shape import stack
from handgrad.engine.tensor import Tensor
from handgrad.functional.dropout import dropout_mask
from handgrad.functional.embedding import embedding
from handgrad.nn.module import Module
from handgrad.nn.utils import clip_grad_norm_


def _check_p(op: str, p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")
    return p


# -- element-wise dropout (the Zaremba placement uses it on inputs, between layers, on outputs) ------------
def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Standard inverted dropout: an independent mask per element (a fresh one at every time step)."""
    p = _check_p("dropout", p)
    if not training or p == 0.0:
        return input
    return MulConstantFunction(dropout_mask(input, p, input.shape, numpy.float64))(input)


# -- locked / variational dropout ---------------------------------------------------------------------
def locked_dropout(input: Tensor, p: float = 0.5, training: bool = True, batch_first: bool = False) -> Tensor:
    """Variational dropout: one mask per (sequence, feature), the same at every time step.

    ``input``: ``(T, B, F)`` (or ``(B, T, F)`` with ``batch_first``; a 2-D ``(T, F)`` unbatched sequence is
    accepted too). ``y = x * m / (1 - p)``, ``m`` of shape ``(1, B, F)`` (``(B, 1, F)``, ``(1, F)``), so
    ``E[y] = x``; in evaluation ``y = x``.
    """
    p = _check_p("locked_dropout", p)
    if input.ndim not in (2, 3):
        raise ValueError(
            f"locked_dropout: expected a (T, B, F) or (B, T, F) sequence (or (T, F) unbatched), got shape {input.shape}"
        )
    if not training or p == 0.0:
        return input
    shape = list(input.shape)
    time_axis = 1 if (batch_first and input.ndim == 3) else 0
    shape[time_axis] = 1  # one draw shared along time
    return MulConstantFunction(dropout_mask(input, p, tuple(shape), numpy.float64))(input)


class LockedDropout(Module):
    """``locked_dropout`` as a layer: ``LockedDropout(p)(x)`` on ``(T, B, F)`` (``batch_first`` for ``(B, T, F)``)."""

    def __init__(self, p: float = 0.5, batch_first: bool = False) -> None:
        super().__init__()
        self.p = _check_p("LockedDropout", p)
        self.batch_first = batch_first

    def forward(self, input: Tensor) -> Tensor:
        return locked_dropout(input, self.p, self.training, self.batch_first)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_first={self.batch_first}"


# -- embedding dropout ------------------------------------------------------------------------------------
def embedding_dropout(
    input: Tensor, weight: Tensor, p: float = 0.1, training: bool = True, padding_idx: int | None = None
) -> Tensor:
    """Look ``input`` (int indices, any shape ``S``) up in ``weight (V, D)`` after dropping whole rows.

    ``E' = diag(m) E / (1 - p)`` with ``m_v ~ Bernoulli(1 - p)`` once per call, so every occurrence of a
    dropped word in the batch gets the zero vector; the result has shape ``S + (D,)``. The gradient reaches
    only the kept rows: ``dE_v = [m_v / (1 - p)] * sum_{positions of v} gy``. ``padding_idx`` rows get no
    gradient (as in ``nn.Embedding``).
    """
    p = _check_p("embedding_dropout", p)
    if weight.ndim != 2:
        raise ValueError(f"embedding_dropout: weight must be (num_embeddings, embedding_dim), got shape {weight.shape}")
    idx = input.array if isinstance(input, Tensor) else numpy.asarray(input)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding_dropout: input must hold integer indices, got dtype {idx.dtype}")
    v = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= v):
        raise IndexError(
            f"embedding_dropout: indices must lie in [0, {v}) for weight of shape {weight.shape}, "
            f"got range [{int(idx.min())}, {int(idx.max())}]"
        )
    w = weight
    if training and p > 0.0:
        w = MulConstantFunction(dropout_mask(weight, p, (v, 1), numpy.float64))(weight)
    return embedding(idx, w, padding_idx)


class EmbeddingDropout(Module):
    """Wrap an ``nn.Embedding`` (anything with ``.weight (V, D)``) and drop whole word vectors in training."""

    def __init__(self, embedding: Module, p: float = 0.1) -> None:
        super().__init__()
        self.embedding = embedding
        self.p = _check_p("EmbeddingDropout", p)

    def forward(self, input: Tensor) -> Tensor:
        pad = getattr(self.embedding, "padding_idx", None)
        return embedding_dropout(input, self.embedding.weight, self.p, self.training, pad)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# -- Zaremba / Gal placements on a stack of fused recurrent layers -------------------------------------------
class RegularizedRNN(Module):
    """A stack of one-layer fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` with dropout only where it is safe.

    ``dropout_in`` acts on the input sequence, ``dropout`` between layers, ``dropout_out`` on the top layer's
    output; the recurrence ``h_{t-1} -> h_t`` inside each fused layer is never touched (Zaremba et al. 2014).
    ``variational=True`` shares every mask across time (Gal & Ghahramani 2016). Same call as ``nn.LSTM``::

        rnn = RegularizedRNN("LSTM", 64, 256, num_layers=2, dropout=0.3, variational=True)
        output, (h_n, c_n) = rnn(x)          # x (T, B, 64) -> output (T, B, 256), h_n, c_n (2, B, 256)

    Parameters are named ``layers.{k}.weight_ih_l0`` etc. (each layer is a one-layer module).
    """

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        dropout_in: float = 0.0,
        dropout_out: float = 0.0,
        variational: bool = False,
        batch_first: bool = False,
        nonlinearity: str = "tanh",
    ) -> None:
        super().__init__()
        kinds = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}
        if mode not in kinds:
            raise ValueError(f"RegularizedRNN: mode must be one of {sorted(kinds)}, got {mode!r}")
        if num_layers < 1:
            raise ValueError(f"RegularizedRNN: num_layers must be >= 1, got {num_layers}")
        self.mode, self.num_layers, self.hidden_size = mode, num_layers, hidden_size
        self.dropout = _check_p("RegularizedRNN", dropout)
        self.dropout_in = _check_p("RegularizedRNN", dropout_in)
        self.dropout_out = _check_p("RegularizedRNN", dropout_out)
        self.variational, self.batch_first = variational, batch_first
        extra = {"nonlinearity": nonlinearity} if mode == "RNN" else {}
        layers = [
            kinds[mode](input_size if k == 0 else hidden_size, hidden_size, 1, batch_first=batch_first, **extra)
            for k in range(num_layers)
        ]
        self.layers = nn.ModuleList(layers)

    def _drop(self, x: Tensor, p: float) -> Tensor:
        if self.variational:
            return locked_dropout(x, p, self.training, self.batch_first)
        return dropout(x, p, self.training)

    def forward(self, input: Tensor, hx: Any = None) -> tuple[Tensor, Any]:
        lstm = self.mode == "LSTM"
        x = self._drop(input, self.dropout_in)
        hs, cs = [], []
        for k, layer in enumerate(self.layers):
            if k > 0:
                x = self._drop(x, self.dropout)
            h0 = None
            if hx is not None:
                h0 = (hx[0][k : k + 1], hx[1][k : k + 1]) if lstm else hx[k : k + 1]
            x, state = layer(x, h0)
            if lstm:
                hs.append(state[0][0])
                cs.append(state[1][0])
            else:
                hs.append(state[0])
        x = self._drop(x, self.dropout_out)
        h_n = stack(hs, 0)
        return x, ((h_n, stack(cs, 0)) if lstm else h_n)

    def extra_repr(self) -> str:
        return (
            f"{self.mode}, num_layers={self.num_layers}, dropout={self.dropout}, dropout_in={self.dropout_in}, "
            f"dropout_out={self.dropout_out}, variational={self.variational}"
        )


# -- gradient clipping with a report ------------------------------------------------------------------------
class ClipTracker:
    """Clip gradients by their global norm (``nn.utils.clip_grad_norm_``) and count how often it bit.

    ``tracker(model.parameters())`` after ``backward`` returns the total norm before clipping;
    ``tracker.fraction`` is the share of calls whose norm exceeded ``max_norm`` (so were rescaled),
    ``tracker.summary()`` a dict for logs. ``reset()`` starts a new count (e.g. each epoch).
    """

    def __init__(self, max_norm: float, norm_type: float = 2.0) -> None:
        if not max_norm > 0:
            raise ValueError(f"ClipTracker: max_norm must be > 0, got {max_norm}")
        self.max_norm, self.norm_type = float(max_norm), float(norm_type)
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.clipped = 0
        self.norms: list[float] = []

    def __call__(self, parameters: Iterable[Tensor] | Tensor) -> float:
        total = float(clip_grad_norm_(parameters, self.max_norm, self.norm_type))
        self.steps += 1
        self.norms.append(total)
        if total > self.max_norm:
            self.clipped += 1
        return total

    @property
    def fraction(self) -> float:
        return self.clipped / self.steps if self.steps else 0.0

    def summary(self) -> dict[str, float]:
        norms = numpy.asarray(self.norms) if self.norms else numpy.zeros(1)
        return {
            "clip_fraction": self.fraction,
            "grad_norm_mean": float(norms.mean()),
            "grad_norm_max": float(norms.max()),
            "clip_steps": float(self.steps),
        }
