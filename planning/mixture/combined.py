"""A nonnegative weighted sum of fitted mixture laws, kept as the sum: L_i(h) = sum_k w_k L_ik(h).

Why. The stacked route (:mod:`mixplan.planning.mixture.stacking`) combines the routes'
predictions at the target with weights ``w_k >= 0``. Every member law is convex in the mixture
(its fit's bounds keep it so), and a nonnegative weighted sum of convex functions is convex, so
the combination itself is a law the planner can optimise: no refit of one law to the average
is needed (that refit cost 0.0002 nats on 5Mix 70M-305M -> 410M and hid the members).

- ``predict``: the weighted sum of the members' predictions (exactly the stacked average);
- ``loss_expression``: the weighted sum of the members' convex DCP targets (the planner's
  well-scaled form, planning/programs/mixture_forms.py, sums the members' scaled forms; its
  analytic derivatives, mixture_derivatives.py, sum the members' targets);
- ``bootstrap_predictions`` / ``predict_interval``: draw b of the sum is the weighted sum of
  each member's draw b (members fitted with the same ``n_bootstrap``);
- JSON: the members' own JSON with their weights and route names; read back by class name.

Every member must be fitted on the same sources and domains, in the same order, at the same
target (N, D): the combination holds where its members do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Self

import cvxpy as cp
import numpy as np

from mixplan.planning.errors import NotFittedError, SpecError
from mixplan.planning.mixture.additive import AdditiveLaw, AdditiveScaleLaw
from mixplan.planning.mixture.base import MixtureLaw
from mixplan.planning.mixture.data import DomainTarget
from mixplan.planning.mixture.exponential import ExponentialLaw
from mixplan.planning.mixture.per_source import PerSourceLaw

MEMBER_LAWS: dict[str, type[MixtureLaw]] = {
    cls.__name__: cls for cls in (AdditiveLaw, AdditiveScaleLaw, ExponentialLaw, PerSourceLaw)
}
"""Member classes a stored combination is read back with (by their JSON ``law`` name)."""


class CombinedLaw(DomainTarget):
    """``L_i(h) = sum_k w_k L_ik(h)`` over fitted mixture laws, ``w_k >= 0`` summing to 1.

    Parameters
    ----------
    members
        Fitted mixture laws on the same sources and domains.
    weights
        One nonnegative weight per member (normalised to sum 1; a zero-weight member is dropped).
    labels
        A name per member (the route it came from), for the report.
    """

    name = "stacked mixture laws (weighted sum)"

    def __init__(
        self,
        members: Sequence[MixtureLaw],
        weights: Sequence[float],
        labels: Sequence[str] | None = None,
    ) -> None:
        labels = list(labels) if labels is not None else [m.name for m in members]
        values = np.asarray(weights, dtype=float)
        if not (len(members) == len(values) == len(labels)) or len(members) == 0:
            raise SpecError(
                "CombinedLaw: give one weight and one label per member (and at least one member)"
            )
        if np.any(~np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
            raise SpecError(
                f"CombinedLaw: weights must be finite, >= 0 and not all 0, got {values.tolist()}"
            )
        keep = values > 0
        self.members = tuple(m for m, k in zip(members, keep, strict=True) if k)
        self.weights = values[keep] / values[keep].sum()
        self.labels = tuple(lab for lab, k in zip(labels, keep, strict=True) if k)
        for member in self.members:
            if member.fits_ is None:
                raise NotFittedError(f"CombinedLaw: member {member.name} is not fitted")
        first = self.members[0]
        self.sources_: tuple[str, ...] = tuple(first.sources_)
        self.domains_: tuple[str, ...] = tuple(first.domains_)
        for member in self.members[1:]:
            if tuple(member.sources_) != self.sources_ or tuple(member.domains_) != self.domains_:
                raise SpecError(
                    f"CombinedLaw: member {member.name} has sources {member.sources_} and "
                    f"domains {member.domains_}; every member needs {self.sources_} and "
                    f"{self.domains_}, in that order"
                )

    @property
    def n_bootstrap(self) -> int:
        """Bootstrap draws of the sum (the fewest any member has)."""
        return min(int(m._fits()[0].bootstrap.shape[0]) for m in self.members)

    # -- the planner hook ------------------------------------------------------------------
    def predict(self, weights: np.ndarray) -> np.ndarray:
        """Loss per domain: ``(sources,) -> (domains,)``, ``(runs, sources) -> (runs, domains)``."""
        return sum(w * m.predict(weights) for w, m in zip(self.weights, self.members, strict=True))

    def bootstrap_predictions(self, weights: np.ndarray) -> np.ndarray:
        """Draw b of the sum: ``sum_k w_k`` (member k's draw b), ``(n_bootstrap, mixtures,
        domains)``.

        Raises
        ------
        NotFittedError
            If a member has no draws or the members have different numbers of draws.
        """
        draws = [m.bootstrap_predictions(weights) for m in self.members]
        counts = {d.shape[0] for d in draws}
        if len(counts) != 1:
            raise NotFittedError(
                f"{self.name}: members have {sorted(counts)} bootstrap draws; fit every member "
                "with the same n_bootstrap"
            )
        return sum(w * d for w, d in zip(self.weights, draws, strict=True))

    def predict_interval(
        self, weights: np.ndarray, *, level: float = 0.95
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap percentile interval of :meth:`predict` (members fitted with draws),
        widened in quadrature by the members' disagreement (:meth:`member_spread`) and the
        measured ``scale_error_``: half-width ``sqrt(h_boot^2 + z^2 (sd_members^2 +
        scale_error^2))`` (`DomainTarget.widened`). The draws cover the members' last stage
        only (on 5Mix the 90% band of one refitted law covered 6% of the 410M losses)."""
        single = np.asarray(weights).ndim == 1
        rows = np.atleast_2d(weights)
        tail = (1 - level) / 2 * 100
        low, high = np.percentile(self.bootstrap_predictions(rows), [tail, 100 - tail], axis=0)
        extra = np.sqrt(self.member_spread(rows) ** 2 + self.scale_error_**2)
        low, high = self.widened(rows, low, high, extra, level)
        return (low[0], high[0]) if single else (low, high)

    def member_spread(self, weights: np.ndarray) -> np.ndarray:
        """Weighted standard deviation of the members' predictions (the routes' disagreement),
        shaped as :meth:`predict`."""
        each = np.stack([m.predict(weights) for m in self.members])
        share = self.weights.reshape((-1,) + (1,) * (each.ndim - 1))
        mean = (share * each).sum(axis=0)
        return np.sqrt((share * (each - mean) ** 2).sum(axis=0))

    def loss_expression(
        self, weights: cp.Expression, domain_weights: np.ndarray | Mapping[str, float] | None
    ) -> cp.Expression:
        """``sum_k w_k`` (member k's convex target): convex, as every ``w_k >= 0``."""
        return cp.sum(
            cp.hstack(
                [
                    float(w) * m.loss_expression(weights, domain_weights)
                    for w, m in zip(self.weights, self.members, strict=True)
                ]
            )
        )

    # -- reporting and storage -------------------------------------------------------------
    def params_table(self) -> list[dict[str, Any]]:
        """Every member's rows (:meth:`MixtureLaw.params_table`) with its ``route`` and
        ``weight``."""
        return [
            {**row, "route": label, "weight": float(w)}
            for w, label, m in zip(self.weights, self.labels, self.members, strict=True)
            for row in m.params_table()
        ]

    def to_json(self) -> str:
        """Serialise the weights, labels and every member's own JSON."""
        return json.dumps(
            {
                "law": type(self).__name__,
                "sources": list(self.sources_),
                "domains": list(self.domains_),
                "scale_error": float(self.scale_error_),
                "members": [
                    {"route": label, "weight": float(w), "fit": json.loads(m.to_json())}
                    for w, label, m in zip(self.weights, self.labels, self.members, strict=True)
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Rebuild a combination written by :meth:`to_json`."""
        payload = json.loads(text)
        if payload["law"] != cls.__name__:
            raise SpecError(f"JSON holds a {payload['law']}, not a {cls.__name__}")
        members = []
        for entry in payload["members"]:
            kind = entry["fit"]["law"]
            if kind not in MEMBER_LAWS:
                raise SpecError(
                    f"CombinedLaw: unknown member law {kind!r}; known: {sorted(MEMBER_LAWS)}"
                )
            members.append(MEMBER_LAWS[kind].from_json(json.dumps(entry["fit"])))
        law = cls(
            members,
            [entry["weight"] for entry in payload["members"]],
            [entry["route"] for entry in payload["members"]],
        )
        law.scale_error_ = float(payload.get("scale_error", 0.0))  # 0 in fits stored before it
        return law
