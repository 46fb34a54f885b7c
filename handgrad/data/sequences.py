"""Synthetic long-range sequence tasks and the MNIST-1D sequence-classification data, all made offline.

* ``adding_problem`` (Hochreiter & Schmidhuber 1997; the form of Le et al. 2015): input ``(N, T, 2)``,
  channel 0 uniform in [0, 1), channel 1 a marker with exactly two ones, one in each half of the sequence;
  the target ``(N, 1)`` is the sum of the two marked values. Always predicting 1 gives
  ``MSE = Var(u1 + u2) = 2/12 = 0.1667`` (``ADDING_BASELINE_MSE``): a model must beat that to have used
  the markers, the first one lying at least ``T/2`` steps before the end.
* ``copy_memory`` (Arjovsky et al. 2016): ``n_copy`` symbols from {1..n_symbols}, ``delay`` blanks (0),
  a delimiter (n_symbols + 1) and ``n_copy - 1`` more blanks; the target is blank everywhere except
  the last ``n_copy`` steps, which repeat the symbols. A memoryless model scores
  ``n_copy * log(n_symbols) / (delay + 2 n_copy)`` nats per step (``copy_memory_baseline``).
* ``load_mnist1d`` wraps the ``mnist1d`` package's offline generator ``make_dataset(get_dataset_args())``
  (Greydanus 2020): 40-step one-dimensional "digits", 10 classes. ``get_dataset()`` downloads a pickle and
  is never called here.
"""

from __future__ import annotations

import math
import random as _pyrandom
from dataclasses import dataclass
from typing import Any

import numpy

ADDING_BASELINE_MSE = 1.0 / 6.0  # Var(U(0,1) + U(0,1)) = 2 * 1/12


def _rng(generator: numpy.random.Generator | int | None) -> numpy.random.Generator:
    """A NumPy generator: the one given, one seeded by an int, or handgrad's global one (``manual_seed``)."""
    if isinstance(generator, numpy.random.Generator):
        return generator
    if generator is None:
        from handgrad.engine.random import get_rng

        return get_rng()
    return numpy.random.default_rng(int(generator))


def adding_problem(
    n: int, seq_len: int, generator: numpy.random.Generator | int | None = None, dtype: Any = numpy.float32
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """``n`` samples of the adding problem of length ``seq_len``: ``x (n, seq_len, 2)``, ``y (n, 1)``.

    ``x[..., 0] ~ U[0, 1)``; ``x[..., 1]`` is 1 at one step drawn in ``[0, T/2)`` and one in ``[T/2, T)``,
    0 elsewhere; ``y = sum_t x[t, 0] * x[t, 1]``.
    """
    if n < 1:
        raise ValueError(f"adding_problem: n must be >= 1, got {n}")
    if seq_len < 2:
        raise ValueError(f"adding_problem: seq_len must be >= 2 (one marker per half), got {seq_len}")
    g = _rng(generator)
    half = seq_len // 2
    values = g.random((n, seq_len))
    markers = numpy.zeros((n, seq_len))
    rows = numpy.arange(n)
    markers[rows, g.integers(0, half, n)] = 1.0
    markers[rows, g.integers(half, seq_len, n)] = 1.0
    x = numpy.stack([values, markers], axis=-1).astype(dtype)
    y = (values * markers).sum(axis=1, keepdims=True).astype(dtype)
    return x, y


def copy_memory(
    n: int,
    delay: int,
    n_copy: int = 10,
    n_symbols: int = 8,
    generator: numpy.random.Generator | int | None = None,
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """``n`` copy-memory sequences: token ids ``x (n, L)`` and targets ``y (n, L)``, ``L = delay + 2 n_copy``.

    Vocabulary: 0 = blank, 1..n_symbols = data, n_symbols + 1 = delimiter ("now repeat"). ``x`` is the K
    symbols, ``delay - 1`` blanks, the delimiter, then K blanks; ``y`` is ``K + delay`` blanks then the K
    symbols (K = ``n_copy``).
    """
    if n < 1 or delay < 1 or n_copy < 1 or n_symbols < 1:
        raise ValueError(
            f"copy_memory: n, delay, n_copy and n_symbols must be >= 1, got {n}, {delay}, {n_copy}, {n_symbols}"
        )
    g = _rng(generator)
    length = delay + 2 * n_copy
    symbols = g.integers(1, n_symbols + 1, (n, n_copy))
    x = numpy.zeros((n, length), numpy.int64)
    y = numpy.zeros((n, length), numpy.int64)
    x[:, :n_copy] = symbols
    x[:, n_copy + delay - 1] = n_symbols + 1
    y[:, -n_copy:] = symbols
    return x, y


def copy_memory_baseline(delay: int, n_copy: int = 10, n_symbols: int = 8) -> float:
    """Cross-entropy (nats per step) of the best memoryless strategy: blank until the delimiter, then uniform."""
    return n_copy * math.log(n_symbols) / (delay + 2 * n_copy)


@dataclass
class MNIST1D:
    """MNIST-1D arrays: ``x (N, 40)`` float32 signals, ``y (N,)`` int64 labels, train and test splits.

    ``sequences(split)`` gives ``(N, 40, 1)``: one feature per time step, the many-to-one RNN input.
    """

    x_train: numpy.ndarray
    y_train: numpy.ndarray
    x_test: numpy.ndarray
    y_test: numpy.ndarray
    args: dict[str, Any]

    def sequences(self, split: str = "train") -> tuple[numpy.ndarray, numpy.ndarray]:
        if split not in ("train", "test"):
            raise ValueError(f"MNIST1D.sequences: split must be 'train' or 'test', got {split!r}")
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        return x[:, :, None], y


def load_mnist1d(num_samples: int = 5000, seed: int = 42, train_split: float = 0.8, **overrides: Any) -> MNIST1D:
    """Generate MNIST-1D offline with the ``mnist1d`` package (``make_dataset(get_dataset_args())``).

    The defaults are the paper's (5,000 samples, 4,000 train / 1,000 test, seed 42); any other field of
    ``get_dataset_args()`` (``shuffle_seq``, ``iid_noise_scale``, ...) can be overridden by keyword. More
    samples are the same distribution, just more draws. The package seeds NumPy's and Python's global
    generators; their states are restored afterwards so that this call has no side effect on other code.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("load_mnist1d: the 'mnist1d' package is needed (pip install mnist1d==0.0.2.post1)") from e
    args = get_dataset_args(as_dict=False)
    known = set(args.__dict__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"load_mnist1d: unknown dataset argument(s) {unknown}; known: {sorted(known)}")
    if num_samples < 10:
        raise ValueError(f"load_mnist1d: num_samples must be >= 10 (one per class), got {num_samples}")
    if not 0.0 < train_split < 1.0:
        raise ValueError(f"load_mnist1d: train_split must be in (0, 1), got {train_split}")
    args.num_samples, args.seed, args.train_split = int(num_samples), int(seed), float(train_split)
    for k, v in overrides.items():
        setattr(args, k, v)
    np_state, py_state = numpy.random.get_state(), _pyrandom.getstate()
    try:
        d = make_dataset(args)
    finally:
        numpy.random.set_state(np_state)
        _pyrandom.setstate(py_state)
    return MNIST1D(
        x_train=numpy.asarray(d["x"], numpy.float32),
        y_train=numpy.asarray(d["y"], numpy.int64),
        x_test=numpy.asarray(d["x_test"], numpy.float32),
        y_test=numpy.asarray(d["y_test"], numpy.int64),
        args={k: v for k, v in args.__dict__.items() if k != "url"},
    )
