"""Budget what-ifs (`BudgetWhatifs`, the shared parts built once per spec) against the general
chain: `Planner.plan` of the spec at the same budget and demand, built from scratch."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from mixplan.planning.plan import Planner, whatif
from mixplan.planning.plan import _scaled_inference as scaled_inference
from mixplan.planning.spec import parse_spec

SPECS = Path(__file__).resolve().parents[1] / "data" / "specs"


def _example() -> dict:
    return tomllib.loads((SPECS / "example.toml").read_text())


def _dollars() -> dict:
    data = _example()
    data["budget"] = {"flops": 1e23, "objective": "dollars"}
    data["training"] = {
        "gpu": "a100",
        "precision": "bf16",
        "price_per_hour": 1.4,
        "mfu": 0.5,
        "gpus": 1024,
    }
    data["inference"] = {
        "requests": 1e9,
        "tokens_in_per_request": 1000,
        "tokens_out_per_request": 250,
        "gpu": "a100",
        "precision": "int8",
        "price_per_hour": 0.6,
    }
    return data


def _tight_limits() -> dict:
    data = copy.deepcopy(_example())
    data["limits"] = {"max_params": 3e9, "max_tokens_per_param": 40}
    return data


@pytest.mark.parametrize(
    "data", [_example(), _dollars(), _tight_limits()], ids=["example", "dollars", "tight-limits"]
)
def test_budget_whatifs_are_the_plans_of_the_chain(data):
    spec = parse_spec(copy.deepcopy(data))
    budgets = [1e19, 3e21, 1e23, 4.5e24, 1e26]
    demands = [0.0, 1e11, 3e12]
    plans = whatif(spec, budgets=budgets, inference_tokens=demands, planner=Planner())
    assert len(plans) == len(budgets) * len(demands)
    assert plans[0].intervals is not plans[1].intervals  # a fresh container each plan
    assert plans[0].law is not plans[1].law and plans[0].inputs is not plans[1].inputs
    base = replace(spec, draws=False, robust=False)
    points = [(b, t) for b in budgets for t in demands]
    for plan, (flops, t_inf) in zip(plans, points, strict=True):
        variant = replace(
            base,
            flops=flops,
            dollars=None,
            target_loss=None,
            downstream=None,
            inference=scaled_inference(base, t_inf),
        )
        chain = Planner().plan(variant, detail=False, plan_mixture=False)
        assert plan.to_dict() == chain.to_dict()  # every field, the deferred ones too
        assert plan.status == chain.status


def test_budget_whatifs_follow_a_new_spec_object():
    planner = Planner()
    data = _example()
    (first,) = whatif(parse_spec(data), budgets=[1e23], planner=planner)
    data["limits"] = {"max_params": 1e9}
    (second,) = whatif(parse_spec(data), budgets=[1e23], planner=planner)
    assert first.params > 1e9
    assert second.params == pytest.approx(1e9)
    assert second.inputs["max_params"] == 1e9
