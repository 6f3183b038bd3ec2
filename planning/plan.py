"""make_plan: a spec through a chain of small pure steps to a frozen `Plan`.

    resolve laws -> allocate N, D -> vocabulary -> mixture -> explain -> intervals (+ robust)

Each step is a function of its own module (plan_laws, plan_allocate, plan_vocabulary,
plan_mixture, explain, plan_intervals) and can be called and tested alone; this module chains
them. ``Planner`` keeps what is worth keeping between calls (the built mixture program) so
what-ifs re-solve instead of rebuilding; ``make_plan`` and ``whatif`` are the pure entry points
(no Prefect, no hidden I/O: a stored fit is read only from the path or lake the caller names).

What-ifs go through the same chain without the per-spec extras (frontier, flatness, marginal
value, intervals, robust plan), which the spec's own plan computes once.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from mixplan.planning import plan_allocate as alloc
from mixplan.planning.explain import binding_labels, flat_params_range, hyperparameters
from mixplan.planning.plan_intervals import plan_intervals
from mixplan.planning.plan_laws import (
    MIXTURE_LAWS,
    HyperparameterLaw,
    ResolvedLaw,
    ResolvedMixture,
    resolve_downstream,
    resolve_hyperparameter_law,
    resolve_law,
    resolve_mixture_law,
    stored_fit_location,
)
from mixplan.planning.plan_mixture import (
    MixturePrograms,
    mixture_section,
    pin_tokens,
    pinned_tokens,
    scale_section,
)
from mixplan.planning.plan_model import INTERVAL, Plan, clean
from mixplan.planning.plan_vocabulary import split_vocabulary
from mixplan.planning.programs.allocation import Allocation, LossModel
from mixplan.planning.programs.common import PlanStatus
from mixplan.planning.provenance import code_version
from mixplan.planning.spec import PlanSpec

__all__ = [
    "INTERVAL",
    "MIXTURE_LAWS",
    "Allocation",
    "Plan",
    "Planner",
    "ResolvedLaw",
    "ResolvedMixture",
    "clean",
    "make_plan",
    "resolve_law",
    "resolve_mixture_law",
    "stored_fit_location",
    "whatif",
]


class Planner:
    """Runs the chain; keeps the built mixture program between plans and what-ifs."""

    def __init__(self) -> None:
        self.mixtures = MixturePrograms()

    def plan(
        self,
        spec: PlanSpec,
        *,
        lake: str | Path | None = None,
        resolved: ResolvedLaw | None = None,
        mixture: ResolvedMixture | None = None,
        hyper: HyperparameterLaw | None = None,
        detail: bool = True,
        plan_mixture: bool = True,
    ) -> Plan:
        """Plan one spec (see `make_plan`); ``detail=False`` is the what-if path (no frontier,
        flatness, marginal value, intervals or robust plan); ``plan_mixture=False`` skips the
        spec's mixture (the one step that needs a conic solve per query)."""
        resolved = resolved or resolve_law(spec, lake=lake)
        alloc.check_robust(spec, resolved.draws)
        law = resolved.law
        model = alloc.loss_model(spec, law)
        t_inf = alloc.inference_tokens(spec)
        downstream = None
        if spec.downstream is not None and spec.target_loss is None:
            downstream = resolve_downstream(spec, lake=lake)
        base = Plan(
            name=spec.name,
            mode=spec.mode,
            status=PlanStatus.INFEASIBLE,
            law={
                "description": resolved.description,
                **_law_dict(law),
                "selection": resolved.selection,
            },
            downstream=downstream,
            inputs=alloc.plan_inputs(spec, t_inf),
            code_version=code_version(),
        )
        warnings: list[str] = []
        if downstream is not None:
            goal = _downstream_goal(downstream)
            if not math.isfinite(downstream["required_loss"]):
                why = (
                    "every loss meets it (the law's error stays below it at any loss): give a "
                    "lower error or a FLOP budget"
                    if downstream["met_at_any_loss"]
                    else "no loss reaches it: choose an error the law can reach"
                )
                return replace(
                    base,
                    reason=f"the downstream target {goal} cannot be planned under its fitted "
                    f"{downstream['law']} law ({downstream['fit']}): {why}",
                )
            spec = replace(spec, target_loss=downstream["required_loss"])
            if downstream["warning"]:
                warnings.append(downstream["warning"])
        if spec.mixture is not None and plan_mixture:
            mixture = mixture or resolve_mixture_law(spec, lake=lake)
        pinned = pinned_tokens(mixture) if mixture is not None and plan_mixture else None
        allocation = scale_point = alloc.allocate(spec, model, t_inf)
        if pinned is not None and allocation.ok:
            allocation = pin_tokens(spec, model, allocation, pinned)
        reason = allocation.reason
        if downstream is not None and not allocation.ok:
            reason = (
                f"the downstream target {_downstream_goal(downstream)} needs loss "
                f"{downstream['required_loss']:.4g}: {reason}"
            )
        base = replace(base, status=allocation.status, reason=reason)
        if not allocation.ok:
            return base
        params, tokens = allocation.params, allocation.tokens
        if pinned is not None:
            warnings.append(
                f"D is pinned at {tokens:.4g} tokens: the mixture law ({mixture.law.name}) was "
                f"fitted at that D only, so N = {params:.4g} spends the same "
                f"{allocation.train_flops:.3g} training FLOPs (the scale law alone would pick "
                f"N = {scale_point.params:.4g}, D = {scale_point.tokens:.4g}, loss "
                f"{scale_point.loss:.4g} against {allocation.loss:.4g} here); bootstrap "
                "intervals of N and D and the robust plan are not computed for a pinned D"
            )

        vocabulary = None
        if spec.vocabulary is not None:
            vmin, vmax = spec.vocabulary
            split = split_vocabulary(params, tokens, min_vocab=vmin, max_vocab=vmax)
            vocabulary = (
                split.to_dict()
                if split is not None
                else {
                    "status": PlanStatus.INFEASIBLE.value,
                    "reason": f"even V = {vmin:g} does not fit in N = {params:.3g} parameters; "
                    "lower vocabulary.min",
                }
            )

        program = None
        mixture_plan = None
        if spec.mixture is not None and plan_mixture:
            if pinned is not None and hasattr(mixture.law, "at"):
                mixture.law.at(params=params, tokens=tokens)
            program = self.mixtures.get(spec, law, mixture.law, mixture.max_shares)
            mixture_plan = mixture_section(spec, program, allocation, pinned=pinned is not None)
            if pinned is not None and mixture_plan.get("mixture"):
                mixture_plan["scale"] = scale_section(spec, mixture, mixture_plan, scale_point)
            if mixture_plan["status"] == PlanStatus.OPTIMAL_INACCURATE.value:
                warnings.append(
                    "the mixture solve ended optimal-inaccurate (the solver met only its looser "
                    "tolerance): check the mixture against a second method before relying on it"
                )

        hyper = hyper or resolve_hyperparameter_law(spec, lake=lake)
        explanation = _explain(spec, model, allocation, vocabulary, mixture_plan, hyper, detail)
        warnings.extend(explanation["hyperparameters"].get("warnings", []))

        plan = replace(
            base,
            params=params,
            tokens=tokens,
            train_flops=allocation.train_flops,
            inference_flops=2 * params * spec.inference.tokens,
            loss=allocation.loss,
            epochs=alloc.epochs(spec, tokens),
            cost_dollars=alloc.cost_dollars(spec, params, tokens),
            train_days=alloc.train_days(spec, params, tokens),
            vocabulary=vocabulary,
            mixture=(mixture_plan or {}).get("mixture"),
            mixture_plan=mixture_plan,
            explanation=explanation,
            warnings=tuple(warnings),
        )
        if not detail or pinned is not None:
            return plan
        intervals, solved = plan_intervals(
            spec,
            resolved.draws,
            allocation,
            t_inf,
            vocab_width=(vocabulary or {}).get("width"),
            point_vocab=(vocabulary or {}).get("vocab_size"),
            mixture_program=program,
        )
        return replace(
            plan,
            frontier=alloc.frontier(spec, model, allocation, t_inf),
            intervals=intervals,
            interval_draws=solved,
            robust=alloc.robust_plan(spec, resolved.draws, allocation, t_inf),
        )


