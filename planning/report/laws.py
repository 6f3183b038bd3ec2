"""Report sections for fitted laws: a scale law's parameters, decisions, backtest and charts,
and a mixture fit's per-domain floors and held-out comparison.

Pure: the caller passes the fit and the runs it was fitted on (read from the lake elsewhere).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from mixplan.planning.drift import fit_selection, one_loss_per_run
from mixplan.planning.fitting.calibration import coverage_note, widening_note
from mixplan.planning.fitting.result import FitResult
from mixplan.planning.report import plots
from mixplan.planning.report.format import (
    format_flops,
    format_interval,
    format_loss,
    format_percent,
    format_quantity,
)
from mixplan.planning.report.model import Estimate, Figure, LawSection, Table
from mixplan.planning.report.values import finite

FORMULAS = {
    "chinchilla": "L(N, D) = E + A / N^alpha + B / D^beta",
    "kaplan": "L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D",
    "gadre": "L(N, M) = E + a N^eta + b 6^(eta/2) (M N)^eta,  M = D / N",
    "muennighoff": "L(N, D, U) = E + A / N'^alpha + B / D'^beta  (effective repeated data)",
    "tao": "L_u(N_nv, V, D) = -E + A1 / N_nv^alpha1 + A2 / (V d)^alpha2 + B / D^beta",
    "loss_curve": "L(s) = L0 + A S1^(-alpha) - C S2  (learning-rate areas)",
    "steplaw": "lr_opt = lr_coef N^lr_params_exp D^lr_tokens_exp,  B_opt = bs_coef D^bs_tokens_exp",
}


DECISION_UNITS = {
    "params": "params",
    "tokens": "tokens",
    "tokens_per_param": "",
    "loss": "loss",
    "flops": "flops",
}


def _frontier(fit: FitResult, grid: np.ndarray) -> tuple[np.ndarray, ...] | None:
    law = fit.law
    if not hasattr(law, "compute_optimal"):
        return None
    params, tokens = law.compute_optimal(grid)
    curve = law.predict(params, tokens)
    low = high = None
    if fit.n_bootstrap:
        draws = []
        for draw in fit.law_draws():
            n, d = draw.compute_optimal(grid)
            draws.append(draw.predict(n, d))
        band = np.nanpercentile(np.vstack(draws), [2.5, 97.5], axis=0)
        low, high = band[0], band[1]
    return curve, low, high


def _isoflop_figure(fit: FitResult, flops: np.ndarray) -> Figure | None:
    law = fit.law
    if not hasattr(law, "compute_optimal"):
        return None
    top = float(np.nanmax(flops)) if flops.size else 1e21
    budgets = [10 ** round(math.log10(top)) * f for f in (0.01, 1.0, 100.0)]
    sizes, losses, best_n, best_l = [], [], [], []
    for budget in budgets:
        n_opt, _ = law.compute_optimal(budget)
        n_grid = float(n_opt) * np.logspace(-1.2, 1.2, 60)
        loss = law.predict(n_grid, budget / (6 * n_grid))
        sizes.append(n_grid)
        losses.append(loss)
        index = int(np.argmin(loss))
        best_n.append(n_grid[index])
        best_l.append(loss[index])
    png = plots.isoflop_curves(
        budgets=budgets, params=sizes, losses=losses, optimum_params=best_n, optimum_loss=best_l
    )
    return Figure(
        "isoFLOP curves",
        png,
        "Loss against model size at fixed compute (D = C / 6N); dots mark each budget's optimum.",
    )


def runs_of_fit(fit: FitResult, final_losses: pl.DataFrame) -> pl.DataFrame:
    """The runs to chart with a fit: one final loss per run from the final losses of its
    selection, in nats per token unless the law models another loss kind (Tao's Lossu)."""
    frame = final_losses
    kinds = frame["loss_kind"].unique().to_list() if "loss_kind" in frame.columns else []
    if fit.law.name != "tao" and "nats" in kinds:
        frame = frame.filter(pl.col("loss_kind") == "nats")
    return one_loss_per_run(frame)


def law_section(fit: FitResult, frame: pl.DataFrame | None = None) -> LawSection:
    """One fitted scale law: parameters and decisions with intervals, backtest, charts.

    ``frame`` holds the fitted runs (``run_id``, ``flops``, ``loss``; one row per run) for the
    charts; without it the section has tables only.
    """
    selection = fit_selection(fit)
    where = ", ".join(
        f"{k} {v}" for k, v in selection.items() if v and k in ("experiment", "split", "domain")
    )
    title = f"{fit.law.name} law" + (f" · {where}" if where else "") + f" ({fit.name})"
    intervals = fit.intervals() if fit.n_bootstrap else {}
    parameters = []
    for name in type(fit.law).param_names():
        point, low, high = intervals.get(name, (getattr(fit.law, name), None, None))
        parameters.append(Estimate(name, finite(point), finite(low), finite(high)))
    decisions = []
    decision_rows = []
    budgets = list(fit.decisions.get("flops", []))
    labels = {"params": "optimal N", "tokens": "optimal D", "loss": "loss"}
    for j, budget in enumerate(budgets):
        row = [format_flops(budget)]
        for key in ("params", "tokens", "tokens_per_param", "loss"):
            if key not in fit.decisions:
                row.append("—")
                continue
            point, low, high = intervals.get(
                f"{key}@{budget:.3g}", (fit.decisions[key][j], None, None)
            )
            estimate = Estimate(
                f"{labels.get(key, 'tokens / param')} at {format_flops(budget)}",
                finite(point),
                finite(low),
                finite(high),
                DECISION_UNITS[key],
            )
            if j == min(1, len(budgets) - 1):  # headline: one decade past the largest run
                decisions.append(estimate)
            interval = format_interval(estimate.low, estimate.high, estimate.unit)
            row.append(
                format_quantity(estimate.value, estimate.unit)
                + ("" if interval == "—" else f" ({interval})")
            )
        decision_rows.append(tuple(row))
    bt = fit.backtest or {}
    backtest: list[Estimate] = []
    notes = list(fit.warnings)
    if bt.get("status") == "ok":
        backtest = [
            Estimate(
                "median relative error", finite(bt.get("median_relative_error")), unit="fraction"
            ),
            Estimate("max relative error", finite(bt.get("max_relative_error")), unit="fraction"),
            Estimate(
                "mean signed error", finite(bt.get("mean_signed_relative_error")), unit="fraction"
            ),
            Estimate(
                "runs fitted / held out",
                None if bt.get("n_train_runs") is None else float(bt["n_train_runs"]),
                unit=f"/ {bt.get('n_test_runs')} held out",
            ),
            Estimate("compute cut-off", finite(bt.get("cutoff_flops")), unit="flops"),
        ]
    elif bt:
        notes.append(f"backtest {bt.get('status', 'not run')}")
    figures = []
    tables = []
    frame = pl.DataFrame() if frame is None else frame
    if frame.height and "flops" in frame.columns:
        frame = frame.filter(pl.col("flops").is_not_null() & pl.col("loss").is_not_null())
    if frame.height:
        flops = frame["flops"].to_numpy()
        held_ids = {run["run_id"] for run in bt.get("runs", [])}
        held = frame["run_id"].is_in(list(held_ids)).to_numpy()
        grid = np.logspace(math.log10(flops.min()) - 0.3, math.log10(flops.max()) + 1.5, 60)
        frontier = _frontier(fit, grid)
        if frontier is not None:
            curve, low, high = frontier
            png = plots.loss_vs_compute(
                flops=flops,
                loss=frame["loss"].to_numpy(),
                held_out=held,
                curve_flops=grid,
                curve_loss=curve,
                curve_low=low,
                curve_high=high,
                cutoff_flops=finite(bt.get("cutoff_flops")),
            )
            figures.append(
                Figure(
                    "loss vs compute",
                    png,
                    "Observed final losses (grey: used to fit, red: held out above the cut-off) "
                    "and "
                    "the law's compute-optimal loss with its 95% bootstrap band.",
                )
            )
            iso = _isoflop_figure(fit, flops)
            if iso is not None:
                figures.append(iso)
    if len(decision_rows) > 1:
        tables.append(
            Table(
                ("budget", "optimal N", "optimal D", "tokens / param", "loss"),
                tuple(decision_rows),
                "compute-optimal decisions at each budget, with 95% bootstrap intervals",
            )
        )
    if bt.get("runs"):
        worst = sorted(bt["runs"], key=lambda run: -run["relative_error"])[:8]
        tables.append(
            Table(
                ("held-out run", "compute", "observed", "predicted", "error"),
                tuple(
                    (
                        r["run_id"],
                        format_flops(r["flops"]),
                        format_loss(r["observed"]),
                        format_loss(r["predicted"]),
                        format_percent(r["relative_error"]),
                    )
                    for r in worst
                ),
                "largest backtest errors (fit below the cut-off, predict above it)",
            )
        )
    tables.extend(selection_tables(fit))
    if fit.calibration:
        notes.append(
            f"{fit.calibration['level']:.0%} loss intervals: {coverage_note(fit.calibration)}"
        )
    return LawSection(
        title=title,
        formula=FORMULAS.get(fit.law.name, fit.law.name),
        parameters=tuple(parameters),
        decisions=tuple(decisions),
        backtest=tuple(backtest),
        notes=tuple(notes),
        figures=tuple(figures),
        tables=tuple(tables),
    )


def _exponent(entry: Mapping[str, Any], key: str) -> str:
    value = finite(entry.get(key))
    if value is None:
        return "—"
    lo, hi = entry.get(f"{key}_interval", [None, None])
    band = "" if finite(lo) is None else f" ({lo:.3f} – {hi:.3f})"
    return f"{value:.3f}{band}"


def selection_tables(fit: FitResult) -> list[Table]:
    """The tables on which law to trust: the rolling-origin leaderboard of the fit's data, the
    calibrated loss intervals with their measured coverage, and the isoFLOP exponents next to
    the parametric fit's (each only when the fit carries it)."""
    tables = []
    board = fit.leaderboard or {}
    if board.get("entries"):
        rows = []
        for entry in board["entries"]:
            cov = entry.get("coverage", {})
            rows.append(
                (
                    str(entry["rank"]),
                    entry["law"] + (" (this fit)" if entry.get("fit") == fit.name else ""),
                    format_percent(finite(entry["score"])),
                    str(entry["n_origins"]),
                    f"{cov['coverage']:.0%} of {cov['n']}" if cov.get("n") else "—",
                )
            )
        quantiles = ", ".join(f"{q:g}" for q in board["quantiles"])
        tables.append(
            Table(
                ("rank", "law", "held-out error", "origins", f"{board['level']:.0%} coverage"),
                tuple(rows),
                f"laws ranked by extrapolation: fit below compute quantiles {quantiles}, "
                "predict the runs above (mean relative error); coverage of calibrated "
                "intervals on held-out runs",
            )
        )
    bands = fit.decisions.get("loss_calibrated", [])
    if bands and fit.calibration:
        level = fit.calibration["level"]
        rows = [
            (format_flops(budget), format_loss(loss), f"{format_loss(lo)} – {format_loss(hi)}")
            for budget, loss, (lo, hi) in zip(
                fit.decisions["flops"], fit.decisions["loss"], bands, strict=False
            )
        ]
        tables.append(
            Table(
                ("budget", "compute-optimal loss", f"{level:.0%} prediction interval"),
                tuple(rows),
                f"calibrated on the backtests; {coverage_note(fit.calibration)}; "
                f"{widening_note(fit.calibration)}",
            )
        )
    iso = fit.isoflop or {}
    if iso.get("status") == "ok":
        labels = (
            ("approach_1", "isoFLOP approach 1 (per-budget minima)"),
            ("approach_2", "isoFLOP approach 2 (parabola per budget)"),
            ("parametric", "parametric fit: beta/(alpha+beta), alpha/(alpha+beta)"),
        )
        rows = [
            (label, _exponent(iso[key], "a"), _exponent(iso[key], "b"))
            for key, label in labels
            if key in iso
        ]
        tables.append(
            Table(
                ("method", "a in N* ~ C^a", "b in D* ~ C^b"),
                tuple(rows),
                f"compute-optimal exponents from {iso['n_slices']} isoFLOP budgets, "
                f"{iso.get('level', 0.9):.0%} bootstrap intervals by run",
            )
        )
    return tables


HEADLINE_PARAMETER = {
    "exponential": "c",
    "additive": "E",
    "per_source": "L_inf",
    "nested": "E",
    "scale": "E",
}
"""The loss floor each mixture law family reports per domain (shown with its interval)."""


def mixture_section(result: Mapping[str, Any]) -> LawSection:
    """A ``fit_mixture`` result: each family's form, per-domain floors with intervals, and the
    held-out comparison (Spearman, mean relative error) against the regression baselines."""
    experiment = result.get("experiment", "")
    held_out = result.get("held_out_experiment")
    fits = result.get("fits") or {}
    title = f"mixture laws · experiment {experiment}" + (
        f" (scored on {held_out})" if held_out else ""
    )
    formula = "; ".join(f"{family}: {entry.get('form', '')}" for family, entry in fits.items())
    summary = (
        f"{result.get('runs', '?')} runs, {len(result.get('sources', []))} training sources, "
        f"{len(result.get('domains', []))} validation domains."
    )
    tables: list[Table] = []
    figures: list[Figure] = []
    scores = result.get("scores") or []
    if scores:
        models = list(dict.fromkeys(row["model"] for row in scores))
        by_domain: dict[str, dict[str, Mapping[str, Any]]] = {}
        for row in scores:
            by_domain.setdefault(row["domain"], {})[row["model"]] = row
        columns = ["domain"]
        for model in models:
            columns += [f"{model} Spearman", f"{model} MRE"]
        rows = []
        for domain, per_model in by_domain.items():
            cells = [domain]
            for model in models:
                row = per_model.get(model, {})
                cells += [
                    _four_decimals(row.get("spearman")),
                    format_percent(finite(row.get("mre")), digits=2),
                ]
            rows.append(tuple(cells))
        mean = ["mean"]
        for model in models:
            values = [r for r in scores if r["model"] == model]
            mean += [
                _four_decimals(np.mean([finite(r.get("spearman")) or np.nan for r in values])),
                format_percent(
                    float(np.mean([finite(r.get("mre")) or np.nan for r in values])), digits=2
                ),
            ]
        rows.append(tuple(mean))
        tables.append(
            Table(
                tuple(columns),
                tuple(rows),
                f"held-out accuracy on {held_out}: rank correlation (Spearman) and mean relative "
                "error per validation domain",
            )
        )
        domains = list(by_domain)
        png = plots.grouped_bars(
            categories=domains,
            series={
                model: [finite(by_domain[d].get(model, {}).get("mre")) or np.nan for d in domains]
                for model in models
            },
            xlabel=f"mean relative error on {held_out} (lower is better)",
            percent=True,
        )
        figures.append(
            Figure(
                "held-out error by law",
                png,
                "Each law fitted on the training runs predicts the held-out runs' losses.",
            )
        )
    for family, entry in fits.items():
        headline = HEADLINE_PARAMETER.get(family)
        params = entry.get("params") or []
        if not headline or not params:
            continue
        rows = []
        for row in params:
            low, high = finite(row.get(f"{headline}_lo")), finite(row.get(f"{headline}_hi"))
            rows.append(
                (
                    str(row.get("domain", ""))
                    + (f" ({row['route']}, weight {row['weight']:.2f})" if "route" in row else ""),
                    format_loss(finite(row.get(headline))),
                    "—" if low is None or high is None else f"{low:.3f} – {high:.3f}",
                    _four_decimals(row.get("objective")),
                )
            )
        tables.append(
            Table(
                ("domain", f"loss floor {headline}", "95% interval", "objective"),
                tuple(rows),
                f"{family} law per validation domain: {entry.get('form', '')}",
            )
        )
    scale = result.get("scale")
    if scale:
        tables.extend(_scale_tables(scale))
        summary += (
            f" Across scale: {scale.get('chosen', '?')} chosen by leave-largest-scale-out."
            + (f" Warning: {scale['step_warning']}" if scale.get("step_warning") else "")
        )
    return LawSection(
        title=title,
        formula=formula,
        parameters=(),
        summary=summary,
        tables=tuple(tables),
        figures=tuple(figures),
    )


def _scale_tables(scale: Mapping[str, Any]) -> list[Table]:
    """The leave-largest-scale-out scores and the planned mixture against the best observed
    run (the ``scale`` entry of a ``fit_mixture`` result)."""
    tables = []
    scores = scale.get("scores") or []
    if scores:
        tables.append(
            Table(
                ("route", "fitted on sizes", "MAE on the largest size", "max error", "status"),
                tuple(
                    (
                        str(row.get("route", "")),
                        str(row.get("fit_sizes", "")),
                        _four_decimals(row.get("mae")),
                        _four_decimals(row.get("max_error")),
                        str(row.get("status", "")),
                    )
                    for row in scores
                ),
                "mixture routes across scale: each fitted on the smaller model sizes predicts the "
                f"largest size's runs (never seen); chosen: {scale.get('chosen', '?')}",
            )
        )
    planned, best = scale.get("planned") or {}, scale.get("best_observed") or {}
    target = scale.get("target") or {}
    if planned and best:
        interval = planned.get("interval_90")
        span = "—" if not interval else f"{interval[0]:.4f} – {interval[1]:.4f}"

        def mix(weights: Mapping[str, float]) -> str:
            return ", ".join(f"{k} {v:.3f}" for k, v in weights.items())

        tables.append(
            Table(
                ("mixture", "weights", "mean loss", "90% interval", "law's prediction"),
                (
                    (
                        "planned (law's optimum)",
                        mix(planned.get("mixture", {})),
                        "—",
                        span,
                        _four_decimals(planned.get("predicted_loss")),
                    ),
                    (
                        f"best observed ({best.get('run_id', '')})",
                        mix(best.get("mixture", {})),
                        _four_decimals(best.get("loss")),
                        "—",
                        _four_decimals(best.get("predicted_loss")),
                    ),
                ),
                f"mixture at the target N = {finite(target.get('params')) or float('nan'):.3g}, "
                f"D = {finite(target.get('tokens')) or float('nan'):.3g} tokens (equal domain "
                "weights, each source within the largest share it had in the fitted runs)",
            )
        )
    return tables


def _four_decimals(value: Any) -> str:
    """A score with four decimals (Spearman, objective), an em dash when unknown."""
    number = finite(value)
    return "—" if number is None else f"{number:.4f}"
