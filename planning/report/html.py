"""Render a :class:`~mixplan.planning.report.model.Report` as one self-contained HTML page.

Images are inlined as base64 data URIs and the stylesheet is embedded, so the file can be
mailed, attached to a ticket or opened offline; the page loads nothing from the network.
"""

from __future__ import annotations

import base64
from html import escape

from mixplan.planning.report.format import estimate_table, format_interval, format_quantity
from mixplan.planning.report.model import (
    DriftSection,
    Estimate,
    Figure,
    LawSection,
    PlanSection,
    Report,
    Table,
)

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --accent:#2563eb; --bg:#f7f8fa;
        --warn:#b45309; --warn-bg:#fffbeb; --bad:#b91c1c; --bad-bg:#fef2f2; --ok:#047857;
        --ok-bg:#ecfdf5; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 32px 24px 64px; }
header.top {
  border-bottom: 3px solid var(--accent); margin-bottom: 24px; padding-bottom: 12px; }
h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 {
  font-size: 20px; margin: 36px 0 12px; padding-bottom: 6px;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 0 0 8px; }
.sub { color: var(--muted); font-size: 13px; }
nav { margin: 12px 0 0; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
.card {
  background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 20px;
  margin: 14px 0; box-shadow: 0 1px 2px rgba(0,0,0,.03); }
.facts {
  display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 10px; }
.fact { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.fact .k {
  color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.fact .v { font-size: 17px; font-weight: 600; font-variant-numeric: tabular-nums; }
.kpis { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 10px;
        margin: 10px 0 14px; }
.kpi { border-left: 3px solid var(--accent); padding: 4px 10px; }
.kpi .k { color: var(--muted); font-size: 12.5px; }
.kpi .v { font-size: 19px; font-weight: 650; font-variant-numeric: tabular-nums; }
.kpi .i { color: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; margin: 8px 0 4px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-weight: 600; font-size: 12.5px; background: #fafbfc; }
td { font-variant-numeric: tabular-nums; }
caption {
  caption-side: top; text-align: left; color: var(--muted); font-size: 12.5px; padding: 4px 0; }
code, .formula {
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
.formula {
  background: var(--bg); border-radius: 6px; padding: 6px 10px; display: inline-block; }
figure { margin: 12px 0; }
figure img {
  max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 8px;
  background: #fff; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 12px; }
ul.explain { margin: 6px 0; padding-left: 20px; }
.badge {
  display:inline-block; font-size:12px; font-weight:600; padding:2px 8px; border-radius:999px; }
.badge.ok { color: var(--ok); background: var(--ok-bg); }
.badge.warn { color: var(--warn); background: var(--warn-bg); }
.badge.bad { color: var(--bad); background: var(--bad-bg); }
.note { color: var(--warn); background: var(--warn-bg); border-radius: 6px; padding: 6px 10px;
        margin: 6px 0; font-size: 13px; }
footer { color: var(--muted); font-size: 12px; margin-top: 48px; }
"""


def _badge(status: str) -> str:
    lowered = status.lower()
    kind = (
        "ok"
        if lowered in ("optimal", "ok", "no drift", "unchanged")
        else (
            "bad" if lowered in ("infeasible", "unbounded", "error", "failed", "drift") else "warn"
        )
    )
    return f'<span class="badge {kind}">{escape(status)}</span>'


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(column)}</th>" for column in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows
    )
    caption = f"<caption>{escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    caption = f"<figcaption>{escape(figure.caption)}</figcaption>" if figure.caption else ""
    return (
        f'<figure><img alt="{escape(figure.title)}" src="data:image/png;base64,{data}">'
        f"{caption}</figure>"
    )


def _kpis(estimates: tuple[Estimate, ...]) -> str:
    cells = []
    for estimate in estimates:
        interval = format_interval(estimate.low, estimate.high, estimate.unit)
        interval_html = (
            f'<div class="i">{estimate.level:.0%}: {escape(interval)}</div>'
            if interval != "—"
            else ""
        )
        cells.append(
            f'<div class="kpi"><div class="k">{escape(estimate.name)}</div>'
            f'<div class="v">{escape(format_quantity(estimate.value, estimate.unit))}</div>'
            f"{interval_html}</div>"
        )
    return f'<div class="kpis">{"".join(cells)}</div>' if cells else ""


def _estimate_table(estimates: tuple[Estimate, ...], caption: str) -> str:
    return _table(estimate_table(estimates, caption))


def _figures(figures: tuple[Figure, ...]) -> str:
    return f'<div class="figs">{"".join(_figure(f) for f in figures)}</div>' if figures else ""


def _law(section: LawSection) -> str:
    parts = [f'<div class="card"><h3>{escape(section.title)}</h3>']
    parts.append(f'<div class="formula">{escape(section.formula)}</div>')
    if section.summary:
        parts.append(f'<p class="sub">{escape(section.summary)}</p>')
    parts.extend(f'<div class="note">{escape(note)}</div>' for note in section.notes)
    if section.decisions:
        parts.append(_kpis(section.decisions))
    parts.append(_figures(section.figures))
    if section.parameters:
        parts.append(_estimate_table(section.parameters, "fitted parameters (bootstrap by run)"))
    if section.backtest:
        parts.append(
            _estimate_table(
                section.backtest, "backtest: fit below a compute cut-off, predict the larger runs"
            )
        )
    parts.extend(_table(table) for table in section.tables)
    parts.append("</div>")
    return "".join(parts)


def _plan(section: PlanSection) -> str:
    parts = [f'<div class="card"><h3>{escape(section.title)} {_badge(section.status)}</h3>']
    parts.append(_kpis(section.decisions))
    if section.explanations:
        items = "".join(f"<li>{escape(text)}</li>" for text in section.explanations)
        parts.append(f'<ul class="explain">{items}</ul>')
    parts.extend(_table(table) for table in section.tables)
    parts.append(_figures(section.figures))
    parts.append("</div>")
    return "".join(parts)


def _drift(section: DriftSection) -> str:
    status = "drift" if section.has_flags else "no drift"
    parts = [
        f'<div class="card"><h3>Since the last run {_badge(status)}</h3>',
        f"<p>{escape(section.summary)}</p>",
    ]
    if section.changes:
        items = "".join(f"<li>{escape(text)}</li>" for text in section.changes)
        parts.append(f'<ul class="explain">{items}</ul>')
    for table in (section.flagged_runs, section.moved_plans):
        if table is not None and table.rows:
            parts.append(_table(table))
    parts.append("</div>")
    return "".join(parts)


def render_html(report: Report) -> str:
    """The report as a complete, self-contained HTML document (UTF-8 text).

    Parameters
    ----------
    report
        What to show; see :class:`mixplan.planning.report.model.Report`.

    Returns
    -------
    str
        ``<!doctype html>`` page with embedded CSS and base64 PNG images, no external links.
    """
    sections: list[tuple[str, str, str]] = []
    if report.drift is not None:
        sections.append(("changes", "What changed", _drift(report.drift)))
    if report.plans:
        sections.append(("plans", "Plans", "".join(_plan(p) for p in report.plans)))
    if report.laws:
        sections.append(("laws", "Fitted laws", "".join(_law(s) for s in report.laws)))
    if report.coverage is not None:
        sections.append(
            ("coverage", "Lake coverage", f'<div class="card">{_table(report.coverage)}</div>')
        )
    if report.problems:
        items = "".join(f'<div class="note">{escape(text)}</div>' for text in report.problems)
        sections.append(("problems", "Problems", f'<div class="card">{items}</div>'))
    nav = "".join(f'<a href="#{anchor}">{escape(title)}</a>' for anchor, title, _ in sections)
    facts = "".join(
        f'<div class="fact"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div></div>'
        for k, v in report.facts
    )
    body = "".join(
        f'<section id="{anchor}"><h2>{escape(title)}</h2>{content}</section>'
        for anchor, title, content in sections
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(report.title)}</title><style>{CSS}</style></head><body><main>"
        f'<header class="top"><h1>{escape(report.title)}</h1>'
        f'<div class="sub">generated {escape(report.generated_at)}</div><nav>{nav}</nav></header>'
        f'<div class="facts">{facts}</div>{body}'
        "<footer>mixplan: scaling-law fits and compute-optimal plans from your run logs. "
        "Intervals are bootstrap percentile intervals (runs resampled, never checkpoints); "
        "each states its coverage.</footer>"
        "</main></body></html>\n"
    )
