"""make_plan: spec -> laws -> convex programs -> interpretation -> a frozen Plan.

``Planner`` holds the built programs so what-ifs re-solve them with new parameter values
instead of rebuilding; ``make_plan`` and ``whatif`` are the pure entry points (no Prefect, no
hidden I/O: a stored fit is read only from the path or lake the caller names).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from mixplan.planning.errors import FitError, SpecError
from mixplan.planning.explain import binding_labels, flat_params_range, hyperparameters, render_text
from mixplan.planning.fitting.result import FitResult, fit_path
from mixplan.planning.laws import DATABLATIONS, ChinchillaLaw, MuennighoffLaw
from mixplan.planning.mixture import AdditiveLaw, AdditiveScaleLaw, ExponentialLaw, PerSourceLaw
from mixplan.planning.mixture.data import TRAINING_MAX_SHARE
from mixplan.planning.programs.budget import BudgetProgram, robust_budget
from mixplan.planning.programs.common import PlanStatus
from mixplan.planning.programs.frontier import frontier
from mixplan.planning.programs.inference import TargetProgram, inference_equivalent_tokens
from mixplan.planning.programs.mixture import ExponentialMixture, MixtureProgram, MixtureResult
from mixplan.planning.programs.repetition import repetition_allocation
from mixplan.planning.programs.vocabulary import VocabularyProgram, VocabularyResult
from mixplan.planning.provenance import code_version
from mixplan.planning.spec import PUBLISHED_LAWS, PlanSpec

MIXTURE_LAWS = {
    cls.__name__: cls for cls in (ExponentialLaw, AdditiveLaw, AdditiveScaleLaw, PerSourceLaw)
}
"""Stored mixture-law classes by the ``law`` name their JSON carries (planning/mixture)."""

INTERVAL = (5.0, 50.0, 95.0)
"""Percentiles reported over bootstrap draws (a 90% interval and the median)."""

MAX_VOCAB_DRAWS = 200
MAX_MIXTURE_DRAWS = 50
"""Draws re-planned for mixture intervals (each is a golden-section search of inner solves)."""


@dataclass(frozen=True)
class ResolvedLaw:
    """The scale law a plan uses, where it came from, and its bootstrap draws (if any)."""

    law: Any
    description: str
    draws: tuple = ()


@dataclass(frozen=True)
class ResolvedMixture:
    """The mixture law a plan uses and its trust region: the largest share of each source in
    the runs the law was fitted on (``None``: no limit beyond the sources' token caps)."""

    law: Any
    max_shares: dict[str, float] | None = None


@dataclass(frozen=True)
class Allocation:
    """The N/D decision of one solve (budget, loss-target or repetition-aware program)."""

    status: PlanStatus
    reason: str = ""
    params: float = float("nan")
    tokens: float = float("nan")
    loss: float = float("nan")
    duals: dict[str, float] = field(default_factory=dict)
    binding: tuple[str, ...] = ()
    budget_flops: float | None = None

    @classmethod
    def of(cls, result, *, budget_flops: float | None) -> Allocation:
        """From a `BudgetResult` or `TargetResult` (duals and binding constraints included)."""
        return cls(
            status=result.status,
            reason=result.reason,
            params=result.params,
            tokens=result.tokens,
            loss=result.loss,
            duals=result.duals,
            binding=tuple(result.binding),
            budget_flops=budget_flops,
        )


@dataclass(frozen=True)
class Plan:
    """A plan: the decision, its predicted loss and cost, why, and how sure it is."""

    name: str
    mode: str
    status: PlanStatus
    reason: str = ""
    params: float = float("nan")
    tokens: float = float("nan")
    train_flops: float = float("nan")
    inference_flops: float = float("nan")
    loss: float = float("nan")
    epochs: float | None = None
    cost_dollars: float | None = None
    train_days: float | None = None
    vocabulary: dict[str, float] | None = None
    mixture: dict[str, float] | None = None
    mixture_plan: dict[str, Any] | None = None
    intervals: dict[str, Any] = field(default_factory=dict)
    interval_draws: int = 0
    robust: dict[str, float] | None = None
    frontier: list[dict[str, float]] = field(default_factory=list)
    explanation: dict[str, Any] = field(default_factory=dict)
    law: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    code_version: str = ""

    @property
    def tokens_per_param(self) -> float:
        """Training tokens per parameter."""
        return self.tokens / self.params

    @property
    def ok(self) -> bool:
        """True when the plan is optimal."""
        return self.status is PlanStatus.OPTIMAL

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        out = asdict(self)
        out["status"] = self.status.value
        out["tokens_per_param"] = self.tokens_per_param
        out["vocab_size"] = (self.vocabulary or {}).get("vocab_size")
        out["cost"] = self.cost_dollars
        return _clean(out)

    def to_json(self, **kwargs: Any) -> str:
        """The plan as JSON."""
        return json.dumps(self.to_dict(), **kwargs)

    def render(self) -> str:
        """The plan as readable text."""
        return render_text(self.to_dict())


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, np.integer):
        return int(value)
    return value


