"""Build, write and publish the pipeline's planning report (HTML file + Markdown artifact).

The translation from fits, plans and drift checks to the report's plain model
(:mod:`planning.report.model`) happens here, next to the lake reads it needs; the rendering is
pure (:mod:`planning.report`). Plans and mixture fits are read through small adapters that
accept the stages' dicts and dataclasses alike, so a new field never breaks the report.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from planning.drift import PlanMove
from planning.fitting.result import FitResult
from planning.provenance import code_version
from planning.report import (
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
    format_loss,
    format_percent,
    format_quantity,
    plots,
    render_html,
    render_markdown,
)
from tasks.locking import is_local, local_path, read_text, write_text_atomic

FORMULAS = {
    "chinchilla": "L(N, D) = E + A / N^alpha + B / D^beta",
    "kaplan": "L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D",
    "gadre": "L(N, M) = E + a N^eta + b 6^(eta/2) (M N)^eta,  M = D / N",
    "muennighoff": "L(N, D, U) = E + A / N'^alpha + B / D'^beta  (effective repeated data)",
    "tao": "L_u(N_nv, V, D) = -E + A1 / N_nv^alpha1 + A2 / (V d)^alpha2 + B / D^beta",
    "loss_curve": "L(s) = L0 + A S1^(-alpha) - C S2  (learning-rate areas)",
    "steplaw": "lr_opt = lr_coef N^lr_params_exp D^lr_tokens_exp,  B_opt = bs_coef D^bs_tokens_exp",
}


def _plan_level() -> float:
    try:
        from planning.plan import INTERVAL
    except ImportError:  # pragma: no cover - the planner is part of the project
        return 0.9
    return (INTERVAL[-1] - INTERVAL[0]) / 100


PLAN_LEVEL = _plan_level()
"""Coverage of the planner's intervals (its percentiles, e.g. 5-95 -> 0.90)."""

DECISION_UNITS = {
    "params": "params",
    "tokens": "tokens",
    "tokens_per_param": "",
    "loss": "loss",
    "flops": "flops",
}

# ----------------------------------------------------------------------------- helpers


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """The first of ``names`` present on a dict or an object (``None`` values skipped)."""
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return default


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return {}


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _triple(value: Any) -> tuple[float | None, float | None, float | None]:
    """``(value, low, high)`` from a number, a (v, lo, hi) sequence or a dict."""
    if isinstance(value, Mapping):
        return (
            _float(_get(value, "value", "point", "estimate", "median")),
            _float(_get(value, "low", "lo", "lower")),
            _float(_get(value, "high", "hi", "upper")),
        )
    if isinstance(value, list | tuple) and len(value) == 3:
        return _float(value[0]), _float(value[1]), _float(value[2])
    return _float(value), None, None


# ----------------------------------------------------------------------------- fits


