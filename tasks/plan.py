"""Prefect tasks of the plan stage: validate a spec, plan it, re-plan what-ifs (thin wrappers)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mixplan.planning.plan import make_plan, whatif
from mixplan.planning.spec import PlanSpec, parse_spec


@task(name="validate-spec", cache_policy=NO_CACHE)
def validate_spec(spec: dict[str, Any], origin: str = "<flow parameter>") -> PlanSpec:
    """Parse and validate a spec dict (raises SpecError naming the field)."""
    return parse_spec(spec, origin=origin)


@task(name="make-plan", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def plan_spec(spec: PlanSpec, lake: str | None = None) -> dict[str, Any]:
    """Plan one spec (retried: reading a stored fit from a remote lake can fail transiently)."""
    logger = get_run_logger()
    plan = make_plan(spec, lake=lake)
    logger.info("plan %s: %s\n%s", spec.name, plan.status.value, plan.render())
    return plan.to_dict()


@task(name="what-if", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def plan_whatifs(
    spec: PlanSpec,
    budgets: list[float] | None = None,
    inference_tokens: list[float] | None = None,
    target_losses: list[float] | None = None,
    lake: str | None = None,
) -> list[dict[str, Any]]:
    """Re-plan a grid of what-ifs (one planner: the programs are built once and re-solved)."""
    logger = get_run_logger()
    plans = whatif(
        spec,
        budgets=budgets,
        inference_tokens=inference_tokens,
        target_losses=target_losses,
        lake=lake,
    )
    logger.info("%d what-if plans for %s", len(plans), spec.name)
    return [p.to_dict() for p in plans]
