"""Report sections for plans: the decision with intervals, readable explanations, the what-if
sweep and the charts.

Pure: plans arrive as the plan flow returns them (a dict or a dataclass, values at the top level
or under ``plan``); every field is read leniently (:mod:`mixplan.planning.report.values`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mixplan.planning.explain import downstream_line, mixture_scale_lines
from mixplan.planning.plan import INTERVAL
from mixplan.planning.report import plots
from mixplan.planning.report.format import format_count, format_flops, format_loss, format_quantity
from mixplan.planning.report.model import Estimate, Figure, PlanSection, Table
from mixplan.planning.report.values import as_dict, finite, first_present, value_interval
from mixplan.planning.spec import parse_spec

PLAN_LEVEL = (INTERVAL[-1] - INTERVAL[0]) / 100
"""Coverage of the planner's intervals (its percentiles, e.g. 5-95 -> 0.90)."""

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
    value = first_present(plan, "intervals", "uncertainty", default={})
    return value if isinstance(value, Mapping) else {}


def flatten_plan(result: Any) -> dict[str, list[float | None]]:
    """A plan as ``quantity -> [value, low, high]`` (``mixture:<source>`` for weights).

    Accepts the plan flow's dict (or a dataclass): values at the top level or under ``plan``,
    intervals under ``intervals`` (``name -> (value, low, high)`` or ``{low, high}``).
    """
    plan = as_dict(result)
    inner = plan.get("plan") if isinstance(plan.get("plan"), Mapping) else plan
    intervals = {**_plan_intervals(plan), **_plan_intervals(inner)}
    flat: dict[str, list[float | None]] = {}
    for key, names, _unit, _label in PLAN_QUANTITIES:
        value = first_present(inner, *names)
        if value is None:
            continue
        point, low, high = value_interval(value)
        interval = first_present(intervals, *names)
        if interval is not None:
            i_point, i_low, i_high = value_interval(interval)
            if i_low is None and isinstance(interval, list | tuple) and len(interval) == 2:
                i_low, i_high = finite(interval[0]), finite(interval[1])
            low, high = i_low if i_low is not None else low, i_high if i_high is not None else high
        if point is not None:
            flat[key] = [point, low, high]
    mixture = first_present(inner, "mixture", "weights")
    mixture_intervals = first_present(intervals, "mixture", "weights", default={})
    if isinstance(mixture, Mapping):
        for source, weight in mixture.items():
            point, low, high = value_interval(weight)
            if isinstance(mixture_intervals, Mapping) and source in mixture_intervals:
                interval = mixture_intervals[source]
                if isinstance(interval, list | tuple) and len(interval) == 2:
                    low, high = finite(interval[0]), finite(interval[1])
                else:
                    _p, low, high = value_interval(interval)
            if point is not None:
                flat[f"mixture:{source}"] = [point, low, high]
    return flat


