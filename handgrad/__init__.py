"""handgrad: a from-scratch deep-learning library on NumPy with hand-written backward passes."""

from handgrad.engine.backend import Device, device, get_array_module, get_default_dtype, set_default_dtype
from handgrad.engine.function import Function
from handgrad.engine.grad_mode import (
    detect_anomaly, enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled,
)
from handgrad.engine.gradcheck import GradcheckError, gradcheck
from handgrad.engine.host_memory import keep_freed_memory
from handgrad.engine.ops import (
    abs, add, amax, amin, argmax, argmin, cast, cat, chunk, clamp, clip, clone, concat, concatenate, cos, div, elu,
    exp, expand, expand_as, flatten, gather, gelu, index_select, leaky_relu, log, log_softmax, logsumexp,
    masked_fill, matmul, max, maximum, mean, min, minimum, mul, neg, pad, permute, pow, prod, relu, reshape,
    scatter_add, sigmoid, silu, sin, softmax, softplus, split, sqrt, square, squeeze, stack, std, sub, sum, tanh,
    transpose, unbind, unflatten, unsqueeze, var, where,
)
from handgrad.engine.ops.comparison import allclose, eq, equal, ge, gt, isclose, isfinite, isinf, isnan, le, lt, ne
from handgrad.engine.ops import (
    argsort, bmm, cumprod, cumsum, einsum, flip, index_add, mm, multinomial, norm, repeat_interleave, roll, scatter,
    sort, topk, tril, triu,
)
from handgrad import linalg
from handgrad.engine.random import manual_seed
from handgrad.serialization import load, load_into, save
from handgrad.engine.factories import (
    arange, as_tensor, empty, eye, from_numpy, full, full_like, linspace, ones, ones_like, rand, rand_like,
    randint, randn, randn_like, randperm, tensor, zeros, zeros_like,
)
from handgrad.engine.tensor import Tensor

from handgrad.engine.dtypes import (  # noqa: E402 - PyTorch's dtype names; float/int/bool shadow builtins here only
    bool, cdouble, cfloat, complex64, complex128, double, float, float16, float32, float64, half, int, int8, int16,
    int32, int64, long, short, uint8,
)

__version__ = "0.1.0"

keep_freed_memory()  # freed arrays stay in the process: no page faults for the next step's (engine/host_memory.py)

# PyTorch's sub-package paths after a plain ``import handgrad``: handgrad.nn, handgrad.functional, handgrad.optim,
# handgrad.data, handgrad.utils.data (never an experiment or the CLI: tests/test_package_layout.py)
from handgrad import data, functional, nn, optim, utils  # noqa: E402
