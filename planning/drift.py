"""Drift between pipeline runs: new runs the previous fit did not predict, plans that moved.

Pure computation on plain values; the pipeline's drift task supplies the numbers (new runs from
the lake's table history, the previous stored fits, previous and current plans) and
:func:`detect_drift` compares them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from mixplan.planning.fitting.result import FitResult

PlanQuantities = Mapping[str, tuple[float | None, float | None, float | None]]
"""A plan flattened to ``name -> (value, low, high)``: ``params``, ``tokens``, ``vocab_size``,
``loss``, ``mixture:<source>``; low/high may be ``None`` when the plan has no interval."""

PredictInterval = Callable[[pl.DataFrame], tuple[Any, Any, Any] | None]
"""``runs -> (predicted, low, high)`` arrays for those runs, or None when the law cannot say."""


def fit_selection(fit: FitResult) -> dict[str, Any]:
    """The ``experiment`` / ``split`` / ``domain`` selection a fit was made on ({} if none)."""
    options = fit.options or {}
    selection = options.get("selection", options)
    return selection if isinstance(selection, Mapping) else {}


def one_loss_per_run(final_losses: pl.DataFrame) -> pl.DataFrame:
    """One final loss per run from :func:`tasks.lake.final_losses` rows (one per run, split and
    domain): the validation split and the aggregate domain ``all`` when the run has them."""
    if final_losses.height == 0:
        return final_losses
    return (
        final_losses.with_columns(
            (pl.col("split") != "val").alias("_split_rank"),
            (pl.col("domain") != "all").alias("_domain_rank"),
        )
        .sort(["run_id", "_split_rank", "_domain_rank"])
        .group_by("run_id", maintain_order=True)
        .first()
        .drop("_split_rank", "_domain_rank")
    )


def prediction_intervals(fits: Iterable[Any]) -> PredictInterval | None:
    """A predictor of ``(predicted, low, high)`` loss for new runs from the previous fits.

    Each run is predicted by the previous fit of its experiment
    (:func:`mixplan.planning.fitting.predict_with_interval`, any law whose columns the run has). The
    interval is the 95% band of the bootstrap laws' predictions widened by the fit's backtest
    median relative error (at least 1%), so it covers run-to-run noise and not only the
    uncertainty of the law's mean. Runs with no matching fit get NaN and are never flagged.
    Entries of ``fits`` that are not :class:`FitResult` (mixture fits) are ignored; None when
    no fit names an experiment.
    """
    from mixplan.planning.fitting import predict_with_interval

    by_experiment: dict[str, FitResult] = {}
    for fit in fits:
        if not isinstance(fit, FitResult):
            continue
        experiment = fit_selection(fit).get("experiment")
        if experiment and experiment not in by_experiment:
            by_experiment[experiment] = fit
    if not by_experiment:
        return None

    def predict(runs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        predicted = np.full(runs.height, np.nan)
        low = np.full(runs.height, np.nan)
        high = np.full(runs.height, np.nan)
        for experiment, fit in by_experiment.items():
            mask = (runs["experiment"] == experiment).to_numpy()
            if not mask.any():
                continue
            try:
                rows = predict_with_interval(fit, runs.filter(pl.Series(mask)))
            except Exception:  # noqa: BLE001 - the law needs columns these runs lack
                continue
            noise = max(_backtest_error(fit), 0.01)
            point = rows["predicted_loss"].to_numpy()
            lo = rows["loss_low"].cast(pl.Float64).to_numpy()
            hi = rows["loss_high"].cast(pl.Float64).to_numpy()
            lo = np.where(np.isfinite(lo), lo, point)
            hi = np.where(np.isfinite(hi), hi, point)
            predicted[mask] = point
            low[mask] = lo - noise * np.abs(point)
            high[mask] = hi + noise * np.abs(point)
        if np.isnan(predicted).all():
            return None
        return predicted, low, high

    return predict


def _backtest_error(fit: FitResult) -> float:
    """The fit's backtest median relative error, 0 when unknown."""
    try:
        error = float((fit.backtest or {}).get("median_relative_error"))
    except (TypeError, ValueError):
        return 0.0
    return error if np.isfinite(error) else 0.0


