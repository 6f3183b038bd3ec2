"""Pareto frontier of predicted loss against cost over a budget sweep (one DPP program)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixplan.planning.programs.budget import BudgetProgram
from mixplan.planning.programs.common import PlanStatus, ScaleLaw


@dataclass(frozen=True)
class FrontierPoint:
    """One budget on the frontier: the loss-optimal (N, D) and what it costs."""

    flops: float
    params: float
    tokens: float
    loss: float
    dollars: float | None
    status: PlanStatus


def frontier(
    law: ScaleLaw,
    budgets: np.ndarray | list[float],
    *,
    dollars_per_flop: float | None = None,
    inference_tokens: float = 0.0,
    program: BudgetProgram | None = None,
    **limits: float | None,
) -> list[FrontierPoint]:
    """Solve the budget program at every budget (re-solving one built problem).

    Points are Pareto-optimal by construction (each is the lowest loss at its cost); budgets
    past a binding limit give the same (N, D) and are kept so the flattening is visible.

    Parameters
    ----------
    law
        Chinchilla-form law.
    budgets
        Budgets in FLOPs (training plus inference when ``inference_tokens > 0``).
    dollars_per_flop
        Price of a delivered FLOP (``$/h / (3600 peak MFU)``) to report dollars.
    limits
        Passed to `BudgetProgram.solve` (``max_params``, ``max_tokens``, ...).
    """
    program = program or BudgetProgram()
    points = []
    for flops in np.asarray(budgets, dtype=float):
        r = program.solve(law, flops=float(flops), inference_tokens=inference_tokens, **limits)
        total = r.train_flops + r.inference_flops
        dollars = total * dollars_per_flop if dollars_per_flop is not None else None
        points.append(FrontierPoint(float(flops), r.params, r.tokens, r.loss, dollars, r.status))
    return points
