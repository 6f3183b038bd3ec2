"""CLI commands of the plan stage: ``mixplan plan``, ``mixplan whatif``, ``mixplan api``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mixplan.flows.console import cli_console
from mixplan.planning.errors import MixplanError

console = cli_console()


def _floats(text: str | None, option: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{option}: comma-separated numbers, e.g. 1e22,1e23") from exc


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2)


def plan_command(
    spec: Annotated[Path, typer.Argument(help="plan spec (TOML), e.g. data/specs/example.toml")],
    lake: Annotated[str | None, typer.Option(help="lake holding stored fits")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
    prefect: Annotated[
        bool, typer.Option(help="run through the Prefect flow (recorded in Prefect)")
    ] = False,
) -> None:
    """Plan compute-optimal N, D, vocabulary and mixture for a spec.

    Examples:

    * `mixplan plan data/specs/example.toml` - published constants, no lake needed

    * `mixplan plan my.toml --lake out/lake --json` - a spec naming a stored fit
    """
    from mixplan.planning.explain import render_text
    from mixplan.planning.plan import make_plan
    from mixplan.planning.spec import load_spec

    try:
        parsed = load_spec(spec)
        if prefect:
            import tomllib

            from mixplan.flows.plan import plan as plan_flow

            result = plan_flow(tomllib.loads(spec.read_text()), lake)
        else:
            result = make_plan(parsed, lake=lake).to_dict()
    except MixplanError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        console.print(render_text(result), highlight=False, soft_wrap=True)
    if result["status"] != "optimal":
        raise typer.Exit(1)


def whatif_command(
    spec: Annotated[Path, typer.Argument(help="plan spec (TOML)")],
    budget: Annotated[str | None, typer.Option(help="budgets in FLOPs: 1e22,1e23,1e24")] = None,
    inference_tokens: Annotated[
        str | None, typer.Option(help="lifetime inference tokens: 0,1e12")
    ] = None,
    target_loss: Annotated[str | None, typer.Option(help="loss targets instead of budgets")] = None,
    lake: Annotated[str | None, typer.Option(help="lake holding stored fits")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    mixture: Annotated[
        bool, typer.Option(help="re-plan the data mixture at every point (a conic solve each)")
    ] = False,
) -> None:
    """Re-plan a spec over budgets (or loss targets) x inference demand: N, D and loss at each
    point in about 0.1 ms (the mixture only with --mixture).

    Examples:

    * `mixplan whatif data/specs/example.toml --budget 1e22,1e23,1e24 --inference-tokens 0,1e12`

    * `mixplan whatif data/specs/example.toml --target-loss 2.0,2.1`
    """
    from mixplan.planning.plan import whatif
    from mixplan.planning.spec import load_spec

    budgets = _floats(budget, "--budget")
    tokens = _floats(inference_tokens, "--inference-tokens")
    targets = _floats(target_loss, "--target-loss")
    try:
        plans = whatif(
            load_spec(spec),
            budgets=budgets,
            inference_tokens=tokens,
            target_losses=targets,
            lake=lake,
            mixture=mixture,
        )
    except MixplanError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in plans], indent=1))
        return
    from mixplan.planning.explain import format_number  # lazy: scipy is slow to import

    table = Table(title=f"what-if: {spec}")
    for column in ("budget", "target", "T_inf", "status", "N", "D", "D/N", "loss", "train FLOPs"):
        table.add_column(column, justify="right")
    for plan in plans:  # read off the plans directly: 1,000 rows need no JSON round trip
        inputs = plan.inputs
        status = plan.status.value
        table.add_row(
            format_number(inputs["budget_flops"], 3),
            format_number(inputs["target_loss"]),
            format_number(inputs["inference_tokens"], 3),
            status if plan.ok else f"{status}: {plan.reason}",
            format_number(plan.params),
            format_number(plan.tokens),
            format_number(plan.tokens_per_param, 3),
            format_number(plan.loss),
            format_number(plan.train_flops),
        )
    cli_console(width=max(console.width, 130)).print(table)


def api_command(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    lake: Annotated[str | None, typer.Option(help="lake holding stored fits")] = None,
) -> None:
    """Serve the plan / what-if HTTP API (FastAPI + uvicorn) on 127.0.0.1.

    Examples:

    * `mixplan api --lake out/lake` - specs may name the lake's stored fits

    * `curl -X POST localhost:8000/plan -H 'content-type: application/json' -d '{"spec": ...}'`
    """
    from mixplan.flows.api import serve

    serve(host=host, port=port, lake=lake)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``mixplan`` app."""
    app.command("plan")(plan_command)
    app.command("whatif")(whatif_command)
    app.command("api")(api_command)