def _explain(
    spec: PlanSpec,
    model: LossModel,
    allocation: Allocation,
    vocabulary: dict | None,
    mixture_plan: dict | None,
    hyper: HyperparameterLaw,
    detail: bool,
) -> dict[str, Any]:
    """Why this plan: binding limits (the mixture's trust region too), shadow prices, the
    hyperparameter advice for this model and, with ``detail``, flatness and marginal value."""
    params, tokens = allocation.params, allocation.tokens
    binding = list(allocation.binding)
    if mixture_plan and mixture_plan.get("at_share_limit"):
        binding.append("mixture_trust_region")
    out: dict[str, Any] = {
        "binding": binding,
        "binding_labels": binding_labels(binding),
        "shadow_prices": {k: v for k, v in allocation.duals.items() if k in allocation.binding},
        "hyperparameters": hyperparameters(
            params,
            tokens,
            non_embedding_params=(vocabulary or {}).get("non_vocab_params"),
            law=hyper.law,
            description=hyper.description,
            data_range=hyper.data_range,
        ),
        "flat_params_range": None,
        "marginal_loss_per_10x": None,
        "flops_ratio_for_lower_target": None,
    }
    if detail:
        flops = allocation.train_flops
        out["flat_params_range"] = flat_params_range(
            lambda n: model.predict(n, flops / (6 * n)), params
        )
        out.update(alloc.marginal_value(spec, model, allocation, alloc.inference_tokens(spec)))
    if mixture_plan is not None and mixture_plan.get("status") not in ("optimal",):
        out["mixture_reason"] = mixture_plan.get("reason", "") or mixture_plan.get("status")
    return out


