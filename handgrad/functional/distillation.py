"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): a student imitates a teacher's softened outputs.

With student logits s, teacher logits t (N, C), hard labels y (N,), temperature T and weight alpha::

    p = softmax(t / T)            (the teacher's soft targets)
    q = softmax(s / T)            (the student's soft predictions)
    L_n = alpha * T^2 * KL(p_n || q_n) + (1 - alpha) * CE(softmax(s_n), y_n)

KL(p || q) = sum_c p_c (log p_c - log q_c) differs from the paper's soft cross-entropy -sum_c p_c log q_c by the
teacher's entropy, a constant, so the gradients are the same and a perfect imitation scores 0. The soft
gradient dKL/ds = (q - p) / T shrinks as 1/T (and as 1/T^2 for large T, where q - p ~ (s - t) / (C T)), so
it is multiplied by T^2 to keep the two terms' relative weight when T changes (the paper's T^2 scaling).
"""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor
from handgrad.functional._reduction import check_reduction, reduce_loss, reduce_loss_backward


def _log_softmax(xp: Any, z: Any) -> Any:
    z = z - z.max(axis=1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))


class DistillationLossFunction(Function):
    """Fused distillation loss; forward(s (N, C), t (N, C), y (N,) int) -> reduced loss.

    Backward:  dL_n/ds_n = alpha T (q_n - p_n) + (1 - alpha) (softmax(s_n) - onehot(y_n))
               dL_n/dt_n = alpha T p_n * (g_n - sum_c p_nc g_nc),  g = log p - log q   (if the teacher needs it)
    then scaled by 1/N for 'mean'. ``y`` (integer) gets no gradient.
    """

    def __init__(self, temperature: float, alpha: float, reduction: str, has_target: bool) -> None:
        self.T, self.alpha, self.reduction, self.has_target = float(temperature), float(alpha), reduction, has_target

    def forward(self, s: Any, t: Any, y: Any) -> Any:
        xp = get_array_module(s)
        T, a = self.T, self.alpha
        log_p = _log_softmax(xp, t / T)
        log_q = _log_softmax(xp, s / T)
        p = xp.exp(log_p)
        kl = (p * (log_p - log_q)).sum(axis=1)
        loss = a * T * T * kl
        self.p, self.q, self.log_p, self.log_q = p, xp.exp(log_q), log_p, log_q
        if self.has_target:
            log_r = _log_softmax(xp, s)
            n = s.shape[0]
            loss = loss + (1 - a) * -log_r[xp.arange(n), y]
            self.r, self.y = xp.exp(log_r), y
        self.n = s.shape[0]
        return reduce_loss(loss, self.reduction)

    def backward(self, g: Any) -> Any:
        xp = get_array_module(g)
        T, a = self.T, self.alpha
        g = reduce_loss_backward(g, (self.n,), self.reduction)[:, None]
        gs = gt = None
        if self.needs_input_grad[0]:
            gs = a * T * (self.q - self.p)
            if self.has_target:
                hard = self.r.copy()
                hard[xp.arange(self.n), self.y] -= 1
                gs = gs + (1 - a) * hard
            gs = g * gs
        if self.needs_input_grad[1]:
            gg = self.log_p - self.log_q
            gt = g * a * T * self.p * (gg - (self.p * gg).sum(axis=1, keepdims=True))
        return gs, gt, None


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor | Any | None,
    temperature: float = 4.0,
    alpha: float = 0.9,
    reduction: str = "mean",
) -> Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * cross_entropy(s, y), per sample, reduced.

    student_logits, teacher_logits: (N, C); target: (N,) class indices in [0, C) (``None`` only with alpha = 1:
    pure imitation, e.g. on an unlabelled transfer set); temperature T > 0; alpha in [0, 1]. ``reduction``
    'mean' averages over the batch (KL's 'batchmean'), 'sum' adds, 'none' returns (N,). Detach the teacher
    unless you mean to train it too (its gradient is implemented).
    """
    op = "distillation_loss"
    for name, z in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(z, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(z).__name__}")
        if z.dtype.kind != "f":
            raise TypeError(f"{op}: {name} must be floating, got dtype {z.dtype}")
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"{op}: student_logits {student_logits.shape} and teacher_logits {teacher_logits.shape} "
            "must both be (N, C)"
        )
    if student_logits.dtype != teacher_logits.dtype:
        raise TypeError(f"{op}: student is {student_logits.dtype} but teacher is {teacher_logits.dtype}")
    if not temperature > 0:
        raise ValueError(f"{op}: temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{op}: alpha must be in [0, 1], got {alpha}")
    check_reduction(op, reduction)
    n, c = student_logits.shape
    xp = get_array_module(student_logits.array)
    if target is None:
        if alpha != 1.0:
            raise ValueError(f"{op}: target=None (no hard labels) needs alpha=1, got alpha={alpha}")
        y = xp.zeros(n, xp.int64)
    else:
        y = target.array if isinstance(target, Tensor) else xp.asarray(target)
        if y.shape != (n,) or y.dtype.kind not in "iu":
            raise ValueError(f"{op}: target must be (N,) = ({n},) integer class indices, got {y.shape} {y.dtype}")
        if n and (int(y.min()) < 0 or int(y.max()) >= c):
            raise ValueError(f"{op}: target holds classes {int(y.min())}..{int(y.max())} outside [0, {c})")
    fn = DistillationLossFunction(temperature, alpha, reduction, target is not None)
    return fn(student_logits, teacher_logits, Tensor._from_op(y, None, 0))


__all__ = ["distillation_loss"]
