"""Pipeline state between scheduled runs, and the drift check that compares two runs.

The state of the last completed pipeline run (lake table versions, source hashes, the fit cache
key and the stored fit paths, each plan flattened to ``quantity -> (value, low, high)``) lives in
``<lake>/pipeline/state.json``, written atomically. The next run reads it to (a) skip refitting
when nothing changed and (b) compare new runs with the previous fit's prediction intervals and
the new plans with the previous plans (:mod:`mixplan.planning.drift`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mixplan.planning.drift import DriftResult, detect_drift, one_loss_per_run, prediction_intervals
from mixplan.planning.fitting.result import FitResult
from mixplan.planning.provenance import code_version
from mixplan.tasks.storage import exists, join, read_text, write_text_atomic

STATE_FILE = "pipeline/state.json"


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


def reusable_fits(previous: Mapping[str, Any], key: str) -> bool:
    """True when the previous run's stored fits can be reused: its fit cache key equals
    ``key`` (:func:`cache_key`), it stored scale-law fits, and every stored file still exists."""
    stored = [*previous.get("fit_paths", []), *previous.get("mixture_paths", [])]
    return (
        previous.get("fit_key") == key
        and bool(previous.get("fit_paths"))
        and all(exists(path) for path in stored)
    )


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


def plan_key(fit_key: str, specs: Mapping[str, Any]) -> str:
    """A key that changes when the fits (their :func:`cache_key`) or any spec's content change:
    while it is unchanged the previous run's plans and what-if rows are reused."""
    payload = json.dumps({"fits": fit_key, "specs": specs}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@task(name="new-runs-since", retries=3, retry_delay_seconds=2, cache_policy=NO_CACHE)
def new_runs_since(lake: str, runs_version: int | None) -> pl.DataFrame:
    """Final losses (one per run) of the runs added since ``runs_version`` of the runs table
    (empty on a first run, when there is no previous version)."""
    from mixplan.tasks.lake import final_losses, read_runs

    if runs_version is None or runs_version < 0:
        return pl.DataFrame()
    before = read_runs(lake, version=runs_version)["run_id"].to_list()
    return one_loss_per_run(final_losses(lake).filter(~pl.col("run_id").is_in(before)))


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift(
    previous: Mapping[str, Any],
    *,
    new_runs: pl.DataFrame,
    previous_fits: Sequence[FitResult],
    plans: Mapping[str, Mapping[str, Sequence[float | None]]],
) -> DriftResult:
    """Compare new runs with the previous fits' prediction intervals and plans with the
    previous plans (:func:`mixplan.planning.drift.detect_drift`), and log the one-line summary.

    Parameters
    ----------
    previous
        The previous pipeline state (:func:`load_state`), {} on a first run.
    new_runs
        The runs added since the previous run (:func:`new_runs_since`).
    previous_fits
        The previous run's scale-law fits; each new run is predicted by its experiment's fit.
    plans
        The current plans flattened (``quantity -> (value, low, high)``) by spec name.
    """
    result = detect_drift(
        previous,
        new_runs=new_runs,
        predict_interval=prediction_intervals(previous_fits),
        plans=plans,
    )
    get_run_logger().info(result.summary())
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
