"""Planning programs (laws.md section 3): the allocation core every mode uses (`allocation`,
reading one `Limits`), and the convex programs, one module each, built once with
``cp.Parameter``s so re-solves do not rebuild. Expected outcomes are `PlanStatus`es.
"""

from mixplan.planning.programs.allocation import (
    Allocation,
    LossModel,
    allocate_budget,
    allocate_target,
)
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
from mixplan.planning.programs.limits import Limits
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
    "Allocation",
    "Limits",
    "LossModel",
    "allocate_budget",
    "allocate_target",
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
