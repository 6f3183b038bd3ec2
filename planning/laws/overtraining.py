"""Over-training and downstream error (Gadre et al. 2024), laws.md section 1.3.

With ``M = D / N`` tokens per parameter and one shared exponent ``eta < 0``::

    L(N, M) = E + a N^eta + b 6^(eta/2) (M N)^eta

a Chinchilla form with tied exponents written in tokens per parameter. The downstream law maps
loss to average top-1 error: ``err(L) = eps - k exp(-gamma L)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixplan.planning.laws.base import Law, as_float_array, register_law


@register_law
@dataclass(frozen=True)
class GadreLaw(Law):
    """``L(N, M) = E + a N^eta + b 6^(eta/2) (M N)^eta``, M tokens per parameter, eta < 0."""

    E: float
    a: float
    b: float
    eta: float

    name = "gadre"

    def predict(
        self, params: np.ndarray | float, tokens_per_param: np.ndarray | float
    ) -> np.ndarray:
        """Loss at ``params`` parameters trained on ``tokens_per_param * params`` tokens."""
        n = as_float_array(params)
        m = as_float_array(tokens_per_param)
        return self.E + self.a * n**self.eta + self.b * 6.0 ** (self.eta / 2) * (m * n) ** self.eta

    def predict_tokens(self, params: np.ndarray | float, tokens: np.ndarray | float) -> np.ndarray:
        """Same law addressed by tokens D instead of M = D/N."""
        n = as_float_array(params)
        return self.predict(n, as_float_array(tokens) / n)


@register_law
@dataclass(frozen=True)
class DownstreamErrorLaw(Law):
    """``err(L) = eps - k exp(-gamma L)``: average top-1 downstream error from loss."""

    eps: float
    k: float
    gamma: float

    name = "downstream_error"

    def predict(self, loss: np.ndarray | float) -> np.ndarray:
        """Average top-1 error at ``loss`` (nats per token)."""
        return self.eps - self.k * np.exp(-self.gamma * as_float_array(loss))

    def required_loss(self, error: np.ndarray | float) -> np.ndarray:
        """The loss at which the error falls to ``error`` (the inverse of :meth:`predict`);
        NaN for errors at or above ``eps`` (the law's error at infinite loss) or at or below
        ``eps - k`` (its error at zero loss), which no loss reaches."""
        err = as_float_array(error)
        ratio = (self.eps - err) / self.k
        ok = (ratio > 0) & (ratio < 1)
        return np.where(ok, -np.log(np.where(ok, ratio, 0.5)) / self.gamma, np.nan)


@register_law
@dataclass(frozen=True)
class SigmoidErrorLaw(Law):
    """``err(L) = floor + (ceiling - floor) / (1 + exp(-slope (L - midpoint)))``: a logistic
    alternative to Gadre's law that saturates at both ends (chance-level error at high loss)."""

    floor: float
    ceiling: float
    slope: float
    midpoint: float

    name = "downstream_sigmoid"

    def predict(self, loss: np.ndarray | float) -> np.ndarray:
        """Downstream error at ``loss`` (nats per token)."""
        z = -self.slope * (as_float_array(loss) - self.midpoint)
        return self.floor + (self.ceiling - self.floor) / (1 + np.exp(z))

    def required_loss(self, error: np.ndarray | float) -> np.ndarray:
        """The loss at which the error equals ``error`` (NaN outside ``(floor, ceiling)``)."""
        err = as_float_array(error)
        frac = (err - self.floor) / (self.ceiling - self.floor)
        ok = (frac > 0) & (frac < 1)
        safe = np.where(ok, frac, 0.5)
        return np.where(ok, self.midpoint + np.log(safe / (1 - safe)) / self.slope, np.nan)
