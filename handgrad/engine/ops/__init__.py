"""All differentiable ops, each a ``Function`` with forward and backward side by side, grouped by kind."""

from handgrad.engine.ops.arithmetic import add, div, mul, neg, pow, sub
from handgrad.engine.ops.indexing import getitem
from handgrad.engine.ops.linalg import matmul
from handgrad.engine.ops.reduction import mean, sum
from handgrad.engine.ops.shape import permute, reshape, transpose
from handgrad.engine.ops.unary import cast, clone, exp, log, relu, sigmoid, tanh

__all__ = [
    "add", "cast", "clone", "div", "exp", "getitem", "log", "matmul", "mean", "mul", "neg", "permute",
    "pow", "relu", "reshape", "sigmoid", "sub", "sum", "tanh", "transpose",
]
