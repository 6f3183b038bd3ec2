"""Chinchilla form (Hoffmann et al. 2022, approach 3), laws.md section 1.1.

``L(N, D) = E + A / N^alpha + B / D^beta`` with N parameters and D training tokens; loss in
nats per token. Compute-optimal allocation at ``C = 6 N D`` (closed form)::

    G = (alpha A / (beta B))^(1 / (alpha + beta))
    N_opt = G (C/6)^(beta / (alpha + beta)),  D_opt = (C/6)^(alpha / (alpha + beta)) / G
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixplan.planning.laws.base import Law, as_float_array, register_law


@register_law
@dataclass(frozen=True)
class ChinchillaLaw(Law):
    """``L(N, D) = E + A / N^alpha + B / D^beta``.

    Parameters
    ----------
    E : irreducible loss (nats per token).
    A, B : coefficients of the parameter and data terms.
    alpha, beta : exponents of N (parameters) and D (tokens).
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    name = "chinchilla"

    def predict(self, params: np.ndarray | float, tokens: np.ndarray | float) -> np.ndarray:
        """Loss at ``params`` parameters trained on ``tokens`` tokens (broadcast, vectorised)."""
        n = as_float_array(params)
        d = as_float_array(tokens)
        return self.E + self.A * n ** (-self.alpha) + self.B * d ** (-self.beta)

    @property
    def G(self) -> float:  # noqa: N802 (the paper's symbol)
        """``(alpha A / (beta B))^(1/(alpha+beta))``, the allocation constant (laws.md 1.1)."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def compute_optimal(self, flops: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Loss-minimising ``(params, tokens)`` at ``flops = 6 N D`` (closed form)."""
        c6 = as_float_array(flops) / 6.0
        s = self.alpha + self.beta
        params = self.G * c6 ** (self.beta / s)
        tokens = c6 ** (self.alpha / s) / self.G
        return params, tokens

    def tokens_per_param(self, flops: np.ndarray | float) -> np.ndarray:
        """Compute-optimal tokens per parameter ``D_opt / N_opt`` at ``flops``."""
        params, tokens = self.compute_optimal(flops)
        return tokens / params


HOFFMANN = ChinchillaLaw(
    E=1.6933737, A=406.4010175, B=410.7228269, alpha=0.33917084, beta=0.2849083
)
"""Hoffmann et al. 2022, unrounded constants."""
HOFFMANN_ROUNDED = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
"""Hoffmann et al. 2022 as printed in the paper (rounded)."""
SARDANA = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.336, beta=0.283)
"""Sardana et al. 2024 (beyond-chinchilla): rounded A, B, E with alpha .336, beta .283 (G1-G7)."""
BESIROGLU = ChinchillaLaw(E=1.8172355, A=477.84171, B=2143.86379, alpha=0.34731266, beta=0.36718262)
"""Besiroglu et al. 2024, "replicate exactly" fit on the 240 points (summed Huber, G8)."""
EPOCH = ChinchillaLaw(E=1.81686, A=482.006, B=2085.434, alpha=0.34781, beta=0.36585)
"""Besiroglu et al. 2024 headline (maximum likelihood, Huber-shaped density)."""
