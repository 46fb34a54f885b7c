"""All differentiable ops, each a ``Function`` with forward and backward side by side, grouped by kind."""

from handgrad.engine.ops.activation import elu, gelu, leaky_relu, silu, softplus
from handgrad.engine.ops.comparison import (
    allclose, eq, equal, ge, gt, isclose, isfinite, isinf, isnan, le, lt, ne,
)
from handgrad.engine.ops.arithmetic import add, div, maximum, minimum, mul, neg, pow, square, sub
from handgrad.engine.ops.indexing import (
    gather, getitem, index_select, masked_fill, scatter_add, setitem, where,
)
from handgrad.engine.ops.linalg import bmm, einsum, matmul, mm
from handgrad.engine.ops.norm import norm
from handgrad.engine.ops.rearrange import flip, repeat, repeat_interleave, roll, tril, triu
from handgrad.engine.ops.sampling import multinomial
from handgrad.engine.ops.scan import cumprod, cumsum
from handgrad.engine.ops.scatter import fill, index_add, scatter
from handgrad.engine.ops.sorting import argsort, sort, topk
from handgrad.engine.ops.reduction import (
    amax, amin, argmax, argmin, logsumexp, max, mean, min, prod, std, sum, var,
)
from handgrad.engine.ops.shape import (
    cat, chunk, concat, concatenate, expand, expand_as, flatten, pad, permute, reshape, split, squeeze, stack,
    transpose, unbind, unflatten, unsqueeze,
)
from handgrad.engine.ops.softmax import log_softmax, softmax
from handgrad.engine.ops.unary import abs, cast, clamp, clip, clone, cos, exp, log, relu, sigmoid, sin, sqrt, tanh

__all__ = [
    "allclose", "eq", "equal", "ge", "gt", "isclose", "isfinite", "isinf", "isnan", "le", "lt", "ne",
    "argsort", "bmm", "cumprod", "cumsum", "einsum", "flip", "mm", "multinomial", "norm", "repeat",
    "repeat_interleave", "roll", "sort", "topk", "tril", "triu", "fill", "index_add", "scatter",
    "abs", "add", "amax", "amin", "argmax", "argmin", "cast", "cat", "chunk", "clamp", "clip", "clone", "concat",
    "concatenate", "cos", "div", "elu", "exp", "expand", "expand_as", "flatten", "gather", "gelu", "getitem",
    "index_select", "leaky_relu", "log", "log_softmax", "logsumexp", "masked_fill", "matmul", "max", "maximum",
    "mean", "min", "minimum", "mul", "neg", "pad", "permute", "pow", "prod", "relu", "reshape", "scatter_add",
    "setitem", "sigmoid", "silu", "sin", "softmax", "softplus", "split", "sqrt", "square", "squeeze", "stack",
    "std", "sub", "sum", "tanh", "transpose", "unbind", "unflatten", "unsqueeze", "var", "where",
]
