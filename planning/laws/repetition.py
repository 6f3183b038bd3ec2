"""Repeated data (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models").

laws.md section 1.4::

    L(N, D, U) = E + A / N'^alpha + B / D'^beta
    D' = U + U R_D* (1 - exp(-R_D / R_D*)),    R_D = max(D/U - 1, 0)
    N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)), U_N = min(N, N_opt(U)), R_N = max(N/U_N - 1, 0)

where ``N_opt(U)`` is the compute-optimal parameter count for U tokens under the Chinchilla
allocation of the same (E, A, B, alpha, beta): ``N_opt(D) = (D G)^(beta/alpha) G`` with
``G = (alpha A / (beta B))^(1/(alpha+beta))`` (datablations README, ``D_to_N``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixplan.planning.laws.base import Law, as_float_array, register_law


def effective_tokens(
    tokens: np.ndarray | float, unique_tokens: np.ndarray | float, rd_star: float
) -> np.ndarray:
    """Effective data ``D' = U_D + U_D R_D* (1 - exp(-R_D/R_D*))``.

    ``U_D = min(D, U)`` are the fresh tokens seen (as in the datablations code: within the first
    epoch every token is fresh, so ``D' = D``) and ``R_D = D/U_D - 1`` the repetitions past the
    first epoch. Concave and non-decreasing in D; tends to ``U (1 + R_D*)`` as epochs grow.
    """
    d = as_float_array(tokens)
    fresh = np.minimum(d, as_float_array(unique_tokens))
    safe = np.where(fresh > 0, fresh, 1.0)
    repeats = np.maximum(d / safe - 1.0, 0.0)
    return fresh + fresh * rd_star * (1.0 - np.exp(-repeats / rd_star))


def optimal_params_for_tokens(
    tokens: np.ndarray | float, *, A: float, B: float, alpha: float, beta: float
) -> np.ndarray:
    """Chinchilla-optimal N for D tokens: ``(D G)^(beta/alpha) G`` (datablations ``D_to_N``)."""
    g = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    return (as_float_array(tokens) * g) ** (beta / alpha) * g


def effective_params(
    params: np.ndarray | float,
    unique_tokens: np.ndarray | float,
    rn_star: float,
    *,
    A: float,
    B: float,
    alpha: float,
    beta: float,
) -> np.ndarray:
    """Effective parameters ``N' = U_N + U_N R_N* (1 - exp(-R_N/R_N*))``.

    ``U_N = min(N, N_opt(U))`` (the parameters worth training on U unique tokens) and
    ``R_N = max(N/U_N - 1, 0)``; excess parameters decay in value with scale R_N*.
    """
    n = as_float_array(params)
    u_n = np.minimum(n, optimal_params_for_tokens(unique_tokens, A=A, B=B, alpha=alpha, beta=beta))
    repeats = np.maximum(n / u_n - 1.0, 0.0)
    return u_n + u_n * rn_star * (1.0 - np.exp(-repeats / rn_star))


@register_law
@dataclass(frozen=True)
class MuennighoffLaw(Law):
    """``L(N, D, U) = E + A / N'^alpha + B / D'^beta`` (effective N', D'; see module doc)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    rd_star: float
    rn_star: float

    name = "muennighoff"

    def effective_tokens(
        self, tokens: np.ndarray | float, unique_tokens: np.ndarray | float
    ) -> np.ndarray:
        """D' for this law's R_D*."""
        return effective_tokens(tokens, unique_tokens, self.rd_star)

    def effective_params(
        self, params: np.ndarray | float, unique_tokens: np.ndarray | float
    ) -> np.ndarray:
        """N' for this law's R_N* and allocation constants."""
        return effective_params(
            params,
            unique_tokens,
            self.rn_star,
            A=self.A,
            B=self.B,
            alpha=self.alpha,
            beta=self.beta,
        )

    def predict(
        self,
        params: np.ndarray | float,
        tokens: np.ndarray | float,
        unique_tokens: np.ndarray | float,
    ) -> np.ndarray:
        """Loss at N params, D total tokens drawn from U unique tokens (vectorised)."""
        n_eff = self.effective_params(params, unique_tokens)
        d_eff = self.effective_tokens(tokens, unique_tokens)
        return self.E + self.A * n_eff ** (-self.alpha) + self.B * d_eff ** (-self.beta)


_a, _b, _e = 6.255414, 7.3049974, 0.6254804
DATABLATIONS = MuennighoffLaw(
    E=float(np.exp(_e)),
    A=float(np.exp(_a)),
    B=float(np.exp(_b)),
    alpha=0.3526596,
    beta=0.3526596,
    rd_star=15.387756,
    rn_star=5.309743,
)
"""Muennighoff et al. 2023 published fit (datablations README: a, b, e, alpha, beta, R_D*, R_N*)."""
