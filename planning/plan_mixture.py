"""Step 4 of a plan: the data mixture (and, in budget mode, the D that goes with it).

The mixture program (planning/programs/mixture.py) is built once per (sources, mixture law,
eval weights, reference, trust region, R_D*) and re-solved with the scale law as parameters.
The scale law's repetition constant R_D* is the fitted law's own when the scale law is a
repetition (Muennighoff) fit. In budget mode D is searched jointly with the mixture, within
every limit of the spec (max_params, max_tokens, tokens per parameter both ways).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from mixplan.planning.errors import MixplanError
from mixplan.planning.laws import ChinchillaLaw
from mixplan.planning.plan_model import INTERVAL
from mixplan.planning.programs.allocation import Allocation
from mixplan.planning.programs.common import PlanStatus
from mixplan.planning.programs.mixture import RD_STAR, MixtureProgram, MixtureResult
from mixplan.planning.spec import PlanSpec

MAX_MIXTURE_DRAWS = 50
"""Draws re-planned for mixture intervals (each is a search of inner solves)."""


def scale_constants(law) -> ChinchillaLaw:
    """The Chinchilla-form part of a scale law (a Muennighoff law's E, A, B, alpha, beta)."""
    return ChinchillaLaw(law.E, law.A, law.B, law.alpha, law.beta)


def repetition_scale(law) -> float:
    """R_D* for the mixture's effective tokens: the law's fitted value, else the published."""
    value = getattr(law, "rd_star", None)
    return float(value) if value is not None and math.isfinite(value) else RD_STAR


class MixturePrograms:
    """The built mixture program, reused while its structure is unchanged (a new scale law or
    bootstrap draw is a parameter change)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._law: Any = None
        self._program: MixtureProgram | None = None

    def get(self, spec: PlanSpec, law, mixture_law, max_shares=None) -> MixtureProgram:
        """The program for this spec, scale law and mixture law."""
        reference = None
        if spec.mixture.reference:
            reference = tuple(spec.mixture.reference.get(s.name, 0.0) for s in spec.sources)
        key = (
            spec.sources,
            tuple(sorted((spec.eval_weights or {}).items())),
            reference,
            tuple(sorted((max_shares or {}).items())),
            repetition_scale(law),
            getattr(mixture_law, "params", None),  # a scale law's N is built into the program
        )
        scale = scale_constants(law)
        # the law object itself (not its id(), which a new object may reuse) keys the cache
        if self._program is not None and self._key == key and self._law is mixture_law:
            self._program.set_scale_law(scale)
            return self._program
        self._program = MixtureProgram(
            spec.sources,
            mixture_law,
            scale_law=scale,
            domain_weights=spec.eval_weights,
            reference=None if reference is None else np.array(reference),
            rd_star=repetition_scale(law),
            max_shares=max_shares,
        )
        self._key, self._law = key, mixture_law
        return self._program


def solve_mixture(
    spec: PlanSpec, program: MixtureProgram, params: float, tokens: float, *, pinned: bool = False
) -> MixtureResult:
    """The mixture at the plan's training FLOPs: D searched jointly (within the limits) in
    budget mode, the plan's D in target mode or when the mixture law pins it (``pinned``)."""
    flops = 6 * params * tokens
    if spec.mode != "budget" or pinned:
        return program.solve_at(tokens, flops=flops)
    limits = spec.limits
    min_tokens, max_tokens = None, limits.max_tokens
    if limits.min_tokens_per_param is not None:  # D / N = 6 D^2 / C
        min_tokens = math.sqrt(limits.min_tokens_per_param * flops / 6)
    if limits.max_tokens_per_param is not None:
        top = math.sqrt(limits.max_tokens_per_param * flops / 6)
        max_tokens = min(max_tokens or top, top)
    return program.plan(
        flops=flops, max_params=limits.max_params, min_tokens=min_tokens, max_tokens=max_tokens
    )


def mixture_section(
    spec: PlanSpec, program: MixtureProgram, allocation: Allocation, *, pinned: bool = False
) -> dict[str, Any]:
    """The plan's mixture section (status ``optimal_inaccurate`` is kept and flagged);
    ``pinned``: solved at the allocation's D (the mixture law holds at that D only)."""
    r = solve_mixture(spec, program, allocation.params, allocation.tokens, pinned=pinned)
    if not r.status.solved:
        return {"status": r.status.value, "reason": r.reason}
    return {
        "status": r.status.value,
        "mixture": r.mixture,
        "tokens": r.tokens,
        "params": r.params,
        "loss": r.loss,
        "effective_tokens": r.effective_tokens,
        "rd_star": program.rd_star,
        "source_tokens": r.source_tokens,
        "epochs": r.epochs,
        "capped": list(r.capped),
        "cap_shadow_prices": {k: v for k, v in r.cap_duals.items() if k in r.capped},
        "share_limits": program.max_shares_by_source,
        "at_share_limit": list(r.at_share_limit),
        "share_limit_shadow_prices": {
            k: v for k, v in r.share_limit_duals.items() if k in r.at_share_limit
        },
        "inner_solves": r.solves,
        "solver": r.solver,
        "certified_gap": r.gap,  # Newton's bound on the loss above the optimum at this D
    }


def mixture_intervals(
    spec: PlanSpec, program: MixtureProgram, draws: list, rows: list
) -> dict[str, Any]:
    """Mixture weights re-planned under each draw (the scale law swapped by parameters)."""
    nominal = program.scale
    weights = []
    try:
        for draw, (n, d) in list(zip(draws, rows, strict=True))[:MAX_MIXTURE_DRAWS]:
            program.set_scale_law(scale_constants(draw))
            r = solve_mixture(spec, program, n, d)
            if r.status.solved:
                weights.append([r.mixture[s.name] for s in spec.sources])
    finally:
        program.set_scale_law(nominal)
    if not weights:
        return {}
    low, median, high = np.percentile(np.array(weights), INTERVAL, axis=0)
    return {
        s.name: {"low": float(lo), "median": float(me), "high": float(hi)}
        for s, lo, me, hi in zip(spec.sources, low, median, high, strict=True)
    }


# -- mixture laws fitted at one D (chosen across scale) --------------------------------------


def pinned_tokens(mixture) -> float | None:
    """The D a stored mixture law holds at, when it holds at one D only: an
    `AdditiveScaleLaw` without its tokens term (the scale route) or a law refitted at a
    target (N, D) (the nested route's `AdditiveLaw`); ``None`` for laws free in D."""
    law = mixture.law
    if type(law).__name__ == "AdditiveScaleLaw":
        return None if law.tokens_term else float(law.tokens)
    target = (mixture.provenance or {}).get("target") or {}
    tokens = target.get("tokens")
    return float(tokens) if tokens else None


def pin_tokens(spec: PlanSpec, model, allocation: Allocation, tokens: float) -> Allocation:
    """The allocation moved to D = ``tokens`` at the same training compute (N = C / 6D), or an
    infeasible one naming the limit that pinned D breaks."""
    flops = allocation.train_flops
    params = flops / (6.0 * tokens)
    limits = spec.limits
    broken = []
    if limits.max_params is not None and params > limits.max_params * (1 + 1e-9):
        broken.append(f"N = {params:.3g} > limits.max_params {limits.max_params:.3g}")
    if limits.max_tokens is not None and tokens > limits.max_tokens * (1 + 1e-9):
        broken.append(f"D exceeds the data cap {limits.max_tokens:.3g}")
    ratio = tokens / params
    if limits.min_tokens_per_param is not None and ratio < limits.min_tokens_per_param:
        broken.append(f"D/N = {ratio:.3g} < limits.min_tokens_per_param")
    if limits.max_tokens_per_param is not None and ratio > limits.max_tokens_per_param:
        broken.append(f"D/N = {ratio:.3g} > limits.max_tokens_per_param")
    if broken:
        return replace(
            allocation,
            status=PlanStatus.INFEASIBLE,
            reason=f"the mixture law holds only at D = {tokens:.4g} tokens (where it was "
            f"fitted); at the plan's {flops:.3g} training FLOPs that breaks: "
            f"{'; '.join(broken)}. Refit the mixture law at a D this budget can use (the "
            "fit-mixture flow's target_tokens) or change the budget or limits",
        )
    loss = float(np.asarray(model.predict(params, tokens)).reshape(-1)[0])
    return replace(allocation, params=params, tokens=tokens, loss=loss, duals={})


def scale_section(
    spec: PlanSpec, mixture, mixture_plan: dict[str, Any], scale_point: Allocation
) -> dict[str, Any]:
    """What the plan's mixture predicts at the pinned (N, D): the mixture law's own loss of the
    planned mixture with its interval (the law's, its scale error included), next to the best
    observed run, the route and selection scores the law was chosen by, and the scale law's
    unpinned optimum."""
    law = mixture.law
    prov = mixture.provenance or {}
    names = [s.name for s in spec.sources]
    weights = np.array([mixture_plan["mixture"][n] for n in names])
    params, tokens = mixture_plan["params"], mixture_plan["tokens"]
    domain = law.target_weights(spec.eval_weights)
    fitted_params = (prov.get("target") or {}).get("params")
    out: dict[str, Any] = {
        "law": law.name,
        "route": prov.get("chosen_route"),
        "fitted_at": prov.get("target"),
        "pinned_tokens": tokens,
        "params": getattr(law, "params", None) or fitted_params or params,
        "predicted_loss": float(law.target_loss(weights, spec.eval_weights)),
        "interval_90": None,
        "selection": prov.get("selection") or [],
        "step_warning": prov.get("step_warning") or "",
        "scale_law_optimum": {
            "params": scale_point.params,
            "tokens": scale_point.tokens,
            "loss": scale_point.loss,
        },
        "best_observed": None,
    }
    if (
        not hasattr(law, "at")
        and fitted_params
        and not math.isclose(fitted_params, params, rel_tol=0.1)
    ):
        out["note"] = (
            f"the {prov.get('chosen_route') or 'stored'} mixture law was fitted at N "
            f"{fitted_params:.4g} only: its mixture and loss are those of that size, not of the "
            f"plan's N {params:.4g}"
        )
    try:
        low, high = law.predict_interval(weights, level=0.9)
        out["interval_90"] = [float(low @ domain), float(high @ domain)]
    except MixplanError:
        pass  # fitted without bootstrap draws: no interval
    best = prov.get("best_observed")
    if isinstance(best, dict) and best.get("mixture"):
        observed = np.array([float(best["mixture"].get(n, 0.0)) for n in names])
        at_run = _at(law, best.get("params"), tokens)
        equal = law.target_weights(None)
        out["best_observed"] = {
            **best,
            # both at the observed run's N and D, domains weighted equally as its loss is
            "planned_predicted_loss": float(law.predict(weights) @ equal),
            "run_predicted_loss": float(law.predict(observed) @ equal),
        }
        _at(law, at_run, tokens)
    return out


def _at(law, params, tokens: float) -> float | None:
    """Move a scale law to N = ``params`` (at its own D); returns the N it was at."""
    before = getattr(law, "params", None)
    if params and hasattr(law, "at") and before is not None:
        law.at(params=float(params), tokens=tokens)
    return before
