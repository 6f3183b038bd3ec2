"""Repetition-aware allocation (Muennighoff et al. 2023, laws.md 1.4, G10).

At a budget ``C = 6ND`` with U unique tokens, ``L(C/(6D), D, U)`` is searched in 1-D over
``log D``: a vectorised grid (the published method used a 500-point grid) brackets the optimum,
then golden section refines it, so the answer is never worse than a grid's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mixplan.planning.laws.repetition import MuennighoffLaw
from mixplan.planning.programs.common import PlanStatus, bracket_on_grid, golden_section


@dataclass(frozen=True)
class RepetitionResult:
    """The loss-optimal (N, D) under repeated data."""

    status: PlanStatus
    params: float
    tokens: float
    unique_tokens: float
    loss: float
    flops: float
    binding: tuple[str, ...] = ()
    reason: str = ""

    @property
    def epochs(self) -> float:
        """Passes over the unique data, ``D / U``."""
        return self.tokens / self.unique_tokens


def repetition_allocation(
    law: MuennighoffLaw,
    *,
    flops: float,
    unique_tokens: float,
    max_epochs: float | None = None,
    max_params: float | None = None,
    grid_points: int = 513,
) -> RepetitionResult:
    """Loss-optimal (N, D) at ``flops`` with ``unique_tokens`` of data (repeats allowed).

    Parameters
    ----------
    law
        A Muennighoff law (effective tokens and parameters).
    flops
        Training budget, ``C = 6 N D``.
    unique_tokens
        U, the unique tokens available.
    max_epochs
        Cap on ``D / U`` (``None``: uncapped).
    max_params
        Cap on N (``None``: uncapped), i.e. ``D >= C / (6 N_max)``.
    """
    if flops <= 0 or unique_tokens <= 0:
        raise ValueError("flops and unique_tokens must be positive")
    hi = math.log(flops / 6.0)  # N >= 1
    lo = 0.0
    binding: list[str] = []
    if max_epochs is not None:
        hi = min(hi, math.log(unique_tokens * max_epochs))
    if max_params is not None:
        lo = max(lo, math.log(flops / (6.0 * max_params)))
    if lo > hi:
        nan = float("nan")
        return RepetitionResult(
            PlanStatus.INFEASIBLE,
            nan,
            nan,
            unique_tokens,
            nan,
            flops,
            ("max_params", "max_epochs"),
            "max_params needs more tokens than max_epochs allows at this budget",
        )

    def loss(log_tokens):
        tokens = np.exp(log_tokens)
        return law.predict(flops / (6.0 * tokens), tokens, unique_tokens)

    grid = np.linspace(lo, hi, grid_points)
    a, b = bracket_on_grid(loss(grid), grid)
    log_tokens, best, _ = golden_section(lambda x: float(loss(x)), a, b, tol=1e-9)
    if abs(log_tokens - hi) < 1e-6 and max_epochs is not None:
        binding.append("max_epochs")
    if abs(log_tokens - lo) < 1e-6 and max_params is not None:
        binding.append("max_params")
    tokens = float(np.exp(log_tokens))
    return RepetitionResult(
        status=PlanStatus.OPTIMAL,
        params=flops / (6.0 * tokens),
        tokens=tokens,
        unique_tokens=unique_tokens,
        loss=float(best),
        flops=flops,
        binding=tuple(binding),
    )
