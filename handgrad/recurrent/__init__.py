"""Recurrent networks: fused sequence ops with hand-written BPTT, cells, truncated-BPTT helpers.

The layers themselves (``RNN``, ``LSTM``, ``GRU`` and the ``*Cell`` modules) are exported from
``handgrad.nn``; this package exports the functional ops they are built on.
"""

import handgrad.nn  # first: handgrad.nn imports this package's layers, so it must be initialised before them

from handgrad.recurrent.gru_sequence import gru_cell, gru_sequence
from handgrad.recurrent.lstm_sequence import lstm_cell, lstm_sequence
from handgrad.recurrent.rnn_sequence import rnn_cell, rnn_relu_cell, rnn_sequence, rnn_tanh_cell
from handgrad.recurrent.tbptt import detach_state, tbptt_windows
from handgrad.recurrent._workspace import clear as clear_workspace
from handgrad.recurrent.regularization import (
    ClipTracker, EmbeddingDropout, LockedDropout, RegularizedRNN, embedding_dropout, locked_dropout,
)
from handgrad.recurrent.zoneout import ZoneoutCell, ZoneoutRNN, zoneout
from handgrad.recurrent.diagnostics import hidden_state_gradients, jacobian_norms, tanh_rnn_jacobians, unroll
from handgrad.recurrent.generation import CharVocab, RNNLanguageModel, sample, sample_logits