def flag_runs(
    run_ids: Sequence[str],
    observed: Sequence[float],
    predicted: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
) -> pl.DataFrame:
    """Compare observed losses with a previous fit's prediction intervals.

    Parameters
    ----------
    run_ids, observed
        The new runs and their observed final losses (nats per token).
    predicted, low, high
        The previous fit's point prediction and interval bounds for each run.

    Returns
    -------
    polars.DataFrame
        One row per run: ``run_id, observed, predicted, low, high, rel_error, outside``
        (``outside`` is True when the observed loss falls outside ``[low, high]``), sorted with
        the flagged runs first, largest relative error first.
    """
    observed_arr = np.asarray(observed, dtype=float)
    predicted_arr = np.asarray(predicted, dtype=float)
    low_arr = np.asarray(low, dtype=float)
    high_arr = np.asarray(high, dtype=float)
    lengths = {len(run_ids), observed_arr.size, predicted_arr.size, low_arr.size, high_arr.size}
    if len(lengths) != 1:
        raise ValueError(f"flag_runs needs arrays of one length, got lengths {sorted(lengths)}")
    lower = np.minimum(low_arr, high_arr)
    upper = np.maximum(low_arr, high_arr)
    outside = (observed_arr < lower) | (observed_arr > upper)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_error = (observed_arr - predicted_arr) / predicted_arr
    frame = pl.DataFrame(
        {
            "run_id": list(run_ids),
            "observed": observed_arr,
            "predicted": predicted_arr,
            "low": lower,
            "high": upper,
            "rel_error": rel_error,
            "outside": outside,
        },
        schema={
            "run_id": pl.String,
            "observed": pl.Float64,
            "predicted": pl.Float64,
            "low": pl.Float64,
            "high": pl.Float64,
            "rel_error": pl.Float64,
            "outside": pl.Boolean,
        },
    )
    return (
        frame.with_columns(pl.col("rel_error").abs().alias("_abs"))
        .sort(["outside", "_abs"], descending=[True, True])
        .drop("_abs")
    )


@dataclass(frozen=True)
class PlanMove:
    """One plan quantity that moved beyond its interval between two pipeline runs."""

    plan: str
    quantity: str
    previous: float
    current: float
    low: float | None
    high: float | None

    @property
    def relative_change(self) -> float:
        """``current / previous - 1`` (0 when the previous value was 0)."""
        return self.current / self.previous - 1.0 if self.previous else 0.0


def plan_moves(
    plan: str,
    previous: PlanQuantities,
    current: PlanQuantities,
    *,
    rel_tolerance: float = 0.1,
    min_change: float = 0.01,
) -> list[PlanMove]:
    """The quantities of a plan that moved beyond their intervals.

    A quantity moved when its current value lies outside the previous run's interval, or outside
    its own current interval's image of the previous value (either plan's uncertainty can be the
    wider one; a move must exceed both). When neither plan has an interval for it, a relative
    change above ``rel_tolerance`` counts as a move (mixture weights: an absolute change above
    ``rel_tolerance`` / 2, since shares live in [0, 1]).

    Parameters
    ----------
    plan
        The plan's name (the spec file's stem), copied into each move.
    previous, current
        The two plans flattened by quantity name (see :data:`PlanQuantities`).
    rel_tolerance
        Fallback threshold when no interval is known.
    min_change
        A smaller relative change (absolute for mixture shares) never counts as a move, even
        when a point estimate sits outside its own interval (skewed bootstrap distributions).
    """
    moves = []
    for quantity in sorted(set(previous) & set(current)):
        prev_value, prev_low, prev_high = previous[quantity]
        value, low, high = current[quantity]
        if prev_value is None or value is None:
            continue
        if not (np.isfinite(prev_value) and np.isfinite(value)):
            continue
        change = (
            abs(value - prev_value)
            if quantity.startswith("mixture:")
            else abs(value - prev_value) / max(abs(prev_value), 1e-300)
        )
        if change <= min_change:
            continue
        intervals = [
            (lo, hi)
            for lo, hi in ((prev_low, prev_high), (low, high))
            if lo is not None and hi is not None
        ]
        if intervals:
            # moved only if the new value leaves the previous interval AND the old value
            # leaves the current one: the move exceeds both plans' uncertainty
            outside_prev = (
                prev_low is None or prev_high is None or not (prev_low <= value <= prev_high)
            )
            outside_curr = low is None or high is None or not (low <= prev_value <= high)
            moved = outside_prev and outside_curr
        elif quantity.startswith("mixture:"):
            moved = abs(value - prev_value) > rel_tolerance / 2
        else:
            moved = prev_value != 0 and abs(value / prev_value - 1.0) > rel_tolerance
        if moved:
            moves.append(
                PlanMove(plan, quantity, float(prev_value), float(value), prev_low, prev_high)
            )
    return moves