@task(name="load-fits", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def load_fits(paths: Sequence[str]) -> list[Any]:
    """Load stored fits: :class:`FitResult` when the file is one, else the raw JSON dict."""
    loaded = []
    for path in paths:
        text = read_text(path)
        if text is None:
            continue
        data = json.loads(text)
        try:
            loaded.append(FitResult.from_dict(data))
        except Exception:  # noqa: BLE001 - mixture fits and other stores keep their dict
            data.setdefault("_path", str(path))
            loaded.append(data)
    return loaded


def _selection(fit: FitResult) -> dict[str, Any]:
    options = fit.options or {}
    selection = options.get("selection", options)
    return selection if isinstance(selection, Mapping) else {}


def _fit_frame(lake: str, fit: FitResult) -> pl.DataFrame:
    """The runs a fit was made from (one final loss per run), read from the lake."""
    from tasks.lake import final_losses

    selection = _selection(fit)
    frame = final_losses(
        lake,
        experiment=selection.get("experiment"),
        split=selection.get("split"),
        domain=selection.get("domain"),
    )
    if frame.height == 0:
        return frame
    if "loss_kind" in frame.columns:
        kinds = frame["loss_kind"].unique().to_list()
        if fit.law.name != "tao" and "nats" in kinds:
            frame = frame.filter(pl.col("loss_kind") == "nats")
    # one row per run: prefer the validation split and the aggregate domain
    return (
        frame.with_columns(
            (pl.col("split") != "val").alias("_split_rank"),
            (pl.col("domain") != "all").alias("_domain_rank"),
        )
        .sort(["run_id", "_split_rank", "_domain_rank"])
        .group_by("run_id", maintain_order=True)
        .first()
        .drop("_split_rank", "_domain_rank")
    )


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


def law_section(fit: FitResult, frame: pl.DataFrame | None = None) -> LawSection:
    """One fitted scale law: parameters and decisions with intervals, backtest, charts.

    ``frame`` holds the fitted runs (``run_id``, ``flops``, ``loss``; one row per run) for the
    charts; without it the section has tables only.
    """
    selection = _selection(fit)
    where = ", ".join(
        f"{k} {v}" for k, v in selection.items() if v and k in ("experiment", "split", "domain")
    )
    title = f"{fit.law.name} law" + (f" · {where}" if where else "") + f" ({fit.name})"
    intervals = fit.intervals() if fit.n_bootstrap else {}
    parameters = []
    for name in type(fit.law).param_names():
        point, low, high = intervals.get(name, (getattr(fit.law, name), None, None))
        parameters.append(Estimate(name, _float(point), _float(low), _float(high)))
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
                _float(point),
                _float(low),
                _float(high),
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
                "median relative error", _float(bt.get("median_relative_error")), unit="fraction"
            ),
            Estimate("max relative error", _float(bt.get("max_relative_error")), unit="fraction"),
            Estimate(
                "mean signed error", _float(bt.get("mean_signed_relative_error")), unit="fraction"
            ),
            Estimate(
                "runs fitted / held out",
                None if bt.get("n_train_runs") is None else float(bt["n_train_runs"]),
                unit=f"/ {bt.get('n_test_runs')} held out",
            ),
            Estimate("compute cut-off", _float(bt.get("cutoff_flops")), unit="flops"),
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
                cutoff_flops=_float(bt.get("cutoff_flops")),
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


