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
import operator
from dataclasses import fields, replace
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
        self._law_sections: dict[int, tuple[ResolvedLaw, dict[str, Any]]] = {}
        self._resolved: tuple | None = None
        self._model: tuple | None = None
        self._inference: tuple | None = None
        self._budget_whatifs: BudgetWhatifs | None = None

    def budget_whatifs(
        self, base: PlanSpec, resolved: ResolvedLaw, hyper: HyperparameterLaw, lake
    ) -> BudgetWhatifs:
        """The budget what-ifs of ``base`` (its shared parts built once, kept for the last)."""
        kept = self._budget_whatifs
        if kept is None or not kept.serves(base, resolved, hyper, lake):
            self._budget_whatifs = kept = BudgetWhatifs(self, base, resolved, hyper, lake)
        return kept

    def _loss_model(self, spec: PlanSpec, law) -> LossModel:
        """The law's loss model, built once per law and unique-token count."""
        unique = spec.unique_tokens
        kept = self._model
        if kept is None or kept[0] is not law or kept[1] != unique:
            self._model = kept = (law, unique, alloc.loss_model(spec, law))
        return kept[2]

    def _law_section(self, resolved: ResolvedLaw) -> dict[str, Any]:
        """The plan's ``law`` section, built once per resolved law (a copy each plan)."""
        kept = self._law_sections.get(id(resolved))
        if kept is None or kept[0] is not resolved:  # the object itself, not a reused id
            section = {
                "description": resolved.description,
                **_law_dict(resolved.law),
                "selection": resolved.selection,
            }
            self._law_sections = {id(resolved): (resolved, section)}
            kept = self._law_sections[id(resolved)]
        return dict(kept[1])

    def resolve_for_whatif(self, spec: PlanSpec, lake, *, draws: bool, mixture: bool) -> tuple:
        """``(spec for the what-ifs, law, mixture law, hyperparameter law)``, resolved once per
        spec object, lake and options (a stored fit is read once, not per query)."""
        key = (lake, draws, mixture)
        if self._resolved is not None and self._resolved[0] is spec and self._resolved[1] == key:
            return self._resolved[2]
        base = replace(spec, draws=draws, robust=False)
        resolved = (
            base,
            resolve_law(base, lake=lake),
            resolve_mixture_law(base, lake=lake) if mixture else None,
            resolve_hyperparameter_law(base, lake=lake),
        )
        self._resolved = (spec, key, resolved)
        return resolved

    def inference_at(self, spec: PlanSpec, t_inf: float):
        """The spec's inference demand at ``t_inf`` tokens (`_scaled_inference`), kept for the
        last spec and demand (a what-if grid repeats each demand over every budget)."""
        kept = self._inference
        if kept is None or kept[0] is not spec or kept[1] != t_inf:
            self._inference = kept = (spec, t_inf, _scaled_inference(spec, t_inf))
        return kept[2]

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
        model = self._loss_model(spec, law)
        t_inf = alloc.inference_tokens(spec)
        downstream = None
        if spec.downstream is not None and spec.target_loss is None:
            downstream = resolve_downstream(spec, lake=lake)
        common = {
            "name": spec.name,
            "mode": spec.mode,
            "law": self._law_section(resolved),
            "downstream": downstream,
            "inputs": alloc.plan_inputs(spec, t_inf),
            "code_version": code_version(),
        }
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
                return Plan(
                    **common,
                    status=PlanStatus.INFEASIBLE,
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
        if not allocation.ok:
            return Plan(**common, status=allocation.status, reason=reason)
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

        def model_and_advice() -> dict[str, Any]:
            return _model_and_advice(spec, model, allocation, mixture_plan, hyper, detail, warnings)

        values = dict(
            common,
            status=allocation.status,
            reason=reason,
            **dict(zip(_ALLOCATION_FIELDS, _allocation_values(spec, allocation), strict=True)),
            mixture=(mixture_plan or {}).get("mixture"),
            mixture_plan=mixture_plan,
        )
        if not detail:
            return Plan.deferred(model_and_advice, **values)
        plan = Plan(**values, **model_and_advice())
        vocabulary = plan.vocabulary
        if pinned is not None:
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


def _model_and_advice(
    spec: PlanSpec,
    model: LossModel,
    allocation: Allocation,
    mixture_plan: dict | None,
    hyper: HyperparameterLaw,
    detail: bool,
    warnings: list[str],
) -> dict[str, Any]:
    """The vocabulary split and the advice that reads it (deferred in what-ifs)."""
    vocabulary = _vocabulary(spec, allocation.params, allocation.tokens)
    explanation = _explain(spec, model, allocation, vocabulary, mixture_plan, hyper, detail)
    return {
        "vocabulary": vocabulary,
        "explanation": explanation,
        "warnings": (*warnings, *explanation["hyperparameters"].get("warnings", [])),
    }


class BudgetWhatifs:
    """Budget what-ifs of one spec (no intervals, no mixture: `whatif`'s defaults) with what
    does not depend on the budget built once: the loss model, the law section, the code
    version, and per inference demand the spec at that demand, its T_inf and the plan's inputs.

    A query is then the allocation and the plan's fields: the same `Plan` as `Planner.plan` of
    the spec at that budget with ``detail=False, plan_mixture=False`` (that spec is built only
    when the deferred vocabulary and advice are read). A budget that ends without an answer
    (infeasible limits) goes through `Planner.plan` for its reason.
    """

    def __init__(
        self, planner: Planner, base: PlanSpec, resolved: ResolvedLaw, hyper, lake
    ) -> None:
        self.planner, self.base, self.resolved, self.hyper, self.lake = (
            planner, base, resolved, hyper, lake
        )  # fmt: skip
        self.model = planner._loss_model(base, resolved.law)
        self.law_section = planner._law_section(resolved)
        self._demands: dict[float | None, tuple] = {}
        self._make = Plan.deferred_maker(
            {
                "name": base.name,
                "mode": "budget",  # a budget, no loss target, no downstream goal
                "downstream": None,
                "code_version": code_version(),
                "mixture": None,
                "mixture_plan": None,
            },
            _WHATIF_FIELDS,
        )

    def serves(self, base: PlanSpec, resolved: ResolvedLaw, hyper, lake) -> bool:
        """True when built for these objects (the objects themselves) and lake."""
        return (
            self.base is base
            and self.resolved is resolved
            and self.hyper is hyper
            and self.lake == lake
        )

    def _at_demand(self, t_inf: float | None) -> tuple:
        """``(spec at the demand, its T_inf, the plan's inputs but the budget)``."""
        kept = self._demands.get(t_inf)
        if kept is None:
            changes: dict[str, Any] = {"dollars": None, "target_loss": None, "downstream": None}
            if t_inf is not None:
                changes["inference"] = self.planner.inference_at(self.base, t_inf)
            spec = _varied(self.base, changes)
            t_eff = alloc.inference_tokens(spec)
            if len(self._demands) >= 64:  # a slider's worth of demands: keep it small
                self._demands.clear()
            kept = self._demands[t_inf] = (spec, t_eff, alloc.plan_inputs(spec, t_eff))
        return kept

    def plan(self, flops: float, t_inf: float | None) -> Plan:
        """The what-if plan at a budget of ``flops`` and ``t_inf`` lifetime inference tokens
        (``None``: the spec's demand)."""
        spec, t_eff, inputs = self._at_demand(t_inf)
        model = self.model
        allocation = alloc.allocate_budget(
            model, limits=spec.limits, flops=flops, inference_tokens=t_eff
        )
        variant = None

        def exact_spec() -> PlanSpec:
            nonlocal variant
            if variant is None:
                variant = _varied(spec, {"flops": flops})
            return variant

        if not allocation.ok:
            return self.planner.plan(
                exact_spec(),
                lake=self.lake,
                resolved=self.resolved,
                hyper=self.hyper,
                detail=False,
                plan_mixture=False,
            )
        hyper = self.hyper
        return self._make(
            lambda: _model_and_advice(exact_spec(), model, allocation, None, hyper, False, []),
            dict(self.law_section),
            {**inputs, "budget_flops": flops},
            allocation.status,
            allocation.reason,
            *_allocation_values(spec, allocation),
        )


_ALLOCATION_FIELDS = (
    "params",
    "tokens",
    "train_flops",
    "inference_flops",
    "loss",
    "epochs",
    "cost_dollars",
    "train_days",
)
"""The `Plan` fields that follow from an allocation (`_allocation_values`, in this order)."""


def _allocation_values(spec: PlanSpec, allocation: Allocation) -> tuple:
    """The `_ALLOCATION_FIELDS` of a plan of ``spec`` with a successful ``allocation``."""
    params, tokens = allocation.params, allocation.tokens
    return (
        params,
        tokens,
        allocation.train_flops,
        2 * params * spec.inference.tokens,
        allocation.loss,
        alloc.epochs(spec, tokens),
        alloc.cost_dollars(spec, params, tokens),
        alloc.train_days(spec, params, tokens),
    )


_WHATIF_FIELDS = ("law", "inputs", "status", "reason", *_ALLOCATION_FIELDS)
"""The `Plan` fields a budget what-if sets per query (`BudgetWhatifs.plan`, in this order)."""


def _vocabulary(spec: PlanSpec, params: float, tokens: float) -> dict[str, Any] | None:
    """The vocabulary section: the split of the plan's N into V*d and the rest."""
    if spec.vocabulary is None:
        return None
    vmin, vmax = spec.vocabulary
    split = split_vocabulary(params, tokens, min_vocab=vmin, max_vocab=vmax)
    if split is None:
        return {
            "status": PlanStatus.INFEASIBLE.value,
            "reason": f"even V = {vmin:g} does not fit in N = {params:.3g} parameters; "
            "lower vocabulary.min",
        }
    return split.to_dict()


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

    The laws are resolved once per spec object (with a reused ``planner``: a stored fit is read
    once, not per call) and every point goes through the same chain as a plan, without the
    per-spec extras, which the spec's own plan computes once: ``draws=True`` adds each point's
    bootstrap intervals, ``mixture=True`` re-plans the mixture at every point (a Newton solve
    per D tried, ~5 ms a point instead of ~0.05 ms). A point's vocabulary split and the advice
    that reads it are computed when first read (`Plan.deferring`), to the same numbers.
    """
    planner = planner or Planner()
    base, resolved, mixture_law, hyper = planner.resolve_for_whatif(
        spec, lake, draws=draws, mixture=mixture
    )
    if target_losses:
        first = [("target", value) for value in target_losses]
    elif budgets:
        first = [("budget", value) for value in budgets]
    else:
        first = [(None, None)]
    tokens = inference_tokens or [None]
    budgets_only = first[0][0] == "budget" and not draws and not mixture
    fast = planner.budget_whatifs(base, resolved, hyper, lake) if budgets_only else None
    out = []
    for (kind, value), t_inf in itertools.product(first, tokens):
        if fast is not None:
            out.append(fast.plan(float(value), None if t_inf is None else float(t_inf)))
            continue
        changes: dict[str, Any] = {}
        if kind == "budget":
            changes.update(flops=float(value), dollars=None, target_loss=None, downstream=None)
        elif kind == "target":
            changes.update(target_loss=float(value), flops=None, dollars=None, downstream=None)
        if t_inf is not None:
            changes["inference"] = planner.inference_at(base, float(t_inf))
        variant = _varied(base, changes)
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


def _varied(value, changes: dict[str, Any]):
    """`dataclasses.replace` for the what-if's many variants of one validated spec: the same
    fields, set without re-running ``__init__`` (5 us a query) when the class validates
    nothing there (no ``__post_init__``, every field an init field); else ``replace``."""
    kind = type(value)
    kept = _FIELD_NAMES.get(kind)
    if kept is None:
        simple = not hasattr(kind, "__post_init__") and all(f.init for f in fields(kind))
        names = tuple(f.name for f in fields(kind)) if simple else ()
        if len(names) < 2:  # (an itemgetter of one name returns no tuple) replace() then
            names = ()
        read = operator.itemgetter(*names) if names else None
        kept = _FIELD_NAMES[kind] = (names, frozenset(names), read)
    names, allowed, read = kept
    if not names or not changes.keys() <= allowed:
        return replace(value, **changes)
    out = object.__new__(kind)
    state = out.__dict__
    # fields only: a cached property of the original must not carry over
    state.update(zip(names, read(value.__dict__), strict=True))
    state.update(changes)
    return out


_FIELD_NAMES: dict[type, tuple] = {}
"""Per dataclass: ``(names, their set, a getter of their values)`` when `_varied` may set its
fields directly, else ``((), ...)``."""


def _scaled_inference(spec: PlanSpec, t_inf: float):
    """The spec's inference demand at ``t_inf`` lifetime tokens (its in/out split kept)."""
    inf = spec.inference
    if t_inf > 0 and spec.objective == "dollars" and inf.tokens > 0:
        scale = t_inf / inf.tokens
        return _varied(
            inf, {"tokens_in": inf.tokens_in * scale, "tokens_out": inf.tokens_out * scale}
        )
    return _varied(inf, {"tokens_in": t_inf, "tokens_out": 0.0})