@dataclass(frozen=True)
class DriftResult:
    """What changed since the previous run: new runs checked, runs flagged, plans moved."""

    previous_run_at: str | None
    new_runs: int
    checked_runs: pl.DataFrame
    moves: tuple[PlanMove, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def flagged(self) -> pl.DataFrame:
        """The new runs whose loss fell outside the previous fit's prediction interval."""
        return self.checked_runs.filter(pl.col("outside"))

    def summary(self) -> str:
        """One sentence for the report and the artifact."""
        if self.previous_run_at is None:
            return "First pipeline run on this lake: nothing to compare with yet."
        flagged = self.flagged.height
        return (
            f"Compared with the run of {self.previous_run_at}: {self.new_runs} new run(s), "
            f"{self.checked_runs.height} checked against the previous fit, {flagged} outside "
            f"its prediction interval; {len(self.moves)} plan "
            + (
                "quantity moved beyond its interval."
                if len(self.moves) == 1
                else "quantities moved beyond their intervals."
            )
        )


def detect_drift(
    previous: Mapping[str, Any],
    *,
    new_runs: pl.DataFrame,
    predict_interval: PredictInterval | None,
    plans: Mapping[str, Mapping[str, Sequence[float | None]]],
) -> DriftResult:
    """Compare new runs with the previous fit's intervals and plans with the previous plans.

    Parameters
    ----------
    previous
        The previous pipeline state (``run_at`` and ``plans``), {} on a first run.
    new_runs
        Final losses (one row per run: ``run_id``, ``experiment``, ``loss`` and the law's
        columns) of the runs added since the previous run.
    predict_interval
        The previous fit's prediction for rows of ``new_runs`` (:func:`prediction_intervals`);
        None when there was no fit.
    plans
        The current plans flattened (``quantity -> (value, low, high)``) by spec name.
    """
    notes: list[str] = []
    empty = flag_runs([], [], [], [], [])
    if not previous:
        return DriftResult(None, new_runs.height, empty)
    checked = empty
    if new_runs.height and predict_interval is not None:
        prediction = predict_interval(new_runs)
        if prediction is None:
            notes.append("the previous fit cannot predict the new runs (other experiments)")
        else:
            predicted, low, high = prediction
            checked = flag_runs(
                new_runs["run_id"].to_list(), new_runs["loss"].to_numpy(), predicted, low, high
            )
    moves: list[PlanMove] = []
    previous_plans = previous.get("plans", {})
    for name, quantities in plans.items():
        before = previous_plans.get(name)
        if before is None:
            notes.append(f"plan {name} is new")
            continue
        moves.extend(
            plan_moves(
                name,
                {k: tuple(v) for k, v in before.items()},
                {k: tuple(v) for k, v in quantities.items()},
            )
        )
    return DriftResult(previous.get("run_at"), new_runs.height, checked, tuple(moves), tuple(notes))
