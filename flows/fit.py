"""The Prefect flow ``fit``: lake -> one stored fit per experiment (bootstrap draws fan out)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import polars as pl
from prefect import flow, get_run_logger

from mixplan.flows.config import DEFAULT_LAKE
from mixplan.planning.errors import FitError
from mixplan.planning.fitting import assemble
from mixplan.planning.fitting.backtest import DEFAULT_HOLDOUT_QUANTILE
from mixplan.planning.fitting.bootstrap import resample_counts
from mixplan.planning.fitting.fit import warm_starts
from mixplan.planning.fitting.huber import DEFAULT_DELTA
from mixplan.planning.fitting.recipes import FitRecipe
from mixplan.tasks.fit import (
    DEFAULT_CHUNK,
    backtest_task,
    bootstrap_task,
    discover_task,
    leaderboard_task,
    load_table_task,
    point_fit_task,
    recipes_to_fit,
    steplaw_task,
    store_leaderboard_task,
    store_task,
)


@flow(name="fit", log_prints=False)
def fit(
    lake: str = str(DEFAULT_LAKE),
    experiments: list[str] | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
    delta: float = DEFAULT_DELTA,
    backtest_quantile: float | None = DEFAULT_HOLDOUT_QUANTILE,
    by_domain: bool = False,
    law: str | None = None,
    domains: list[str] | None = None,
) -> list[str]:
    """Fit a law to every experiment in the lake (or to ``experiments``); returns fit paths.

    Per experiment: read the fit table, fit the point estimate, then submit the bootstrap draws
    (resampled runs) in chunks of ``chunk_size`` and the backtest as concurrent tasks, assemble
    the :class:`~mixplan.planning.fitting.FitResult` and store it at ``<lake>/fits/<name>.json``.
    ``by_domain`` fits each evaluation domain separately (``<name>@<domain>``; experiments
    with several domains and no ``all`` always are), ``domains`` only those. Before fitting,
    the rolling-origin leaderboard ranks every applicable law (stored at
    ``<lake>/fits/<experiment>-leaderboard.json``); the recipe's law and the winner are fitted,
    with intervals calibrated on their backtests. ``law`` fits only that law (no leaderboard
    stored). A recipe whose data cannot support a fit is logged and skipped.
    """
    lake = str(lake)
    recipes = discover_task(lake, experiments, by_domain, law, domains)
    paths: list[str] = []
    for base in recipes:
        table = load_table_task(lake, base)
        if base.law == "steplaw":
            result = steplaw_task(table, base, n_bootstrap, seed, backtest_quantile)
            paths.append(store_task(result, lake))
            continue
        board, origins = leaderboard_task(table, base, law is not None, delta)
        if board and law is None:
            store_leaderboard_task(board, lake)
        for recipe in recipes_to_fit(base, board):
            path = _fit_one(
                lake,
                table,
                recipe,
                board,
                origins.get(recipe.law),
                n_bootstrap,
                seed,
                chunk_size,
                delta,
                backtest_quantile,
            )
            if path is not None:
                paths.append(path)
    return paths


def _fit_one(
    lake: str,
    table: pl.DataFrame,
    recipe: FitRecipe,
    board: dict[str, Any],
    origins: list[dict[str, Any]] | None,
    n_bootstrap: int,
    seed: int,
    chunk_size: int,
    delta: float,
    backtest_quantile: float | None,
) -> str | None:
    """Point fit, bootstrap chunks and backtest as tasks, assembled and stored (None: skipped)."""
    logger = get_run_logger()
    try:
        data, search = point_fit_task(table, recipe, delta)
    except FitError as err:
        logger.warning("%s skipped: %s", recipe.name, err)
        return None
    starts = warm_starts(search)
    chunks = []
    if n_bootstrap > 0:
        counts = resample_counts(data.n_runs, n_bootstrap, seed)
        chunks = [
            bootstrap_task.submit(recipe.law, data, starts, counts[i : i + chunk_size], delta)
            for i in range(0, n_bootstrap, chunk_size)
        ]
    bt = (
        backtest_task.submit(recipe.law, data, backtest_quantile, delta)
        if backtest_quantile is not None
        else None
    )
    draws = [c.result() for c in chunks]
    result = assemble(
        data,
        recipe.law,
        search,
        name=recipe.name,
        thetas=np.concatenate([t for t, _ in draws]) if draws else None,
        draw_objectives=np.concatenate([o for _, o in draws]) if draws else None,
        backtest_result=bt.result() if bt is not None else None,
        options=recipe.fit_options(n_bootstrap, seed, backtest_quantile),
        delta=delta,
        origins=origins,
    )
    result = dataclasses.replace(result, leaderboard=board)
    for warning in result.warnings:
        logger.warning("%s: %s", recipe.name, warning)
    return store_task(result, lake)
