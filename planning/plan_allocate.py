"""Step 2 of a plan: the N/D decision (and the robust one) through the one allocation core.

Every mode reads the spec's one `Limits`: a budget, a loss target (with inference demand), a
repetition-aware law (the loss model counts repeated tokens), and the robust plan (the worst case
over bootstrap draws of any law family, at the same limits and in the same mode).
"""

from __future__ import annotations

from typing import Any

from mixplan.planning.errors import SpecError
from mixplan.planning.programs.allocation import (
    Allocation,
    LossModel,
    allocate_budget,
    allocate_target,
)
from mixplan.planning.programs.common import PlanStatus
from mixplan.planning.programs.inference import inference_equivalent_tokens
from mixplan.planning.spec import PlanSpec


def loss_model(spec: PlanSpec, law) -> LossModel:
    """The loss the spec's law predicts; a repetition law counts the sources' unique tokens."""
    return LossModel.of(law, unique_tokens=spec.unique_tokens)


def inference_tokens(spec: PlanSpec) -> float:
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


def allocate(
    spec: PlanSpec,
    model: LossModel,
    t_inf: float,
    *,
    flops: float | None = None,
    target_loss: float | None = None,
) -> Allocation:
    """The spec's N/D decision for ``model`` (``flops`` / ``target_loss`` override the spec's).

    Budget mode without any budget uses the training-FLOP cap alone (e.g. a wall-clock limit).
    """
    if spec.mode == "target" or target_loss is not None:
        goal = target_loss if target_loss is not None else spec.target_loss
        return allocate_target(model, limits=spec.limits, target_loss=goal, inference_tokens=t_inf)
    budget = flops if flops is not None else spec.budget_flops
    if budget is None and spec.limits.train_flops_cap is None:
        return Allocation(
            PlanStatus.INFEASIBLE,
            reason="no budget given: set budget.flops, budget.dollars or budget.target_loss",
        )
    return allocate_budget(model, limits=spec.limits, flops=budget, inference_tokens=t_inf)


def check_robust(spec: PlanSpec, draws: tuple) -> None:
    """SpecError when the spec asks for a robust plan its law has no draws for."""
    if spec.robust and not draws:
        raise SpecError(
            f"{spec.origin}: field 'uncertainty.robust': the robust plan needs bootstrap draws "
            "of the law; name a stored fit with draws ([law] fit = ...) and keep "
            "uncertainty.draws = true, or set robust = false"
        )


def robust_plan(
    spec: PlanSpec, draws: tuple, point: Allocation, t_inf: float
) -> dict[str, Any] | None:
    """The plan with the best worst case over the law's bootstrap draws, at the same limits and
    in the same mode as the point plan (``None`` unless ``uncertainty.robust``).

    Budget mode minimises ``max_k L_k(N, D)`` within the budget; target mode finds the cheapest
    (N, D) whose worst case reaches the target. ``point_worst_loss`` is the point plan's worst
    case over the same draws, so the two can be compared at equal limits.
    """
    if not spec.robust:
        return None
    check_robust(spec, draws)
    worst = LossModel.worst_case([loss_model(spec, d) for d in draws])
    budget = point.budget_flops if spec.mode == "budget" else None
    result = allocate(spec, worst, t_inf, flops=budget)
    point_worst = worst.loss(point.params, point.tokens)
    if not result.ok:
        return {"status": result.status.value, "reason": result.reason, "draws": len(draws)}
    return {
        "status": result.status.value,
        "params": result.params,
        "tokens": result.tokens,
        "tokens_per_param": result.tokens_per_param,
        "train_flops": result.train_flops,
        "worst_loss": result.loss,
        "point_worst_loss": point_worst,
        "nominal_worst_loss": point_worst,
        "binding": list(result.binding),
        "draws": len(draws),
    }


def frontier(
    spec: PlanSpec, model: LossModel, point: Allocation, t_inf: float
) -> list[dict[str, float]]:
    """Loss against cost from 1/100x to 100x the plan's budget (the Pareto frontier)."""
    if spec.mode != "budget" or point.budget_flops is None:
        return []
    price = None
    if spec.training is not None and spec.training.price_per_hour is not None:
        price = spec.training.dollars_per_useful_flop
    points = []
    for factor in (0.01, 0.0316227766, 0.1, 0.316227766, 1.0, 3.16227766, 10.0, 31.6227766, 100):
        budget = point.budget_flops * factor
        r = point if factor == 1.0 else allocate(spec, model, t_inf, flops=budget)
        if not r.ok:
            continue
        total = r.train_flops + r.inference_flops
        points.append(
            {
                "flops": budget,
                "dollars": total * price if price is not None else None,
                "loss": r.loss,
                "params": r.params,
                "tokens": r.tokens,
            }
        )
    return points


def marginal_value(
    spec: PlanSpec, model: LossModel, point: Allocation, t_inf: float
) -> dict[str, float | None]:
    """What more compute (budget mode) or a lower target (target mode) buys."""
    out: dict[str, float | None] = {
        "marginal_loss_per_10x": None,
        "flops_ratio_for_lower_target": None,
    }
    if spec.mode == "budget":
        if point.budget_flops is None:  # only a FLOP / wall-clock cap bounds the plan
            return out
        more = allocate(spec, model, t_inf, flops=10 * point.budget_flops)
        if more.ok:
            out["marginal_loss_per_10x"] = point.loss - more.loss
    else:
        lower = allocate(spec, model, t_inf, target_loss=spec.target_loss - 0.01)
        if lower.ok:
            out["flops_ratio_for_lower_target"] = lower.train_flops / point.train_flops
    return out


def cost_dollars(spec: PlanSpec, params: float, tokens: float) -> float | None:
    """Training (and, with serving prices, lifetime inference) cost in dollars."""
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


def train_days(spec: PlanSpec, params: float, tokens: float) -> float | None:
    """Wall-clock days of training on the spec's GPUs."""
    per_day = spec.limits.train_flops_per_day
    if per_day is None:
        return None
    return 6 * params * tokens / per_day


def epochs(spec: PlanSpec, tokens: float) -> float | None:
    """Passes over the sources' unique data."""
    unique = spec.unique_tokens
    return tokens / unique if unique else None


def plan_inputs(spec: PlanSpec, t_inf: float) -> dict[str, Any]:
    """The spec's inputs as the plan records them."""
    limits = spec.limits
    return {
        "origin": spec.origin,
        "budget_flops": spec.budget_flops,
        "dollars": spec.dollars,
        "target_loss": spec.target_loss,
        "objective": spec.objective,
        "inference_tokens": spec.inference.tokens,
        "inference_equivalent_tokens": t_inf,
        "max_params": limits.max_params,
        "max_tokens": limits.max_tokens,
        "min_tokens_per_param": limits.min_tokens_per_param,
        "max_tokens_per_param": limits.max_tokens_per_param,
        "max_train_flops": limits.train_flops_cap,
        "flop_convention": "6ND training, 2N per inference token (N total parameters)",
    }
