"""The fused recurrent kernels behind ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` and their cells.

Each ``*_sequence`` runs a whole (packed) sequence as ONE ``Function`` with hand-written BPTT
(``rnn_sequence.py``, ``lstm_sequence.py``, ``lstmp_sequence.py`` for ``LSTM(proj_size=)``,
``gru_sequence.py``), on the shared schedule of ``_fused.py`` (lengths, reversed directions) and the work
arrays of ``_workspace.py``. They depend on the engine only, so ``handgrad.nn`` can build its layers on them
while ``handgrad.recurrent`` (research models on top of ``nn``) imports ``nn``: one direction only.
"""

from handgrad.functional.rnn._workspace import clear as clear_workspace
from handgrad.functional.rnn.gru_sequence import gru_cell, gru_sequence
from handgrad.functional.rnn.lstm_sequence import lstm_cell, lstm_sequence
from handgrad.functional.rnn.rnn_sequence import rnn_cell, rnn_relu_cell, rnn_sequence, rnn_tanh_cell

__all__ = [
    "clear_workspace", "gru_cell", "gru_sequence", "lstm_cell", "lstm_sequence", "rnn_cell", "rnn_relu_cell",
    "rnn_sequence", "rnn_tanh_cell",
]
