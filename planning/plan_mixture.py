"""Step 4 of a plan: the data mixture (and, in budget mode, the D that goes with it).

The mixture program (planning/programs/mixture.py) is built once per (sources, mixture law,
eval weights, reference, trust region, R_D*) and re-solved with the scale law as parameters.
The scale law's repetition constant R_D* is the fitted law's own when the scale law is a
repetition (Muennighoff) fit. In budget mode D is searched jointly with the mixture, within
every limit of the spec (max_params, max_tokens, tokens per parameter both ways).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mixplan.planning.laws import ChinchillaLaw
from mixplan.planning.plan_model import INTERVAL
from mixplan.planning.programs.allocation import Allocation
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
    spec: PlanSpec, program: MixtureProgram, params: float, tokens: float
) -> MixtureResult:
    """The mixture at the plan's training FLOPs: D searched jointly (within the limits) in
    budget mode, the plan's D in target mode."""
    flops = 6 * params * tokens
    if spec.mode != "budget":
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
    spec: PlanSpec, program: MixtureProgram, allocation: Allocation
) -> dict[str, Any]:
    """The plan's mixture section (status ``optimal_inaccurate`` is kept and flagged)."""
    r = solve_mixture(spec, program, allocation.params, allocation.tokens)
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
