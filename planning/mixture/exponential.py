"""Exponential mixing law (Ye et al. 2025, "Data Mixing Laws"; laws.md section 2).

``L_i(r) = c_i + k_i * exp(sum_j t_ij r_j)`` per validation domain, r on the simplex. Convex in r
for ``k_i > 0`` (enforced: ``k = exp(log_k)``), so a target ``sum_i w_i L_i(r)`` with ``w >= 0``
is convex. Because ``sum_j r_j = 1``, adding a constant to every ``t_ij`` and subtracting it from
``log k_i`` leaves the law unchanged: intervals on single ``t_ij`` are therefore not meaningful;
report intervals on predictions.
"""

from __future__ import annotations

from typing import Any

import cvxpy as cp
import numpy as np

from mixplan.planning.mixture.base import MixtureLaw

T_BOUND = 50.0


def exponential_model(
    theta: np.ndarray, mixture: np.ndarray, *, jac: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``c + exp(log_k + mixture @ t)``; ``theta = [c, log_k, t_1..S]``."""
    theta = np.asarray(theta, dtype=float)
    exponent = theta[..., 1, None] + np.einsum("rs,...s->...r", mixture, theta[..., 2:])
    term = np.exp(np.minimum(exponent, 700.0))
    prediction = theta[..., 0, None] + term
    if not jac:
        return prediction
    column = term[..., None]
    jacobian = np.concatenate([np.ones(column.shape), column, column * mixture], axis=-1)
    return prediction, jacobian


class ExponentialLaw(MixtureLaw):
    """``L_i(r) = c_i + k_i exp(t_i . r)`` per domain."""

    name = "exponential"

    def param_names(self, n_sources: int) -> list[str]:
        """``c``, ``log_k``, ``t[source]``."""
        return ["c", "log_k"] + [f"t[{s}]" for s in self.sources_ or range(n_sources)]

    def model(
        self, theta: np.ndarray, mixture: np.ndarray, *, jac: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """See :func:`exponential_model`."""
        return exponential_model(theta, mixture, jac=jac)

    def starts(self, losses: np.ndarray, inputs: Any) -> np.ndarray:
        """For c at fractions of the lowest loss, (log k, t) from least squares on log(L - c)."""
        mixture = np.asarray(inputs)
        grid = []
        for fraction in (0.0, 0.5, 0.8, 0.9, 0.97):
            c = fraction * losses.min()
            solution, *_ = np.linalg.lstsq(mixture, np.log(losses - c), rcond=None)
            # mixture rows sum to 1, so the intercept lives in t; move its mean to log_k
            offset = solution.mean()
            grid.append(np.r_[c, offset, np.clip(solution - offset, -T_BOUND, T_BOUND)])
        return np.array(grid)

    def bounds(self, losses: np.ndarray, n_sources: int) -> np.ndarray:
        """``0 <= c < min loss``, ``|log_k| <= 30``, ``|t| <= 50``."""
        return np.array(
            [(0.0, losses.min() * (1 - 1e-9)), (-30.0, 30.0)] + [(-T_BOUND, T_BOUND)] * n_sources
        )

    def domain_expression(self, theta: np.ndarray, weights: cp.Expression) -> cp.Expression:
        """``c + k exp(t @ r)``: convex (k > 0)."""
        return theta[0] + np.exp(theta[1]) * cp.exp(theta[2:] @ weights)
