"""CLI commands of the fit stage: ``mixplan fit`` and ``mixplan predict``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.config import DEFAULT_LAKE

FIT_HELP = """Fit scaling laws to the runs in the lake, with bootstrap intervals and a backtest.

One law per experiment (Chinchilla on epoch-chinchilla / sardana / gemstones, Muennighoff on
datablations, Tao on tao-vocab, StepLaw on steplaw; other experiments get a law chosen from
their columns). Each fit is stored as JSON at <lake>/fits/<name>.json with its options, data
hash, code version, bootstrap draws (resampling runs, never checkpoints) and backtest (fit on
runs below the 80th percentile of compute, predict the rest).

Examples:

  mixplan fit                                    # every experiment, 200 bootstrap draws

  mixplan fit --experiment epoch-chinchilla --bootstrap 1000

  mixplan fit --json > fits.json
"""

PREDICT_HELP = """Predict loss with a 95% bootstrap interval for the rows of a CSV file.

The CSV needs the columns the fitted law reads: params and tokens (Chinchilla, Kaplan, Gadre),
plus unique_tokens (Muennighoff), or non_vocab_params, vocab_params and tokens (Tao).

Example:

  mixplan predict --fit out/lake/fits/epoch-chinchilla.json --at rows.csv
"""


def _fmt(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.4g}"
    return f"{value:.4f}"


def fit_summary(result: Any, path: str | None = None) -> dict[str, Any]:
    """A JSON-ready summary of a fit (law, intervals, backtest, warnings)."""
    bt = result.backtest or {}
    return {
        "name": result.name,
        "path": path,
        "law": result.law.to_dict(),
        "objective": result.objective,
        "n_runs": result.n_runs,
        "n_points": result.n_points,
        "n_bootstrap": result.n_bootstrap,
        "intervals": {k: list(v) for k, v in result.intervals().items()}
        if result.n_bootstrap
        else {},
        "backtest": {k: v for k, v in bt.items() if k != "runs"},
        "warnings": list(result.warnings),
        "data_hash": result.data_hash,
        "code_version": result.code_version,
    }


def render_fit(console: Console, result: Any, path: str | None = None) -> None:
    """Print one fit as rich tables: intervals, backtest, warnings."""
    table = Table(
        title=f"{result.name}: {result.law.name} law, {result.n_runs} runs, "
        f"{result.n_bootstrap} bootstrap draws",
        title_justify="left",
    )
    table.add_column("quantity")
    table.add_column("estimate", justify="right")
    table.add_column("95% low", justify="right")
    table.add_column("95% high", justify="right")
    intervals = (
        result.intervals()
        if result.n_bootstrap
        else {k: (getattr(result.law, k), math.nan, math.nan) for k in result.law.param_names()}
    )
    for key, (point, low, high) in intervals.items():
        table.add_row(key, _fmt(point), _fmt(low), _fmt(high))
    table.add_row("objective", f"{result.objective:.6g}", "", "")
    console.print(table)
    bt = result.backtest or {}
    if bt.get("status") == "ok":
        console.print(
            f"  backtest: fit on runs with C <= {bt['cutoff_flops']:.3g} FLOPs, predicted "
            f"{bt['n_test_runs']} larger runs: median relative error "
            f"{bt['median_relative_error']:.2%}, max {bt['max_relative_error']:.2%}"
        )
    elif bt:
        console.print(f"  backtest: {bt.get('status')}")
    for warning in result.warnings:
        console.print(f"  [yellow]warning[/yellow]: {warning}")
    if path:
        console.print(f"  stored at {path}")


def fit_command(
    lake: Annotated[str, typer.Option(help="Lake folder or object-store URL.")] = str(DEFAULT_LAKE),
    experiment: Annotated[
        list[str] | None,
        typer.Option("--experiment", "-e", help="Fit only this experiment (repeatable)."),
    ] = None,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", "-b", min=0, help="Bootstrap draws (resampled runs).")
    ] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resampling.")] = 0,
    by_domain: Annotated[
        bool, typer.Option("--by-domain", help="One fit per evaluation domain.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fits as JSON.")] = False,
) -> None:
    """Fit scaling laws with intervals and backtests."""
    from planning.errors import MixplanError
    from tasks.fit import discover_recipes, fit_lake

    console = Console(stderr=as_json)
    try:
        recipes = discover_recipes(lake, experiment, by_domain=by_domain)
    except MixplanError as err:
        console.print(f"[red]error[/red]: {err}")
        raise typer.Exit(2) from err
    done: list[tuple[Any, str]] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=as_json,
    ) as progress:
        bar = progress.add_task("fitting", total=len(recipes))

        def on_fit(recipe: Any, result: Any, path: str | None) -> None:
            if result is None:
                progress.update(bar, description=f"fitting {recipe.name}")
            else:
                progress.advance(bar)

        done = fit_lake(
            lake,
            experiments=list(dict.fromkeys(r.experiment for r in recipes)),
            n_bootstrap=bootstrap,
            seed=seed,
            by_domain=by_domain,
            on_fit=on_fit,
        )
        progress.update(bar, description="done")
    if as_json:
        typer.echo(json.dumps([fit_summary(r, p) for r, p in done], indent=1, default=str))
        return
    for result, path in done:
        render_fit(console, result, path)
    if not done:
        console.print("no experiment in the lake could be fitted")
        raise typer.Exit(1)


def predict_command(
    fit: Annotated[Path, typer.Option("--fit", help="A stored fit (JSON).")],
    at: Annotated[Path, typer.Option("--at", help="CSV of rows to predict.")],
    level: Annotated[float, typer.Option(help="Interval level.")] = 0.95,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON.")] = False,
) -> None:
    """Predicted loss with its interval for arbitrary rows."""
    import polars as pl

    from planning.errors import MixplanError
    from planning.fitting import predict_with_interval
    from tasks.fit import read_fit

    console = Console(stderr=as_json)
    try:
        result = read_fit(fit)
        rows = pl.read_csv(at)
        out = predict_with_interval(result, rows, level=level)
    except (MixplanError, OSError, pl.exceptions.PolarsError) as err:
        console.print(f"[red]error[/red]: {err}")
        raise typer.Exit(2) from err
    if as_json:
        typer.echo(json.dumps(out.to_dicts(), indent=1, default=str))
        return
    table = Table(title=f"{result.name}: predicted loss ({level:.0%} bootstrap interval)")
    for col in out.columns:
        table.add_column(col, justify="right")
    for row in out.iter_rows():
        table.add_row(*[_fmt(v) if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    if (out["extrapolation"] > 10).any():
        console.print("[yellow]warning[/yellow]: some rows are > 10x past the largest fitted run")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``mixplan`` app.

    ``mixplan fit`` covers scale laws; a ``--mixture`` option (mixture laws) is added by the
    mixture stage's own command module, which can reuse :func:`render_fit` / :func:`fit_summary`.
    """
    app.command("fit", help=FIT_HELP)(fit_command)
    app.command("predict", help=PREDICT_HELP)(predict_command)
