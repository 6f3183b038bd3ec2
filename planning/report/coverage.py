"""The lake coverage table: per experiment, how many runs and evaluations, and which ranges of
model size, tokens and compute they span."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from mixplan.planning.report.format import format_count, format_flops
from mixplan.planning.report.model import Table


def coverage_table(summary: Mapping[str, Any], runs: pl.DataFrame) -> Table:
    """Per experiment: runs, evaluations, and the ranges of N, D and C the lake covers.

    Parameters
    ----------
    summary
        The lake's counts (:func:`mixplan.tasks.lake.lake_summary`): ``runs``, ``metric_rows``,
        ``sources``, ``quarantined_rows`` and ``experiments -> {runs, metric_rows}``.
    runs
        The lake's runs table (``experiment``, ``params`` / ``non_embedding_params``,
        ``tokens``, ``flops``, ``mixture``).
    """
    size = pl.coalesce("params", "non_embedding_params")  # some sources give only one
    ranges = (
        runs.group_by("experiment")
        .agg(
            size.min().alias("n_lo"),
            size.max().alias("n_hi"),
            pl.col("tokens").min().alias("d_lo"),
            pl.col("tokens").max().alias("d_hi"),
            pl.col("flops").min().alias("c_lo"),
            pl.col("flops").max().alias("c_hi"),
            (pl.col("mixture").list.len() > 1).any().alias("mix"),
        )
        .sort("experiment")
    )
    rows = []
    for row in ranges.iter_rows(named=True):
        counts = summary["experiments"].get(row["experiment"], {})
        rows.append(
            (
                row["experiment"],
                f"{counts.get('runs', 0):,}",
                f"{counts.get('metric_rows', 0):,}",
                _span(format_count(row["n_lo"]), format_count(row["n_hi"])),
                _span(format_count(row["d_lo"]), format_count(row["d_hi"])),
                _span(_flops_bare(row["c_lo"]), _flops_bare(row["c_hi"])),
                "yes" if row["mix"] else "",
            )
        )
    return Table(
        (
            "experiment",
            "runs",
            "evaluations",
            "parameters",
            "tokens",
            "compute (FLOPs)",
            "mixtures",
        ),
        tuple(rows),
        f"{summary['runs']:,} runs, {summary['metric_rows']:,} evaluations from "
        f"{summary['sources']} files; {summary['quarantined_rows']:,} records quarantined",
    )


def _span(low: str, high: str) -> str:
    """A range of two formatted ends, collapsed to one when they are equal."""
    return low if low == high else f"{low} – {high}"


def _flops_bare(value: float | None) -> str:
    """Compute without its unit (the column header names it): ``5.8e23``."""
    return format_flops(value).removesuffix(" FLOPs")
