"""Mixture laws: each validation domain's loss as a function of the training mixture.

Modules (laws.md section 2):

- ``exponential``: ``c_i + k_i exp(t_i . r)`` (Ye et al. 2025).
- ``additive``: ``E + 1/(sum_j C_j h_j^gamma_j)`` at one scale, and with ``A/N^alpha + B/D^beta``
  (joint variant: A, B linear in h) (Shukor et al. 2025).
- ``per_source``: ``L_inf + sum_j B_j (N0_j + D p_j)^-gamma_j`` (AutoScale-style).
- ``nested``: the nested route (step law -> size law -> mixture law) and the joint route.
- ``steps``: each run's loss at a target D; the backtested error of extrapolating a curve.
- ``scale``: the scale route, the additive law in (mixture, N) across all sizes at that D.
- ``curves``: the curves route, Kaplan's joint law in (N, D) per mixture on every checkpoint
  (identifies the size exponent from two sizes), then a mixture law at the target.
- ``selection``: leave-largest-scale-out scores of the routes, and the best one.
- ``baselines``: RegMix's LightGBM regression (also on mixture and log N across sizes) and a
  linear model (comparison only).
- ``evaluation``: Spearman, mean relative error, held-out comparison tables.
- ``data``: arrays from the lake tables; ``engine``: adapter to planning/fitting; ``base``: the
  shared fitting / bootstrap / planner-hook code.

Every law exposes ``predict(weights)`` and ``loss_expression(weights, domain_weights)`` (a convex
DCP expression of the user-weighted target); the bounds of every fit keep the law convex.
"""

from mixplan.planning.mixture.additive import AdditiveLaw, AdditiveScaleLaw
from mixplan.planning.mixture.baselines import (
    LightGBMBaseline,
    LightGBMScaleBaseline,
    LinearBaseline,
)
from mixplan.planning.mixture.curves import CurvesRoute
from mixplan.planning.mixture.data import MixtureData, domain_weight_vector, match_domains
from mixplan.planning.mixture.evaluation import compare, comparison_table, evaluate
from mixplan.planning.mixture.exponential import ExponentialLaw
from mixplan.planning.mixture.nested import JointRoute, MixtureCurves, NestedRoute, compare_routes
from mixplan.planning.mixture.per_source import PerSourceLaw
from mixplan.planning.mixture.scale import ScaleRoute
from mixplan.planning.mixture.selection import best_route, leave_largest_scale_out
from mixplan.planning.mixture.steps import losses_at_tokens, step_backtest

__all__ = [
    "AdditiveLaw",
    "AdditiveScaleLaw",
    "CurvesRoute",
    "ExponentialLaw",
    "JointRoute",
    "LightGBMBaseline",
    "LightGBMScaleBaseline",
    "LinearBaseline",
    "MixtureCurves",
    "MixtureData",
    "NestedRoute",
    "PerSourceLaw",
    "ScaleRoute",
    "best_route",
    "compare",
    "compare_routes",
    "comparison_table",
    "domain_weight_vector",
    "evaluate",
    "leave_largest_scale_out",
    "losses_at_tokens",
    "match_domains",
    "step_backtest",
]