# -- laws ----------------------------------------------------------------------------------


def resolve_law(spec: PlanSpec, *, lake: str | Path | None = None) -> ResolvedLaw:
    """The scale law named by the spec: published constants, inline numbers, or a stored fit.

    Parameters
    ----------
    spec
        A validated spec; ``spec.law`` says where the law comes from.
    lake
        The lake (local directory or URL) holding stored fits, when ``law.fit`` names one.

    Returns
    -------
    ResolvedLaw
        The law, a one-line description of its origin and, for a stored fit with bootstrap
        draws and ``uncertainty.draws`` on, the draws.
    """
    ls = spec.law
    if ls.kind == "published":
        return ResolvedLaw(PUBLISHED_LAWS[ls.name], f"published constants {ls.name!r}")
    if ls.kind == "inline":
        c = ls.constants
        if "rd_star" in c or "rn_star" in c:
            law = MuennighoffLaw(
                **{k: c[k] for k in ("E", "A", "B", "alpha", "beta")},
                rd_star=c.get("rd_star", DATABLATIONS.rd_star),
                rn_star=c.get("rn_star", DATABLATIONS.rn_star),
            )
        else:
            law = ChinchillaLaw(**c)
        return ResolvedLaw(law, "inline constants " + ", ".join(f"{k}={v:g}" for k, v in c.items()))
    location, text = _read_stored_fit(spec, ls.fit, lake, field_name="law.fit")
    try:
        fit = FitResult.from_dict(json.loads(text))
    except (FitError, KeyError, TypeError, ValueError) as exc:
        raise SpecError(
            f"{spec.origin}: field 'law.fit': {location} is not a stored scale-law fit ({exc}); "
            "name a fit written by `mixplan fit`"
        ) from exc
    draws = tuple(fit.law_draws()) if fit.n_bootstrap and spec.draws else ()
    desc = f"stored fit {fit.name!r} ({location}, {fit.n_runs} runs, data {fit.data_hash})"
    return ResolvedLaw(fit.law, desc, draws)


def stored_fit_location(
    spec: PlanSpec, name: str, lake: str | Path | None, *, field_name: str
) -> str:
    """Where a spec's stored fit lives: ``<lake>/fits/<name>.json``, or ``name`` itself when it
    is a path or URL (a relative path is taken from the spec file's folder if not found as is).

    The lake may be a local directory or an fsspec URL (``file://``, ``s3://``, ...): locations
    are joined as strings, never through ``pathlib`` (which would turn ``file://x`` into
    ``file:/x``).
    """
    if name.endswith(".json") or "/" in name:
        if "://" in name:
            return name
        path = Path(name)
        if not path.is_absolute() and not path.exists() and spec.origin != "<dict>":
            path = Path(spec.origin).parent / name
        return str(path)
    if lake is None:
        raise SpecError(
            f"{spec.origin}: field '{field_name}': the stored fit {name!r} lives in a lake; "
            "pass --lake DIR (or give a path to the fit's JSON)"
        )
    return fit_path(lake, name)


