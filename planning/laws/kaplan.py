"""Kaplan et al. 2020 joint law, laws.md section 1.2.

``L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D`` with N **non-embedding**
parameters and D tokens; loss in nats per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixplan.planning.laws.base import Law, as_float_array, register_law


@register_law
@dataclass(frozen=True)
class KaplanLaw(Law):
    """``L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D`` (N non-embedding)."""

    N_c: float
    D_c: float
    alpha_N: float  # noqa: N815 (the paper's symbol)
    alpha_D: float  # noqa: N815

    name = "kaplan"

    def predict(self, params: np.ndarray | float, tokens: np.ndarray | float) -> np.ndarray:
        """Loss at ``params`` non-embedding parameters and ``tokens`` tokens (vectorised)."""
        n = as_float_array(params)
        d = as_float_array(tokens)
        inner = (self.N_c / n) ** (self.alpha_N / self.alpha_D) + self.D_c / d
        return inner**self.alpha_D


KAPLAN_JOINT = KaplanLaw(N_c=6.4e13, D_c=1.8e13, alpha_N=0.076, alpha_D=0.103)
"""Kaplan et al. 2020, Table 2: the joint L(N, D) fit (alpha_D 0.103 differs from the 1-D fit)."""
KAPLAN_SINGLE = KaplanLaw(N_c=8.8e13, D_c=5.4e13, alpha_N=0.076, alpha_D=0.095)
"""The single-variable constants (L(N), L(D)) plugged into the joint form; not a joint fit."""
