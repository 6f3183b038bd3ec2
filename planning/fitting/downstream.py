"""Fit loss -> downstream error: Gadre et al.'s ``err(L) = eps - k exp(-gamma L)`` and a
sigmoid alternative, with a bootstrap by run and a held-out check on the lowest-loss runs.

Inputs are one row per run: its final loss and a downstream metric. Metrics are accuracies
(higher is better, as Sardana et al.'s eval-gauntlet and MMLU columns) unless
``higher_is_better=False``; the laws are fitted on ``error = 1 - accuracy``. Both laws are
fitted by least squares (scipy ``least_squares``, soft-L1 loss, from a small grid of starts)
and compared on the held-out runs (the ``holdout`` fraction with the lowest loss: the larger
models a plan extrapolates to); the better one is the fit's ``law``.
A plan targets a downstream error by converting it to a loss with ``law.required_loss(err)``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import least_squares

from mixplan.planning.errors import FitError
from mixplan.planning.laws.base import Law, law_from_dict
from mixplan.planning.laws.overtraining import DownstreamErrorLaw, SigmoidErrorLaw

DOWNSTREAM_LAWS = ("gadre", "sigmoid")
MIN_RUNS = 6


def _model(name: str, theta: np.ndarray, loss: np.ndarray) -> np.ndarray:
    return _law(name, theta).predict(loss)


def _law(name: str, theta: np.ndarray) -> Law:
    if name == "gadre":
        return DownstreamErrorLaw(
            eps=float(theta[0]), k=float(np.exp(theta[1])), gamma=float(theta[2])
        )
    return SigmoidErrorLaw(
        floor=float(theta[0]),
        ceiling=float(theta[0] + theta[1]),
        slope=float(theta[2]),
        midpoint=float(theta[3]),
    )


def _starts(name: str, loss: np.ndarray, error: np.ndarray) -> tuple[list[np.ndarray], Any]:
    lo, hi = float(error.min()), float(error.max())
    if name == "gadre":
        grid = itertools.product(
            [hi, min(1.0, hi + 0.1), 1.0], [0.0, 2.0, 5.0], [0.5, 1.0, 2.0, 4.0]
        )
        bounds = ([0.0, -20.0, 1e-3], [2.0, 20.0, 50.0])
    else:
        mid = float(np.median(loss))
        grid = itertools.product(
            [0.0, lo * 0.9], [hi - lo, 1.0 - lo], [1.0, 4.0, 10.0], [mid, loss.min(), loss.max()]
        )
        bounds = ([0.0, 0.0, 1e-3, -10.0], [1.0, 1.5, 100.0, 20.0])
    return [np.array(s, float) for s in grid], bounds


def fit_error_law(
    name: str,
    loss: np.ndarray,
    error: np.ndarray,
    weights: np.ndarray | None = None,
    start: np.ndarray | None = None,
) -> tuple[Law, float, np.ndarray]:
    """Least-squares fit of one downstream law from its start grid (or from ``start`` only);
    returns the law, its weighted RMSE and the fitted parameter vector."""
    loss, error = np.asarray(loss, float), np.asarray(error, float)
    w = np.ones_like(loss) if weights is None else np.asarray(weights, float)
    sw = np.sqrt(w)
    starts, bounds = _starts(name, loss, error)
    if start is not None:
        starts = [np.asarray(start, float)]
    best, best_cost = None, math.inf
    for x0 in starts:
        x0 = np.clip(x0, np.array(bounds[0]) + 1e-9, np.array(bounds[1]) - 1e-9)
        res = least_squares(
            lambda t: sw * (_model(name, t, loss) - error),
            x0,
            bounds=bounds,
            loss="soft_l1",
            f_scale=0.02,
            max_nfev=400,
        )
        if np.isfinite(res.cost) and res.cost < best_cost:
            best, best_cost = res.x, float(res.cost)
    if best is None:
        raise FitError(f"downstream {name} law: no start converged on {loss.size} runs")
    resid = _model(name, best, loss) - error
    rmse = float(np.sqrt(np.sum(w * resid**2) / np.sum(w)))
    return _law(name, best), rmse, best


def fit_downstream(
    loss: Sequence[float],
    metric: Sequence[float],
    *,
    metric_name: str,
    higher_is_better: bool = True,
    holdout: float = 0.25,
    n_bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.9,
) -> dict[str, Any]:
    """Fit both downstream laws to one row per run and keep the one that predicts held-out
    low-loss runs better.

    Returns
    -------
    JSON-ready dict: ``metric``, ``target`` (``"error = 1 - metric"`` or ``"error = metric"``),
    ``law`` (the chosen law's ``to_dict``), ``candidates`` (per law: ``law``, in-sample
    ``rmse``, ``holdout_rmse``), ``bootstrap`` (the chosen law's parameter draws), ``level`` and
    ``intervals`` (parameter -> ``[low, high]``), ``loss_range`` (of the fitted runs).
    """
    loss_arr = np.asarray(loss, float)
    values = np.asarray(metric, float)
    ok = np.isfinite(loss_arr) & np.isfinite(values)
    loss_arr, values = loss_arr[ok], values[ok]
    if loss_arr.size < MIN_RUNS:
        raise FitError(
            f"downstream fit of {metric_name!r}: {loss_arr.size} runs have both a loss and the "
            f"metric; need at least {MIN_RUNS}"
        )
    error = 1 - values if higher_is_better else values
    n_test = max(2, int(round(holdout * loss_arr.size)))
    order = np.argsort(loss_arr)
    test, train = order[:n_test], order[n_test:]
    candidates = []
    for name in DOWNSTREAM_LAWS:
        law, rmse, theta = fit_error_law(name, loss_arr, error)
        held, _, _ = fit_error_law(name, loss_arr[train], error[train])
        h_rmse = float(np.sqrt(np.mean((held.predict(loss_arr[test]) - error[test]) ** 2)))
        candidates.append(
            {
                "name": name,
                "law": law.to_dict(),
                "rmse": rmse,
                "holdout_rmse": h_rmse,
                "theta": theta.tolist(),
            }
        )
    chosen = min(candidates, key=lambda c: c["holdout_rmse"])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(loss_arr.size, np.full(loss_arr.size, 1 / loss_arr.size), n_bootstrap)
    law = law_from_dict(chosen["law"])
    draws = {k: [] for k in law.param_names()}
    for c in counts:
        drawn, _, _ = fit_error_law(
            chosen["name"], loss_arr, error, weights=c.astype(float), start=chosen["theta"]
        )
        for k in draws:
            draws[k].append(float(getattr(drawn, k)))
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return {
        "metric": metric_name,
        "target": "error = 1 - metric" if higher_is_better else "error = metric",
        "law": chosen["law"],
        "candidates": candidates,
        "n_runs": int(loss_arr.size),
        "n_holdout": int(n_test),
        "bootstrap": draws,
        "level": level,
        "intervals": {k: [float(x) for x in np.percentile(v, q)] for k, v in draws.items() if v},
        "loss_range": [float(loss_arr.min()), float(loss_arr.max())],
    }


def downstream_law(fit: dict[str, Any]) -> Law:
    """The fitted law of a stored downstream fit (has ``predict(loss)`` and
    ``required_loss(error)``)."""
    return law_from_dict(fit["law"])


def downstream_table(final: pl.DataFrame, metric: str) -> pl.DataFrame:
    """``run_id``, ``loss``, ``metric`` per run from a final-loss frame
    (:func:`mixplan.tasks.lake.final_losses`): the metric from its own column when the frame
    has one, else from the runs' ``tags`` JSON (where readers keep eval columns, e.g.
    Sardana's ``eval_gauntlet/*`` and ``mmlu_5_shot_avg``).

    Raises :class:`FitError` naming the metrics available when ``metric`` is in neither.
    """
    if metric in final.columns:
        values = final[metric].cast(pl.Float64, strict=False)
    else:
        tags = [json.loads(t) if t else {} for t in final["tags"].to_list()]
        if not any(metric in t for t in tags):
            known = sorted({k for t in tags for k, v in t.items() if isinstance(v, int | float)})
            raise FitError(
                f"no downstream metric {metric!r} in these runs' columns or tags; numeric tags "
                f"are: {', '.join(known) or 'none'}"
            )
        values = pl.Series([_number(t.get(metric)) for t in tags], dtype=pl.Float64)
    return pl.DataFrame(
        {"run_id": final["run_id"], "loss": final["loss"].cast(pl.Float64), "metric": values}
    ).drop_nulls()


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def downstream_name(experiment: str, metric: str) -> str:
    """The stored name of a downstream fit: ``<experiment>-downstream-<metric slug>``."""
    slug = "".join(c if c.isalnum() else "_" for c in metric).strip("_")
    return f"{experiment}-downstream-{slug}"
