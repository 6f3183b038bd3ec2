"""Prefect flows of the plan stage. The flow's parameters ARE the spec, so a what-if can be
launched from Prefect's UI by editing the spec (budget, inference demand, limits) in the form.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from mixplan.planning.explain import render_text
from mixplan.tasks.plan import plan_spec, plan_whatifs, validate_spec


@flow(name="plan", description="compute-optimal N, D, vocabulary and mixture for one spec")
def plan(spec: dict[str, Any], lake: str | None = None) -> dict[str, Any]:
    """Plan one spec (the TOML structure as a dict); returns ``Plan.to_dict()``.

    Parameters
    ----------
    spec
        The plan spec (see data/specs/example.toml).
    lake
        Lake holding stored fits, when the spec names one (``law.fit = "chinchilla"``).
    """
    parsed = validate_spec(spec)
    result = plan_spec(parsed, lake)
    create_markdown_artifact(
        key=_artifact_key(parsed.name),
        markdown=f"```\n{render_text(result)}\n```",
        description=f"plan {parsed.name}",
    )
    return result


@flow(name="whatif", description="re-plan a spec over budgets x inference demand")
def whatif(
    spec: dict[str, Any],
    budgets: list[float] | None = None,
    inference_tokens: list[float] | None = None,
    target_losses: list[float] | None = None,
    lake: str | None = None,
) -> list[dict[str, Any]]:
    """What-if grid: every budget (or loss target) x every lifetime inference demand."""
    parsed = validate_spec(spec)
    return plan_whatifs(parsed, budgets, inference_tokens, target_losses, lake)


def _artifact_key(name: str) -> str:
    key = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
    return f"plan-{key or 'spec'}"