HEADLINE_PARAMETER = {"exponential": "c", "additive": "E", "per_source": "L_inf", "nested": "E"}
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
                    format_number_or_dash(row.get("spearman")),
                    format_percent(_float(row.get("mre")), digits=2),
                ]
            rows.append(tuple(cells))
        mean = ["mean"]
        for model in models:
            values = [r for r in scores if r["model"] == model]
            mean += [
                format_number_or_dash(
                    np.mean([_float(r.get("spearman")) or np.nan for r in values])
                ),
                format_percent(
                    float(np.mean([_float(r.get("mre")) or np.nan for r in values])), digits=2
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
                model: [_float(by_domain[d].get(model, {}).get("mre")) or np.nan for d in domains]
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
            low, high = _float(row.get(f"{headline}_lo")), _float(row.get(f"{headline}_hi"))
            rows.append(
                (
                    str(row.get("domain", "")),
                    format_loss(_float(row.get(headline))),
                    "—" if low is None or high is None else f"{low:.3f} – {high:.3f}",
                    format_number_or_dash(row.get("objective")),
                )
            )
        tables.append(
            Table(
                ("domain", f"loss floor {headline}", "95% interval", "objective"),
                tuple(rows),
                f"{family} law per validation domain: {entry.get('form', '')}",
            )
        )
    return LawSection(
        title=title,
        formula=formula,
        parameters=(),
        summary=summary,
        tables=tuple(tables),
        figures=tuple(figures),
    )


def format_number_or_dash(value: Any) -> str:
    number = _float(value)
    return "—" if number is None else f"{number:.4f}"


# ----------------------------------------------------------------------------- plans

PLAN_QUANTITIES = (
    ("params", ("params", "N", "n_params"), "params", "parameters"),
    ("tokens", ("tokens", "D", "n_tokens"), "tokens", "training tokens"),
    ("vocab_size", ("vocab_size", "V", "vocab"), "count", "vocabulary"),
    ("loss", ("loss", "predicted_loss"), "loss", "predicted loss"),
    ("flops", ("train_flops", "flops", "compute"), "flops", "training compute"),
    ("cost", ("cost", "cost_dollars", "dollars", "total_cost"), "dollars", "cost"),
    ("train_days", ("train_days",), "days", "training time"),
    ("epochs", ("epochs",), "", "epochs over the data"),
)


def _plan_intervals(plan: Mapping[str, Any]) -> Mapping[str, Any]:
    value = _get(plan, "intervals", "uncertainty", default={})
    return value if isinstance(value, Mapping) else {}


def flatten_plan(result: Any) -> dict[str, list[float | None]]:
    """A plan as ``quantity -> [value, low, high]`` (``mixture:<source>`` for weights).

    Accepts the plan flow's dict (or a dataclass): values at the top level or under ``plan``,
    intervals under ``intervals`` (``name -> (value, low, high)`` or ``{low, high}``).
    """
    plan = _as_dict(result)
    inner = plan.get("plan") if isinstance(plan.get("plan"), Mapping) else plan
    intervals = {**_plan_intervals(plan), **_plan_intervals(inner)}
    flat: dict[str, list[float | None]] = {}
    for key, names, _unit, _label in PLAN_QUANTITIES:
        value = _get(inner, *names)
        if value is None:
            continue
        point, low, high = _triple(value)
        interval = _get(intervals, *names)
        if interval is not None:
            i_point, i_low, i_high = _triple(interval)
            if i_low is None and isinstance(interval, list | tuple) and len(interval) == 2:
                i_low, i_high = _float(interval[0]), _float(interval[1])
            low, high = i_low if i_low is not None else low, i_high if i_high is not None else high
        if point is not None:
            flat[key] = [point, low, high]
    mixture = _get(inner, "mixture", "weights")
    mixture_intervals = _get(intervals, "mixture", "weights", default={})
    if isinstance(mixture, Mapping):
        for source, weight in mixture.items():
            point, low, high = _triple(weight)
            if isinstance(mixture_intervals, Mapping) and source in mixture_intervals:
                interval = mixture_intervals[source]
                if isinstance(interval, list | tuple) and len(interval) == 2:
                    low, high = _float(interval[0]), _float(interval[1])
                else:
                    _p, low, high = _triple(interval)
            if point is not None:
                flat[f"mixture:{source}"] = [point, low, high]
    return flat


def _explanations(plan: Mapping[str, Any]) -> list[str]:
    """Readable sentences from the plan's ``reason`` and ``explanation`` (known keys first)."""
    texts: list[str] = []
    if plan.get("reason"):
        texts.append(str(plan["reason"]))
    explanation = plan.get("explanation")
    if isinstance(explanation, str):
        texts.append(explanation)
        explanation = {}
    explanation = dict(explanation or {})
    labels = explanation.pop("binding_labels", None) or explanation.get("binding")
    names = explanation.pop("binding", None) or []
    prices = explanation.pop("shadow_prices", None) or {}
    if labels:
        parts = []
        for index, label in enumerate(labels):
            name = names[index] if index < len(names) else label
            price = _float(prices.get(name)) if isinstance(prices, Mapping) else None
            parts.append(f"{label} (shadow price {price:.3g})" if price is not None else label)
        texts.append("Binding constraints: " + "; ".join(parts) + ".")
    elif plan.get("status") == "optimal":
        texts.append("No constraint binds besides the objective itself.")
    flat = explanation.pop("flat_params_range", None)
    if isinstance(flat, list | tuple) and len(flat) == 2 and None not in flat:
        texts.append(
            f"The optimum is flat: any model from {format_count(flat[0])} to "
            f"{format_count(flat[1])} parameters is within 0.5% of the best loss."
        )
    marginal = _float(explanation.pop("marginal_loss_per_10x", None))
    if marginal is not None:
        texts.append(f"10x more compute would lower the predicted loss by {marginal:.3f} nats.")
    hyper = explanation.pop("hyperparameters", None)
    if isinstance(hyper, Mapping) and hyper:
        lr, batch = _float(hyper.get("learning_rate")), _float(hyper.get("batch_size_tokens"))
        bits = []
        if lr is not None:
            bits.append(f"peak learning rate {lr:.2e}")
        if batch is not None:
            bits.append(f"batch size {format_count(batch)} tokens")
        if bits:
            texts.append("Recommended " + " and ".join(bits) + " (fitted hyperparameter laws).")
    ratio = _float(explanation.pop("flops_ratio_for_lower_target", None))
    if ratio is not None:
        texts.append(f"A lower loss target would need {ratio:.2f}x the compute.")
    for key, value in explanation.items():
        if value not in (None, "", [], {}):
            texts.append(f"{key.replace('_', ' ')}: {_explain_value(value)}")
    mixture_plan = plan.get("mixture_plan")
    if isinstance(mixture_plan, Mapping) and mixture_plan.get("capped"):
        texts.append("Sources at their token cap: " + ", ".join(map(str, mixture_plan["capped"])))
    for key in ("notes", "warnings"):
        value = plan.get(key)
        if isinstance(value, list | tuple):
            texts.extend(str(v) for v in value if v)
    return texts


def _explain_value(value: Any) -> str:
    if isinstance(value, float):
        return format_quantity(value, "")
    if (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(v, int | float) for v in value)
    ):
        return f"{value[0]:.4g} [{value[1]:.4g}, {value[2]:.4g}]"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_explain_value(v)}" for k, v in value.items())
    return str(value)


