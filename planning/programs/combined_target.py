"""The planner's forms of a :class:`mixplan.planning.mixture.combined.CombinedLaw`:
``sum_k v_k M_k(r)``, a nonnegative weighted sum of convex member targets.

- conic form: the weighted sum of the members' well-scaled forms (``scaled_target``);
- analytic derivatives: where every member is additive (the stacked route's members are), the
  sum is itself one :class:`AdditiveTarget` with every member's rows, each row's domain weight
  times ``v_k`` and the constants and linear terms summed; otherwise a :class:`SumTarget`
  whose value, gradient and Hessian are the weighted sums of the members'. ``None`` (the conic
  program answers) when a member has no analytic target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np

from mixplan.planning.programs.mixture_derivatives import AdditiveTarget


def combined_scaled_target(law, weights: cp.Expression, domain_weights, scaled) -> cp.Expression:
    """``sum_k v_k`` (member k's ``scaled(member, weights, domain_weights)``)."""
    return sum(
        float(v) * scaled(member, weights, domain_weights)
        for v, member in zip(law.weights, law.members, strict=True)
    )


@dataclass(frozen=True)
class SumTarget:
    """``sum_k v_k T_k(r)`` of analytic member targets."""

    weights: tuple[float, ...]
    members: tuple[Any, ...]

    @property
    def interior(self) -> np.ndarray | None:
        """Shares some member keeps interior (infinite slope at 0)."""
        masks = [m.interior for m in self.members if m.interior is not None]
        return np.any(masks, axis=0) if masks else None

    def value(self, r: np.ndarray) -> float:
        return float(sum(v * m.value(r) for v, m in zip(self.weights, self.members, strict=True)))

    def derivatives(self, r: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        parts = [m.derivatives(r) for m in self.members]
        value = sum(v * p[0] for v, p in zip(self.weights, parts, strict=True))
        grad = sum(v * p[1] for v, p in zip(self.weights, parts, strict=True))
        hess = sum(v * p[2] for v, p in zip(self.weights, parts, strict=True))
        return float(value), grad, hess


def combined_target(weights: Sequence[float], targets: Sequence[Any]) -> Any:
    """The analytic target of ``sum_k v_k T_k`` (``None`` if a member has none)."""
    if any(t is None for t in targets):
        return None
    if all(isinstance(t, AdditiveTarget) for t in targets):
        return AdditiveTarget(
            constant=float(sum(v * t.constant for v, t in zip(weights, targets, strict=True))),
            linear=sum(v * t.linear for v, t in zip(weights, targets, strict=True)),
            w=np.concatenate([v * t.w for v, t in zip(weights, targets, strict=True)]),
            c=np.vstack([t.c for t in targets]),
            gamma=np.vstack([t.gamma for t in targets]),
        )
    return SumTarget(tuple(float(v) for v in weights), tuple(targets))
