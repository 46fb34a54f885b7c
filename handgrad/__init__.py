"""handgrad: a from-scratch deep-learning library on NumPy with hand-written backward passes."""

from handgrad.engine.backend import get_array_module, get_default_dtype, set_default_dtype
from handgrad.engine.function import Function
from handgrad.engine.grad_mode import detect_anomaly, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from handgrad.engine.ops import (
    add, cast, clone, div, exp, log, matmul, mean, mul, neg, permute, pow, relu, reshape, sigmoid, sub, sum,
    tanh, transpose,
)
from handgrad.engine.random import manual_seed
from handgrad.serialization import load, load_into, save
from handgrad.engine.tensor import (
    Tensor, arange, as_tensor, full, ones, ones_like, rand, randint, randn, tensor, zeros, zeros_like,
)

float32 = "float32"
float64 = "float64"
int64 = "int64"

__version__ = "0.1.0"
