"""Ready-made models: ``LeNet`` (the benchmark CNN) and ``MLP``; later chapters add theirs here: ``Fabric``
(convolutional neural fabric), ``MSDNet`` and ``ResNet`` (anytime prediction; see ``anytime`` and ``flops``)."""

from handgrad.architectures.fabric import Fabric
from handgrad.architectures.lenet import LeNet
from handgrad.architectures.mlp import MLP
from handgrad.architectures.msdnet import MSDNet
from handgrad.architectures.resnet import ResNet