def _whatif_table(
    rows: Sequence[Mapping[str, Any]], chosen: tuple[float, float] | None
) -> tuple[Table | None, Figure | None]:
    """The what-if sweep as a table, and its no-inference rows as the loss-compute frontier."""
    if not rows:
        return None, None
    table = Table(
        ("budget", "inference tokens", "parameters", "tokens", "tokens / param", "loss", "status"),
        tuple(
            (
                format_flops(_float(r.get("budget"))),
                format_count(_float(r.get("inference_tokens")) or 0.0),
                format_count(_float(r.get("params"))),
                format_count(_float(r.get("tokens"))),
                _ratio(r.get("tokens"), r.get("params")),
                format_loss(_float(r.get("loss"))),
                str(r.get("status", "")),
            )
            for r in rows
        ),
        "what-if: the same spec re-solved across budgets and lifetime inference demand",
    )
    points = sorted(
        (_float(r.get("train_flops")), _float(r.get("loss")))
        for r in rows
        if not _float(r.get("inference_tokens"))
        and _float(r.get("train_flops"))
        and _float(r.get("loss"))
    )
    figure = None
    if len(points) >= 2:
        png = plots.loss_cost_frontier(
            cost=[p[0] for p in points], loss=[p[1] for p in points], chosen=chosen
        )
        figure = Figure(
            "loss-cost frontier",
            png,
            "Best predicted loss at each training budget (no inference demand); red: this plan.",
        )
    return table, figure


def _ratio(numerator: Any, denominator: Any) -> str:
    top, bottom = _float(numerator), _float(denominator)
    return "—" if top is None or not bottom else f"{top / bottom:.1f}"


