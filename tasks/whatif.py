"""Re-plan a spec at other budgets and inference demands: the what-if rows of the report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixplan.planning.plan import whatif
from mixplan.planning.spec import parse_spec


@task(name="whatif-point", retries=1, cache_policy=NO_CACHE)
def whatif_point(
    spec: Mapping[str, Any], budget: float, inference_tokens: float, lake: str | None = None
) -> dict[str, Any]:
    """The spec re-planned at one budget and lifetime inference demand (one what-if row:
    ``budget, inference_tokens, params, tokens, loss, train_flops, status``)."""
    parsed = parse_spec(spec, origin=str(spec.get("name", "<spec>")))
    (variant,) = whatif(parsed, budgets=[budget], inference_tokens=[inference_tokens], lake=lake)
    data = variant.to_dict()
    return {
        "budget": budget,
        "inference_tokens": inference_tokens,
        "params": data.get("params"),
        "tokens": data.get("tokens"),
        "loss": data.get("loss"),
        "train_flops": data.get("train_flops"),
        "status": data.get("status"),
    }
