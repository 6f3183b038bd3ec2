"""Fit-stage tasks: read the lake, fit laws (bootstrap draws in chunks), store fits as JSON.

Each fit is stored at ``<lake>/fits/<name>.json`` (:class:`mixplan.planning.fitting.FitResult` JSON,
with options, data hash, code version, bootstrap draws and backtest). The plain function
:func:`fit_lake` is what the CLI calls; the ``fit`` flow runs the same steps as Prefect tasks.
"""

from __future__ import annotations

import dataclasses
import json
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
from mixplan.planning.fitting.leaderboard import (
    SCALE_LAWS,
    applicable_laws,
    leaderboard,
    leaderboard_path,
)
from mixplan.planning.fitting.recipes import (
    FitRecipe,
    board_name,
    domain_choice,
    fit_table,
    per_domain,
    per_size,
    recipe_for,
    with_law,
)
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
    law: str | None = None,
    domains: Sequence[str] | None = None,
    notes: list[str] | None = None,
) -> list[FitRecipe]:
    """The fits to make: one recipe per experiment in the lake (or per named experiment).

    ``by_domain`` makes one fit per evaluation domain of experiments that log several
    (per-domain / per-source laws); otherwise the aggregate domain ``all`` is fitted, or every
    domain when there is no ``all`` (:func:`~mixplan.planning.fitting.recipes.domain_choice`,
    which appends a line saying so to ``notes``). ``domains`` fits only those domains; ``law``
    fits that law instead of the experiment's default.
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
        if law is not None and law != recipe.law:
            recipe = with_law(recipe, law)
        if recipe.law == "loss_curve":
            recipes.extend(per_size(recipe, runs))
            continue
        if recipe.law == "steplaw":
            recipes.append(recipe)
            continue
        chosen, note = domain_choice(
            name, metrics["domain"].unique().to_list(), by_domain=by_domain, wanted=domains
        )
        if note and notes is not None:
            notes.append(note)
        if not chosen:
            recipes.append(recipe)
        elif len(chosen) == 1:
            recipes.append(
                dataclasses.replace(recipe, name=f"{recipe.name}@{chosen[0]}", domain=chosen[0])
            )
        else:
            recipes.extend(per_domain(recipe, chosen))
    return recipes


def load_table(lake: str | Path, recipe: FitRecipe) -> pl.DataFrame:
    """The fit table of ``recipe`` read from the lake."""
    runs = read_runs(lake, experiment=recipe.experiment)
    metrics = read_metrics(lake, experiment=recipe.experiment)
    return fit_table(recipe, runs, metrics)


def select_law(
    table: pl.DataFrame, recipe: FitRecipe, *, fixed: bool = False, delta: float = DEFAULT_DELTA
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The rolling-origin leaderboard of ``recipe``'s table
    (:func:`~mixplan.planning.fitting.leaderboard.leaderboard`): every applicable scale law, or
    only the recipe's own when the user named it (``fixed``). Empty for StepLaw and loss curves.
    """
    if recipe.law not in SCALE_LAWS:
        return {}, {}
    laws = [recipe.law] if fixed else list(dict.fromkeys([recipe.law, *applicable_laws(table)]))
    name = board_name(recipe)
    return leaderboard(
        table,
        name=name,
        laws=laws,
        outlier_rule=recipe.outlier_rule,
        delta=delta,
        fit_names={law: with_law(recipe, law).name for law in laws},
    )


def write_leaderboard(board: dict[str, Any], lake: str | Path) -> str:
    """Store a leaderboard at ``<lake>/fits/<name>-leaderboard.json``; returns its path."""
    path = leaderboard_path(str(lake), board["name"])
    text = json.dumps(board, indent=1, allow_nan=True)
    if "://" in path:
        import fsspec

        with fsspec.open(path, "w") as handle:
            handle.write(text)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def read_leaderboard(lake: str | Path, name: str) -> dict[str, Any]:
    """The stored leaderboard ``name`` (an experiment, or ``experiment@domain``)."""
    path = leaderboard_path(str(lake), name)
    try:
        if "://" in path:
            import fsspec

            with fsspec.open(path, "r") as handle:
                return json.loads(handle.read())
        return json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise FitError(f"no leaderboard at {path}; run `mixplan fit` first") from err


def recipes_to_fit(recipe: FitRecipe, board: dict[str, Any]) -> list[FitRecipe]:
    """The recipe itself, plus the leaderboard winner's recipe when another law won."""
    best = board.get("winner")
    if not best or best == recipe.law:
        return [recipe]
    return [recipe, with_law(recipe, best)]


