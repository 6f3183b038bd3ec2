"""Mixture laws: each validation domain's loss as a function of the training mixture.

Modules (laws.md section 2):

- ``exponential``: ``c_i + k_i exp(t_i . r)`` (Ye et al. 2025).
- ``additive``: ``E + 1/(sum_j C_j h_j^gamma_j)`` at one scale, and with ``A/N^alpha + B/D^beta``
  (joint variant: A, B linear in h) (Shukor et al. 2025).
- ``per_source``: ``L_inf + sum_j B_j (N0_j + D p_j)^-gamma_j`` (AutoScale-style).
- ``nested``: the nested route (step law -> size law -> mixture law) and the joint route.
- ``baselines``: RegMix's LightGBM regression and a linear model (comparison only).
- ``evaluation``: Spearman, mean relative error, held-out comparison tables.
- ``data``: arrays from the lake tables; ``engine``: adapter to planning/fitting; ``base``: the
  shared fitting / bootstrap / planner-hook code.

Every law exposes ``predict(weights)`` and ``loss_expression(weights, domain_weights)`` (a convex
DCP expression of the user-weighted target); the bounds of every fit keep the law convex.
"""

from mixplan.planning.mixture.additive import AdditiveLaw, AdditiveScaleLaw
from mixplan.planning.mixture.baselines import LightGBMBaseline, LinearBaseline
from mixplan.planning.mixture.data import MixtureData, domain_weight_vector, match_domains
from mixplan.planning.mixture.evaluation import compare, comparison_table, evaluate
from mixplan.planning.mixture.exponential import ExponentialLaw
from mixplan.planning.mixture.nested import JointRoute, MixtureCurves, NestedRoute, compare_routes
from mixplan.planning.mixture.per_source import PerSourceLaw

__all__ = [
    "AdditiveLaw",
    "AdditiveScaleLaw",
    "ExponentialLaw",
    "JointRoute",
    "LightGBMBaseline",
    "LinearBaseline",
    "MixtureCurves",
    "MixtureData",
    "NestedRoute",
    "PerSourceLaw",
    "compare",
    "compare_routes",
    "comparison_table",
    "domain_weight_vector",
    "evaluate",
    "match_domains",
]
