"""Interpreting a plan: flatness, marginal value of compute, hyperparameters, text rendering."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mixplan.planning.laws.hyperparams import STEPLAW, DeepSeekHyperparams, StepLaw
from mixplan.planning.programs.common import CONSTRAINT_LABELS

FLAT_TOLERANCE = 0.005
"""Flatness: the range of N whose loss is within 0.5% of the best at the same FLOPs."""


def flat_params_range(
    loss_along_isoflop, params: float, *, tolerance: float = FLAT_TOLERANCE, decades: float = 3.0
) -> tuple[float, float]:
    """Range of N (at the plan's training FLOPs) whose loss is within ``tolerance`` of the best.

    Parameters
    ----------
    loss_along_isoflop
        Vectorised ``params -> loss`` along the iso-FLOP line ``D = C / (6 N)``.
    params
        The plan's N (the centre of the scan).
    """
    grid = params * np.logspace(-decades, decades, 6001)
    losses = np.asarray(loss_along_isoflop(grid), dtype=float)
    best = np.nanmin(losses)
    inside = grid[losses <= best * (1 + tolerance)]
    return float(inside.min()), float(inside.max())


def hyperparameters(
    params: float,
    tokens: float,
    *,
    non_embedding_params: float | None = None,
    law: StepLaw | DeepSeekHyperparams = STEPLAW,
    description: str = "StepLaw published constants",
    data_range: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Learning rate and batch size (tokens) for the plan's model (laws.md 1.7).

    StepLaw counts non-embedding parameters: the advice is taken at ``N_nv = N - V d`` when the
    plan splits its N into a vocabulary, else at the plan's N (and ``params_basis`` says so).
    DeepSeek's laws are in compute, taken here as ``C = 6 N_nv D``. A fitted StepLaw carries
    the extent of its sweep; advice for an N or D outside it carries a warning.

    Parameters
    ----------
    params
        The plan's total N.
    tokens
        The plan's D.
    non_embedding_params
        ``N - V d`` of the planned vocabulary, or ``None``.
    law, description, data_range
        The hyperparameter law, where it comes from, and (fitted) its sweep's extent.

    Returns
    -------
    dict
        ``learning_rate``, ``batch_size_tokens``, ``non_embedding_params`` (the N used),
        ``params_basis``, ``law`` (its origin) and ``warnings``.
    """
    if non_embedding_params is not None and 0 < non_embedding_params < params:
        n_nv = float(non_embedding_params)
        basis = "N_nv = N - V d, the planned model without its embeddings"
    else:
        n_nv = float(params)
        basis = "the plan's N: no vocabulary planned"
    warnings: list[str] = []
    if isinstance(law, DeepSeekHyperparams):
        flops = 6 * n_nv * tokens
        lr, batch = float(law.learning_rate(flops)), float(law.batch_size(flops))
        basis += "; DeepSeek's compute C taken as 6 N_nv D"
    else:
        lr, batch = float(law.learning_rate(n_nv, tokens)), float(law.batch_size(tokens))
        warnings = extrapolation_warnings(n_nv, tokens, data_range)
    return {
        "learning_rate": lr,
        "batch_size_tokens": batch,
        "non_embedding_params": n_nv,
        "params_basis": basis,
        "law": description,
        "warnings": warnings,
    }


def extrapolation_warnings(
    params: float, tokens: float, data_range: dict[str, float] | None
) -> list[str]:
    """Warnings when N or D lies outside a fitted sweep's range (``params``/``tokens`` are its
    largest values, ``params_min``/``tokens_min`` its smallest when recorded)."""
    if not data_range:
        return []
    out = []
    for name, value, label in (("params", params, "N_nv"), ("tokens", tokens, "D")):
        top, bottom = data_range.get(name), data_range.get(f"{name}_min")
        if top and value > top:
            out.append(
                f"hyperparameter advice extrapolates: {label} = {value:.3g} is {value / top:.3g}x "
                f"the largest in the StepLaw sweep ({top:.3g}); validate the learning rate on a "
                "short run"
            )
        if bottom and value < bottom:
            out.append(
                f"hyperparameter advice extrapolates: {label} = {value:.3g} is below the "
                f"smallest in the StepLaw sweep ({bottom:.3g})"
            )
    return out


def binding_labels(names: list[str]) -> list[str]:
    """Human labels for binding constraint names."""
    return [CONSTRAINT_LABELS.get(name, name.replace("_", " ")) for name in names]


def format_number(value: Any, digits: int = 4) -> str:
    """A number for plan text: ``digits`` significant digits, ``-`` for missing or NaN."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}g}"
    return str(value)


def downstream_line(target: dict[str, Any]) -> str:
    """One line for a plan's downstream-error target and the loss it needs."""
    low, high = target["loss_range"]
    return (
        f"{target['metric']} error {target['error']:g} ({target.get('relation') or 'error'}) "
        f"needs loss {format_number(target['required_loss'])} by the fitted {target['law']} law "
        f"(fitted on losses {format_number(low)} .. {format_number(high)})"
    )


def mixture_scale_lines(scale: dict[str, Any]) -> list[str]:
    """Sentences for a mixture planned with a law fitted at one D (``mixture_plan["scale"]``):
    its predicted loss with interval and how it compares with the best observed run."""
    route = f", route {scale['route']}" if scale.get("route") else ""
    text = (
        f"the mixture law ({scale['law']}{route}) predicts loss "
        f"{format_number(scale['predicted_loss'])} for this mixture at N "
        f"{format_number(scale['params'])}, D {format_number(scale['pinned_tokens'])}"
    )
    if scale.get("interval_90"):
        low, high = scale["interval_90"]
        text += f" (90% bootstrap interval {format_number(low)} .. {format_number(high)})"
    lines = [text]
    if scale.get("note"):
        lines.append(scale["note"])
    best = scale.get("best_observed")
    if best:
        lines.append(
            f"best observed run {best['run_id']} (N {format_number(best.get('params'))}, D "
            f"{format_number(best.get('tokens'))}): loss {format_number(best['loss'])} (mean "
            f"over domains); there the law predicts "
            f"{format_number(best['planned_predicted_loss'])} for the planned mixture and "
            f"{format_number(best['run_predicted_loss'])} for that run's"
        )
    return lines


def render_text(plan: dict[str, Any]) -> str:
    """A plan (``Plan.to_dict()``) as readable text for terminals and logs."""
    lines = [f"Plan {plan['name']!r} ({plan['mode']} mode): {plan['status']}"]
    if plan.get("reason"):
        lines.append(f"  reason: {plan['reason']}")
    if plan["status"] not in ("optimal", "optimal_inaccurate"):
        return "\n".join(lines)
    for warning in plan.get("warnings") or ():
        lines.append(f"  warning: {warning}")
    lines.append(f"  law: {plan['law']['description']}")
    target = plan.get("downstream")
    if target:
        lines.append(f"  downstream target: {downstream_line(target)}")
    rows = [
        ("parameters N", plan["params"]),
        ("training tokens D", plan["tokens"]),
        ("tokens per parameter", plan["tokens_per_param"]),
        ("training FLOPs", plan["train_flops"]),
        ("inference FLOPs", plan["inference_flops"]),
        ("predicted loss", plan["loss"]),
        ("epochs over unique data", plan.get("epochs")),
        ("cost ($)", plan.get("cost_dollars")),
        ("training days", plan.get("train_days")),
    ]
    intervals = plan.get("intervals") or {}
    for label, value in rows:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        key = {
            "parameters N": "params",
            "training tokens D": "tokens",
            "tokens per parameter": "tokens_per_param",
            "predicted loss": "loss",
            "training FLOPs": "train_flops",
        }.get(label)
        text = f"  {label:<26} {format_number(value)}"
        if key in intervals:
            lo, hi = intervals[key]["low"], intervals[key]["high"]
            text += (
                f"   (90% interval {format_number(lo)} .. {format_number(hi)} "
                f"over {plan['interval_draws']} draws)"
            )
        lines.append(text)
    voc = plan.get("vocabulary")
    if voc and voc.get("status"):
        lines.append(f"  vocabulary: {voc['status']}: {voc.get('reason')}")
    elif voc:
        line = f"  {'vocabulary size V':<26} {voc['vocab_size']:,.0f} (width {voc['width']:.0f})"
        if "vocab_size" in intervals:
            iv = intervals["vocab_size"]
            line += f"   (90% interval {iv['low']:,.0f} .. {iv['high']:,.0f})"
        lines.append(line)
        lines.append(
            f"  {'':<26} N = N_nv {format_number(voc['non_vocab_params'])} + V d "
            f"{format_number(voc['vocab_params'])} (the same model as above)"
        )
    mix = plan.get("mixture_plan")
    if mix and mix.get("status") not in ("optimal", "optimal_inaccurate"):
        lines.append(f"  mixture: {mix.get('status')}: {mix.get('reason')}")
    elif mix:
        lines.append("  mixture (share, epochs):")
        spread = intervals.get("mixture", {})
        for name, share in mix["mixture"].items():
            capped = "  [at its max_epochs cap]" if name in mix["capped"] else ""
            if name in mix.get("at_share_limit", ()):
                capped += "  [at its largest training share: trust region]"
            band = ""
            if name in spread:
                band = f"  (90% interval {spread[name]['low']:.1%} .. {spread[name]['high']:.1%})"
            lines.append(
                f"    {name:<20} {share:7.2%}  {mix['epochs'][name]:.3g} epochs{capped}{band}"
            )
        lines.append(
            f"    with this mixture the best D is {format_number(mix['tokens'])} "
            f"(N {format_number(mix['params'])}); "
            f"predicted target loss {format_number(mix['loss'])}"
        )
        for line in mixture_scale_lines(mix["scale"]) if mix.get("scale") else ():
            lines.append(f"    {line}")
    ex = plan.get("explanation") or {}
    if ex:
        lines.append("  why:")
        lines.append(f"    binding constraints: {', '.join(ex['binding_labels']) or 'none'}")
        for name, price in ex.get("shadow_prices", {}).items():
            lines.append(f"    shadow price of {name}: {format_number(price)} (loss per unit log)")
        if ex.get("marginal_loss_per_10x") is not None:
            lines.append(
                "    10x more compute lowers the loss by "
                f"{format_number(ex['marginal_loss_per_10x'])}"
            )
        if ex.get("flops_ratio_for_lower_target") is not None:
            lines.append(
                "    a 0.01 lower loss target costs "
                f"{format_number(ex['flops_ratio_for_lower_target'])}x the FLOPs"
            )
        flat = ex.get("flat_params_range")
        if flat:
            lines.append(
                f"    flatness: any N in {format_number(flat[0])} .. {format_number(flat[1])} is "
                "within 0.5% of the best loss at these FLOPs"
            )
        hp = ex.get("hyperparameters")
        if hp:
            lines.append(
                f"    learning rate {hp['learning_rate']:.3g}, batch size "
                f"{hp['batch_size_tokens']:.3g} tokens ({hp.get('law', 'StepLaw')}), at "
                f"non-embedding N {format_number(hp['non_embedding_params'])} "
                f"({hp['params_basis']})"
            )
    points = plan.get("frontier") or []
    if points:
        lines.append("  frontier (budget FLOPs -> loss): " + ", ".join(
            f"{format_number(p['flops'], 2)} -> {format_number(p['loss'])}" for p in points[::2]
        ))  # fmt: skip
    robust = plan.get("robust")
    if robust and robust.get("params") is not None:
        lines.append(
            f"  robust plan (best worst case over {robust['draws']} draws, same limits): "
            f"N {format_number(robust['params'])}, D {format_number(robust['tokens'])}, "
            f"worst-case loss {format_number(robust['worst_loss'])} (the point plan's worst "
            f"case: {format_number(robust['point_worst_loss'])})"
        )
    elif robust:
        lines.append(f"  robust plan: {robust.get('status')}: {robust.get('reason')}")
    return "\n".join(lines)
