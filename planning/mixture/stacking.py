"""Forecast combination across mixture routes: the score-weighted sum of every route's mixture
law at the target, kept as that sum (:class:`mixplan.planning.mixture.combined.CombinedLaw`).

Why. Leave-largest-scale-out (:mod:`mixplan.planning.mixture.selection`) scores each route on
one held-out size, fitted on one size fewer than it will be refitted on: the winner of that
score is not reliably the route that transfers best once refitted (5Mix, fitted within
70M-305M: the curves route wins 70M-160M -> 305M, 0.0145 vs 0.0275 for the scale route, yet
misses 410M by 0.0126 where the scale route misses by 0.0101). The routes err in different
ways (step law per run, size law per mixture, Kaplan's joint law), so a weighted average of
their predictions has a smaller error than a noisy pick of one (Bates and Granger, 1969).

Weights are inverse held-out mean squared errors, ``w_k ∝ 1 / rmse_k^2`` (Bates and
Granger's inverse-variance combination, ignoring the correlation of the routes' errors, which
one held-out size cannot estimate); the scores come from the fitted sizes only. A route that
could not be scored gets weight 0. (On 5Mix within 70M-305M, weights ``1 / mae^2`` instead
gave 0.0107 nats on 410M and ``1 / rmse^2`` 0.0099.)

:class:`StackedRoute` refits every weighted route on every size at the target (N, D), each
with its own bootstrap, and stores ``sum_k w_k L_k(h)`` of their fitted mixture laws: every
member is convex in the mixture and the weights are nonnegative, so the sum is convex and the
planner optimises it as it is (an earlier version refitted one additive law to the weighted
average, which cost 0.0002 nats on 5Mix). Its bootstrap (draw b of the sum is the weighted
sum of the members' draws b) covers the members' last stage only (on 5Mix the refitted law's
90% band covered 6% of the 410M losses), so the interval (`CombinedLaw.predict_interval`,
with :meth:`StackedRoute.scale_error` stored on the law) adds the routes' disagreement in
quadrature: half-width ``sqrt(h_boot^2 + (z sd_routes)^2)``,
``sd_routes`` the weighted standard deviation of the routes' predictions at the mixture asked
for, and the error measured when extrapolating across scale (:func:`extrapolation_rmse`): the
selection's held-out RMSE of the combination (bounded by ``sqrt(sum_k w_k rmse_k^2)``, by
convexity), per unit of ``log(N_held_out / N_largest_fitted)``, times that log ratio at the
target (a documented choice: the error taken to grow linearly in log N beyond the fitted
sizes), and the members' measured error of reading the runs past their last checkpoints in D.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

import numpy as np
import polars as pl

from mixplan.planning.errors import SpecError
from mixplan.planning.mixture.combined import CombinedLaw
from mixplan.planning.mixture.engine import DEFAULT_DELTA
from mixplan.planning.mixture.nested import (
    MixtureCurves,
    MixtureLawName,
    MixtureStageRoute,
    distinct_mixtures,
)
from mixplan.planning.mixture.selection import ROUTES, RouteFactory

STACKED_ROUTE = "stacked (inverse MSE)"
"""The name the pipeline gives the combination (chosen whenever routes could be scored)."""


def stacking_weights(scores: pl.DataFrame) -> dict[str, float]:
    """Weights ``∝ 1 / rmse^2`` of the routes scored ``"ok"`` with a finite, positive error.

    Raises
    ------
    SpecError
        If no route was scored (then there is nothing to combine: fit one route instead).
    """
    ok = scores.filter(
        (pl.col("status") == "ok") & pl.col("rmse").is_finite() & (pl.col("rmse") > 0)
    )
    if ok.height == 0:
        raise SpecError("stacking: no route was scored; fit a single route instead")
    inverse = 1.0 / ok["rmse"].to_numpy() ** 2
    return dict(zip(ok["route"].to_list(), (inverse / inverse.sum()).tolist(), strict=True))


def extrapolation_rmse(
    scores: pl.DataFrame, weights: Mapping[str, float], *, params: float, largest_fitted: float
) -> float:
    """The combination's expected RMSE at ``params`` from the leave-largest-scale-out scores.

    ``sqrt(sum_k w_k rmse_k^2)`` (a bound on the RMSE of the weighted average of the scored
    predictions) divided by ``log(target_params / largest_fit_params)`` of the scores, times
    ``log(params / largest_fitted)`` (0 inside the fitted sizes).

    Raises
    ------
    SpecError
        If a weighted route has no score, or the scores do not extrapolate in N.
    """
    rows = {row["route"]: row for row in scores.iter_rows(named=True)}
    missing = sorted(set(weights) - set(rows))
    if missing:
        raise SpecError(f"extrapolation error: routes {missing} have no leave-largest-out score")
    first = rows[next(iter(weights))]
    scored_ratio = float(np.log(first["target_params"] / first["largest_fit_params"]))
    if not scored_ratio > 0:
        raise SpecError("extrapolation error: the scores must predict a larger model size")
    bound = float(np.sqrt(sum(w * rows[name]["rmse"] ** 2 for name, w in weights.items())))
    return bound * max(float(np.log(params / largest_fitted)), 0.0) / scored_ratio


class StackedRoute(MixtureStageRoute):
    """Every weighted route at the target (N, D) -> the weighted sum of their mixture laws.

    Parameters
    ----------
    params, tokens
        Target model parameters N and training tokens D.
    weights
        Route name (a key of ``routes``) -> weight; normalised to sum 1, zeros skipped.
    routes
        Name -> factory, default :data:`mixplan.planning.mixture.selection.ROUTES`.
    mixture_law, delta
        Kept for the shared route constructor (each route fits its own mixture law).
    n_bootstrap, seed
        Bootstrap draws of every route's law, for intervals (the same count for every route,
        so draw b of the sum is defined).
    extrapolation_rmse
        Expected RMSE of extrapolating to the target N (:func:`extrapolation_rmse`), added to
        the interval; 0 when the target is inside the fitted sizes.
    """

    name = STACKED_ROUTE

    def __init__(
        self,
        *,
        params: float,
        tokens: float,
        weights: Mapping[str, float],
        routes: Mapping[str, RouteFactory] | None = None,
        mixture_law: MixtureLawName = "additive",
        delta: float = DEFAULT_DELTA,
        n_bootstrap: int = 0,
        seed: int = 0,
        extrapolation_rmse: float = 0.0,
    ) -> None:
        super().__init__(
            params=params,
            tokens=tokens,
            mixture_law=mixture_law,
            delta=delta,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
        if not (np.isfinite(extrapolation_rmse) and extrapolation_rmse >= 0):
            raise SpecError(
                f"StackedRoute: extrapolation_rmse must be finite and >= 0, got "
                f"{extrapolation_rmse}"
            )
        self.extrapolation_rmse = float(extrapolation_rmse)
        self.routes = dict(routes or ROUTES)
        unknown = sorted(set(weights) - set(self.routes))
        if unknown:
            raise SpecError(f"StackedRoute: unknown routes {unknown}; known: {list(self.routes)}")
        values = np.array(list(weights.values()), float)
        if values.size == 0 or np.any(~np.isfinite(values)) or np.any(values < 0):
            raise SpecError(f"StackedRoute: weights must be finite and >= 0, got {dict(weights)}")
        if values.sum() <= 0:
            raise SpecError("StackedRoute: at least one weight must be positive")
        self.weights = {k: float(v) / values.sum() for k, v in weights.items() if v > 0}
        self.fitted_: dict[str, object] = {}
        self.spread_: float = float("nan")
        self.warning_ = ""
        self.notes_: tuple[str, ...] = ()

    def fit(self, curves: MixtureCurves) -> Self:
        """Fit every weighted route on ``curves``; the law is the weighted sum of theirs."""
        mixtures, _ = distinct_mixtures(curves)
        warnings = []
        for name in self.weights:
            route = self.routes[name](
                self.params, self.tokens, n_bootstrap=self.n_bootstrap, seed=self.seed
            ).fit(curves)
            self.fitted_[name] = route
            stage = getattr(route, "stage_", None)
            warnings += [stage.warning] if stage is not None and stage.warning else []
            warnings += [getattr(route, "warning_", "")] if getattr(route, "warning_", "") else []
        self.law_ = CombinedLaw(
            [route._law() for route in self.fitted_.values()],  # type: ignore[attr-defined]
            list(self.weights.values()),
            list(self.weights),
        )
        self.sources_, self.domains_ = curves.sources, curves.domains
        self.spread_ = float(self.law_.member_spread(mixtures).mean())
        self.warning_ = "; ".join(dict.fromkeys(warnings))
        self.notes_ = (
            "the weighted sum of the routes' mixture laws at the target: "
            + ", ".join(f"{name} {weight:.2f}" for name, weight in self.weights.items())
            + f" (weights 1/MSE of leave-largest-scale-out); the routes disagree by "
            f"{self.spread_:.3g} nats (weighted sd, mean over mixtures and domains); measured "
            f"error of extrapolating to N = {self.params:.3g} added to the interval: "
            f"{self.extrapolation_rmse:.3g} nats RMSE",
        )
        return self

    def scale_error(self) -> float:
        """The errors the combination's bootstrap and the routes' disagreement leave out, in
        quadrature: extrapolating to the target N (``extrapolation_rmse``, from the scores) and
        the members' reading of the runs past their last checkpoints in D (``sqrt(sum_k w_k
        tokens_error_k^2)``, the same bound as for N)."""
        tokens = sum(
            w * self.fitted_[name].tokens_error_ ** 2  # type: ignore[attr-defined]
            for name, w in self.weights.items()
        )
        return float(np.sqrt(self.extrapolation_rmse**2 + tokens))
