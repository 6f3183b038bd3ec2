"""Mixture-law tasks: read mixture runs from the lake, fit laws and baselines, score, store.

Fitted mixture laws are stored like the scale-law fits, at ``<lake>/fits/<name>.json`` (the
law's own JSON, which the planner loads by its ``law`` class name, plus provenance: data hash,
code version, held-out scores). Plain functions do the work; the ``@task`` wrappers add
retries on lake I/O and logging.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mixplan.planning.errors import RunLogError, SpecError
from mixplan.planning.fitting.result import fit_path
from mixplan.planning.mixture.additive import AdditiveLaw
from mixplan.planning.mixture.baselines import LightGBMBaseline, LinearBaseline
from mixplan.planning.mixture.data import TRAINING_MAX_SHARE, MixtureData
from mixplan.planning.mixture.evaluation import evaluate
from mixplan.planning.mixture.exponential import ExponentialLaw
from mixplan.planning.mixture.nested import MixtureCurves, compare_routes
from mixplan.planning.mixture.per_source import PerSourceLaw
from mixplan.planning.mixture.selection import ROUTES, best_route, leave_largest_scale_out
from mixplan.planning.mixture.stacking import (
    STACKED_ROUTE,
    StackedRoute,
    extrapolation_rmse,
    stacking_weights,
)
from mixplan.planning.provenance import code_version, frame_hash
from mixplan.tasks.lake import read_metrics, read_runs
from mixplan.tasks.storage import write_text_atomic

log = logging.getLogger(__name__)

Family = Literal["additive", "exponential", "per_source", "lightgbm", "linear"]
LAW_FAMILIES: tuple[str, ...] = ("additive", "exponential", "per_source")
BASELINES: tuple[str, ...] = ("lightgbm", "linear")


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a flow/task run (plain function use)
        return log


def make_model(family: str, *, n_bootstrap: int = 0, seed: int = 0) -> Any:
    """A fresh, unfitted mixture law or baseline by family name."""
    if family == "additive":
        return AdditiveLaw(n_bootstrap=n_bootstrap, seed=seed)
    if family == "exponential":
        return ExponentialLaw(n_bootstrap=n_bootstrap, seed=seed)
    if family == "per_source":
        return PerSourceLaw(n_bootstrap=n_bootstrap, seed=seed)
    if family == "lightgbm":
        return LightGBMBaseline(seed=42 + seed)
    if family == "linear":
        return LinearBaseline()
    raise SpecError(f"unknown mixture family {family!r}; one of {LAW_FAMILIES + BASELINES}")


def read_mixture_data(
    lake: str | Path,
    experiment: str,
    *,
    split: str = "val",
    domains: Sequence[str] | None = None,
) -> tuple[MixtureData, str]:
    """Final losses of an experiment's mixture runs, and the data hash of what was read."""
    runs = read_runs(lake, experiment=experiment)
    if runs.height == 0:
        raise RunLogError(f"experiment {experiment!r} has no runs in the lake at {lake}")
    metrics = read_metrics(lake, experiment=experiment, split=split)
    data = MixtureData.from_lake(runs, metrics, split=split, domains=domains)
    return data, frame_hash(metrics.select("run_id", "step", "domain", "loss"))


def read_mixture_curves(
    lake: str | Path,
    experiment: str,
    *,
    split: str = "val",
    domains: Sequence[str] | None = None,
) -> MixtureCurves:
    """Every checkpoint of an experiment's mixture runs."""
    runs = read_runs(lake, experiment=experiment)
    if runs.height == 0:
        raise RunLogError(f"experiment {experiment!r} has no runs in the lake at {lake}")
    metrics = read_metrics(lake, experiment=experiment, split=split)
    return MixtureCurves.from_lake(runs, metrics, split=split, domains=domains)


def fit_family(family: str, data: MixtureData, *, n_bootstrap: int = 0, seed: int = 0) -> Any:
    """Fit one law family or baseline on ``data``."""
    model = make_model(family, n_bootstrap=n_bootstrap, seed=seed)
    return model.fit(data)