def _downstream_goal(downstream: dict[str, Any]) -> str:
    return f"{downstream['metric']} error {downstream['error']:g}"


def _law_dict(law) -> dict[str, Any]:
    try:
        return law.to_dict()
    except AttributeError:
        return {}


# -- pure entry points ------------------------------------------------------------------------


def make_plan(
    spec: PlanSpec,
    *,
    lake: str | Path | None = None,
    planner: Planner | None = None,
) -> Plan:
    """Plan a spec: compute-optimal N, D (and V, mixture), with explanations and intervals.

    Parameters
    ----------
    spec
        A validated spec (`mixplan.planning.spec.load_spec` / `parse_spec`).
    lake
        The lake holding stored fits (``<lake>/fits/<name>.json``) when the spec names one.
    planner
        Reuse built programs across calls (what-ifs); a new one by default.

    Returns
    -------
    Plan
        ``status`` is OPTIMAL (or OPTIMAL_INACCURATE, flagged in ``warnings``), or INFEASIBLE /
        UNBOUNDED with ``reason`` naming what binds and what to change.
    """
    return (planner or Planner()).plan(spec, lake=lake)


def whatif(
    spec: PlanSpec,
    *,
    budgets: list[float] | None = None,
    inference_tokens: list[float] | None = None,
    target_losses: list[float] | None = None,
    lake: str | Path | None = None,
    planner: Planner | None = None,
    draws: bool = False,
    mixture: bool = False,
) -> list[Plan]:
    """Re-plan over a grid of budgets (or loss targets) x lifetime inference tokens.

    The laws are resolved once and every point goes through the same chain as a plan, without
    the per-spec extras, which the spec's own plan computes once: ``draws=True`` adds each
    point's bootstrap intervals, ``mixture=True`` re-plans the mixture at every point (a conic
    solve per D tried, ~50 ms a point instead of ~0.1 ms).
    """
    planner = planner or Planner()
    base = replace(spec, draws=draws, robust=False)
    resolved = resolve_law(base, lake=lake)
    mixture_law = resolve_mixture_law(base, lake=lake) if mixture else None
    hyper = resolve_hyperparameter_law(base, lake=lake)
    if target_losses:
        first = [("target", value) for value in target_losses]
    elif budgets:
        first = [("budget", value) for value in budgets]
    else:
        first = [(None, None)]
    tokens = inference_tokens or [None]
    out = []
    for (kind, value), t_inf in itertools.product(first, tokens):
        changes: dict[str, Any] = {}
        if kind == "budget":
            changes.update(flops=float(value), dollars=None, target_loss=None, downstream=None)
        elif kind == "target":
            changes.update(target_loss=float(value), flops=None, dollars=None, downstream=None)
        if t_inf is not None:
            changes["inference"] = _scaled_inference(base, float(t_inf))
        variant = replace(base, **changes)
        out.append(
            planner.plan(
                variant,
                lake=lake,
                resolved=resolved,
                mixture=mixture_law,
                hyper=hyper,
                detail=draws,
                plan_mixture=mixture,
            )
        )
    return out


def _scaled_inference(spec: PlanSpec, t_inf: float):
    """The spec's inference demand at ``t_inf`` lifetime tokens (its in/out split kept)."""
    inf = spec.inference
    if t_inf > 0 and spec.objective == "dollars" and inf.tokens > 0:
        scale = t_inf / inf.tokens
        return replace(inf, tokens_in=inf.tokens_in * scale, tokens_out=inf.tokens_out * scale)
    return replace(inf, tokens_in=t_inf, tokens_out=0.0)
