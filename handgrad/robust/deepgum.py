"""DeepGUM training with any network of the engine: EM around the ``Trainer``'s epochs.

Each epoch of training is one EM round (Lathuiliere et al. 2018):

1. E-step: with the network fixed, the residuals delta_i = y_i - phi(x_i) of the whole training set give the
   inlier responsibilities r_i (``GaussianUniformMixture.e_step``);
2. M-nu step: rho, Sigma, gamma updated (``GaussianUniformMixture.fit`` runs ``em_iterations`` EM iterations
   for the fixed network, each asserted not to lower the likelihood);
3. M-theta step: the epoch itself, minimising sum_i r_i ||y_i - phi(x_i)||^2 (``gum_loss``) by mini-batch SGD.

The first ``warmup`` epochs use r_i = 1 (plain L2), so that the residuals mean something before EM starts.
Targets are packed with their row index (``pack_targets``) so that the loss can look up each sample's r_i:

    dgum = DeepGUM(model, x_train, y_train, warmup=1)
    trainer = Trainer(model, opt, dgum.loss, metrics=(), callbacks=[dgum.callback()])
    trainer.fit(DataLoader(TensorDataset(x_train, dgum.packed_targets), ...), val_loader, epochs=30)
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import module_device
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor
from handgrad.robust.gum import GaussianUniformMixture
from handgrad.robust.losses import gum_loss, mad_scale
from handgrad.train.callbacks import Callback


def pack_targets(y: numpy.ndarray) -> numpy.ndarray:
    """(N,) or (N, M) targets -> (N, M + 1) float64 with the row index in the last column."""
    y2 = numpy.asarray(y, dtype=numpy.float64)
    y2 = y2[:, None] if y2.ndim == 1 else y2
    return numpy.concatenate([y2, numpy.arange(len(y2), dtype=numpy.float64)[:, None]], 1)


class DeepGUM:
    """Holds the GUM, the training set and the current responsibilities r (N,); see the module docstring.

    Args:
        model: the network phi (any ``Module``); its output must have the targets' shape ((N,) or (N, M), or
            (N, 1) for scalar targets).
        x, y: the training inputs and (possibly contaminated) targets, NumPy arrays.
        gum: a ``GaussianUniformMixture`` (default: ``from_targets(y)`` with rho = 0.5).
        warmup: epochs of plain L2 before EM starts.
        em_iterations: EM iterations on nu per epoch, the network fixed.
        batch_size: for the residual pass of the E-step.
        robust_init: start Sigma from the MAD of the first residuals (see ``em_round``).
    """

    def __init__(self, model: Any, x: numpy.ndarray, y: numpy.ndarray, gum: GaussianUniformMixture | None = None,
                 warmup: int = 1, em_iterations: int = 5, batch_size: int = 1000, robust_init: bool = True) -> None:
        self.model, self.x = model, x
        self.y = numpy.asarray(y, dtype=numpy.float64)
        if len(self.x) != len(self.y):
            raise ValueError(f"DeepGUM: {len(self.x)} inputs but {len(self.y)} targets")
        self.gum = gum if gum is not None else GaussianUniformMixture.from_targets(self.y, rho=0.5)
        self.warmup, self.em_iterations, self.batch_size = int(warmup), int(em_iterations), batch_size
        self.robust_init = robust_init
        self.r = numpy.ones(len(self.y))
        self.packed_targets = pack_targets(self.y)
        self.log: list[dict[str, float]] = []

    def predict(self, x: numpy.ndarray) -> numpy.ndarray:
        was = getattr(self.model, "training", True)
        self.model.eval()
        out = []
        dev = module_device(self.model)
        with no_grad():
            for k in range(0, len(x), self.batch_size):
                out.append(self.model(Tensor(dev.send(x[k : k + self.batch_size]))).numpy().astype(numpy.float64))
        self.model.train(was)
        p = numpy.concatenate(out)
        return p.reshape(self.y.shape) if p.size == self.y.size else p

    def residuals(self) -> numpy.ndarray:
        return self.y - self.predict(self.x)

    def em_round(self) -> None:
        """E-step and M-nu step for the current network; updates ``self.r`` and ``self.gum``.

        At the first round Sigma starts from the residuals' MAD (squared, per dimension), not their variance:
        a robust start, so that the outliers do not inflate the inlier Gaussian before EM can separate them.
        """
        d = self.residuals()
        if not self.log and self.robust_init:
            dd = d[:, None] if d.ndim == 1 else d
            self.gum.sigma = numpy.array([mad_scale(dd[:, m]) ** 2 for m in range(dd.shape[1])])
        lls = self.gum.fit(d, n_iter=self.em_iterations, tol=0.0)
        self.r = self.gum.e_step(d)
        self.log.append({"rho": self.gum.rho, "sigma": float(self.gum.sigma[0, 0]), "gamma": self.gum.gamma,
                         "log_likelihood": lls[-1]})

    def loss(self, output: Tensor, packed: Tensor) -> Tensor:
        """gum_loss(output, y, r[idx]) with (y, idx) unpacked from the targets; 'mean' over the batch.

        Rows whose index is negative (e.g. a validation set packed with index -1) get r = 1: plain L2.
        """
        t = packed.numpy()
        idx = t[:, -1].astype(numpy.int64)
        y = t[:, :-1]
        r = numpy.where(idx >= 0, self.r[numpy.maximum(idx, 0)], 1.0)
        out = output
        if out.ndim == 2 and y.shape[1] == 1 and out.shape[1] == 1:
            out = out.reshape(out.shape[0])
            y = y[:, 0]
        return gum_loss(out, Tensor(out.device.send(y.astype(out.dtype))), r.astype(out.dtype))

    def callback(self) -> Callback:
        dg = self

        class _EM(Callback):
            def on_epoch_start(self, epoch: int) -> None:
                if epoch > dg.warmup:
                    dg.em_round()

        return _EM()


__all__ = ["DeepGUM", "pack_targets"]