def plan_section(
    name: str, result: Any, whatif_rows: Sequence[Mapping[str, Any]] = ()
) -> PlanSection:
    """One plan: status, N / D / V / loss with intervals, explanations, what-ifs, charts."""
    plan = _as_dict(result)
    inner = plan.get("plan") if isinstance(plan.get("plan"), Mapping) else plan
    flat = flatten_plan(result)
    decisions = []
    for key, _names, unit, label in PLAN_QUANTITIES:
        if key in flat:
            value, low, high = flat[key]
            decisions.append(Estimate(label, value, low, high, unit, level=PLAN_LEVEL))
    if "params" in flat and "tokens" in flat and flat["params"][0]:
        decisions.append(Estimate("tokens per parameter", flat["tokens"][0] / flat["params"][0]))
    figures = []
    weights = {k.split(":", 1)[1]: v for k, v in flat.items() if k.startswith("mixture:")}
    if weights:
        sources = sorted(weights, key=lambda s: -weights[s][0])
        have = all(weights[s][1] is not None and weights[s][2] is not None for s in sources)
        png = plots.mixture_bars(
            sources=sources,
            weights=[weights[s][0] for s in sources],
            low=[weights[s][1] for s in sources] if have else None,
            high=[weights[s][2] for s in sources] if have else None,
        )
        figures.append(
            Figure(
                "planned mixture",
                png,
                "Planned share of training tokens per source (whiskers: "
                f"{PLAN_LEVEL:.0%} interval over bootstrap re-plans).",
            )
        )
    tables = []
    chosen = None
    budget = _float((inner.get("inputs") or {}).get("budget_flops")) or _float(
        inner.get("train_flops")
    )
    if budget and _float(inner.get("loss")):
        chosen = (budget, float(inner["loss"]))
    table, sweep_frontier = _whatif_table(whatif_rows, chosen)
    if table is not None:
        tables.append(table)
    own = inner.get("frontier")
    if isinstance(own, list) and len(own) >= 2 and all(isinstance(p, Mapping) for p in own):
        points = sorted(
            (_float(p.get("flops")), _float(p.get("loss")))
            for p in own
            if _float(p.get("flops")) and _float(p.get("loss"))
        )
        png = plots.loss_cost_frontier(
            cost=[p[0] for p in points],
            loss=[p[1] for p in points],
            chosen=chosen,
            cost_label="compute budget (FLOPs, training + inference)",
        )
        figures.append(
            Figure(
                "loss-cost frontier",
                png,
                "Best predicted loss at 1/100x to 100x this plan's budget, with the plan's "
                "limits and inference demand (red: this plan).",
            )
        )
    elif sweep_frontier is not None:
        figures.append(sweep_frontier)
    status = str(_get(plan, "status", default=_get(inner, "status", default="unknown")))
    status = status.split(".")[-1].lower()
    explanations = _explanations(inner) + ([] if inner is plan else _explanations(plan))
    law = inner.get("law")
    if isinstance(law, Mapping) and law.get("description"):
        draws = inner.get("interval_draws")
        explanations.insert(
            0,
            f"Law: {law['description']}"
            + (f"; intervals from {draws} bootstrap re-plans." if draws else "."),
        )
    return PlanSection(
        title=f"plan {name}",
        status=status,
        decisions=tuple(decisions),
        explanations=tuple(dict.fromkeys(explanations)),
        figures=tuple(figures),
        tables=tuple(tables),
    )


# ----------------------------------------------------------------------------- drift


@task(name="new-runs-since", retries=3, retry_delay_seconds=2, cache_policy=NO_CACHE)
def new_runs_since(lake: str, runs_version: int | None) -> pl.DataFrame:
    """Final losses (one per run) of the runs added since ``runs_version`` of the runs table."""
    from tasks.lake import final_losses, read_runs

    if runs_version is None or runs_version < 0:
        return pl.DataFrame()
    before = set(read_runs(lake, version=runs_version)["run_id"].to_list())
    frame = final_losses(lake)
    frame = frame.filter(~pl.col("run_id").is_in(list(before)))
    if frame.height == 0:
        return frame
    return (
        frame.with_columns(
            (pl.col("split") != "val").alias("_s"), (pl.col("domain") != "all").alias("_d")
        )
        .sort(["run_id", "_s", "_d"])
        .group_by("run_id", maintain_order=True)
        .first()
        .drop("_s", "_d")
    )