def fit_lake(
    lake: str | Path,
    *,
    experiments: Sequence[str] | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
    backtest_quantile: float | None = DEFAULT_HOLDOUT_QUANTILE,
    by_domain: bool = False,
    law: str | None = None,
    domains: Sequence[str] | None = None,
    notes: list[str] | None = None,
    on_fit: Callable[[FitRecipe, FitResult | None, str | None], None] | None = None,
) -> list[tuple[FitResult, str]]:
    """Fit every recipe of the lake and store each fit; the plain-function form of ``fit``.

    Per recipe: the rolling-origin leaderboard (stored next to the fits unless ``law`` names
    the law), then the recipe's law and, when another law extrapolated better, the winner, each
    with intervals calibrated on its own backtests. ``on_fit(recipe, None, None)`` is called
    before and ``(recipe, result, path)`` after each fit (progress). A recipe that cannot be
    fitted is logged and skipped.
    """
    out = []
    for recipe in discover_recipes(
        lake, experiments, by_domain=by_domain, law=law, domains=domains, notes=notes
    ):
        if on_fit:
            on_fit(recipe, None, None)
        table = load_table(lake, recipe)
        board, origins = select_law(table, recipe, fixed=law is not None, delta=delta)
        if board and law is None:
            write_leaderboard(board, lake)
        for chosen in recipes_to_fit(recipe, board):
            try:
                result = chosen.fit(
                    table,
                    n_bootstrap=n_bootstrap,
                    seed=seed,
                    delta=delta,
                    backtest_quantile=backtest_quantile,
                    chunk_size=DEFAULT_CHUNK,
                    origins=origins.get(chosen.law),
                )
            except FitError as err:
                _logger().warning("fit %s skipped: %s", chosen.name, err)
                continue
            result = dataclasses.replace(result, leaderboard=board)
            path = write_fit(result, lake)
            out.append((result, path))
            if on_fit:
                on_fit(chosen, result, path)
    return out


# --------------------------------------------------------------------------- Prefect tasks


@task(name="discover-fits", retries=2, retry_delay_seconds=1)
def discover_task(
    lake: str,
    experiments: list[str] | None = None,
    by_domain: bool = False,
    law: str | None = None,
    domains: list[str] | None = None,
) -> list[FitRecipe]:
    """The recipes to fit in ``lake`` (:func:`discover_recipes`; its domain notes are logged)."""
    notes: list[str] = []
    recipes = discover_recipes(
        lake, experiments, by_domain=by_domain, law=law, domains=domains, notes=notes
    )
    for note in notes:
        _logger().warning(note)
    return recipes


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


@task(name="leaderboard", cache_policy=NO_CACHE)
def leaderboard_task(
    table: pl.DataFrame, recipe: FitRecipe, fixed: bool = False, delta: float = DEFAULT_DELTA
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Rolling-origin backtests of every applicable law (:func:`select_law`)."""
    board, origins = select_law(table, recipe, fixed=fixed, delta=delta)
    if board:
        _logger().info("%s: law leaderboard winner %s", board["name"], board["winner"])
    return board, origins


@task(name="store-leaderboard", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def store_leaderboard_task(board: dict[str, Any], lake: str) -> str:
    """Write a leaderboard JSON into the lake; returns its path."""
    return write_leaderboard(board, lake)


def fit_downstream_lake(
    lake: str | Path,
    experiment: str,
    metric: str,
    *,
    domain: str | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> tuple[dict[str, Any], str]:
    """Fit loss -> downstream error for ``metric`` on ``experiment``'s runs and store it at
    ``<lake>/fits/<experiment>-downstream-<metric>.json``
    (:func:`mixplan.planning.fitting.downstream.fit_downstream`); returns the fit and its path.

    The loss is each run's final loss on ``domain`` (default: ``all``, else the only domain);
    the metric comes from a column of that name or, where readers keep evals, the run tags.
    """
    from mixplan.planning.fitting.downstream import (
        downstream_name,
        downstream_table,
        fit_downstream,
    )
    from mixplan.tasks.lake import final_losses

    final = final_losses(lake, experiment=experiment)
    if final.height == 0:
        raise RunLogError(f"experiment {experiment!r} has no runs in the lake at {lake}")
    domains = final["domain"].unique().to_list()
    chosen = domain or ("all" if "all" in domains else domains[0] if len(domains) == 1 else None)
    if chosen is None:
        raise FitError(
            f"experiment {experiment!r} logs losses on domains {sorted(domains)} and no 'all': "
            "name the loss to relate the metric to with --domain"
        )
    final = final.filter(pl.col("domain") == chosen)
    if final["split"].n_unique() > 1:
        split = "val" if (final["split"] == "val").any() else final["split"][0]
        final = final.filter(pl.col("split") == split)
    table = downstream_table(final, metric)
    fit = fit_downstream(
        table["loss"].to_numpy(),
        table["metric"].to_numpy(),
        metric_name=metric,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    name = downstream_name(experiment, metric)
    fit = {"kind": "downstream", "name": name, "experiment": experiment, "domain": chosen, **fit}
    path = fit_path(lake, name)
    text = json.dumps(fit, indent=1, allow_nan=True)
    if "://" in path:
        import fsspec

        with fsspec.open(path, "w") as handle:
            handle.write(text)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return fit, path
