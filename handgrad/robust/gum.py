"""The Gaussian-uniform mixture (GUM) of DeepGUM (Lathuiliere, Mesejo, Alameda-Pineda and Horaud, 2018).

Inliers are Gaussian around the network's prediction, outliers uniform (the deck's notation)::

    p(y_i | x_i; nu, theta) = rho N(y_i; phi(x_i; theta), Sigma) + (1 - rho) U(y_i; gamma),     nu = {rho, Sigma, gamma}

with y_i in R^M, rho in (0, 1) the inlier prior, Sigma (M, M) the inlier covariance and gamma the density of the
uniform (gamma = 1 / volume of its support). Only the residuals delta_i = y_i - phi(x_i) matter for fixed theta.

EM for nu with the network fixed (this class), alternating with the M-theta step (network training on
sum_i r_i ||y_i - phi(x_i)||^2, ``handgrad.robust.losses.gum_loss``):

* E-step:   r_i = rho N(delta_i; 0, Sigma) / (rho N(delta_i; 0, Sigma) + (1 - rho) gamma)   (inlier responsibility)
* M-nu:     rho = (1/N) sum_i r_i;   Sigma = sum_i r_i delta_i delta_i^T / sum_i r_i   (the exact maximisers of the
            expected complete log-likelihood Q), and gamma by ``gamma_update``:

  - ``"range"`` (default): the uniform is a proper density on a box that must hold every residual with some
    outlier responsibility (all of them), and Q grows with gamma, so its maximiser is the smallest such box:
    1/gamma = prod_m (max_i delta_im - min_i delta_im). An exact M-step: EM never lowers the observed-data
    log-likelihood sum_i log p(y_i | x_i) for a fixed network, and ``fit`` asserts it after every iteration.
  - ``"moments"`` (the DeepGUM paper, after Coretto and Hennig): with weights (1 - r_i), C1 = mean of delta and
    C2 = mean of delta^2 per dimension, 1/gamma = prod_m 2 sqrt(3 (C2_m - C1_m^2)), the volume of a uniform with
    the outliers' first two moments. Robust to one extreme residual, but not a maximiser of Q (the likelihood
    of a free gamma is unbounded), so only the (rho, Sigma) half of each iteration is guaranteed not to lower
    the likelihood, and that is what ``fit`` asserts in this mode.
  - ``"fixed"``: gamma keeps its value (e.g. 1 / the volume of the targets' range, ``from_targets``); exact EM.

rho is kept inside [rho_min, 1 - rho_min] (a constrained maximiser of Q, still monotone) so that neither
component vanishes; a user-given rho outside (0, 1) is refused with a clear message.
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from handgrad.engine.tensor import Tensor

_LOG_2PI = math.log(2 * math.pi)
GAMMA_UPDATES = ("range", "moments", "fixed")


def _residuals(op: str, delta: Any) -> numpy.ndarray:
    d = delta.numpy() if isinstance(delta, Tensor) else numpy.asarray(delta)
    d = d.astype(numpy.float64)
    if d.ndim == 1:
        d = d[:, None]
    if d.ndim != 2 or d.shape[0] == 0:
        raise ValueError(f"{op}: residuals must be (N,) or (N, M) with N >= 1, got shape {tuple(d.shape)}")
    if not numpy.isfinite(d).all():
        raise ValueError(f"{op}: residuals contain NaN or inf")
    return d


class GaussianUniformMixture:
    """The GUM model nu = (rho, Sigma, gamma) over residuals delta = y - phi(x) in R^M.

    Args:
        rho: inlier prior, strictly inside (0, 1).
        sigma: inlier covariance, (M, M) symmetric positive definite (a scalar or (M,) gives a diagonal one).
        gamma: uniform density (1 / volume of the outlier support), > 0.
        gamma_update: ``"range"`` (exact M-step), ``"moments"`` (DeepGUM's estimate) or ``"fixed"``.
        rho_min: rho is kept in [rho_min, 1 - rho_min] by the M-step.
        var_floor: smallest variance the M-step lets Sigma reach (a perfect fit would make it singular).
    """

    def __init__(
        self,
        rho: float = 0.5,
        sigma: Any = 1.0,
        gamma: float = 1.0,
        gamma_update: str = "range",
        rho_min: float = 1e-4,
        var_floor: float = 1e-10,
    ) -> None:
        op = "GaussianUniformMixture"
        if gamma_update not in GAMMA_UPDATES:
            raise ValueError(f"{op}: gamma_update must be one of {GAMMA_UPDATES}, got {gamma_update!r}")
        if not 0 < rho_min < 0.5:
            raise ValueError(f"{op}: rho_min must be in (0, 0.5), got {rho_min}")
        self.gamma_update, self.rho_min, self.var_floor = gamma_update, float(rho_min), float(var_floor)
        self.rho = rho
        self.sigma = sigma
        self.gamma = gamma

    # -- parameters, validated on every assignment ----------------------------------------------------------
    @property
    def rho(self) -> float:
        return self._rho

    @rho.setter
    def rho(self, value: float) -> None:
        v = float(value)
        if not 0.0 < v < 1.0:
            raise ValueError(
                f"GaussianUniformMixture: rho (the inlier prior) must be in (0, 1), got {v}; at 0 or 1 one of the "
                "two components vanishes and EM cannot bring it back"
            )
        self._rho = v

    @property
    def sigma(self) -> numpy.ndarray:
        return self._sigma

    @sigma.setter
    def sigma(self, value: Any) -> None:
        s = numpy.asarray(value, dtype=numpy.float64)
        if s.ndim == 0:
            s = s.reshape(1, 1)
        elif s.ndim == 1:
            s = numpy.diag(s)
        if s.ndim != 2 or s.shape[0] != s.shape[1]:
            raise ValueError(f"GaussianUniformMixture: sigma must be a scalar, (M,) or (M, M), got {s.shape}")
        if not numpy.allclose(s, s.T) or numpy.linalg.eigvalsh(s).min() <= 0:
            raise ValueError("GaussianUniformMixture: sigma must be symmetric positive definite")
        self._sigma = s

    @property
    def gamma(self) -> float:
        return self._gamma

    @gamma.setter
    def gamma(self, value: float) -> None:
        v = float(value)
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"GaussianUniformMixture: gamma (the uniform's density) must be > 0, got {v}")
        self._gamma = v

    @property
    def dim(self) -> int:
        return self._sigma.shape[0]

    @classmethod
    def from_targets(cls, targets: Any, residuals: Any | None = None, rho: float = 0.5, **kw: Any) -> Any:
        """A starting point: gamma = 1 / volume of the targets' bounding box, Sigma = the residuals' (or
        targets') covariance, rho as given."""
        y = _residuals("GaussianUniformMixture.from_targets", targets)
        span = numpy.maximum(y.max(0) - y.min(0), 1e-12)
        d = y - y.mean(0) if residuals is None else _residuals("GaussianUniformMixture.from_targets", residuals)
        if d.shape[1] != y.shape[1]:
            raise ValueError(f"GaussianUniformMixture.from_targets: targets {y.shape} and residuals {d.shape} differ")
        cov = numpy.atleast_2d(d.T @ d / len(d)) + 1e-12 * numpy.eye(y.shape[1])
        return cls(rho=rho, sigma=cov, gamma=float(1.0 / numpy.prod(span)), **kw)

    # -- densities -------------------------------------------------------------------------------------------
    def _check_dim(self, op: str, d: numpy.ndarray) -> None:
        if d.shape[1] != self.dim:
            raise ValueError(f"{op}: residuals of dimension {d.shape[1]} but Sigma is {self._sigma.shape}")

    def _log_components(self, d: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
        """(log rho N(delta_i; 0, Sigma), log (1 - rho) gamma) per sample."""
        chol = numpy.linalg.cholesky(self._sigma)
        z = numpy.linalg.solve(chol, d.T)  # L^-1 delta
        maha = (z * z).sum(0)
        logdet = 2 * numpy.log(numpy.diag(chol)).sum()
        log_in = math.log(self._rho) - 0.5 * (self.dim * _LOG_2PI + logdet + maha)
        log_out = numpy.full_like(log_in, math.log(1 - self._rho) + math.log(self._gamma))
        return log_in, log_out

    def log_likelihood(self, residuals: Any) -> float:
        """sum_i log(rho N(delta_i; 0, Sigma) + (1 - rho) gamma): the observed-data log-likelihood."""
        d = _residuals("GaussianUniformMixture.log_likelihood", residuals)
        self._check_dim("GaussianUniformMixture.log_likelihood", d)
        a, b = self._log_components(d)
        return float(numpy.logaddexp(a, b).sum())

    def e_step(self, residuals: Any) -> numpy.ndarray:
        """r_i = rho N / (rho N + (1 - rho) gamma), the posterior probability that sample i is an inlier.  (N,)."""
        d = _residuals("GaussianUniformMixture.e_step", residuals)
        self._check_dim("GaussianUniformMixture.e_step", d)
        a, b = self._log_components(d)
        return numpy.exp(a - numpy.logaddexp(a, b))

    def m_step(self, residuals: Any, r: Any) -> None:
        """Update rho and Sigma (exact maximisers), then gamma (moments, kept only if the likelihood holds)."""
        op = "GaussianUniformMixture.m_step"
        d = _residuals(op, residuals)
        self._check_dim(op, d)
        r = numpy.asarray(r, dtype=numpy.float64)
        if r.shape != (len(d),) or not ((r >= 0) & (r <= 1)).all():
            raise ValueError(f"{op}: responsibilities must be ({len(d)},) values in [0, 1], got shape {r.shape}")
        sr = r.sum()
        # constrained maximiser over an interval that contains the current rho, so Q never drops
        lo, hi = min(self.rho_min, self._rho), max(1 - self.rho_min, self._rho)
        self._rho = float(numpy.clip(sr / len(d), lo, hi))
        if sr > 0:
            cov = (r[:, None] * d).T @ d / sr
            cov = 0.5 * (cov + cov.T)
            w, v = numpy.linalg.eigh(cov)
            self._sigma = (v * numpy.maximum(w, self.var_floor)) @ v.T
        if self.gamma_update == "range":
            g = self.range_gamma(d)
            if g is not None:
                self._gamma = g
        elif self.gamma_update == "moments":
            g = self.moment_gamma(d, r)
            if g is not None:
                self._gamma = g

    def moment_gamma(self, residuals: Any, r: Any) -> float | None:
        """DeepGUM's gamma: 1 / prod_m 2 sqrt(3 Var_w(delta_m)) with weights w_i = 1 - r_i (None if degenerate)."""
        d = _residuals("GaussianUniformMixture.moment_gamma", residuals)
        w = 1.0 - numpy.asarray(r, dtype=numpy.float64)
        sw = w.sum()
        if sw <= 1e-12:
            return None
        c1 = (w[:, None] * d).sum(0) / sw
        c2 = (w[:, None] * d * d).sum(0) / sw
        var = c2 - c1 * c1
        if (var <= 0).any():
            return None
        return float(1.0 / numpy.prod(2 * numpy.sqrt(3 * var)))

    @staticmethod
    def range_gamma(residuals: Any) -> float | None:
        """1 / prod_m (max delta_m - min delta_m): the density of the smallest box holding every residual."""
        d = _residuals("GaussianUniformMixture.range_gamma", residuals)
        span = d.max(0) - d.min(0)
        if (span <= 0).any():
            return None
        return float(1.0 / numpy.prod(span))

    def fit(self, residuals: Any, n_iter: int = 20, tol: float = 1e-8) -> list[float]:
        """Run EM on nu for fixed residuals; returns the log-likelihood before the first and after each iteration.

        Stops early when the gain falls below ``tol * |ll|``. Asserts after each iteration that the likelihood
        did not drop (for ``"moments"``: that the (rho, Sigma) update at the old gamma did not lower it).
        """
        d = _residuals("GaussianUniformMixture.fit", residuals)
        self._check_dim("GaussianUniformMixture.fit", d)
        if self.gamma_update == "range":
            g = self.range_gamma(d)
            if g is not None and g < self._gamma:
                # the box must hold every residual: start from a feasible gamma so that EM is monotone from step 1
                self._gamma = g
        history = [self.log_likelihood(d)]
        for _ in range(int(n_iter)):
            prev = history[-1]
            r = self.e_step(d)
            old_gamma = self._gamma
            self.m_step(d, r)
            ll = self.log_likelihood(d)
            check = ll
            if self.gamma_update == "moments":
                new_gamma, self._gamma = self._gamma, old_gamma
                check = self.log_likelihood(d)
                self._gamma = new_gamma
            assert check >= prev - 1e-9 * max(1.0, abs(prev)), f"GUM EM lowered the log-likelihood: {prev} -> {check}"
            history.append(ll)
            if abs(ll - prev) <= tol * max(1.0, abs(ll)):
                break
        return history

    def state_dict(self) -> dict[str, Any]:
        return {"rho": self._rho, "sigma": self._sigma.tolist(), "gamma": self._gamma}

    def __repr__(self) -> str:
        s = self._sigma
        sig = f"{s[0, 0]:.4g}" if s.shape == (1, 1) else f"{s.shape} cov"
        return f"GaussianUniformMixture(rho={self._rho:.4f}, sigma={sig}, gamma={self._gamma:.4g})"


__all__ = ["GAMMA_UPDATES", "GaussianUniformMixture"]
