"""Drift between pipeline runs: new runs the previous fit did not predict, plans that moved.

Pure computation on plain values; the pipeline's drift task supplies the numbers (new runs from
the lake's table history, predictions from the previous stored fit, previous and current plans).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

PlanQuantities = Mapping[str, tuple[float | None, float | None, float | None]]
"""A plan flattened to ``name -> (value, low, high)``: ``params``, ``tokens``, ``vocab_size``,
``loss``, ``mixture:<source>``; low/high may be ``None`` when the plan has no interval."""


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
