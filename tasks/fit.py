"""Fit-stage tasks: read the lake, fit laws (bootstrap draws in chunks), store fits as JSON.

Each fit is stored at ``<lake>/fits/<name>.json`` (:class:`mixplan.planning.fitting.FitResult` JSON,
with options, data hash, code version, bootstrap draws and backtest). The plain function
:func:`fit_lake` is what the CLI calls; the ``fit`` flow runs the same steps as Prefect tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mixplan.planning.errors import FitError, RunLogError
from mixplan.planning.fitting import get_spec, point_fit, prepare
from mixplan.planning.fitting.backtest import DEFAULT_HOLDOUT_QUANTILE, backtest
from mixplan.planning.fitting.bootstrap import bootstrap_chunk
from mixplan.planning.fitting.data import FitData
from mixplan.planning.fitting.engine import SearchResult
from mixplan.planning.fitting.huber import DEFAULT_DELTA
from mixplan.planning.fitting.recipes import FitRecipe, fit_table, per_domain, per_size, recipe_for
from mixplan.planning.fitting.result import FitResult, fit_path
from mixplan.tasks.lake import lake_summary, read_metrics, read_runs
from mixplan.tasks.storage import read_text, write_text_atomic

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 250
"""Bootstrap draws per task."""


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a flow/task run (plain function use)
        return log


def write_fit(result: FitResult, lake: str | Path) -> str:
    """Store ``result`` under ``<lake>/fits/<name>.json`` (atomically, through the lake's
    storage layer: :mod:`mixplan.tasks.storage`)."""
    return write_text_atomic(fit_path(lake, result.name), result.to_json())


def read_fit(path: str | Path) -> FitResult:
    """Load a stored fit (local path or URL, through the lake's storage layer)."""
    text = read_text(path)
    if text is None:
        raise FitError(f"no fit file at {path}; run `mixplan fit` to create fits")
    return FitResult.from_json(text)


def discover_recipes(
    lake: str | Path,
    experiments: Sequence[str] | None = None,
    *,
    by_domain: bool = False,
) -> list[FitRecipe]:
    """The fits to make: one recipe per experiment in the lake (or per named experiment).

    ``by_domain`` makes one fit per evaluation domain of experiments that log several
    (per-domain / per-source laws); otherwise the aggregate domain ``all`` is fitted.
    """
    names = list(experiments) if experiments else sorted(lake_summary(lake)["experiments"])
    recipes = []
    for name in names:
        runs = read_runs(lake, experiment=name)
        if runs.height == 0:
            raise RunLogError(f"experiment {name!r} has no runs in the lake at {lake}")
        metrics = read_metrics(lake, experiment=name)
        recipe = recipe_for(name, runs, metrics)
        if recipe is None:
            continue
        if recipe.law == "loss_curve":
            recipes.extend(per_size(recipe, runs))
        elif by_domain and recipe.law != "steplaw":
            recipes.extend(per_domain(recipe, metrics["domain"].unique().to_list()))
        else:
            recipes.append(recipe)
    return recipes


def load_table(lake: str | Path, recipe: FitRecipe) -> pl.DataFrame:
    """The fit table of ``recipe`` read from the lake."""
    runs = read_runs(lake, experiment=recipe.experiment)
    metrics = read_metrics(lake, experiment=recipe.experiment)
    return fit_table(recipe, runs, metrics)


def fit_recipe(
    lake: str | Path,
    recipe: FitRecipe,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
    backtest_quantile: float | None = DEFAULT_HOLDOUT_QUANTILE,
    chunk_size: int = DEFAULT_CHUNK,
    on_progress: Callable[[str], None] | None = None,
) -> FitResult:
    """Fit one recipe end to end in-process: read its table from the lake, then
    :meth:`FitRecipe.fit` (point fit, bootstrap in chunks, backtest)."""
    return recipe.fit(
        load_table(lake, recipe),
        n_bootstrap=n_bootstrap,
        seed=seed,
        delta=delta,
        backtest_quantile=backtest_quantile,
        chunk_size=chunk_size,
        on_progress=on_progress,
    )


def fit_lake(
    lake: str | Path,
    *,
    experiments: Sequence[str] | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
    backtest_quantile: float | None = DEFAULT_HOLDOUT_QUANTILE,
    by_domain: bool = False,
    on_fit: Callable[[FitRecipe, FitResult | None, str | None], None] | None = None,
) -> list[tuple[FitResult, str]]:
    """Fit every recipe of the lake and store each fit; the plain-function form of ``fit``.

    ``on_fit(recipe, None, None)`` is called before and ``(recipe, result, path)`` after each
    fit (progress). A recipe that cannot be fitted is logged and skipped.
    """
    out = []
    for recipe in discover_recipes(lake, experiments, by_domain=by_domain):
        if on_fit:
            on_fit(recipe, None, None)
        try:
            result = fit_recipe(
                lake,
                recipe,
                n_bootstrap=n_bootstrap,
                seed=seed,
                delta=delta,
                backtest_quantile=backtest_quantile,
            )
        except FitError as err:
            _logger().warning("fit %s skipped: %s", recipe.name, err)
            continue
        path = write_fit(result, lake)
        out.append((result, path))
        if on_fit:
            on_fit(recipe, result, path)
    return out


# --------------------------------------------------------------------------- Prefect tasks


@task(name="discover-fits", retries=2, retry_delay_seconds=1)
def discover_task(
    lake: str, experiments: list[str] | None = None, by_domain: bool = False
) -> list[FitRecipe]:
    """The recipes to fit in ``lake``."""
    return discover_recipes(lake, experiments, by_domain=by_domain)


@task(name="load-fit-table", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def load_table_task(lake: str, recipe: FitRecipe) -> pl.DataFrame:
    """Read the fit table of a recipe from the lake."""
    table = load_table(lake, recipe)
    _logger().info("%s: %d rows from experiment %s", recipe.name, table.height, recipe.experiment)
    return table


@task(name="point-fit", cache_policy=NO_CACHE)
def point_fit_task(
    table: pl.DataFrame, recipe: FitRecipe, delta: float = DEFAULT_DELTA
) -> tuple[FitData, SearchResult]:
    """Full-data fit (vectorised multi-start + polish)."""
    data = prepare(table, recipe.law, outlier_rule=recipe.outlier_rule)
    result = point_fit(data, recipe.law, delta=delta, tie_break=recipe.tie_break)
    _logger().info("%s: objective %.6g over %d runs", recipe.name, result.objective, data.n_runs)
    return data, result


@task(name="bootstrap-chunk", cache_policy=NO_CACHE)
def bootstrap_task(
    law: str, data: FitData, starts: np.ndarray, counts: np.ndarray, delta: float = DEFAULT_DELTA
) -> tuple[np.ndarray, np.ndarray]:
    """Refit one chunk of bootstrap draws (resampled runs)."""
    return bootstrap_chunk(get_spec(law), data, starts, counts, delta=delta)


@task(name="backtest", cache_policy=NO_CACHE)
def backtest_task(
    law: str, data: FitData, quantile: float, delta: float = DEFAULT_DELTA
) -> dict[str, Any]:
    """Fit below the compute cut-off, predict the runs above it."""
    return backtest(get_spec(law), data, quantile=quantile, delta=delta)


@task(name="steplaw-fit", cache_policy=NO_CACHE)
def steplaw_task(
    table: pl.DataFrame,
    recipe: FitRecipe,
    n_bootstrap: int,
    seed: int,
    backtest_quantile: float | None,
) -> FitResult:
    """StepLaw fit (selection rule + least squares, bootstrap by run)."""
    return recipe.fit(
        table, n_bootstrap=n_bootstrap, seed=seed, backtest_quantile=backtest_quantile
    )


@task(name="store-fit", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def store_task(result: FitResult, lake: str) -> str:
    """Write the fit JSON into the lake; returns its path."""
    path = write_fit(result, lake)
    _logger().info("stored %s (%d bootstrap draws) at %s", result.name, result.n_bootstrap, path)
    return path
