"""Recurrent research models on top of ``handgrad.nn``: regularisation (Zaremba / Gal dropout, zoneout),
Clockwork RNN, 2-D (MD) LSTM, hierarchical multiscale LSTM, gradient-flow diagnostics, character-level
generation, sequence tagging and truncated-BPTT helpers.

The standard layers (``RNN``, ``LSTM``, ``GRU`` and the ``*Cell`` modules) live in ``handgrad.nn``
(``nn/rnn.py``, ``nn/rnn_cell.py``) and their fused kernels in ``handgrad.functional.rnn``; they are
re-exported here for convenience. Dependencies run one way: this package imports ``nn``, never the reverse.
"""

from handgrad.functional.rnn import (
    clear_workspace, gru_cell, gru_sequence, lstm_cell, lstm_sequence, rnn_cell, rnn_relu_cell, rnn_sequence,
    rnn_tanh_cell,
)
from handgrad.recurrent.tbptt import detach_state, tbptt_windows
from handgrad.recurrent.regularization import (
    ClipTracker, EmbeddingDropout, LockedDropout, RegularizedRNN, embedding_dropout, locked_dropout,
)
from handgrad.recurrent.zoneout import ZoneoutCell, ZoneoutRNN, zoneout
from handgrad.recurrent.diagnostics import hidden_state_gradients, jacobian_norms, tanh_rnn_jacobians, unroll
from handgrad.recurrent.generation import CharVocab, RNNLanguageModel, sample, sample_logits
