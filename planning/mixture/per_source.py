"""Per-source token law (AutoScale-style; laws.md section 2).

``L(p) = L_inf + sum_j B_j (N0_j + D p_j)^(-gamma_j)``: each source's contribution is a power law
in the tokens it supplies, ``D p_j``, with an offset ``N0_j`` (what the other sources already
teach about this domain). ``B_j > 0`` and ``gamma_j > 0`` make every term convex and decreasing in
``p_j``, so the law is convex in p (cvxpy: ``power(x, -gamma)`` with ``x > 0``). The published
form fixes ``B_j = 1``; the free amplitude absorbs the token unit. Tokens are measured in
``TOKENS_UNIT`` inside the law; ``tokens`` (the run's D) defaults to 1 unit when unknown.
"""

from __future__ import annotations

from typing import Any

import cvxpy as cp
import numpy as np

from mixplan.planning.errors import SpecError
from mixplan.planning.mixture.base import MixtureLaw
from mixplan.planning.mixture.data import MixtureData

TOKENS_UNIT = 1e9
GAMMA_MAX = 3.0


def per_source_model(
    theta: np.ndarray, source_tokens: np.ndarray, *, jac: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``L_inf + sum_j exp(logB_j) (exp(logN0_j) + T_j)^(-gamma_j)``.

    ``theta = [L_inf, logB(S), logN0(S), gamma(S)]``; ``source_tokens`` is ``D p_j`` in
    ``TOKENS_UNIT``, shape ``(runs, S)``.
    """
    theta = np.asarray(theta, dtype=float)
    sources = source_tokens.shape[1]
    log_b = theta[..., 1 : sources + 1]
    offset = np.exp(theta[..., sources + 1 : 2 * sources + 1])
    gamma = theta[..., 2 * sources + 1 :]
    base = offset[..., None, :] + source_tokens  # (..., runs, S)
    log_base = np.log(base)
    terms = np.exp(log_b[..., None, :] - gamma[..., None, :] * log_base)
    prediction = theta[..., 0, None] + terms.sum(axis=-1)
    if not jac:
        return prediction
    jacobian = np.concatenate(
        [
            np.ones((*terms.shape[:-1], 1)),
            terms,
            -gamma[..., None, :] * terms / base * offset[..., None, :],
            -terms * log_base,
        ],
        axis=-1,
    )
    return prediction, jacobian


class PerSourceLaw(MixtureLaw):
    """``L_i(p) = L_inf,i + sum_j B_ij (N0_ij + D p_j)^(-gamma_ij)`` per domain.

    Parameters
    ----------
    tokens
        Training tokens D at which :meth:`predict` and :meth:`loss_expression` evaluate the law;
        ``None`` uses the median D of the fitted runs.
    """

    name = "per-source tokens"

    def __init__(
        self,
        *,
        tokens: float | None = None,
        delta: float = 1e-3,
        n_bootstrap: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(delta=delta, n_bootstrap=n_bootstrap, seed=seed)
        self.tokens = tokens

    def options(self) -> dict[str, Any]:
        """Constructor options."""
        return {**super().options(), "tokens": self.tokens}

    def param_names(self, n_sources: int) -> list[str]:
        """``L_inf``, ``logB[source]``, ``logN0[source]``, ``gamma[source]``."""
        names = list(self.sources_) or [str(j) for j in range(n_sources)]
        return (
            ["L_inf"]
            + [f"logB[{s}]" for s in names]
            + [f"logN0[{s}]" for s in names]
            + [f"gamma[{s}]" for s in names]
        )

    def _tokens_units(self) -> float:
        return (self.tokens if self.tokens is not None else TOKENS_UNIT) / TOKENS_UNIT

    def inputs(self, data: MixtureData) -> Any:
        """Tokens per source ``D p_j`` (D unknown -> the law's ``tokens``)."""
        tokens = np.where(np.isfinite(data.tokens), data.tokens, np.nan)
        if self.tokens is None and np.all(np.isfinite(tokens)):
            self.tokens = float(np.median(tokens))
        tokens = np.where(np.isfinite(tokens), tokens, self._tokens_units() * TOKENS_UNIT)
        return data.mixture * (tokens / TOKENS_UNIT)[:, None]

    def inputs_for(self, weights: np.ndarray) -> Any:
        """Tokens per source at the law's ``tokens``."""
        return weights * self._tokens_units()

    def model(
        self, theta: np.ndarray, inputs: Any, *, jac: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """See :func:`per_source_model`."""
        return per_source_model(theta, inputs, jac=jac)

    def starts(self, losses: np.ndarray, inputs: Any) -> np.ndarray:
        """L_inf at fractions of the lowest loss; equal B per source, shared N0 and gamma."""
        sources = inputs.shape[1]
        grid = []
        for fraction in (0.3, 0.6, 0.85):
            floor = fraction * losses.min()
            for log_offset in (np.log(1e-3), np.log(1e-1)):
                for gamma in (0.2, 0.6):
                    mean_term = np.mean(np.sum((np.exp(log_offset) + inputs) ** (-gamma), axis=1))
                    log_b = np.log(max(losses.mean() - floor, 1e-3) / mean_term)
                    grid.append(
                        np.r_[
                            floor,
                            np.full(sources, log_b),
                            np.full(sources, log_offset),
                            np.full(sources, gamma),
                        ]
                    )
        return np.array(grid)

    def bounds(self, losses: np.ndarray, n_sources: int) -> np.ndarray:
        """``0 <= L_inf < min loss``, ``N0 >= 1e-6`` units, ``0.01 <= gamma <= GAMMA_MAX``."""
        return np.array(
            [(0.0, losses.min() * (1 - 1e-9))]
            + [(-30.0, 10.0)] * n_sources
            + [(np.log(1e-6), np.log(1e3))] * n_sources
            + [(0.01, GAMMA_MAX)] * n_sources
        )

    def domain_expression(self, theta: np.ndarray, weights: cp.Expression) -> cp.Expression:
        """``L_inf + sum_j K_j power(1 + (D / N0_j) p_j, -gamma_j)``, ``K_j = B_j N0_j^-gamma_j``.

        The same law scaled so that each term's coefficient is its loss at ``p_j = 0`` (better
        conditioned for the conic solver than ``B_j (N0_j + D p_j)^-gamma_j``); convex.
        """
        sources = len(self.sources_)
        if sources == 0:
            raise SpecError(f"{self.name}: not fitted")
        b = np.exp(theta[1 : sources + 1])
        offset = np.exp(theta[sources + 1 : 2 * sources + 1])
        gamma = theta[2 * sources + 1 :]
        units = self._tokens_units()
        parts = [
            b[j]
            * offset[j] ** (-gamma[j])
            * cp.power(1 + (units / offset[j]) * weights[j], -gamma[j], approx=False)
            for j in range(sources)
        ]
        return theta[0] + cp.sum(cp.hstack(parts))
