"""Ready-made models: ``LeNet`` (the benchmark CNN) and ``MLP``; later chapters add theirs here."""

from handgrad.architectures.lenet import LeNet
from handgrad.architectures.mlp import MLP
