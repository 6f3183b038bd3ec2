"""Convex planning programs (laws.md section 3), one module per program, each built once with
``cp.Parameter``s so what-ifs re-solve without rebuilding. Expected outcomes are `PlanStatus`es.
"""

from mixplan.planning.programs.budget import BudgetProgram, BudgetResult, closed_form, robust_budget
from mixplan.planning.programs.common import PlanStatus
from mixplan.planning.programs.frontier import FrontierPoint, frontier
from mixplan.planning.programs.inference import (
    PEAK_FLOPS,
    TargetProgram,
    TargetResult,
    dollars_per_flop,
    inference_equivalent_tokens,
)
from mixplan.planning.programs.mixture import (
    ExponentialMixture,
    MixtureProgram,
    MixtureResult,
    Source,
    simplex_grid,
)
from mixplan.planning.programs.repetition import RepetitionResult, repetition_allocation
from mixplan.planning.programs.vocabulary import VocabularyProgram, VocabularyResult

__all__ = [
    "PEAK_FLOPS",
    "BudgetProgram",
    "BudgetResult",
    "ExponentialMixture",
    "FrontierPoint",
    "MixtureProgram",
    "MixtureResult",
    "PlanStatus",
    "RepetitionResult",
    "Source",
    "TargetProgram",
    "TargetResult",
    "VocabularyProgram",
    "VocabularyResult",
    "closed_form",
    "dollars_per_flop",
    "frontier",
    "inference_equivalent_tokens",
    "repetition_allocation",
    "robust_budget",
    "simplex_grid",
]
