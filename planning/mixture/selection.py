"""Model selection across scale: which mixture route transfers to a larger model.

A mixture law that fits the sizes it saw can still miss a larger model by far (issue 11: the
nested route fitted on 70M-410M missed 1B by 0.055-0.117 nats). :func:`leave_largest_scale_out`
scores every candidate the way it will be used: fitted on the smaller model sizes only, it
predicts the largest size's runs at their last common step, never seen. :func:`best_route`
names the route with the smallest mean absolute error; the flow combines every scored route,
refitted on every size for the target scale, weighted by ``1 / MSE`` of these scores
(:mod:`mixplan.planning.mixture.stacking`). With two sizes there is nothing to hold out: the
flow then fits the curves route (:data:`mixplan.tasks.mixture.DEFAULT_ROUTE`), the one route
whose size exponent two sizes identify.

The score judges a route fitted on one size fewer than it will be refitted on, so it favours
routes that transfer from few sizes: on 5Mix within 70M-305M the curves route wins the
70M-160M -> 305M score (0.0145 vs 0.0275 for the scale route) and misses 410M by 0.0126 nats
once refitted on 70M-305M, where the scale route would miss by 0.0101. That is why the flow
combines the routes instead of picking one (the combination: 0.0099).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import polars as pl

from mixplan.planning.errors import ExtrapolationError, FitError, MixplanError, SpecError
from mixplan.planning.mixture.curves import CurvesRoute
from mixplan.planning.mixture.nested import MixtureCurves, NestedRoute, held_out_errors
from mixplan.planning.mixture.scale import ScaleRoute
from mixplan.planning.mixture.steps import losses_at_tokens

RouteFactory = Callable[..., Any]
"""``factory(params, tokens, n_bootstrap=0, seed=0)``: an unfitted route for a target (N, D)."""

ROUTES: dict[str, RouteFactory] = {
    "scale (A in h)": lambda n, d, **bootstrap: ScaleRoute(
        params=n, tokens=d, joint=True, **bootstrap
    ),
    "scale (shared A)": lambda n, d, **bootstrap: ScaleRoute(
        params=n, tokens=d, joint=False, **bootstrap
    ),
    "nested": lambda n, d, **bootstrap: NestedRoute(params=n, tokens=d, **bootstrap),
    "curves (Kaplan N-D)": lambda n, d, **bootstrap: CurvesRoute(params=n, tokens=d, **bootstrap),
}
"""The candidate routes the flow scores (the checkpoint-wide JointRoute is in bench/mixture.py:
it is slower and, along a learning-rate schedule, transfers worse)."""

SCORE_COLUMNS = (
    "route",
    "fit_sizes",
    "largest_fit_params",
    "target_params",
    "target_tokens",
    "mae",
    "rmse",
    "max_error",
    "mre",
    "points",
    "status",
)


def held_out_largest(curves: MixtureCurves) -> tuple[MixtureCurves, Any, float, float]:
    """Split off the largest model size: ``(smaller sizes' curves, held-out data, N, D)``.

    The held-out runs are read at the last step all of them logged (interpolated, never
    extrapolated), so runs of different lengths still give one target D.
    """
    sizes = np.unique(curves.params)
    if len(sizes) < 2:
        raise SpecError(f"leave-largest-scale-out needs two or more model sizes; got {sizes}")
    largest = float(sizes[-1])
    held_curves = curves.runs_where(curves.params == largest)
    last = np.zeros(len(held_curves.run_ids))
    np.maximum.at(last, held_curves.row_run, held_curves.tokens)
    tokens = float(last.min())
    held, _ = losses_at_tokens(held_curves, tokens, max_ratio=1.0)
    return curves.runs_where(curves.params < largest), held, largest, tokens


def leave_largest_scale_out(
    curves: MixtureCurves, routes: Mapping[str, RouteFactory] | None = None
) -> pl.DataFrame:
    """Fit each route on all but the largest model size; score it on the largest.

    Parameters
    ----------
    curves
        Checkpoints of runs at three or more model sizes (two are left to fit on).
    routes
        Name -> factory ``(params, tokens) -> route``; default :data:`ROUTES`.

    Returns
    -------
    polars.DataFrame
        One row per route: ``route, fit_sizes, largest_fit_params, target_params,
        target_tokens, mae, rmse, max_error, mre, points, status`` (``status`` is ``"ok"``
        or why the route could not be scored; then the errors are NaN).
    """
    train, held, params, tokens = held_out_largest(curves)
    fit_sizes = ", ".join(f"{n:.3g}" for n in np.unique(train.params))
    rows = []
    for name, factory in (routes or ROUTES).items():
        row: dict[str, Any] = {
            "route": name,
            "fit_sizes": fit_sizes,
            "largest_fit_params": float(np.max(train.params)),
            "target_params": params,
            "target_tokens": tokens,
        }
        try:
            errors = held_out_errors(factory(params, tokens).fit(train), held, name=name)
        except (FitError, ExtrapolationError, SpecError) as error:
            rows.append({**row, **_failed(str(error))})
            continue
        except MixplanError as error:  # pragma: no cover - any other planned failure
            rows.append({**row, **_failed(str(error))})
            continue
        rows.append(
            {
                **row,
                "mae": float(errors["abs_error"].mean()),
                "rmse": float(np.sqrt((errors["abs_error"] ** 2).mean())),
                "max_error": float(errors["abs_error"].max()),
                "mre": float(errors["rel_error"].mean()),
                "points": errors.height,
                "status": "ok",
            }
        )
    return pl.DataFrame(rows, schema_overrides={"points": pl.Int64}).select(SCORE_COLUMNS)


def _failed(reason: str) -> dict[str, Any]:
    nan = float("nan")
    return {"mae": nan, "rmse": nan, "max_error": nan, "mre": nan, "points": 0, "status": reason}


def best_route(scores: pl.DataFrame) -> str | None:
    """The scored route with the smallest held-out MAE (``None`` when none was scored)."""
    ok = scores.filter((pl.col("status") == "ok") & pl.col("mae").is_finite())
    if ok.height == 0:
        return None
    return str(ok.sort("mae")["route"][0])
