"""Planning reports: a data model, offline charts (PNG) and HTML / Markdown renderers.

Pure rendering: no Prefect, no file I/O. The pipeline builds a :class:`Report` from fits, plans
and drift checks and writes the strings these functions return.
"""

from planning.report.format import (
    format_count,
    format_flops,
    format_interval,
    format_loss,
    format_percent,
    format_quantity,
)
from planning.report.html import render_html
from planning.report.markdown import markdown_table, render_markdown
from planning.report.model import (
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
