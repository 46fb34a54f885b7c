"""Layers and models (``handgrad.nn``), with PyTorch's names."""

from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter

__all__ = ["Module", "Parameter"]
from handgrad.nn.rnn import GRU, LSTM, RNN, RNNBase
from handgrad.nn.rnn_cell import GRUCell, LSTMCell, RNNCell, RNNCellBase
from handgrad.nn import init, utils
from handgrad.nn.activation import (
    ELU, GELU, LeakyReLU, LogSigmoid, LogSoftmax, ReLU, SiLU, Sigmoid, Softmax, Softplus, Tanh,
)
from handgrad.nn.container import ModuleDict, ModuleList, Sequential
from handgrad.nn.conv import Conv2d, ConvTranspose2d
from handgrad.nn.dropout import Dropout, Dropout2d
from handgrad.nn.linear import Flatten, Identity, Linear, Unflatten
from handgrad.nn.loss import (
    BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss,
)
from handgrad.nn.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from handgrad.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from handgrad.nn.sparse import Embedding
from handgrad.nn.attention import MultiheadAttention
from handgrad.nn.transformer import (
    Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer,
)
from handgrad.nn.normalization import GroupNorm
from handgrad.nn.dropout import Dropout1d
__all__ += ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]
__all__ += [
    "init", "utils", "ELU", "GELU", "LeakyReLU", "LogSigmoid", "LogSoftmax", "ReLU", "SiLU", "Sigmoid", "Softmax",
    "Softplus", "Tanh",
    "ModuleDict", "ModuleList", "Sequential", "Conv2d", "ConvTranspose2d", "Dropout", "Dropout2d", "Flatten",
    "Identity", "Linear", "Unflatten", "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "HuberLoss", "KLDivLoss",
    "L1Loss", "MSELoss", "NLLLoss", "SmoothL1Loss", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "AdaptiveAvgPool2d",
    "AvgPool2d", "MaxPool2d", "Embedding",
]
__all__ += [
    "Dropout1d", "GroupNorm", "MultiheadAttention", "Transformer", "TransformerDecoder", "TransformerDecoderLayer",
    "TransformerEncoder", "TransformerEncoderLayer",
]
