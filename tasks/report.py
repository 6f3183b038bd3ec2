"""Write and publish the pipeline's planning report (HTML file + Markdown artifact).

Thin tasks around :mod:`planning.report`: they read what the report needs from the lake and the
stored fits, let :func:`planning.report.build.build_report` assemble the model, and write the
rendered strings atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mixplan.planning.drift import DriftResult, fit_selection
from mixplan.planning.fitting.result import FitResult
from mixplan.planning.provenance import code_version
from mixplan.planning.report import Table, render_html, render_markdown
from mixplan.planning.report.build import build_report
from mixplan.planning.report.coverage import coverage_table
from mixplan.planning.report.laws import mixture_section as mixture_section  # tests import it here
from mixplan.planning.report.laws import runs_of_fit
from mixplan.tasks.locking import is_local, local_path, read_text, write_text_atomic


@task(name="load-fits", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def load_fits(paths: Sequence[str]) -> list[FitResult]:
    """Load stored scale-law fits; files that are gone or hold no :class:`FitResult` are
    skipped with a warning."""
    loaded = []
    for path in paths:
        text = read_text(path)
        if text is None:
            get_run_logger().warning("stored fit %s is gone; skipped", path)
            continue
        try:
            loaded.append(FitResult.from_dict(json.loads(text)))
        except Exception as error:  # noqa: BLE001 - a foreign file must not sink the run
            get_run_logger().warning("%s is not a scale-law fit (%s); skipped", path, error)
    return loaded


def fitted_runs(lake: str, fit: FitResult) -> pl.DataFrame:
    """The runs a fit was made from (one final loss per run), read from the lake."""
    from mixplan.tasks.lake import final_losses

    selection = fit_selection(fit)
    return runs_of_fit(
        fit,
        final_losses(
            lake,
            experiment=selection.get("experiment"),
            split=selection.get("split"),
            domain=selection.get("domain"),
        ),
    )


def lake_coverage(lake: str) -> Table:
    """The lake coverage table (:func:`planning.report.coverage.coverage_table`) of ``lake``."""
    from mixplan.tasks.lake import lake_summary, read_runs

    return coverage_table(lake_summary(lake), read_runs(lake))


@task(name="render-report", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def render_report(
    *,
    lake: str,
    reports: str,
    fits: Sequence[FitResult],
    mixture_fits: Sequence[Mapping[str, Any]] = (),
    plans: Mapping[str, Any],
    drift: DriftResult | None = None,
    whatifs: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    problems: Sequence[str] = (),
    run_facts: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Build the report and write ``report.html`` and ``report.md`` atomically (plus a dated
    copy of the HTML under ``history/``). Returns their paths.

    ``reports`` must be a local folder. The lake is read for the coverage table and for the
    runs behind each fit's charts; what cannot be read becomes a line under "problems".
    """
    if not is_local(reports):
        raise ValueError(
            f"reports must be a local folder, got {reports!r}: pass --reports <folder>"
        )
    problems = list(problems)
    coverage = None
    try:
        coverage = lake_coverage(lake)
    except Exception as error:  # noqa: BLE001 - the report goes out without the table
        problems.append(f"lake coverage unavailable: {error}")
    fits_with_runs = []
    for fit in fits:
        try:
            fits_with_runs.append((fit, fitted_runs(lake, fit)))
        except Exception as error:  # noqa: BLE001 - one broken section must not sink all
            problems.append(f"fit {fit.name}: could not be shown ({error})")
    now = datetime.now(UTC)
    report = build_report(
        lake=lake,
        code=code_version(),
        generated_at=now.strftime("%Y-%m-%d %H:%M UTC"),
        coverage=coverage,
        fits=fits_with_runs,
        mixture_fits=mixture_fits,
        plans=plans,
        drift=drift,
        whatifs=whatifs,
        problems=problems,
        run_facts=run_facts,
    )
    folder = local_path(reports)
    html = render_html(report)
    paths = {
        "html": write_text_atomic(folder / "report.html", html),
        "markdown": write_text_atomic(folder / "report.md", render_markdown(report)),
    }
    write_text_atomic(folder / "history" / f"report-{now:%Y%m%dT%H%M%S}.html", html)
    get_run_logger().info(
        "report: %s (%d laws, %d plans)", paths["html"], len(report.laws), len(report.plans)
    )
    return paths


@task(name="publish-report-artifact", cache_policy=NO_CACHE)
def publish_report(markdown_path: str, *, key: str = "mixplan-report") -> str:
    """Publish the Markdown report as a Prefect artifact (visible in the Prefect UI)."""
    text = Path(markdown_path).read_text(encoding="utf-8")
    return str(create_markdown_artifact(text, key=key, description="mixplan planning report"))
