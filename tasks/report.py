"""Write and publish the pipeline's planning report (HTML file + Markdown artifact).

Thin tasks around :mod:`planning.report`: they read what the report needs from the lake and the
stored fits, let :func:`planning.report.build.build_report` assemble the model, and write the
rendered strings atomically.

The law sections (tables and charts of every fitted law, the slow part: matplotlib) depend only
on the fits and the runs they were fitted on, both fixed by the fit cache key
(:func:`mixplan.tasks.drift.cache_key`). They are kept in ``<lake>/pipeline/law-sections.json``
under that key, and a run whose key is unchanged reuses them instead of drawing them again.
"""

from __future__ import annotations

import base64
import dataclasses
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
from mixplan.planning.report import (
    Estimate,
    Figure,
    LawSection,
    Table,
    render_html,
    render_markdown,
)
from mixplan.planning.report.build import build_report
from mixplan.planning.report.coverage import coverage_table
from mixplan.planning.report.laws import mixture_section as mixture_section  # tests import it here
from mixplan.planning.report.laws import runs_of_fit
from mixplan.tasks.storage import is_local, join, local_path, read_text, write_text_atomic

LAW_SECTIONS_FILE = "pipeline/law-sections.json"


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


def _section_to_dict(section: LawSection) -> dict[str, Any]:
    data = dataclasses.asdict(section)
    for figure in data["figures"]:
        figure["png"] = base64.b64encode(figure["png"]).decode("ascii")
    return data


def _section_from_dict(data: Mapping[str, Any]) -> LawSection:
    def estimates(rows) -> tuple[Estimate, ...]:
        return tuple(Estimate(**row) for row in rows)

    return LawSection(
        title=data["title"],
        formula=data["formula"],
        parameters=estimates(data["parameters"]),
        summary=data["summary"],
        decisions=estimates(data["decisions"]),
        backtest=estimates(data["backtest"]),
        notes=tuple(data["notes"]),
        figures=tuple(
            Figure(f["title"], base64.b64decode(f["png"]), f["caption"]) for f in data["figures"]
        ),
        tables=tuple(
            Table(tuple(t["columns"]), tuple(tuple(row) for row in t["rows"]), t["caption"])
            for t in data["tables"]
        ),
    )


def cached_law_sections(lake: str, fit_key: str) -> list[LawSection] | None:
    """The law sections stored under ``fit_key`` by an earlier run, None when there are none
    (another key, no file, or a file this code cannot read)."""
    text = read_text(join(lake, LAW_SECTIONS_FILE))
    try:
        stored = json.loads(text) if text else {}
        if stored.get("fit_key") != fit_key or stored.get("code") != code_version():
            return None
        return [_section_from_dict(section) for section in stored["sections"]]
    except (ValueError, KeyError, TypeError):
        return None


def store_law_sections(lake: str, fit_key: str, sections: Sequence[LawSection]) -> None:
    """Keep the law sections of the fits under ``fit_key`` for the next run."""
    payload = {
        "fit_key": fit_key,
        "code": code_version(),
        "sections": [_section_to_dict(section) for section in sections],
    }
    write_text_atomic(join(lake, LAW_SECTIONS_FILE), json.dumps(payload))


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
    fit_key: str | None = None,
    fits_reused: bool = False,
) -> dict[str, str]:
    """Build the report and write ``report.html`` and ``report.md`` atomically (plus a dated
    copy of the HTML under ``history/``). Returns their paths.

    ``reports`` must be a local folder. The lake is read for the coverage table and for the
    runs behind each fit's charts; what cannot be read becomes a line under "problems".
    With ``fit_key`` (the fits' cache key) the law sections are stored for the next run; with
    ``fits_reused`` too (the fits are the previous run's files), the sections the previous run
    stored under that key are reused instead of drawn again.
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
    sections = cached_law_sections(lake, fit_key) if fit_key and fits_reused else None
    fits_with_runs = []
    for fit in fits if sections is None else ():
        try:
            fits_with_runs.append((fit, fitted_runs(lake, fit)))
        except Exception as error:  # noqa: BLE001 - one broken section must not sink all
            problems.append(f"fit {fit.name}: could not be shown ({error})")
    shown_problems = len(problems)
    now = datetime.now(UTC)
    report = build_report(
        lake=lake,
        code=code_version(),
        generated_at=now.strftime("%Y-%m-%d %H:%M UTC"),
        coverage=coverage,
        fits=fits_with_runs if sections is None else [(fit, pl.DataFrame()) for fit in fits],
        mixture_fits=mixture_fits,
        plans=plans,
        drift=drift,
        whatifs=whatifs,
        problems=problems,
        run_facts=run_facts,
        law_sections=sections,
    )
    complete = len(fits_with_runs) == len(fits) and len(report.problems) == shown_problems
    if fit_key and sections is None and complete:  # every section built: keep them
        store_law_sections(lake, fit_key, report.laws)
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
