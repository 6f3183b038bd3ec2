"""Scaling laws: one module per family, each a frozen dataclass with ``predict`` (laws.md)."""

from mixplan.planning.laws.base import LAW_REGISTRY, Law, law_from_dict
from mixplan.planning.laws.chinchilla import (
    BESIROGLU,
    EPOCH,
    HOFFMANN,
    HOFFMANN_ROUNDED,
    SARDANA,
    ChinchillaLaw,
)
from mixplan.planning.laws.hyperparams import DEEPSEEK, STEPLAW, DeepSeekHyperparams, StepLaw
from mixplan.planning.laws.kaplan import KAPLAN_JOINT, KaplanLaw
from mixplan.planning.laws.loss_curve import LossCurveLaw, schedule_areas
from mixplan.planning.laws.overtraining import DownstreamErrorLaw, GadreLaw, SigmoidErrorLaw
from mixplan.planning.laws.repetition import (
    DATABLATIONS,
    MuennighoffLaw,
    effective_params,
    effective_tokens,
)
from mixplan.planning.laws.vocabulary import TAO, TaoLaw, tokens_per_character, width_for

__all__ = [
    "BESIROGLU",
    "DATABLATIONS",
    "DEEPSEEK",
    "EPOCH",
    "HOFFMANN",
    "HOFFMANN_ROUNDED",
    "KAPLAN_JOINT",
    "LAW_REGISTRY",
    "SARDANA",
    "STEPLAW",
    "TAO",
    "ChinchillaLaw",
    "DeepSeekHyperparams",
    "DownstreamErrorLaw",
    "SigmoidErrorLaw",
    "GadreLaw",
    "KaplanLaw",
    "Law",
    "LossCurveLaw",
    "MuennighoffLaw",
    "StepLaw",
    "TaoLaw",
    "effective_params",
    "effective_tokens",
    "law_from_dict",
    "schedule_areas",
    "tokens_per_character",
    "width_for",
]
