"""Property tests over random specs (hypothesis): every plan respects every limit of its spec,
is no worse than the cvxpy program of the same problem, the robust plan's worst case is no
worse than the point plan's at the same limits, and the intervals contain the point plan."""

from __future__ import annotations

import math
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixplan.planning.laws import ChinchillaLaw, MuennighoffLaw
from mixplan.planning.plan import Planner, ResolvedLaw
from mixplan.planning.programs.budget import BudgetProgram
from mixplan.planning.programs.inference import TargetProgram
from mixplan.planning.spec import parse_spec

SETTINGS = settings(
    max_examples=int(os.environ.get("MIXPLAN_PROPERTY_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
BUDGET = BudgetProgram()
TARGET = TargetProgram()


def log_uniform(lo: float, hi: float):
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda x: 10.0**x)


laws = st.builds(
    ChinchillaLaw,
    E=st.floats(1.0, 2.5),
    A=log_uniform(50, 3000),
    B=log_uniform(50, 5000),
    alpha=st.floats(0.15, 0.6),
    beta=st.floats(0.15, 0.6),
)


@st.composite
def limit_tables(draw) -> dict:
    out = {}
    if draw(st.booleans()):
        out["max_params"] = draw(log_uniform(1e7, 1e13))
    if draw(st.booleans()):
        out["min_tokens_per_param"] = draw(log_uniform(0.5, 200))
    if draw(st.booleans()):
        out["max_tokens_per_param"] = min(  # the spec takes at most 1e6 tokens a parameter
            1e6, out.get("min_tokens_per_param", 0.5) * draw(log_uniform(1, 1e4))
        )
    if draw(st.booleans()):
        out["max_train_flops"] = draw(log_uniform(1e18, 1e26))
    if draw(st.booleans()):
        out["max_tokens"] = draw(log_uniform(1e9, 1e15))
    return out


@st.composite
def specs(draw, repetition: bool = False) -> tuple[dict, object]:
    law = draw(laws)
    if repetition:
        law = MuennighoffLaw(
            law.E, law.A, law.B, law.alpha, law.beta, draw(st.floats(2, 30)), draw(st.floats(2, 10))
        )
    target = draw(st.booleans())
    if target:
        budget = {"target_loss": law.E + draw(log_uniform(0.02, 2.0))}
    else:
        budget = {"flops": draw(log_uniform(1e18, 1e26))}
    data = {"law": {"name": "sardana"}, "budget": budget, "limits": draw(limit_tables())}
    if draw(st.booleans()):
        data["inference"] = {"tokens": draw(log_uniform(1e9, 1e14))}
    if repetition or draw(st.booleans()):
        data["sources"] = [
            {
                "name": "web",
                "unique_tokens": draw(log_uniform(1e9, 1e13)),
                "max_epochs": draw(st.floats(1, 60)),
            }
        ]
    data["uncertainty"] = {"draws": True, "robust": True}
    return data, law


def _draws(law, seed: int, count: int = 6) -> tuple:
    rng = np.random.default_rng(seed)
    return tuple(
        law.replace(A=law.A * rng.uniform(0.7, 1.4), B=law.B * rng.uniform(0.7, 1.4))
        for _ in range(count)
    )


def _plan(data: dict, law, seed: int):
    spec = parse_spec(data)
    resolved = ResolvedLaw(law, "random law", _draws(law, seed))
    return spec, Planner().plan(spec, resolved=resolved)


def _respects(spec, params: float, tokens: float, t_inf: float, *, rtol: float = 1e-7) -> None:
    assert spec.limits.violations(params, tokens, rtol=rtol) == []
    if spec.mode == "budget":
        assert 6 * params * tokens + 2 * params * t_inf <= spec.flops * (1 + rtol)


@SETTINGS
@given(specs(), st.integers(0, 2**16))
def test_every_plan_respects_every_limit_and_matches_the_convex_program(case, seed):
    data, law = case
    spec, plan = _plan(data, law, seed)
    t_inf = spec.inference.tokens
    limits = spec.limits.as_kwargs()
    if spec.mode == "budget":
        reference = BUDGET.solve(law, flops=spec.flops, inference_tokens=t_inf, **limits)
    else:
        reference = TARGET.solve(
            law, target_loss=spec.target_loss, inference_tokens=t_inf, **limits
        )
    if not plan.ok:
        # the convex program agrees that nothing is solvable (or only to its tolerance)
        assert not reference.status.solved or spec.mode == "target", (plan.reason, reference)
        return
    _respects(spec, plan.params, plan.tokens, t_inf)
    if spec.mode == "budget":
        if reference.status.solved:
            assert plan.loss <= reference.loss + 1e-7 * abs(reference.loss)
    else:
        assert plan.loss <= spec.target_loss * (1 + 1e-9)
        if reference.status.solved:
            ours = plan.train_flops + 2 * plan.params * t_inf
            assert ours <= reference.total_flops * (1 + 1e-6)


@SETTINGS
@given(st.one_of(specs(), specs(repetition=True)), st.integers(0, 2**16))
def test_robust_plan_is_no_worse_in_the_worst_case_at_the_same_limits(case, seed):
    data, law = case
    spec, plan = _plan(data, law, seed)
    if not plan.ok or plan.robust is None or plan.robust["status"] != "optimal":
        return
    robust = plan.robust
    _respects(spec, robust["params"], robust["tokens"], spec.inference.tokens)
    if spec.mode == "budget":
        point = robust["point_worst_loss"]
        assert robust["worst_loss"] <= point + 1e-9 * abs(point)
    else:
        assert robust["worst_loss"] <= spec.target_loss * (1 + 1e-9)


@SETTINGS
@given(st.one_of(specs(), specs(repetition=True)), st.integers(0, 2**16))
def test_intervals_contain_the_point_plan(case, seed):
    data, law = case
    spec, plan = _plan(data, law, seed)
    if not plan.ok or not plan.intervals:
        return
    for name in ("params", "tokens", "loss", "tokens_per_param", "train_flops"):
        iv = plan.intervals[name]
        value = getattr(plan, name)
        assert iv["low"] <= value <= iv["high"], (name, iv, value)