def prediction_intervals(fits: Iterable[Any]) -> Callable[[pl.DataFrame], tuple | None] | None:
    """A predictor of ``(predicted, low, high)`` loss for new runs from the previous fits.

    Each run is predicted by the previous fit of its experiment
    (:func:`planning.fitting.predict_with_interval`, any law whose columns the run has). The
    interval is the 95% band of the bootstrap laws' predictions widened by the fit's backtest
    median relative error (at least 1%), so it covers run-to-run noise and not only the
    uncertainty of the law's mean. Runs with no matching fit get NaN and are never flagged.
    """
    from planning.fitting import predict_with_interval

    by_experiment: dict[str, FitResult] = {}
    for fit in fits:
        if not isinstance(fit, FitResult):
            continue
        experiment = _selection(fit).get("experiment")
        if experiment and experiment not in by_experiment:
            by_experiment[experiment] = fit
    if not by_experiment:
        return None

    def predict(runs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        predicted = np.full(runs.height, np.nan)
        low = np.full(runs.height, np.nan)
        high = np.full(runs.height, np.nan)
        for experiment, fit in by_experiment.items():
            mask = (runs["experiment"] == experiment).to_numpy()
            if not mask.any():
                continue
            try:
                rows = predict_with_interval(fit, runs.filter(pl.Series(mask)))
            except Exception:  # noqa: BLE001 - the law needs columns these runs lack
                continue
            noise = max(_float((fit.backtest or {}).get("median_relative_error")) or 0.0, 0.01)
            point = rows["predicted_loss"].to_numpy()
            lo = rows["loss_low"].cast(pl.Float64).to_numpy()
            hi = rows["loss_high"].cast(pl.Float64).to_numpy()
            lo = np.where(np.isfinite(lo), lo, point)
            hi = np.where(np.isfinite(hi), hi, point)
            predicted[mask] = point
            low[mask] = lo - noise * np.abs(point)
            high[mask] = hi + noise * np.abs(point)
        if np.isnan(predicted).all():
            return None
        return predicted, low, high

    return predict


def drift_section(drift: Any) -> DriftSection:
    """The drift check as a report section."""
    flagged = drift.flagged
    flagged_table = None
    if flagged.height:
        flagged_table = Table(
            ("run", "observed", "predicted", "interval", "error"),
            tuple(
                (
                    row["run_id"],
                    format_loss(row["observed"]),
                    format_loss(row["predicted"]),
                    f"[{format_loss(row['low'])}, {format_loss(row['high'])}]",
                    f"{100 * row['rel_error']:+.1f}%",
                )
                for row in flagged.iter_rows(named=True)
            ),
            "new runs outside the previous fit's prediction interval",
        )
    moves_table = None
    if drift.moves:
        moves_table = Table(
            ("plan", "quantity", "before", "now", "change", "previous interval"),
            tuple(_move_row(move) for move in drift.moves),
            "plan quantities that moved beyond their intervals",
        )
    return DriftSection(
        summary=drift.summary(),
        flagged_runs=flagged_table,
        moved_plans=moves_table,
        changes=tuple(drift.notes),
    )


def _move_row(move: PlanMove) -> tuple[str, ...]:
    unit = {
        "params": "params",
        "tokens": "tokens",
        "loss": "loss",
        "flops": "flops",
        "vocab_size": "count",
    }.get(move.quantity, "fraction" if move.quantity.startswith("mixture:") else "")
    interval = (
        f"[{format_quantity(move.low, unit)}, {format_quantity(move.high, unit)}]"
        if move.low is not None and move.high is not None
        else "—"
    )
    return (
        move.plan,
        move.quantity,
        format_quantity(move.previous, unit),
        format_quantity(move.current, unit),
        f"{move.relative_change:+.1%}",
        interval,
    )


# ----------------------------------------------------------------------------- the report


def coverage_table(lake: str) -> Table:
    """Per experiment: runs, evaluations, and the ranges of N, D and C the lake covers."""
    from tasks.lake import lake_summary, read_runs

    summary = lake_summary(lake)
    runs = read_runs(lake)
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
                _span(_sci(row["c_lo"]), _sci(row["c_hi"])),
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
    return low if low == high else f"{low} – {high}"


def _sci(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.1e}".replace("e+", "e")


def build_report(
    *,
    lake: str,
    fits: Sequence[Any],
    mixture_fits: Sequence[Any] = (),
    plans: Mapping[str, Any],
    drift: Any | None,
    whatifs: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    problems: Sequence[str] = (),
    run_facts: Mapping[str, str] | None = None,
) -> Report:
    """Assemble the report model from the pipeline's results (reads the lake for charts)."""
    problems = list(problems)
    coverage = None
    try:
        coverage = coverage_table(lake)
    except Exception as error:  # noqa: BLE001
        problems.append(f"lake coverage unavailable: {error}")
    laws = []
    for fit in fits:
        if isinstance(fit, FitResult):
            try:
                laws.append(law_section(fit, _fit_frame(lake, fit)))
            except Exception as error:  # noqa: BLE001 - one broken section must not sink all
                problems.append(f"fit {fit.name}: could not be shown ({error})")
    for result in mixture_fits:
        try:
            laws.append(mixture_section(result))
        except Exception as error:  # noqa: BLE001
            problems.append(f"mixture fit of {result.get('experiment')}: not shown ({error})")
    plan_sections = []
    for name, result in plans.items():
        try:
            plan_sections.append(plan_section(name, result, (whatifs or {}).get(name, ())))
        except Exception as error:  # noqa: BLE001
            problems.append(f"plan {name}: could not be shown ({error})")
    facts = [
        ("lake", lake),
        ("laws fitted", str(len(fits) + len(mixture_fits))),
        ("plans", str(len(plans))),
        ("code", code_version()),
    ]
    facts.extend((run_facts or {}).items())
    return Report(
        title="mixplan planning report",
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        facts=tuple(facts),
        coverage=coverage,
        laws=tuple(laws),
        plans=tuple(plan_sections),
        drift=drift_section(drift) if drift is not None else None,
        problems=tuple(problems),
    )


@task(name="render-report", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def render_report(
    *,
    lake: str,
    reports: str,
    fits: Sequence[Any],
    mixture_fits: Sequence[Any] = (),
    plans: Mapping[str, Any],
    drift: Any | None = None,
    whatifs: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    problems: Sequence[str] = (),
    run_facts: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Build the report and write ``report.html`` and ``report.md`` atomically (plus a dated
    copy of the HTML under ``history/``). Returns their paths."""
    report = build_report(
        lake=lake,
        fits=fits,
        mixture_fits=mixture_fits,
        plans=plans,
        drift=drift,
        whatifs=whatifs,
        problems=problems,
        run_facts=run_facts,
    )
    if not is_local(reports):
        raise ValueError(f"reports must be a local folder, got {reports!r}")
    folder = local_path(reports)
    html = render_html(report)
    markdown = render_markdown(report)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    paths = {
        "html": write_text_atomic(folder / "report.html", html),
        "markdown": write_text_atomic(folder / "report.md", markdown),
    }
    write_text_atomic(folder / "history" / f"report-{stamp}.html", html)
    get_run_logger().info(
        "report: %s (%d laws, %d plans)", paths["html"], len(report.laws), len(report.plans)
    )
    return paths


@task(name="publish-report-artifact", cache_policy=NO_CACHE)
def publish_report(markdown_path: str, *, key: str = "mixplan-report") -> str:
    """Publish the Markdown report as a Prefect artifact (visible in the Prefect UI)."""
    text = Path(markdown_path).read_text(encoding="utf-8")
    return str(create_markdown_artifact(text, key=key, description="mixplan planning report"))


def whatif_grid(spec: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The (budget, inference tokens) points of a spec's what-if sweep: 0.01x-100x its FLOP
    budget, with no inference demand and with its own. Empty for specs without a FLOP budget."""
    from planning.spec import parse_spec

    budget = (spec.get("budget") or {}).get("flops")
    if not budget:
        return []
    parsed = parse_spec(spec, origin=str(spec.get("name", "<spec>")))
    inference = float(parsed.inference.tokens) if parsed.inference is not None else 0.0
    return [
        (float(budget) * factor, tokens)
        for factor in (0.01, 0.1, 1.0, 10.0, 100.0)
        for tokens in sorted({0.0, inference})
    ]


@task(name="whatif-point", retries=1, cache_policy=NO_CACHE)
def whatif_point(
    spec: Mapping[str, Any], budget: float, inference_tokens: float, lake: str | None = None
) -> dict[str, Any]:
    """The spec re-planned at one budget and lifetime inference demand (one what-if row:
    ``budget, inference_tokens, params, tokens, loss, train_flops, status``)."""
    from planning.plan import whatif
    from planning.spec import parse_spec

    parsed = parse_spec(spec, origin=str(spec.get("name", "<spec>")))
    (variant,) = whatif(parsed, budgets=[budget], inference_tokens=[inference_tokens], lake=lake)
    data = variant.to_dict()
    return {
        "budget": budget,
        "inference_tokens": inference_tokens,
        "params": data.get("params"),
        "tokens": data.get("tokens"),
        "loss": data.get("loss"),
        "train_flops": data.get("train_flops"),
        "status": data.get("status"),
    }
