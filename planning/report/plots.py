"""Report charts drawn offline with matplotlib's Agg backend, returned as PNG bytes.

Each function takes plain arrays (already computed by the caller) and draws one chart; none
reads files or touches global pyplot state, so they are safe to call from worker threads.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import FuncFormatter

from mixplan.planning.report.format import format_count

INK = "#1f2933"
ACCENT = "#2563eb"
HELD_OUT = "#dc2626"
MUTED = "#9aa5b1"
BAND = "#bfdbfe"
LOSS_LABEL = "loss (nats / token)"
PALETTE = ("#2563eb", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#ea580c")


def _figure(width: float = 6.4, height: float = 3.8) -> tuple[MplFigure, object]:
    figure = MplFigure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.spines[["top", "right"]].set_visible(False)
    for spine in axes.spines.values():
        spine.set_color(MUTED)
    axes.tick_params(colors=INK, labelsize=8.5)
    axes.grid(True, which="major", color="#e4e7eb", linewidth=0.7)
    axes.set_axisbelow(True)
    return figure, axes


def _png(figure: MplFigure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


def _log_x_chart(
    figure: MplFigure,
    axes,
    *,
    xlabel: str,
    ylabel: str,
    legend: str | None = None,
    x_formatter: FuncFormatter | None = None,
) -> bytes:
    """Finish a line chart on a log x axis (ticks by ``x_formatter`` if given): labels and a
    frameless legend (titled ``legend``); returns the PNG."""
    axes.set_xscale("log")
    if x_formatter is not None:
        axes.xaxis.set_major_formatter(x_formatter)
    axes.set_xlabel(xlabel, color=INK)
    axes.set_ylabel(ylabel, color=INK)
    axes.legend(frameon=False, fontsize=8, title=legend, title_fontsize=8)
    return _png(figure)


def _count_formatter() -> FuncFormatter:
    return FuncFormatter(lambda value, _pos: format_count(value, digits=0))


def loss_vs_compute(
    *,
    flops: Sequence[float],
    loss: Sequence[float],
    held_out: Sequence[bool],
    curve_flops: Sequence[float],
    curve_loss: Sequence[float],
    curve_low: Sequence[float] | None = None,
    curve_high: Sequence[float] | None = None,
    cutoff_flops: float | None = None,
) -> bytes:
    """Observed loss against training compute with the fitted law's compute-optimal frontier.

    Points used for fitting are grey, held-out (backtest) points red; the band is the
    bootstrap interval of the law's prediction.
    """
    flops_arr = np.asarray(flops, dtype=float)
    loss_arr = np.asarray(loss, dtype=float)
    held = np.asarray(held_out, dtype=bool)
    figure, axes = _figure()
    if curve_low is not None and curve_high is not None:
        axes.fill_between(
            curve_flops, curve_low, curve_high, color=BAND, alpha=0.8, lw=0, label="law interval"
        )
    axes.plot(curve_flops, curve_loss, color=ACCENT, lw=2, label="fitted law (optimal N, D)")
    axes.scatter(
        flops_arr[~held],
        loss_arr[~held],
        s=14,
        color=MUTED,
        alpha=0.8,
        label="runs used to fit",
        zorder=3,
    )
    if held.any():
        axes.scatter(
            flops_arr[held],
            loss_arr[held],
            s=22,
            color=HELD_OUT,
            marker="D",
            label="held-out runs",
            zorder=4,
        )
    if cutoff_flops:
        axes.axvline(cutoff_flops, color=HELD_OUT, lw=0.8, ls="--", alpha=0.6)
    return _log_x_chart(figure, axes, xlabel="training compute (FLOPs)", ylabel=LOSS_LABEL)


def isoflop_curves(
    *,
    budgets: Sequence[float],
    params: Sequence[Sequence[float]],
    losses: Sequence[Sequence[float]],
    optimum_params: Sequence[float],
    optimum_loss: Sequence[float],
) -> bytes:
    """Loss against model size at fixed compute budgets (isoFLOP curves) with each optimum."""
    figure, axes = _figure()
    for index, budget in enumerate(budgets):
        colour = PALETTE[index % len(PALETTE)]
        label = f"{budget:.0e}".replace("e+", "e") + " FLOPs"
        axes.plot(params[index], losses[index], color=colour, lw=1.8, label=label)
        axes.scatter(
            [optimum_params[index]],
            [optimum_loss[index]],
            color=colour,
            s=30,
            edgecolor="white",
            zorder=3,
        )
    return _log_x_chart(
        figure,
        axes,
        xlabel="parameters",
        ylabel=LOSS_LABEL,
        legend="budget",
        x_formatter=_count_formatter(),
    )


def loss_cost_frontier(
    *,
    cost: Sequence[float],
    loss: Sequence[float],
    chosen: tuple[float, float] | None = None,
    cost_label: str = "training compute (FLOPs)",
) -> bytes:
    """The Pareto frontier of predicted loss against cost over a budget sweep."""
    figure, axes = _figure()
    axes.plot(cost, loss, color=ACCENT, lw=2, marker="o", ms=3.5, label="best achievable loss")
    if chosen is not None:
        axes.scatter([chosen[0]], [chosen[1]], color=HELD_OUT, s=45, zorder=4, label="this plan")
    return _log_x_chart(figure, axes, xlabel=cost_label, ylabel="predicted " + LOSS_LABEL)


def mixture_bars(
    *,
    sources: Sequence[str],
    weights: Sequence[float],
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
) -> bytes:
    """Planned mixture weights per source as horizontal bars with interval whiskers."""
    weights_arr = np.asarray(weights, dtype=float)
    height = max(2.2, 0.32 * len(sources) + 1.0)
    figure, axes = _figure(height=height)
    positions = np.arange(len(sources))
    xerr = None
    if low is not None and high is not None:
        low_arr = np.asarray(low, dtype=float)
        high_arr = np.asarray(high, dtype=float)
        xerr = np.vstack(
            [np.clip(weights_arr - low_arr, 0, None), np.clip(high_arr - weights_arr, 0, None)]
        )
    axes.barh(
        positions,
        weights_arr,
        color=ACCENT,
        alpha=0.85,
        height=0.6,
        xerr=xerr,
        error_kw={"ecolor": INK, "elinewidth": 1, "capsize": 3},
    )
    axes.set_yticks(positions, labels=list(sources), fontsize=8.5)
    axes.invert_yaxis()
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{100 * value:.0f}%"))
    axes.set_xlabel("share of training tokens", color=INK)
    axes.grid(False, axis="y")
    return _png(figure)


def grouped_bars(
    *,
    categories: Sequence[str],
    series: dict[str, Sequence[float]],
    xlabel: str,
    percent: bool = False,
) -> bytes:
    """Horizontal grouped bars: one group per category, one bar per series (e.g. per law)."""
    count = len(categories)
    height = max(2.4, 0.22 * count * max(1, len(series)) ** 0.5 + 1.2)
    figure, axes = _figure(height=height)
    positions = np.arange(count)
    width = 0.8 / max(1, len(series))
    for index, (name, values) in enumerate(series.items()):
        axes.barh(
            positions + (index - (len(series) - 1) / 2) * width,
            np.asarray(values, dtype=float),
            height=width,
            color=PALETTE[index % len(PALETTE)],
            label=name,
        )
    axes.set_yticks(positions, labels=list(categories), fontsize=8)
    axes.invert_yaxis()
    if percent:
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{100 * value:.0f}%"))
    axes.set_xlabel(xlabel, color=INK)
    axes.grid(False, axis="y")
    axes.legend(frameon=False, fontsize=8)
    return _png(figure)
