"""The report renderers: readable numbers, self-contained HTML, Markdown, real PNG charts."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from mixplan.planning.report import (
    DriftSection,
    Estimate,
    Figure,
    LawSection,
    PlanSection,
    Report,
    Table,
    format_count,
    format_flops,
    format_interval,
    format_quantity,
    plots,
    render_html,
    render_markdown,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7.0e9, "7.0B"),
        (1.4e12, "1.4T"),
        (125e6, "125M"),
        (41.7e9, "41.7B"),
        (99.96e6, "100M"),
        (512, "512"),
        (2.5e15, "2.5e15"),
        (None, "—"),
        (float("nan"), "—"),
    ],
)
def test_counts_read_with_suffixes(value, expected):
    assert format_count(value) == expected


def test_units_are_printed():
    assert format_flops(5.76e23) == "5.8e23 FLOPs"
    assert format_quantity(7e9, "params") == "7.0B params"
    assert format_quantity(0.0123, "fraction") == "1.2%"
    assert format_interval(6e9, 8e9, "params") == "6.0B – 8.0B params"
    assert format_interval(1e22, 3e22, "flops") == "1.0e22 – 3.0e22 FLOPs"
    assert format_interval(None, 8e9, "params") == "—"


def sample_report() -> Report:
    """A report with every section, built from numbers of the Chinchilla law (laws.md G1-G3)."""
    rng = np.random.default_rng(0)
    alpha, beta, big_a, big_b, e = 0.336, 0.283, 406.4, 410.7, 1.69
    params = 10 ** rng.uniform(7.5, 10, 60)
    tokens = 10 ** rng.uniform(9, 11.5, 60)
    flops = 6 * params * tokens
    loss = e + big_a / params**alpha + big_b / tokens**beta + rng.normal(0, 0.01, 60)
    held = flops > np.quantile(flops, 0.8)
    grid = np.logspace(17, 24, 40)
    g = (alpha * big_a / (beta * big_b)) ** (1 / (alpha + beta))
    n_opt = g * (grid / 6) ** (beta / (alpha + beta))
    d_opt = grid / (6 * n_opt)
    curve = e + big_a / n_opt**alpha + big_b / d_opt**beta
    budgets = [1e19, 1e20, 1e21]
    sizes = [np.logspace(7, 10.5, 50) for _ in budgets]
    iso = [
        e + big_a / n**alpha + big_b / (c / (6 * n)) ** beta
        for c, n in zip(budgets, sizes, strict=True)
    ]
    best = [int(np.argmin(curve_)) for curve_ in iso]
    law = LawSection(
        title="Chinchilla law on epoch-research",
        formula="L(N, D) = E + A / N^alpha + B / D^beta",
        parameters=(Estimate("alpha", 0.336, 0.31, 0.36), Estimate("E", 1.69, 1.65, 1.73, "loss")),
        decisions=(Estimate("N_opt at 1e24 FLOPs", 5.3682e10, 4.1e10, 6.6e10, "params"),),
        backtest=(Estimate("median relative error", 0.012, unit="fraction"),),
        notes=("extrapolating more than 10x past the largest run",),
        figures=(
            Figure(
                "loss vs compute",
                plots.loss_vs_compute(
                    flops=flops,
                    loss=loss,
                    held_out=held,
                    curve_flops=grid,
                    curve_loss=curve,
                    curve_low=curve - 0.02,
                    curve_high=curve + 0.02,
                    cutoff_flops=float(np.quantile(flops, 0.8)),
                ),
            ),
            Figure(
                "isoFLOP curves",
                plots.isoflop_curves(
                    budgets=budgets,
                    params=sizes,
                    losses=iso,
                    optimum_params=[s[i] for s, i in zip(sizes, best, strict=True)],
                    optimum_loss=[c[i] for c, i in zip(iso, best, strict=True)],
                ),
            ),
        ),
    )
    plan = PlanSection(
        title="example <plan> & co",
        status="optimal",
        decisions=(
            Estimate("parameters", 4.1716e10, 3.9e10, 4.4e10, "params"),
            Estimate("tokens", 2.3013e12, 2.1e12, 2.5e12, "tokens"),
        ),
        explanations=("the compute budget binds",),
        tables=(Table(("budget", "loss"), (("1e22", "2.10"), ("1e23", "2.00"))),),
        figures=(
            Figure("frontier", plots.loss_cost_frontier(cost=grid, loss=curve, chosen=(1e23, 2.0))),
            Figure(
                "mixture",
                plots.mixture_bars(
                    sources=["web", "code", "books"],
                    weights=[0.6, 0.3, 0.1],
                    low=[0.5, 0.25, 0.05],
                    high=[0.7, 0.35, 0.15],
                ),
            ),
        ),
    )
    drift = DriftSection(
        summary="2 new runs; 1 outside the previous prediction interval.",
        flagged_runs=Table(("run", "observed", "interval"), (("a/run-1", "2.31", "[2.1, 2.2]"),)),
        changes=("parameters moved from 30B to 42B",),
    )
    return Report(
        title="mixplan report",
        generated_at="2026-01-01 00:00 UTC",
        facts=(("runs", "1,234"), ("lake version", "3")),
        coverage=Table(("experiment", "runs"), (("epoch-research", "245"),)),
        laws=(law,),
        plans=(plan,),
        drift=drift,
        problems=("mixture fit skipped: no data",),
    )


def test_html_is_self_contained_with_every_chart_inlined():
    report = sample_report()
    page = render_html(report)
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4
    for encoded in images:
        assert base64.b64decode(encoded).startswith(PNG_MAGIC)
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page must load nothing remote"
    assert "example &lt;plan&gt; &amp; co" in page  # user text is escaped
    assert "41.7B params" in page and "2.3T tokens" in page
    for anchor in ("changes", "plans", "laws", "coverage", "problems"):
        assert f'id="{anchor}"' in page


def test_markdown_has_the_tables_and_no_images():
    text = render_markdown(sample_report())
    assert text.startswith("# mixplan report")
    assert "| parameters | 41.7B params | 39.0B – 44.0B params |" in text
    assert "## What changed" in text and "a/run-1" in text
    assert "data:image" not in text


def test_drift_section_flags():
    assert not DriftSection(summary="nothing new").has_flags
    assert DriftSection("x", flagged_runs=Table(("run",), (("a",),))).has_flags