def _read_stored_fit(spec: PlanSpec, name: str, lake, *, field_name: str) -> tuple[str, str]:
    """``(location, JSON text)`` of a stored fit, read through fsspec (local path or URL)."""
    location = stored_fit_location(spec, name, lake, field_name=field_name)
    try:
        with fsspec.open(location, "r", encoding="utf-8") as handle:
            return location, handle.read()
    except OSError as exc:
        raise SpecError(
            f"{spec.origin}: field '{field_name}': cannot read {location}: {exc}; run "
            "`mixplan fit` (or `mixplan pipeline`) to write it, or check --lake"
        ) from exc


def resolve_mixture_law(
    spec: PlanSpec, *, lake: str | Path | None = None
) -> ResolvedMixture | None:
    """The mixture law of the spec (``None`` when the spec has no ``[mixture]``).

    Inline exponential numbers carry no trust region. A stored fitted law does when its JSON
    records ``training_max_share`` (the largest share of each source in the fitted runs) and
    ``mixture.trust_region`` is on (the default).
    """
    ms = spec.mixture
    if ms is None:
        return None
    if ms.fit is None:
        law = ExponentialMixture(
            tuple(s.name for s in spec.sources),
            ms.domains,
            np.array(ms.c),
            np.array(ms.k),
            np.array(ms.t),
        )
        return ResolvedMixture(law)
    location, text = _read_stored_fit(spec, ms.fit, lake, field_name="mixture.fit")
    try:
        payload = json.loads(text)
        kind = payload.get("law")
    except (AttributeError, ValueError) as exc:
        raise SpecError(f"{spec.origin}: field 'mixture.fit': {location}: {exc}") from exc
    law_class = MIXTURE_LAWS.get(kind)
    if law_class is None:
        raise SpecError(
            f"{spec.origin}: field 'mixture.fit': {location} holds an unknown law {kind!r}; "
            f"stored mixture laws are {sorted(MIXTURE_LAWS)}"
        )
    shares = payload.get(TRAINING_MAX_SHARE) if ms.trust_region else None
    return ResolvedMixture(law_class.from_json(text), shares)


# -- the planner ------------------------------------------------------------------------------


