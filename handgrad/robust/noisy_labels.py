"""Learning from noisy labels with a latent noise type (Xiao, Xia, Yang, Huang and Wang, CVPR 2015).

Two paths look at the image x: one predicts the clean label y (``p(y | x) = softmax(f_y(x))``, L classes), the
other the noise type z (``p(z | x) = softmax(f_z(x))``) with z in {noise-free, random, confusing}. A fixed
probabilistic model links them to the observed noisy label y~::

    p(y~ | y, z) = [y~ = y]                  z = noise-free
                   [y~ != y] / (L - 1)        z = random       (any other label, uniformly)
                   C[y, y~]                   z = confusing    (C: L x L, rows sum to 1, learned)

    p(y~ | x) = sum_y sum_z p(y~ | y, z) p(y | x) p(z | x)

Training is EM-style (the deck: "an EM is proposed to back-propagate the error"):

* E-step: the posterior q(y, z) = p(y, z | y~, x) proportional to p(y~ | y, z) p(y | x) p(z | x), with its marginals
  q(y) and q(z); on the clean subset y is known, so q(y) is one-hot and q(z) proportional to p(y~ | y, z) p(z | x).
* M-step: the two paths are trained with q(y) and q(z) as soft targets (cross-entropy), and C is re-estimated as
  C[y, y~] proportional to sum_n q_n(y, z = confusing) [y~_n = y~].

The soft-target gradient is exactly the gradient of -log p(y~ | x) (d/dlogits = p - q), so one E-step per
mini-batch followed by a gradient step is gradient ascent on the noisy-label likelihood; ``noisy_label_nll`` is
that likelihood as a fused op with this backward. With the networks fixed, the C update is an exact M-step, so
EM never lowers the likelihood (tested).
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor
from handgrad.functional._reduction import check_reduction, reduce_loss, reduce_loss_backward
from handgrad.nn.module import Module

NOISE_TYPES = ("noise-free", "random", "confusing")

# Fashion-MNIST classes and the label a hurried annotator confuses each with (read off the confusion matrix of
# a small CNN: shirt / T-shirt / pullover / coat, sandal / sneaker / ankle boot, trouser / dress, bag).
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_CONFUSING = {0: 6, 1: 3, 2: 4, 3: 1, 4: 2, 5: 7, 6: 0, 7: 9, 8: 2, 9: 5}


# -- validation --------------------------------------------------------------------------------------------------
def _labels(op: str, y: Any, n: int | None, num_classes: int, name: str = "noisy labels") -> numpy.ndarray:
    a = y.numpy() if isinstance(y, Tensor) else numpy.asarray(y)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"{op}: {name} must be a 1-D integer array, got shape {a.shape} and dtype {a.dtype}")
    if n is not None and len(a) != n:
        raise ValueError(f"{op}: {name} have {len(a)} entries for a batch of {n}")
    if a.size and (int(a.min()) < 0 or int(a.max()) >= num_classes):
        bad = sorted({int(v) for v in a[(a < 0) | (a >= num_classes)]})[:5]
        raise ValueError(f"{op}: {name} hold {bad} outside [0, {num_classes})")
    return a.astype(numpy.int64)


def check_confusion(op: str, confusion: Any, num_classes: int | None = None) -> numpy.ndarray:
    """A row-stochastic (L, L) matrix, or a clear error."""
    c = numpy.asarray(confusion, dtype=numpy.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise ValueError(f"{op}: the confusion matrix C must be (L, L) with L >= 2, got {c.shape}")
    if num_classes is not None and c.shape[0] != num_classes:
        raise ValueError(f"{op}: C is {c.shape} but the clean path predicts {num_classes} classes")
    if (c < 0).any() or not numpy.allclose(c.sum(1), 1.0, atol=1e-6):
        raise ValueError(f"{op}: C must have non-negative rows that sum to 1 (C[y, y~] = p(y~ | y, confusing))")
    return c


def transition_matrices(confusion: Any) -> numpy.ndarray:
    """T (3, L, L) with T[z, y, y~] = p(y~ | y, z) for z = noise-free, random, confusing."""
    c = check_confusion("transition_matrices", confusion)
    L = c.shape[0]
    eye = numpy.eye(L)
    return numpy.stack([eye, (1 - eye) / (L - 1), c])


def _softmax(z: Any) -> Any:
    e = get_array_module(z).exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# -- the probabilistic model (NumPy, no graph) -------------------------------------------------------------------
def joint_posterior(
    p_y: Any, p_z: Any, noisy: Any, confusion: Any, clean: Any = None
) -> numpy.ndarray:
    """q[n, y, z] = p(y, z | y~_n, x_n) (N, L, 3); where ``clean[n] >= 0`` the clean label is known and fixed.

    p_y: (N, L) clean-label probabilities, p_z: (N, 3) noise-type probabilities, noisy: (N,) observed labels,
    clean: (N,) known clean labels or -1 (optional).
    """
    op = "joint_posterior"
    py, pz = numpy.asarray(p_y, numpy.float64), numpy.asarray(p_z, numpy.float64)
    if py.ndim != 2 or pz.shape != (len(py), 3):
        raise ValueError(f"{op}: expected p_y (N, L) and p_z (N, 3), got {py.shape} and {pz.shape}")
    T = transition_matrices(check_confusion(op, confusion, py.shape[1]))
    yt = _labels(op, noisy, len(py), py.shape[1])
    lik = T[:, :, yt].transpose(2, 1, 0)  # (N, L, 3): p(y~_n | y, z)
    joint = py[:, :, None] * pz[:, None, :] * lik
    if clean is not None:
        c = numpy.asarray(clean)
        if c.shape != (len(py),):
            raise ValueError(f"{op}: clean must be ({len(py)},) labels or -1, got {c.shape}")
        known = c >= 0
        if known.any():
            _labels(op, c[known], None, py.shape[1], "clean labels")
            mask = numpy.zeros_like(py)
            mask[numpy.nonzero(known)[0], c[known]] = 1
            mask[~known] = 1
            joint = joint * mask[:, :, None]
    total = joint.sum((1, 2), keepdims=True)
    if (total <= 0).any():
        raise ValueError(f"{op}: some observed label has probability 0 under the model (C or p_z too sharp)")
    return joint / total


def noisy_label_probs(p_y: Any, p_z: Any, confusion: Any) -> numpy.ndarray:
    """p(y~ | x) (N, L) = sum_z p(z | x) (p(y | x) @ T_z)."""
    py, pz = numpy.asarray(p_y, numpy.float64), numpy.asarray(p_z, numpy.float64)
    T = transition_matrices(check_confusion("noisy_label_probs", confusion, py.shape[1]))
    return numpy.einsum("nz,ny,zyk->nk", pz, py, T)


def log_likelihood(p_y: Any, p_z: Any, noisy: Any, confusion: Any) -> float:
    """sum_n log p(y~_n | x_n): the observed-data log-likelihood EM increases."""
    probs = noisy_label_probs(p_y, p_z, confusion)
    yt = _labels("log_likelihood", noisy, len(probs), probs.shape[1])
    return float(numpy.log(probs[numpy.arange(len(yt)), yt]).sum())


def update_confusion(q: Any, noisy: Any, smoothing: float = 1e-3, zero_diagonal: bool = False) -> numpy.ndarray:
    """M-step for C: C[y, y~] proportional to smoothing + sum_n q_n(y, confusing) [y~_n = y~], rows normalised.

    With smoothing = 0 this is the exact maximiser of the expected complete log-likelihood. ``zero_diagonal``
    keeps "confusing" noise a real change of label.
    """
    qq = numpy.asarray(q, numpy.float64)
    if qq.ndim != 3 or qq.shape[2] != 3:
        raise ValueError(f"update_confusion: q must be (N, L, 3), got {qq.shape}")
    L = qq.shape[1]
    yt = _labels("update_confusion", noisy, len(qq), L)
    counts = numpy.zeros((L, L))
    numpy.add.at(counts.T, yt, qq[:, :, 2])  # counts[:, y~_n] += q_n(., confusing)
    counts += smoothing
    if zero_diagonal:
        numpy.fill_diagonal(counts, 0)
    rows = counts.sum(1, keepdims=True)
    return numpy.where(rows > 0, counts / numpy.where(rows > 0, rows, 1), 1.0 / L)


def confusion_from_pairs(clean: Any, noisy: Any, num_classes: int, smoothing: float = 1.0) -> numpy.ndarray:
    """C estimated from samples with both labels (the clean subset): off-diagonal counts of (y, y~), smoothed."""
    c = _labels("confusion_from_pairs", clean, None, num_classes, "clean labels")
    y = _labels("confusion_from_pairs", noisy, len(c), num_classes)
    counts = numpy.full((num_classes, num_classes), float(smoothing))
    numpy.add.at(counts, (c, y), 1.0)
    numpy.fill_diagonal(counts, 0)
    return counts / counts.sum(1, keepdims=True)


# -- the differentiable loss ----------------------------------------------------------------------------------------
class NoisyLabelNLLFunction(Function):
    """-log p(y~_n | x_n) from the two paths' logits, reduced.  y_logits (N, L), z_logits (N, 3) -> loss.

    Backward (the EM identity): d/dy_logits = p(y | x) - q(y), d/dz_logits = p(z | x) - q(z), with q the E-step
    posterior marginals; per sample, times the upstream gradient (divided by N for 'mean').
    """

    def __init__(self, T: Any, noisy: Any, reduction: str) -> None:
        self.T, self.noisy, self.reduction = T, noisy, reduction

    def forward(self, y_logits: Any, z_logits: Any) -> Any:
        xp = get_array_module(y_logits)
        py, pz = _softmax(y_logits), _softmax(z_logits)
        T = xp.asarray(self.T, dtype=y_logits.dtype)
        lik = T[:, :, self.noisy].transpose(2, 1, 0)  # (N, L, 3)
        joint = py[:, :, None] * pz[:, None, :] * lik
        total = joint.sum((1, 2))
        q = joint / total[:, None, None]
        self.py, self.pz, self.qy, self.qz = py, pz, q.sum(2), q.sum(1)
        nll = -xp.log(total)
        return reduce_loss(nll, self.reduction)

    def backward(self, g: Any) -> Any:
        g = reduce_loss_backward(g, self.py.shape[:1], self.reduction)[:, None]
        n_ = self.needs_input_grad
        return (g * (self.py - self.qy) if n_[0] else None, g * (self.pz - self.qz) if n_[1] else None)


def noisy_label_nll(
    y_logits: Tensor, z_logits: Tensor, noisy_target: Any, confusion: Any, reduction: str = "mean"
) -> Tensor:
    """-log p(y~ | x) under the noise model.  y_logits (N, L), z_logits (N, 3), noisy_target (N,) in [0, L)."""
    op = "noisy_label_nll"
    for name, t in (("y_logits", y_logits), ("z_logits", z_logits)):
        if not isinstance(t, Tensor) or t.dtype.kind != "f":
            raise TypeError(f"{op}: {name} must be a floating Tensor")
    if y_logits.ndim != 2 or z_logits.shape != (y_logits.shape[0], 3):
        raise ValueError(
            f"{op}: expected y_logits (N, L) and z_logits (N, 3), got {y_logits.shape} and {z_logits.shape}"
        )
    check_reduction(op, reduction)
    L = y_logits.shape[1]
    T = transition_matrices(check_confusion(op, confusion, L))
    yt = _labels(op, noisy_target, y_logits.shape[0], L)
    return NoisyLabelNLLFunction(T, yt, reduction)(y_logits, z_logits)


# -- the two-path model and label corruption ---------------------------------------------------------------------------
class NoisyLabelModel(Module):
    """The two paths: forward(x) -> (y_logits (N, L), z_logits (N, 3)). C lives in the buffer ``confusion_matrix``
    (saved with ``state_dict``); ``model.confusion`` reads and writes it as a validated NumPy array."""

    def __init__(self, clean_net: Module, noise_net: Module, num_classes: int, confusion: Any = None) -> None:
        super().__init__()
        self.clean_net = clean_net
        self.noise_net = noise_net
        self.num_classes = int(num_classes)
        L = self.num_classes
        c = (1 - numpy.eye(L)) / (L - 1) if confusion is None else confusion
        self.register_buffer("confusion_matrix", Tensor(check_confusion("NoisyLabelModel", c, L)))

    @property
    def confusion(self) -> numpy.ndarray:
        return self.confusion_matrix.numpy()

    @confusion.setter
    def confusion(self, value: Any) -> None:
        c = check_confusion("NoisyLabelModel", value, self.num_classes)
        self.confusion_matrix.array[...] = c

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.clean_net(x), self.noise_net(x)


def corrupt_labels(
    labels: Any,
    rate: float,
    mode: str = "symmetric",
    num_classes: int = 10,
    rng: numpy.random.Generator | None = None,
    confusing: dict[int, int] | None = None,
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Replace a fraction ``rate`` of the labels; returns (noisy labels, z) with z the noise type per sample.

    ``mode``: ``"symmetric"`` (a uniformly drawn *other* label), ``"confusing"`` (the label's confusing partner,
    ``confusing[y]``, Fashion-MNIST's by default) or ``"mixed"`` (half of the corrupted ones each way).
    z: 0 = kept, 1 = random, 2 = confusing.
    """
    op = "corrupt_labels"
    y = _labels(op, labels, None, num_classes, "labels")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{op}: rate must be in [0, 1], got {rate}")
    if mode not in ("symmetric", "confusing", "mixed"):
        raise ValueError(f"{op}: mode must be 'symmetric', 'confusing' or 'mixed', got {mode!r}")
    rng = numpy.random.default_rng() if rng is None else rng
    conf = FASHION_CONFUSING if confusing is None else confusing
    if mode != "symmetric":
        missing = [c for c in range(num_classes) if c not in conf or conf[c] == c]
        if missing:
            raise ValueError(f"{op}: the confusing map needs a different partner for classes {missing}")
    n = len(y)
    flip = rng.random(n) < rate
    z = numpy.zeros(n, numpy.int64)
    if mode == "symmetric":
        z[flip] = 1
    elif mode == "confusing":
        z[flip] = 2
    else:
        z[flip] = numpy.where(rng.random(int(flip.sum())) < 0.5, 1, 2)
    out = y.copy()
    r = z == 1
    shift = rng.integers(1, num_classes, int(r.sum()))
    out[r] = (y[r] + shift) % num_classes  # uniform over the other L - 1 labels
    c = z == 2
    out[c] = numpy.array([conf[int(v)] for v in y[c]], numpy.int64)
    return out, z


__all__ = [
    "FASHION_CLASSES", "FASHION_CONFUSING", "NOISE_TYPES", "NoisyLabelModel", "check_confusion",
    "confusion_from_pairs", "corrupt_labels", "joint_posterior", "log_likelihood", "noisy_label_nll",
    "noisy_label_probs", "transition_matrices", "update_confusion",
]