def _explanations(plan: Mapping[str, Any]) -> list[str]:
    """Readable sentences from the plan's ``reason`` and ``explanation`` (known keys first)."""
    texts: list[str] = []
    if plan.get("reason"):
        texts.append(str(plan["reason"]))
    target = plan.get("downstream")
    if isinstance(target, Mapping) and finite(target.get("required_loss")) is not None:
        texts.append(f"Downstream target: {downstream_line(dict(target))}.")
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
            price = finite(prices.get(name)) if isinstance(prices, Mapping) else None
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
    marginal = finite(explanation.pop("marginal_loss_per_10x", None))
    if marginal is not None:
        texts.append(f"10x more compute would lower the predicted loss by {marginal:.3f} nats.")
    hyper = explanation.pop("hyperparameters", None)
    if isinstance(hyper, Mapping) and hyper:
        lr, batch = finite(hyper.get("learning_rate")), finite(hyper.get("batch_size_tokens"))
        bits = []
        if lr is not None:
            bits.append(f"peak learning rate {lr:.2e}")
        if batch is not None:
            bits.append(f"batch size {format_count(batch)} tokens")
        if bits:
            texts.append("Recommended " + " and ".join(bits) + " (fitted hyperparameter laws).")
    ratio = finite(explanation.pop("flops_ratio_for_lower_target", None))
    if ratio is not None:
        texts.append(f"A lower loss target would need {ratio:.2f}x the compute.")
    for key, value in explanation.items():
        if value not in (None, "", [], {}):
            texts.append(f"{key.replace('_', ' ')}: {_explain_value(value)}")
    mixture_plan = plan.get("mixture_plan")
    if isinstance(mixture_plan, Mapping) and mixture_plan.get("capped"):
        texts.append("Sources at their token cap: " + ", ".join(map(str, mixture_plan["capped"])))
    if isinstance(mixture_plan, Mapping) and isinstance(mixture_plan.get("scale"), Mapping):
        texts.extend(
            f"Mixture at the pinned D: {line}."
            for line in mixture_scale_lines(mixture_plan["scale"])
        )
    if isinstance(mixture_plan, Mapping) and mixture_plan.get("status") == "optimal_inaccurate":
        texts.append("Mixture: OPTIMAL-INACCURATE (the solver met only its looser tolerance).")
    vocabulary = plan.get("vocabulary")
    if isinstance(vocabulary, Mapping) and finite(vocabulary.get("vocab_params")) is not None:
        texts.append(
            f"The {format_count(finite(plan.get('params')))}-parameter model is "
            f"{format_count(finite(vocabulary.get('non_vocab_params')))} non-vocabulary "
            f"parameters plus {format_count(finite(vocabulary.get('vocab_params')))} in its "
            f"{format_count(finite(vocabulary.get('vocab_size')))}-token embedding."
        )
    robust = plan.get("robust")
    if isinstance(robust, Mapping) and finite(robust.get("worst_loss")) is not None:
        texts.append(
            f"Robust plan (best worst case over {robust.get('draws')} bootstrap draws, same "
            f"limits): {format_count(finite(robust.get('params')))} parameters, "
            f"{format_count(finite(robust.get('tokens')))} tokens, worst-case loss "
            f"{format_loss(finite(robust.get('worst_loss')))} against "
            f"{format_loss(finite(robust.get('point_worst_loss')))} for the point plan."
        )
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
                format_flops(finite(r.get("budget"))),
                format_count(finite(r.get("inference_tokens")) or 0.0),
                format_count(finite(r.get("params"))),
                format_count(finite(r.get("tokens"))),
                _ratio(r.get("tokens"), r.get("params")),
                format_loss(finite(r.get("loss"))),
                str(r.get("status", "")),
            )
            for r in rows
        ),
        "what-if: the same spec re-solved across budgets and lifetime inference demand",
    )
    points = sorted(
        (finite(r.get("train_flops")), finite(r.get("loss")))
        for r in rows
        if not finite(r.get("inference_tokens"))
        and finite(r.get("train_flops"))
        and finite(r.get("loss"))
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
    top, bottom = finite(numerator), finite(denominator)
    return "—" if top is None or not bottom else f"{top / bottom:.1f}"


def plan_section(
    name: str, result: Any, whatif_rows: Sequence[Mapping[str, Any]] = ()
) -> PlanSection:
    """One plan: status, N / D / V / loss with intervals, explanations, what-ifs, charts."""
    plan = as_dict(result)
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
    budget = finite((inner.get("inputs") or {}).get("budget_flops")) or finite(
        inner.get("train_flops")
    )
    if budget and finite(inner.get("loss")):
        chosen = (budget, float(inner["loss"]))
    table, sweep_frontier = _whatif_table(whatif_rows, chosen)
    if table is not None:
        tables.append(table)
    own = inner.get("frontier")
    if isinstance(own, list) and len(own) >= 2 and all(isinstance(p, Mapping) for p in own):
        points = sorted(
            (finite(p.get("flops")), finite(p.get("loss")))
            for p in own
            if finite(p.get("flops")) and finite(p.get("loss"))
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
    status = first_present(plan, "status", default=first_present(inner, "status"))
    status = str(status or "unknown").split(".")[-1].lower()
    explanations = _explanations(inner) + ([] if inner is plan else _explanations(plan))
    law = inner.get("law")
    if isinstance(law, Mapping) and law.get("description"):
        draws = inner.get("interval_draws")
        explanations.insert(
            0,
            f"Law: {law['description']}"
            + (f"; intervals from {draws} bootstrap re-plans." if draws else "."),
        )
    if status == "optimal_inaccurate":
        explanations.insert(
            0,
            "Status OPTIMAL-INACCURATE: the solver met only its looser tolerance; the answer is "
            "kept but check it before committing a budget to it.",
        )
    return PlanSection(
        title=f"plan {name}",
        status=status,
        decisions=tuple(decisions),
        explanations=tuple(dict.fromkeys(explanations)),
        figures=tuple(figures),
        tables=tuple(tables),
    )


def whatif_grid(spec: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The (budget, inference tokens) points of a spec's what-if sweep: 0.01x-100x its FLOP
    budget, with no inference demand and with its own. Empty for specs without a FLOP budget."""
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


def missing_fit_hint(spec: Mapping[str, Any], fits_written: Sequence[str]) -> str | None:
    """What to do when a spec names a stored fit (``[law] fit``) this run did not write.

    ``fits_written`` holds the stored fits' names (file stems). None when the spec names no
    stored fit by name, or names one that was written (the failure has another cause).
    """
    law = spec.get("law")
    fit = law.get("fit") if isinstance(law, Mapping) else None
    if not isinstance(fit, str) or "/" in fit or fit.endswith(".json") or fit in fits_written:
        return None
    written = ", ".join(sorted(fits_written)) or "none"
    return (
        f"its spec's [law] fit = {fit!r} names a fit this run did not write (fits written: "
        f"{written}); point it at one of those, or add the runs it is fitted on to the inputs"
    )