class Planner:
    """Builds each program once and re-solves it for every plan and what-if."""

    def __init__(self) -> None:
        self.budget = BudgetProgram()
        self.target = TargetProgram()
        self.vocabulary = VocabularyProgram()
        self._mixture_cache: tuple[tuple, MixtureProgram] | None = None

    # ---------------------------------------------------------------------------------------
    def plan(
        self,
        spec: PlanSpec,
        *,
        lake: str | Path | None = None,
        resolved: ResolvedLaw | None = None,
        mixture: ResolvedMixture | None = None,
    ) -> Plan:
        """Plan one spec (see `make_plan`)."""
        resolved = resolved or resolve_law(spec, lake=lake)
        law = resolved.law
        inference_tokens = _inference_tokens(spec)
        allocation = self._allocate(spec, law, inference_tokens)
        base = Plan(
            name=spec.name,
            mode=spec.mode,
            status=allocation.status,
            reason=allocation.reason,
            law={"description": resolved.description, **_law_dict(law)},
            inputs=_inputs(spec, inference_tokens),
            code_version=code_version(),
        )
        if allocation.status is not PlanStatus.OPTIMAL:
            return base
        params, tokens = allocation.params, allocation.tokens
        vocabulary = self._vocabulary(spec, params, tokens)
        program = None
        if spec.mixture is not None:
            mixture = mixture or resolve_mixture_law(spec, lake=lake)
            program = self._mixture_program(spec, law, mixture.law, max_shares=mixture.max_shares)
        mixture_plan = self._mixture(spec, program, params, tokens)
        explanation = self._explain(
            spec, law, allocation, inference_tokens, vocabulary, mixture_plan
        )
        width = (vocabulary or {}).get("width")
        intervals = self._intervals(
            spec, resolved, inference_tokens, vocab_width=width, mixture_program=program
        )
        return replace(
            base,
            params=params,
            tokens=tokens,
            train_flops=6 * params * tokens,
            inference_flops=2 * params * spec.inference.tokens,
            loss=allocation.loss,
            epochs=tokens / spec.unique_tokens if spec.unique_tokens else None,
            cost_dollars=_cost(spec, params, tokens),
            train_days=_days(spec, params, tokens),
            frontier=self._frontier(spec, law, allocation, inference_tokens),
            vocabulary=vocabulary,
            mixture=(mixture_plan or {}).get("mixture"),
            mixture_plan=mixture_plan,
            intervals=intervals,
            interval_draws=len(resolved.draws) if intervals else 0,
            robust=self._robust(spec, resolved, allocation, inference_tokens),
            explanation=explanation,
        )

    def _robust(
        self, spec: PlanSpec, resolved: ResolvedLaw, allocation: Allocation, inference_tokens: float
    ) -> dict[str, float] | None:
        """The plan with the best worst case over the bootstrap draws (budget mode only)."""
        if not (spec.robust and resolved.draws and spec.mode == "budget"):
            return None
        result = robust_budget(
            list(resolved.draws),
            flops=allocation.budget_flops,
            inference_tokens=inference_tokens,
            max_params=spec.limits.max_params,
            max_tokens=spec.max_tokens,
            max_train_flops=spec.max_train_flops,
        )
        if result.status is not PlanStatus.OPTIMAL:
            return None
        return {
            "params": result.params,
            "tokens": result.tokens,
            "worst_loss": result.loss,
            "nominal_worst_loss": max(
                float(d.predict(allocation.params, allocation.tokens)) for d in resolved.draws
            ),
        }

    def _allocate(
        self, spec: PlanSpec, law, inference_tokens: float, *, flops: float | None = None
    ) -> Allocation:
        """The N/D decision: budget, loss target, or repetition-aware search."""
        limits = _limits(spec)
        if isinstance(law, MuennighoffLaw):
            return self._allocate_with_repetition(spec, law, flops=flops)
        if spec.mode == "target":
            r = self.target.solve(
                law, target_loss=spec.target_loss, inference_tokens=inference_tokens, **limits
            )
            return Allocation.of(r, budget_flops=r.train_flops)
        budget = flops if flops is not None else spec.budget_flops
        if budget is None and limits["max_train_flops"] is None:
            return Allocation(PlanStatus.INFEASIBLE, "no budget given")
        r = self.budget.solve(
            law,
            flops=budget if budget is not None else math.inf,
            inference_tokens=inference_tokens,
            **limits,
        )
        return Allocation.of(
            r, budget_flops=budget if budget is not None else limits["max_train_flops"]
        )

    def _allocate_with_repetition(
        self, spec: PlanSpec, law: MuennighoffLaw, *, flops: float | None = None
    ) -> Allocation:
        if spec.mode == "target":
            return Allocation(
                PlanStatus.INFEASIBLE,
                "loss targets with a repetition (Muennighoff) law are not supported; "
                "give budget.flops",
            )
        if not spec.sources:
            raise SpecError(f"{spec.origin}: field 'sources': a repetition law needs [[sources]]")
        budget = flops if flops is not None else spec.budget_flops
        if budget is None:
            return Allocation(PlanStatus.INFEASIBLE, "no budget given")
        unique = spec.unique_tokens
        r = repetition_allocation(
            law,
            flops=budget,
            unique_tokens=unique,
            max_epochs=spec.max_tokens / unique,
            max_params=spec.limits.max_params,
        )
        return Allocation(
            status=r.status,
            reason=r.reason,
            params=r.params,
            tokens=r.tokens,
            loss=r.loss,
            binding=r.binding,
            budget_flops=budget,
        )

    def _loss_fn(self, spec: PlanSpec, law):
        if isinstance(law, MuennighoffLaw):
            return lambda n, d: law.predict(n, d, spec.unique_tokens)
        return lambda n, d: law.predict(n, d)

    def _explain(
        self,
        spec: PlanSpec,
        law,
        allocation: Allocation,
        inference_tokens: float,
        vocabulary: dict | None,
        mixture_plan: dict | None,
    ) -> dict[str, Any]:
        """Why this plan: binding limits (the mixture's trust region too), shadow prices,
        flatness, marginal value of compute, and StepLaw hyperparameters (at non-embedding N
        when the vocabulary is planned)."""
        params, tokens = allocation.params, allocation.tokens
        loss_fn = self._loss_fn(spec, law)
        flops = 6 * params * tokens
        flat = flat_params_range(lambda n: loss_fn(n, flops / (6 * n)), params)
        binding = list(allocation.binding)
        if mixture_plan and mixture_plan.get("at_share_limit"):
            binding.append("mixture_trust_region")
        out: dict[str, Any] = {
            "binding": binding,
            "binding_labels": binding_labels(binding),
            "shadow_prices": {k: v for k, v in allocation.duals.items() if k in allocation.binding},
            "flat_params_range": flat,
            "hyperparameters": hyperparameters(
                params, tokens, embedding_params=(vocabulary or {}).get("vocab_params")
            ),
            "marginal_loss_per_10x": None,
            "flops_ratio_for_lower_target": None,
        }
        if spec.mode == "budget":
            more = self._allocate(spec, law, inference_tokens, flops=10 * allocation.budget_flops)
            if more.status is PlanStatus.OPTIMAL:
                out["marginal_loss_per_10x"] = allocation.loss - more.loss
        else:
            lower = replace(spec, target_loss=spec.target_loss - 0.01)
            more = self._allocate(lower, law, inference_tokens)
            if more.status is PlanStatus.OPTIMAL:
                out["flops_ratio_for_lower_target"] = more.params * more.tokens / (params * tokens)
        if mixture_plan is not None and mixture_plan.get("status") != "optimal":
            out["mixture_reason"] = mixture_plan.get("reason", "")
        return out

    def _vocabulary(self, spec: PlanSpec, params: float, tokens: float) -> dict | None:
        """Tao's approach 3 at the plan's N and FLOPs (``None`` without a [vocabulary])."""
        if spec.vocabulary is None:
            return None
        r = self._solve_vocabulary(spec, params, tokens)
        if r.status is not PlanStatus.OPTIMAL:
            return {"status": r.status.value, "reason": r.reason}
        return {
            "vocab_size": r.vocab_size,
            "width": r.width,
            "non_vocab_params": r.non_vocab_params,
            "vocab_params": r.vocab_params,
            "tokens": r.tokens,
            "characters": r.characters,
            "loss_unigram": r.loss_unigram,
        }

    def _solve_vocabulary(
        self, spec: PlanSpec, params: float, tokens: float, *, width: float | None = None
    ) -> VocabularyResult:
        vmin, vmax = spec.vocabulary
        return self.vocabulary.solve(
            flops=6 * params * tokens,
            non_vocab_params=params,
            width=width,
            min_vocab=vmin,
            max_vocab=vmax,
        )

    def _mixture(
        self, spec: PlanSpec, program: MixtureProgram | None, params: float, tokens: float
    ) -> dict[str, Any] | None:
        """The mixture plan (``None`` without a [mixture]); its own D in budget mode."""
        if program is None:
            return None
        r = _solve_mixture(spec, program, params, tokens)
        if r.status is not PlanStatus.OPTIMAL:
            return {"status": r.status.value, "reason": r.reason}
        return {
            "status": r.status.value,
            "mixture": r.mixture,
            "tokens": r.tokens,
            "params": r.params,
            "loss": r.loss,
            "effective_tokens": r.effective_tokens,
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

    def _frontier(
        self, spec: PlanSpec, law, allocation: Allocation, inference_tokens: float
    ) -> list[dict[str, float]]:
        """Loss against cost from 1/100x to 100x the plan's budget (the Pareto frontier)."""
        if spec.mode != "budget" or isinstance(law, MuennighoffLaw):
            return []
        price = None
        if spec.training is not None and spec.training.price_per_hour is not None:
            price = spec.training.dollars_per_useful_flop
        points = frontier(
            law,
            allocation.budget_flops * np.logspace(-2, 2, 9),
            dollars_per_flop=price,
            inference_tokens=inference_tokens,
            program=self.budget,
            **_limits(spec),
        )
        return [
            {
                "flops": p.flops,
                "dollars": p.dollars,
                "loss": p.loss,
                "params": p.params,
                "tokens": p.tokens,
            }
            for p in points
            if p.status is PlanStatus.OPTIMAL
        ]

    def _mixture_program(
        self,
        spec: PlanSpec,
        law,
        mixture_law,
        *,
        max_shares: dict[str, float] | None = None,
    ) -> MixtureProgram:
        """The built mixture program for these sources, weights and trust region; the scale law
        is a parameter change (a new program is built only when anything else changes)."""
        scale = (
            law
            if not isinstance(law, MuennighoffLaw)
            else ChinchillaLaw(law.E, law.A, law.B, law.alpha, law.beta)
        )
        reference = None
        if spec.mixture.reference:
            reference = tuple(spec.mixture.reference.get(s.name, 0.0) for s in spec.sources)
        key = (
            id(mixture_law),
            spec.sources,
            tuple(sorted((spec.eval_weights or {}).items())),
            reference,
            tuple(sorted((max_shares or {}).items())),
        )
        if self._mixture_cache is not None and self._mixture_cache[0] == key:
            program = self._mixture_cache[1]
            program.set_scale_law(scale)
            return program
        program = MixtureProgram(
            spec.sources,
            mixture_law,
            scale_law=scale,
            domain_weights=spec.eval_weights,
            reference=None if reference is None else np.array(reference),
            max_shares=max_shares,
        )
        self._mixture_cache = (key, program)
        return program

    def _mixture_intervals(
        self, spec: PlanSpec, program: MixtureProgram, draws: list, rows: list
    ) -> dict[str, Any]:
        """Mixture weights re-planned under each draw (the scale law swapped by parameters)."""
        nominal = program.scale
        weights = []
        try:
            for draw, (n, d, _) in list(zip(draws, rows, strict=True))[:MAX_MIXTURE_DRAWS]:
                program.set_scale_law(draw)
                r = _solve_mixture(spec, program, n, d)
                if r.status is PlanStatus.OPTIMAL:
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

    def _intervals(
        self,
        spec: PlanSpec,
        resolved: ResolvedLaw,
        inference_tokens: float,
        *,
        vocab_width: float | None,
        mixture_program: MixtureProgram | None,
    ) -> dict[str, Any]:
        """5/50/95% of the plan re-solved under every bootstrap draw.

        The vocabulary is re-planned at the point plan's width ``vocab_width`` (the architecture
        the plan recommends): Tao's width rule is a step function of N, so letting each draw
        pick its own width mixes two architectures and V jumps ~35% across a step (a point plan
        just above the 50e9 step then fell below its own interval).
        """
        if not resolved.draws:
            return {}
        rows, solved = [], []
        for draw in resolved.draws:
            allocation = self._allocate(spec, draw, inference_tokens)
            if allocation.status is PlanStatus.OPTIMAL:
                rows.append((allocation.params, allocation.tokens, allocation.loss))
                solved.append(draw)
        if not rows:
            return {}
        arr = np.array(rows)
        columns = {
            "params": arr[:, 0],
            "tokens": arr[:, 1],
            "loss": arr[:, 2],
            "tokens_per_param": arr[:, 1] / arr[:, 0],
            "train_flops": 6 * arr[:, 0] * arr[:, 1],
        }
        if vocab_width is not None:
            columns["vocab_size"] = np.array(
                [
                    self._solve_vocabulary(spec, n, d, width=vocab_width).vocab_size
                    for n, d, _ in rows[:MAX_VOCAB_DRAWS]
                ]
            )
        out: dict[str, Any] = {}
        for name, values in columns.items():
            low, median, high = np.nanpercentile(values, INTERVAL)
            out[name] = {"low": float(low), "median": float(median), "high": float(high)}
        if mixture_program is not None:
            mixture = self._mixture_intervals(spec, mixture_program, solved, rows)
            if mixture:
                out["mixture"] = mixture
        return out


def _inference_tokens(spec: PlanSpec) -> float:
    """T_inf (FLOP objective) or T_eff (dollar objective) of the spec's inference demand."""
    inf = spec.inference
    if inf.tokens <= 0:
        return 0.0
    if spec.objective == "flops":
        return inf.tokens
    hw = inf.hardware
    return inference_equivalent_tokens(
        tokens_in=inf.tokens_in,
        tokens_out=inf.tokens_out,
        train_dollars_per_flop=spec.training.dollars_per_flop,
        train_mfu=spec.training.mfu,
        infer_dollars_per_flop=hw.dollars_per_flop,
        prefill_mfu=inf.prefill_mfu or hw.mfu,
        decode_mfu=inf.decode_mfu or hw.mfu,
    )


def _limits(spec: PlanSpec) -> dict[str, float | None]:
    """The spec's limits as the keyword arguments of the budget and loss-target programs."""
    return {
        "max_params": spec.limits.max_params,
        "max_tokens": spec.max_tokens,
        "min_tokens_per_param": spec.limits.min_tokens_per_param,
        "max_tokens_per_param": spec.limits.max_tokens_per_param,
        "max_train_flops": spec.max_train_flops,
    }


def _solve_mixture(
    spec: PlanSpec, program: MixtureProgram, params: float, tokens: float
) -> MixtureResult:
    """The mixture at the plan's FLOPs: D searched jointly in budget mode, fixed for a target."""
    flops = 6 * params * tokens
    if spec.mode == "budget":
        return program.plan(flops=flops, max_params=spec.limits.max_params)
    return program.solve_at(tokens, flops=flops)


def _law_dict(law) -> dict[str, Any]:
    try:
        return law.to_dict()
    except AttributeError:
        return {}


def _cost(spec: PlanSpec, params: float, tokens: float) -> float | None:
    tr = spec.training
    if tr is None or tr.price_per_hour is None:
        return None
    cost = 6 * params * tokens * tr.dollars_per_useful_flop
    inf = spec.inference
    if inf.tokens > 0 and inf.hardware is not None and inf.hardware.price_per_hour is not None:
        prefill = inf.prefill_mfu or inf.hardware.mfu
        decode = inf.decode_mfu or inf.hardware.mfu
        cost += (
            2 * params * inf.hardware.dollars_per_flop
            * (inf.tokens_in / prefill + inf.tokens_out / decode)
        )  # fmt: skip
    return cost


def _days(spec: PlanSpec, params: float, tokens: float) -> float | None:
    tr = spec.training
    if tr is None or not tr.gpus:
        return None
    return 6 * params * tokens / (tr.gpus * tr.peak_flops * tr.mfu) / 86400.0


def _inputs(spec: PlanSpec, inference_tokens: float) -> dict[str, Any]:
    return {
        "origin": spec.origin,
        "budget_flops": spec.budget_flops,
        "dollars": spec.dollars,
        "target_loss": spec.target_loss,
        "objective": spec.objective,
        "inference_tokens": spec.inference.tokens,
        "inference_equivalent_tokens": inference_tokens,
        "max_params": spec.limits.max_params,
        "max_tokens": spec.max_tokens,
        "max_train_flops": spec.max_train_flops,
        "flop_convention": "6ND training, 2N per inference token",
    }


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
        ``status`` is OPTIMAL, or INFEASIBLE / UNBOUNDED with ``reason`` naming what binds.
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
) -> list[Plan]:
    """Re-plan over a grid of budgets (or loss targets) x lifetime inference tokens.

    The programs are built once and re-solved with new parameter values. Bootstrap intervals
    are off by default (``draws=True`` re-plans each point under every draw).
    """
    planner = planner or Planner()
    base = replace(spec, draws=draws, robust=False)
    resolved = resolve_law(base, lake=lake)
    mixture = resolve_mixture_law(base, lake=lake)
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
            changes.update(flops=value, dollars=None, target_loss=None)
        elif kind == "target":
            changes.update(target_loss=value, flops=None, dollars=None)
        if t_inf is not None:
            inf = base.inference
            if t_inf > 0 and base.objective == "dollars" and inf.tokens > 0:
                scale = t_inf / inf.tokens
                inf = replace(
                    inf, tokens_in=inf.tokens_in * scale, tokens_out=inf.tokens_out * scale
                )
            else:
                inf = replace(inf, tokens_in=float(t_inf), tokens_out=0.0)
            changes["inference"] = inf
        variant = replace(base, **changes)
        out.append(planner.plan(variant, lake=lake, resolved=resolved, mixture=mixture))
    return out
