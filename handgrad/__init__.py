"""handgrad: a from-scratch deep-learning library on NumPy with hand-written backward passes."""

from handgrad.engine.backend import Device, device, get_array_module, get_default_dtype, set_default_dtype
from handgrad.engine.function import Function
from handgrad.engine.grad_mode import (
    detect_anomaly, enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled,
)
from handgrad.engine.gradcheck import GradcheckError, gradcheck
from handgrad.engine.ops import (
    abs, add, amax, amin, argmax, argmin, cast, cat, chunk, clamp, clip, clone, concat, concatenate, cos, div, elu,
    exp, expand, expand_as, flatten, gather, gelu, index_select, leaky_relu, log, log_softmax, logsumexp,
    masked_fill, matmul, max, maximum, mean, min, minimum, mul, neg, pad, permute, pow, prod, relu, reshape,
    scatter_add, sigmoid, silu, sin, softmax, softplus, split, sqrt, square, squeeze, stack, std, sub, sum, tanh,
    transpose, unbind, unflatten, unsqueeze, var, where,
)
from handgrad.engine.random import manual_seed
from handgrad.serialization import load, load_into, save
from handgrad.engine.factories import (
    arange, as_tensor, empty, eye, from_numpy, full, full_like, linspace, ones, ones_like, rand, rand_like,
    randint, randn, randn_like, randperm, tensor, zeros, zeros_like,
)
from handgrad.engine.tensor import Tensor

float32 = "float32"
float64 = "float64"
int64 = "int64"

__version__ = "0.1.0"
