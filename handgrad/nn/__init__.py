"""Layers and models (``handgrad.nn``), with PyTorch's names."""

from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter

__all__ = ["Module", "Parameter"]
from handgrad.recurrent.layers import GRU, LSTM, RNN, RNNBase
from handgrad.recurrent.cells import GRUCell, LSTMCell, RNNCell, RNNCellBase
__all__ += ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]