def score(model: Any, held_out: MixtureData, *, name: str) -> pl.DataFrame:
    """Spearman, mean relative and absolute error per domain on held-out runs."""
    return evaluate(model, held_out, name=name)


def fit_name(experiment: str, family: str) -> str:
    """Stored name of a mixture fit: ``<experiment>-mixture-<family>``."""
    return f"{experiment.replace('/', '_')}-mixture-{family}"


def write_mixture_fit(
    lake: str | Path,
    name: str,
    law: Any,
    *,
    data_hash: str,
    scores: pl.DataFrame | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Store a fitted mixture law at ``<lake>/fits/<name>.json`` with provenance."""
    payload = json.loads(law.to_json())
    payload.update(
        {
            "name": name,
            "data_hash": data_hash,
            "code_version": code_version(),
            "held_out": scores.to_dicts() if scores is not None else [],
            **dict(extra or {}),
        }
    )
    return write_text_atomic(fit_path(lake, name), json.dumps(payload, indent=1))


# --------------------------------------------------------------------------- Prefect tasks


@task(name="read-mixture-data", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def load_mixture_data(
    lake: str, experiment: str, split: str = "val", domains: list[str] | None = None
) -> tuple[MixtureData, str]:
    """Read an experiment's final losses against mixtures (retried: remote lakes)."""
    data, data_hash = read_mixture_data(lake, experiment, split=split, domains=domains)
    _logger().info(
        "%s: %d runs, %d sources, %d domains",
        experiment,
        len(data.run_ids),
        len(data.sources),
        len(data.domains),
    )
    return data, data_hash


@task(name="read-mixture-curves", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def load_mixture_curves(
    lake: str, experiment: str, split: str = "val", domains: list[str] | None = None
) -> MixtureCurves:
    """Read an experiment's checkpoints (retried: remote lakes)."""
    return read_mixture_curves(lake, experiment, split=split, domains=domains)


@task(name="fit-mixture-family", cache_policy=NO_CACHE)
def fit_mixture_family(family: str, data: MixtureData, n_bootstrap: int = 0, seed: int = 0) -> Any:
    """Fit one mixture law family (or baseline)."""
    model = fit_family(family, data, n_bootstrap=n_bootstrap, seed=seed)
    _logger().info("fitted %s on %d runs", family, len(data.run_ids))
    return model


@task(name="score-mixture-family", cache_policy=NO_CACHE)
def score_mixture_family(model: Any, held_out: MixtureData, name: str) -> pl.DataFrame:
    """Score a fitted model on held-out runs."""
    table = score(model, held_out, name=name)
    _logger().info(
        "%s: mean Spearman %.4f, mean relative error %.3f%%",
        name,
        table["spearman"].mean(),
        100 * table["mre"].mean(),
    )
    return table


@task(name="compare-scale-routes", cache_policy=NO_CACHE)
def compare_scale_routes(curves: MixtureCurves, train_params_max: float) -> pl.DataFrame:
    """Nested vs joint route, scored on the runs larger than ``train_params_max``."""
    table = compare_routes(curves, train_params_max=train_params_max)
    _logger().info(
        "held-out MAE by route: %s",
        table.group_by("route").agg(pl.col("abs_error").mean()).sort("route").to_dicts(),
    )
    return table


DEFAULT_ROUTE = "curves (Kaplan N-D)"
"""The route fitted when there are too few model sizes to score routes across scale (two): the
only route whose size exponent the data identify from two sizes (through the curves in D,
:mod:`mixplan.planning.mixture.curves`); the others must pool or assume it (5Mix, fit 70M-160M,
predict 410M at its last step: 0.0175 nats vs 0.043 for the scale route with a pooled alpha)."""


def select_and_fit_route(
    curves: MixtureCurves,
    *,
    params: float | None = None,
    tokens: float | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Score the routes by leave-largest-scale-out, combine them on every size at the target.

    With three or more sizes every route is scored on the largest fitted size (fitted on the
    smaller ones) and the pipeline fits :class:`mixplan.planning.mixture.stacking.StackedRoute`
    with weights ``1 / MSE`` of those scores (5Mix, fitted within 70M-305M, predicting 410M:
    see bench/mixture.py); with two sizes, :data:`DEFAULT_ROUTE`.

    Parameters
    ----------
    curves
        Checkpoints of an experiment with two or more model sizes.
    params, tokens
        Target N and D (default: the largest size, at the last step all its runs logged).
    n_bootstrap, seed
        Bootstrap draws of the refitted route (scale routes), for intervals.

    Returns
    -------
    dict
        ``route`` (the fitted route object), ``chosen`` (its name), ``scores`` (the selection
        table, empty with fewer than three sizes), ``target`` (``params``, ``tokens``) and
        ``step_warning`` (the step stage's warning at the target and how the size exponent was
        set when it was not fitted; ``""`` when none).
    """
    sizes = np.unique(curves.params)
    scores = leave_largest_scale_out(curves) if len(sizes) >= 3 else pl.DataFrame()
    scored = scores.height > 0 and best_route(scores) is not None
    chosen = STACKED_ROUTE if scored else DEFAULT_ROUTE
    if params is None or tokens is None:
        largest = curves.runs_where(curves.params == sizes[-1])
        last = np.zeros(len(largest.run_ids))
        np.maximum.at(last, largest.row_run, largest.tokens)
        params = float(sizes[-1]) if params is None else params
        tokens = float(last.min()) if tokens is None else tokens
    if scored:
        weights = stacking_weights(scores)
        route: Any = StackedRoute(
            params=float(params),
            tokens=float(tokens),
            weights=weights,
            n_bootstrap=n_bootstrap,
            seed=seed,
            extrapolation_rmse=extrapolation_rmse(
                scores, weights, params=float(params), largest_fitted=float(sizes[-1])
            ),
        )
    else:
        route = ROUTES[chosen](float(params), float(tokens), n_bootstrap=n_bootstrap, seed=seed)
    route.fit(curves)
    stage = getattr(route, "stage_", None)
    warnings = [stage.warning] if stage is not None and stage.warning else []
    warnings += [getattr(route, "warning_", "")] if getattr(route, "warning_", "") else []
    warnings += list(getattr(route, "notes_", ()))
    return {
        "route": route,
        "chosen": chosen,
        "scores": scores,
        "target": {"params": float(params), "tokens": float(tokens)},
        "step_warning": "; ".join(warnings),
    }


@task(name="select-scale-route", cache_policy=NO_CACHE)
def select_scale_route(
    curves: MixtureCurves,
    params: float | None = None,
    tokens: float | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Prefect wrapper of :func:`select_and_fit_route` (logs the choice and any step warning)."""
    result = select_and_fit_route(
        curves, params=params, tokens=tokens, n_bootstrap=n_bootstrap, seed=seed
    )
    logger = _logger()
    if result["scores"].height:
        logger.info(
            "leave-largest-scale-out MAE: %s -> %s",
            dict(zip(result["scores"]["route"], result["scores"]["mae"], strict=True)),
            result["chosen"],
        )
    if result["step_warning"]:
        logger.warning("%s", result["step_warning"])
    return result


@task(name="write-mixture-fit", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def store_mixture_fit(
    lake: str,
    name: str,
    law: Any,
    data_hash: str,
    scores: pl.DataFrame | None = None,
    max_shares: dict[str, float] | None = None,
    provenance: dict[str, Any] | None = None,
) -> str:
    """Store a fitted law as JSON under ``<lake>/fits/`` (retried: remote lakes).

    ``max_shares`` (each source's largest share in the fitted runs) is stored as the law's
    trust region, which the planner applies to mixtures planned with it. ``provenance`` adds
    keys to the stored JSON (e.g. the selection scores of a law chosen across scale).
    """
    extra = dict(provenance or {})
    if max_shares is not None:
        extra[TRAINING_MAX_SHARE] = max_shares
    return write_mixture_fit(lake, name, law, data_hash=data_hash, scores=scores, extra=extra)
