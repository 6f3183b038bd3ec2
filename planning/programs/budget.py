"""Budget -> lowest loss: ``min A N^-alpha + B D^-beta  s.t.  6ND (+ 2 N T_inf) <= C`` and limits.

A geometric program, written as its convex form in logs (``n = log N``, ``d = log D``) so that
every constant is a ``cp.Parameter`` (DPP): the problem is built once and a what-if only
changes parameter values. Limits that the spec leaves out are switched off with a far bound.
Dual values are in log units: the dual of the budget is ``-dL/dlog C``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

from mixplan.planning.errors import PlanningError
from mixplan.planning.programs.common import (
    BINDING_TOL,
    LOG6,
    OFF,
    BuiltOnce,
    PlanStatus,
    ScaleLaw,
    as_constants,
    dual,
    law_parameters,
    limit_constraints,
    limit_parameters,
    log_or_off,
    require_dpp,
    set_law,
    set_limits,
    solve,
)


@dataclass(frozen=True)
class BudgetResult:
    """The answer of the budget program (``params``/``tokens`` are NaN unless optimal)."""

    status: PlanStatus
    params: float
    tokens: float
    loss: float
    train_flops: float
    inference_flops: float
    duals: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    @property
    def binding(self) -> list[str]:
        """Names of the constraints whose dual value is positive (they shape the answer)."""
        return [name for name, value in self.duals.items() if value > BINDING_TOL]

    @property
    def tokens_per_param(self) -> float:
        """Training tokens per parameter."""
        return self.tokens / self.params


class BudgetProgram(BuiltOnce):
    """Lowest loss for a compute budget; built once per structure, re-solved per what-if.

    The budget covers training (``6ND``) and, when ``inference_tokens > 0``, lifetime
    inference (``2 N T_inf``). Two structures exist (with and without the inference term,
    since a zero coefficient cannot appear inside a log); each is built on first use.
    """

    def _build(self, with_inference: bool):
        n, d = cp.Variable(name="log_params"), cp.Variable(name="log_tokens")
        p = {
            **law_parameters(),
            **limit_parameters(),
            "log_budget": cp.Parameter(name="log_budget"),
            "log_inference": cp.Parameter(name="log_inference"),
        }
        objective = cp.exp(p["logA"] - p["alpha"] * n) + cp.exp(p["logB"] - p["beta"] * d)
        if with_inference:
            total = cp.log_sum_exp(cp.hstack([LOG6 + n + d, p["log_inference"] + n]))
        else:
            total = LOG6 + n + d
        cons = {"budget": total <= p["log_budget"], **limit_constraints(n, d, p)}
        problem = cp.Problem(cp.Minimize(objective), list(cons.values()))
        require_dpp(problem, "budget program")
        return problem, p, cons, (n, d)

    def solve(
        self,
        law: ScaleLaw,
        *,
        flops: float,
        inference_tokens: float = 0.0,
        max_params: float | None = None,
        max_tokens: float | None = None,
        min_tokens_per_param: float | None = None,
        max_tokens_per_param: float | None = None,
        max_train_flops: float | None = None,
    ) -> BudgetResult:
        """Solve for the loss-optimal (N, D) under ``flops`` (+ limits).

        Parameters
        ----------
        law
            A Chinchilla-form law (E, A, B, alpha, beta).
        flops
            Budget in FLOPs (training, plus lifetime inference if ``inference_tokens > 0``).
            ``inf`` means no budget (only the limits bound the answer).
        inference_tokens
            Lifetime inference tokens (``2N`` FLOPs each), in training-FLOP equivalents.
        max_params, max_tokens, min_tokens_per_param, max_tokens_per_param, max_train_flops
            Optional limits; ``None`` switches one off.
        """
        law = as_constants(law)
        with_inference = inference_tokens > 0
        problem, p, cons, (n, d) = self.problem(with_inference)
        set_law(p, law)
        set_limits(
            p,
            max_params=max_params,
            max_tokens=max_tokens,
            min_tokens_per_param=min_tokens_per_param,
            max_tokens_per_param=max_tokens_per_param,
            max_train_flops=max_train_flops,
        )
        p["log_budget"].value = log_or_off(flops)
        p["log_inference"].value = math.log(2 * inference_tokens) if with_inference else 0.0
        if p["log_min_ratio"].value > p["log_max_ratio"].value:
            return _failed(
                PlanStatus.INFEASIBLE, "min_tokens_per_param exceeds max_tokens_per_param"
            )
        no_budget = p["log_budget"].value >= OFF and p["log_train_cap"].value >= OFF
        if no_budget and (p["log_max_params"].value >= OFF or p["log_max_tokens"].value >= OFF):
            return _failed(
                PlanStatus.UNBOUNDED,
                "no budget and no limit on parameters or tokens: the loss keeps falling "
                f"towards E = {law.E:.4g} as the model grows",
            )
        status = solve(problem)
        if not status.solved:
            return _failed(status, f"the budget program ended {problem.status}")
        params, tokens = float(np.exp(n.value)), float(np.exp(d.value))
        duals = {name: dual(c) for name, c in cons.items()}
        return BudgetResult(
            status=status,
            params=params,
            tokens=tokens,
            loss=law.predict(params, tokens),
            train_flops=6 * params * tokens,
            inference_flops=2 * params * inference_tokens,
            duals=duals,
        )


def _failed(status: PlanStatus, reason: str) -> BudgetResult:
    nan = float("nan")
    return BudgetResult(status, nan, nan, nan, nan, nan, {}, reason)


def closed_form(law: ScaleLaw, flops: float) -> tuple[float, float, float]:
    """Chinchilla closed form at ``C = 6ND`` (laws.md 1.1): ``(N_opt, D_opt, G)``."""
    law = as_constants(law)
    G = (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))
    total = law.alpha + law.beta
    return G * (flops / 6) ** (law.beta / total), (flops / 6) ** (law.alpha / total) / G, G


def robust_budget(
    draws: list[ScaleLaw],
    *,
    flops: float,
    inference_tokens: float = 0.0,
    max_params: float | None = None,
    max_tokens: float | None = None,
    min_tokens_per_param: float | None = None,
    max_tokens_per_param: float | None = None,
    max_train_flops: float | None = None,
) -> BudgetResult:
    """Best worst case over law draws: ``min_{N,D} max_k L_k(N, D)`` s.t. ``6ND <= C`` and
    every limit (convex). The planner uses the allocation core's worst case instead (any law
    family); this program is its convex reference.

    The epigraph ``t >= E_k + A_k N^-alpha_k + B_k D^-beta_k`` for every draw k stays convex in
    the logs. The returned loss is the worst case over the draws at the robust (N, D).
    """
    laws = [as_constants(law) for law in draws]
    if not laws:
        raise PlanningError("robust_budget needs at least one law draw")
    E = np.array([law.E for law in laws])
    logA = np.log([law.A for law in laws])
    logB = np.log([law.B for law in laws])
    alpha = np.array([law.alpha for law in laws])
    beta = np.array([law.beta for law in laws])
    n, d, t = cp.Variable(), cp.Variable(), cp.Variable()
    worst = E + cp.exp(logA - alpha * n) + cp.exp(logB - beta * d)
    total = LOG6 + n + d
    if inference_tokens > 0:
        total = cp.log_sum_exp(cp.hstack([total, math.log(2 * inference_tokens) + n]))
    budget = total <= math.log(flops)
    cons = [
        worst <= t,
        budget,
        LOG6 + n + d <= log_or_off(max_train_flops),
        n <= log_or_off(max_params),
        d <= log_or_off(max_tokens),
        d - n >= log_or_off(min_tokens_per_param, upper=False),
        d - n <= log_or_off(max_tokens_per_param),
    ]
    problem = cp.Problem(cp.Minimize(t), cons)
    status = solve(problem)
    if status is not PlanStatus.OPTIMAL:
        return _failed(status, f"the robust program ended {problem.status}")
    params, tokens = float(np.exp(n.value)), float(np.exp(d.value))
    losses = [law.predict(params, tokens) for law in laws]
    return BudgetResult(
        status=status,
        params=params,
        tokens=tokens,
        loss=float(max(losses)),
        train_flops=6 * params * tokens,
        inference_flops=2 * params * inference_tokens,
        duals={"budget": dual(budget)},
    )
