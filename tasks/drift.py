"""Pipeline state between scheduled runs, and the drift check that compares two runs.

The state of the last completed pipeline run (lake table versions, source hashes, the fit cache
key and the stored fit paths, each plan flattened to ``quantity -> (value, low, high)``) lives in
``<lake>/pipeline/state.json``, written atomically. The next run reads it to (a) skip refitting
when nothing changed and (b) compare new runs with the previous fit's prediction intervals and
the new plans with the previous plans (:mod:`planning.drift`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from planning.drift import PlanMove, flag_runs, plan_moves
from planning.provenance import code_version
from tasks.locking import join, read_text, write_text_atomic

STATE_FILE = "pipeline/state.json"

PredictInterval = Callable[[pl.DataFrame], tuple[Any, Any, Any] | None]
"""``runs -> (predicted, low, high)`` arrays for those runs, or None when the law cannot say."""


def state_url(lake: str) -> str:
    """Where the pipeline state of ``lake`` is stored."""
    return join(lake, STATE_FILE)


@task(name="load-pipeline-state", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def load_state(lake: str) -> dict:
    """The state of the last completed pipeline run on ``lake`` ({} on the first run)."""
    text = read_text(state_url(lake))
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        get_run_logger().warning("ignoring an unreadable pipeline state at %s", state_url(lake))
        return {}


@task(name="save-pipeline-state", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def save_state(lake: str, state: Mapping[str, Any]) -> str:
    """Write the pipeline state atomically; returns its URL."""
    return write_text_atomic(state_url(lake), json.dumps(state, indent=1, sort_keys=True))


def cache_key(source_hashes: Mapping[str, str], options: Mapping[str, Any]) -> str:
    """A key that changes when any ingested file's content, an option or the code changes."""
    payload = json.dumps(
        {
            "sources": dict(sorted(source_hashes.items())),
            "options": options,
            "code": code_version(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


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


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift(
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
        The previous pipeline state (:func:`load_state`), {} on a first run.
    new_runs
        :func:`tasks.lake.final_losses` rows of the runs added since the previous run.
    predict_interval
        The previous fit's prediction for rows of ``new_runs``; None when there was no fit.
    plans
        The current plans flattened (``quantity -> (value, low, high)``) by spec name.
    """
    logger = get_run_logger()
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
    result = DriftResult(
        previous.get("run_at"), new_runs.height, checked, tuple(moves), tuple(notes)
    )
    logger.info(result.summary())
    return result


@task(name="publish-drift-artifacts", cache_policy=NO_CACHE)
def publish_drift(result: DriftResult, *, key: str = "mixplan-drift") -> None:
    """Publish the drift check as Prefect artifacts (a Markdown summary and a table of flags)."""
    lines = [f"## mixplan drift\n\n{result.summary()}\n"]
    lines.extend(f"- {note}" for note in result.notes)
    for move in result.moves:
        lines.append(
            f"- **{move.plan}**: {move.quantity} moved {move.previous:.4g} -> {move.current:.4g} "
            f"({move.relative_change:+.1%})"
        )
    create_markdown_artifact("\n".join(lines), key=key, description="mixplan drift check")
    flagged = result.flagged
    if flagged.height:
        create_table_artifact(
            flagged.select("run_id", "observed", "predicted", "low", "high").to_dicts(),
            key=f"{key}-runs",
            description="new runs outside the previous fit's prediction interval",
        )
