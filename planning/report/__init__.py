"""Planning reports: a data model, its assembly from results, offline charts and renderers.

Pure: no Prefect, no file I/O. :func:`mixplan.planning.report.build.build_report` assembles a
:class:`Report` from fits (:mod:`~planning.report.laws`), plans (:mod:`~planning.report.plans`),
the lake coverage (:mod:`~mixplan.planning.report.coverage`) and the drift check
(:mod:`~planning.report.drift`); :func:`render_html` and :func:`render_markdown` turn it into
the strings the pipeline's report task writes. Charts are drawn by :mod:`~planning.report.plots`.
"""

from mixplan.planning.report.format import (
    format_count,
    format_flops,
    format_interval,
    format_loss,
    format_percent,
    format_quantity,
)
from mixplan.planning.report.html import render_html
from mixplan.planning.report.markdown import markdown_table, render_markdown
from mixplan.planning.report.model import (
    DriftSection,
    Estimate,
    Figure,
    LawSection,
    PlanSection,
    Report,
    Table,
)

__all__ = [
    "DriftSection",
    "Estimate",
    "Figure",
    "LawSection",
    "PlanSection",
    "Report",
    "Table",
    "format_count",
    "format_flops",
    "format_interval",
    "format_loss",
    "format_percent",
    "format_quantity",
    "markdown_table",
    "render_html",
    "render_markdown",
]
