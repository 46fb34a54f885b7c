"""Layers and models (``handgrad.nn``), with PyTorch's names."""

from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter

__all__ = ["Module", "Parameter"]
