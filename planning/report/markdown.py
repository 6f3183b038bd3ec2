"""Render a :class:`~mixplan.planning.report.model.Report` as Markdown (for Prefect artifacts).

Images are left out (Prefect's artifact view does not take inline PNGs); the HTML report holds
them.
"""

from __future__ import annotations

from mixplan.planning.report.format import estimate_table
from mixplan.planning.report.model import Estimate, Report, Table


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table (with its caption in italics above it)."""
    lines = [f"*{table.caption}*", ""] if table.caption else []
    lines.append("| " + " | ".join(_cell(c) for c in table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows)
    return "\n".join(lines)


def _estimates(estimates: tuple[Estimate, ...]) -> str:
    return markdown_table(estimate_table(estimates))


def render_markdown(report: Report) -> str:
    """The report as Markdown text: facts, drift, plans, laws, coverage (no images)."""
    out = [f"# {report.title}", "", f"_generated {report.generated_at}_", ""]
    out.extend(f"- **{key}**: {value}" for key, value in report.facts)
    if report.drift is not None:
        drift = report.drift
        out += ["", "## What changed", "", drift.summary, ""]
        out.extend(f"- {change}" for change in drift.changes)
        for table in (drift.flagged_runs, drift.moved_plans):
            if table is not None and table.rows:
                out += ["", markdown_table(table)]
    if report.plans:
        out += ["", "## Plans"]
        for plan in report.plans:
            out += ["", f"### {plan.title} ({plan.status})", "", _estimates(plan.decisions), ""]
            out.extend(f"- {text}" for text in plan.explanations)
            for table in plan.tables:
                out += ["", markdown_table(table)]
    if report.laws:
        out += ["", "## Fitted laws"]
        for law in report.laws:
            out += ["", f"### {law.title}", "", f"`{law.formula}`", ""]
            if law.summary:
                out += [law.summary, ""]
            out.extend(f"> {note}" for note in law.notes)
            for estimates in (law.decisions, law.parameters, law.backtest):
                if estimates:
                    out += ["", _estimates(estimates)]
            for table in law.tables:
                out += ["", markdown_table(table)]
    if report.coverage is not None:
        out += ["", "## Lake coverage", "", markdown_table(report.coverage)]
    if report.problems:
        out += ["", "## Problems", ""]
        out.extend(f"- {text}" for text in report.problems)
    return "\n".join(out) + "\n"
