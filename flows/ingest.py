"""The Prefect flow ``ingest``: logs -> validated Delta lake (discover, parse, validate, write)."""

from __future__ import annotations

import shutil
import tempfile

from prefect import flow, get_run_logger

from mixplan.flows.config import DEFAULT_LAKE
from mixplan.tasks.ingest import (
    FileReport,
    IngestReport,
    discover_task,
    has_lake,
    lake_write_lock,
    parse_task,
    skipped,
    summary_task,
    validate_task,
    write_task,
)


@flow(name="ingest", log_prints=False)
def ingest(
    paths: list[str],
    lake: str = str(DEFAULT_LAKE),
    format: str | None = None,
    mappings_dir: str | None = None,
) -> dict:
    """Ingest run logs into the lake; returns the summary dict of ``IngestReport.to_dict``.

    Unchanged files (same content hash as recorded in the lake) are skipped; each other file is
    parsed, validated and committed on its own, so one bad file never blocks the others.
    """
    logger = get_run_logger()
    with lake_write_lock(lake):  # no other ingest decides and writes in between
        reports = _ingest_files(paths, lake, format, mappings_dir, logger)
        summary = summary_task(lake) if has_lake(reports) else {}
    return IngestReport(lake=lake, files=reports, lake_summary=summary).to_dict()


def _ingest_files(
    paths: list[str], lake: str, format: str | None, mappings_dir: str | None, logger
) -> list[FileReport]:
    """Discover, then parse -> validate -> write each file that changed (as Prefect tasks)."""
    plans = discover_task(paths, lake, format=format, mappings_dir=mappings_dir)
    reports: list[FileReport] = []
    for plan in plans:
        if plan.action != "ingest":
            reports.append(skipped(plan))
            continue
        staging = tempfile.mkdtemp(prefix="mixplan-stage-")
        try:
            parsed = parse_task(plan, staging, mappings_dir)
            validated = validate_task(parsed, staging, lake)
            report = write_task(validated, plan, lake)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info(
            "%s: %s runs, %s metric rows, quarantined %s",
            plan.path,
            report.runs,
            report.metric_rows,
            report.quarantined or "none",
        )
        reports.append(report)
    return reports
