"""Loss target + lifetime inference -> lowest total cost (Sardana et al. 2024, laws.md 3).

``min 6ND + 2 N T_inf  s.t.  (A/(l-E)) N^-alpha + (B/(l-E)) D^-beta <= 1`` and the limits; a
GP written in logs with ``cp.Parameter``s (built once per structure: the inference term is
dropped when ``T_inf = 0``). The dollar version replaces ``T_inf`` by the training-FLOP
equivalent ``T_eff = c_inf (T_in/U_in + T_out/U_out) / (c_tr/U_tr)``, with ``c`` in $/FLOP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

from mixplan.planning.programs.budget import BudgetProgram
from mixplan.planning.programs.common import (
    BINDING_TOL,
    LOG6,
    BuiltOnce,
    PlanStatus,
    ScaleLaw,
    as_constants,
    dual,
    law_parameters,
    limit_constraints,
    limit_parameters,
    require_dpp,
    set_law,
    set_limits,
    solve,
)

PEAK_FLOPS: dict[tuple[str, str], float] = {
    ("a100", "bf16"): 3.12e14,
    ("a100", "int8"): 6.24e14,
    ("h100", "bf16"): 9.89e14,
    ("h100", "fp8"): 1.978e15,
}
"""Dense peak FLOP/s per GPU (laws.md 3)."""


def dollars_per_flop(price_per_hour: float, peak_flops: float) -> float:
    """Dollars per peak FLOP: ``($/h) / (3600 * peak FLOP/s)``."""
    return price_per_hour / (3600.0 * peak_flops)


def inference_equivalent_tokens(
    *,
    tokens_in: float,
    tokens_out: float,
    train_dollars_per_flop: float,
    train_mfu: float,
    infer_dollars_per_flop: float,
    prefill_mfu: float,
    decode_mfu: float,
) -> float:
    """``T_eff``: inference tokens priced in training-FLOP equivalents (laws.md 3)."""
    per_flop_train = train_dollars_per_flop / train_mfu
    per_flop_infer_weighted = infer_dollars_per_flop * (
        tokens_in / prefill_mfu + tokens_out / decode_mfu
    )
    return per_flop_infer_weighted / per_flop_train


@dataclass(frozen=True)
class TargetResult:
    """The cheapest (N, D) reaching a loss target."""

    status: PlanStatus
    params: float
    tokens: float
    loss: float
    train_flops: float
    inference_flops: float
    duals: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    best_reachable_loss: float = float("nan")
    best_reachable_flops: float = float("nan")

    @property
    def total_flops(self) -> float:
        """Training plus lifetime inference FLOPs (in training-FLOP equivalents)."""
        return self.train_flops + self.inference_flops

    @property
    def binding(self) -> list[str]:
        """Names of constraints with a positive dual value."""
        return [name for name, value in self.duals.items() if value > BINDING_TOL]


class TargetProgram(BuiltOnce):
    """Lowest training + inference FLOPs reaching ``target_loss``; built once per structure."""

    def __init__(self) -> None:
        super().__init__()
        self._budget = BudgetProgram()

    def _build(self, with_inference: bool):
        n, d = cp.Variable(name="log_params"), cp.Variable(name="log_tokens")
        p = {
            **law_parameters(),
            **limit_parameters(),
            "log_gap": cp.Parameter(name="log_gap"),
            "log_inference": cp.Parameter(name="log_inference"),
        }
        if with_inference:
            objective = cp.log_sum_exp(cp.hstack([LOG6 + n + d, p["log_inference"] + n]))
        else:
            objective = LOG6 + n + d
        reach = cp.log_sum_exp(
            cp.hstack(
                [
                    p["logA"] - p["log_gap"] - p["alpha"] * n,
                    p["logB"] - p["log_gap"] - p["beta"] * d,
                ]
            )
        )
        cons = {"target_loss": reach <= 0, **limit_constraints(n, d, p)}
        problem = cp.Problem(cp.Minimize(objective), list(cons.values()))
        require_dpp(problem, "inference program")
        return problem, p, cons, (n, d)

    def solve(
        self,
        law: ScaleLaw,
        *,
        target_loss: float,
        inference_tokens: float = 0.0,
        max_params: float | None = None,
        max_tokens: float | None = None,
        min_tokens_per_param: float | None = None,
        max_tokens_per_param: float | None = None,
        max_train_flops: float | None = None,
    ) -> TargetResult:
        """Cheapest (N, D) with predicted loss <= ``target_loss``.

        ``inference_tokens`` is ``T_inf`` (FLOP objective) or ``T_eff`` (dollar objective, see
        `inference_equivalent_tokens`). When no (N, D) within the limits reaches the target the
        status is INFEASIBLE and the reason names the best reachable loss and its FLOPs.
        """
        law = as_constants(law)
        limits = {
            "max_params": max_params,
            "max_tokens": max_tokens,
            "min_tokens_per_param": min_tokens_per_param,
            "max_tokens_per_param": max_tokens_per_param,
            "max_train_flops": max_train_flops,
        }
        if target_loss <= law.E:
            return _failed(
                PlanStatus.INFEASIBLE,
                f"no model reaches loss {target_loss:.4g}: it is at or below the law's "
                f"irreducible loss E = {law.E:.4g}",
                best_loss=law.E,
                best_flops=math.inf,
            )
        with_inference = inference_tokens > 0
        problem, p, cons, (n, d) = self.problem(with_inference)
        set_law(p, law)
        set_limits(p, **limits)
        p["log_gap"].value = math.log(target_loss - law.E)
        p["log_inference"].value = math.log(2 * inference_tokens) if with_inference else 0.0
        status = solve(problem)
        if status is PlanStatus.INFEASIBLE:
            return self._explain_infeasible(law, target_loss, limits)
        if not status.solved:
            return _failed(status, f"the loss-target program ended {problem.status}")
        params, tokens = float(np.exp(n.value)), float(np.exp(d.value))
        return TargetResult(
            status=status,
            params=params,
            tokens=tokens,
            loss=law.predict(params, tokens),
            train_flops=6 * params * tokens,
            inference_flops=2 * params * inference_tokens,
            duals={name: dual(c) for name, c in cons.items()},
        )

    def _explain_infeasible(self, law, target_loss: float, limits: dict) -> TargetResult:
        """Best reachable loss within the limits (the budget program with no budget)."""
        best = self._budget.solve(law, flops=math.inf, **limits)
        if best.status is PlanStatus.OPTIMAL:
            named = [name for name in best.binding if name != "budget"]
            why = " and ".join(named) if named else "the limits"
            return _failed(
                PlanStatus.INFEASIBLE,
                f"no model reaches loss {target_loss:.4g} with these limits ({why} bind): "
                f"the best reachable is {best.loss:.4g} at {best.train_flops:.3g} FLOPs",
                best_loss=best.loss,
                best_flops=best.train_flops,
            )
        bound = law.E
        if limits["max_tokens"] is not None:
            bound += law.B / limits["max_tokens"] ** law.beta
        if limits["max_params"] is not None:
            bound += law.A / limits["max_params"] ** law.alpha
        return _failed(
            PlanStatus.INFEASIBLE,
            f"no model reaches loss {target_loss:.4g} with this data: the loss only approaches "
            f"{bound:.4g} as the model grows without bound",
            best_loss=bound,
            best_flops=math.inf,
        )


def _failed(status: PlanStatus, reason: str, *, best_loss=float("nan"), best_flops=float("nan")):
    nan = float("nan")
    return TargetResult(status, nan, nan, nan, nan, nan, {}, reason, best_loss, best_flops)
