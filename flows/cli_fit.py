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

from mixplan.flows.config import DEFAULT_LAKE
from mixplan.flows.console import cli_console

FIT_HELP = """Fit scaling laws to the runs in the lake, with bootstrap intervals and a backtest.

A scaling law predicts final loss from model size N (params), training tokens D and, where the
runs vary them, unique tokens U or vocabulary size:

  Chinchilla   L(N, D) = E + A / N^alpha + B / D^beta

  Muennighoff  the same with effective N', D' when data repeats (D > U)

  Tao          unigram-normalised loss with a vocabulary term (N_nv, V d, D)

One law per experiment (Chinchilla on epoch-chinchilla / sardana / gemstones, Muennighoff on
datablations, Tao on tao-vocab, StepLaw on steplaw; other experiments get a law chosen from
their columns), fitted with a Huber loss on log loss from a grid of starts. Each fit is stored
as JSON at LAKE/fits/NAME.json with its options, data hash, code version, bootstrap draws
(resampling runs, never checkpoints) and backtest (fit on runs below the 80th percentile of
compute, predict the rest).

With --mixture, fit mixture laws instead: how each validation domain's loss depends on the
training mixture (exponential L_i(r) = c_i + k_i exp(t_i . r), additive, per-source), with the
linear and LightGBM baselines for comparison, scored on a held-out experiment (Spearman, mean
relative error). Each law is stored at LAKE/fits/EXPERIMENT-mixture-FAMILY.json, where
`mixplan plan` finds it.

Examples:

  mixplan fit              # every experiment, 200 bootstrap draws

  mixplan fit --experiment epoch-chinchilla --bootstrap 1000

  mixplan fit --json > fits.json

  mixplan fit --mixture    # every mixture experiment, paired train/test

  mixplan fit --mixture -e regmix-1m-train --held-out regmix-1m-test -d github
"""

PREDICT_HELP = """Predict loss with a 95% bootstrap interval for the rows of a CSV file.

The CSV needs the columns the fitted law reads: params and tokens (Chinchilla, Kaplan, Gadre),
plus unique_tokens (Muennighoff), or non_vocab_params, vocab_params and tokens (Tao).

Example:

  mixplan predict --fit out/lake/fits/epoch-chinchilla.json --at rows.csv

with rows.csv

  params,tokens

  7e10,1.4e12

prints the predicted loss, its interval and how far each row lies past the largest fitted run
("extrapolation", a ratio of compute; a warning is printed past 10x).
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
    mixture: Annotated[
        bool, typer.Option("--mixture", help="Fit mixture laws (per domain) instead.")
    ] = False,
    held_out: Annotated[
        str | None,
        typer.Option(
            "--held-out", help="With --mixture: experiment the laws are scored on (held out)."
        ),
    ] = None,
    domain: Annotated[
        list[str] | None,
        typer.Option("--domain", "-d", help="With --mixture: fit only this domain (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fits as JSON.")] = False,
) -> None:
    """Fit scaling laws (or, with --mixture, mixture laws) with intervals and backtests."""
    from mixplan.planning.errors import MixplanError
    from mixplan.tasks.fit import discover_recipes, fit_lake

    console = cli_console(stderr=as_json)
    if mixture:
        _fit_mixture_command(
            console,
            lake,
            experiment,
            held_out,
            domain,
            min(bootstrap, MIXTURE_BOOTSTRAP),
            seed,
            as_json=as_json,
        )
        return
    if held_out is not None or domain:
        console.print("[red]error[/red]: --held-out and --domain go with --mixture")
        raise typer.Exit(2)
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


MIXTURE_BOOTSTRAP = 8
"""Bootstrap draws per mixture law at most (each draw refits every domain)."""


def _fit_mixture_command(
    console: Console,
    lake: str,
    experiments: list[str] | None,
    held_out: str | None,
    domains: list[str] | None,
    n_bootstrap: int,
    seed: int,
    *,
    as_json: bool,
) -> None:
    """``mixplan fit --mixture``: the ``fit-mixture`` flow per experiment, printed or as JSON."""
    from mixplan.flows.fit_mixture import fit_mixture, mixture_fit_report
    from mixplan.planning.errors import MixplanError

    try:
        if experiments:
            pairs = [(name, held_out) for name in experiments]
        else:
            from mixplan.tasks.discover import mixture_experiments

            found = mixture_experiments.fn(lake)
            pairs = [(name, held_out or partner) for name, partner in found]
        if not pairs:
            console.print(
                f"[red]error[/red]: no experiment in {lake} trains on more than one source; "
                "ingest mixture runs first (e.g. mixplan ingest data/public/sail-sg__regmix)"
            )
            raise typer.Exit(1)
        results = [
            fit_mixture(
                lake=lake,
                experiment=name,
                held_out_experiment=partner,
                domains=domains,
                n_bootstrap=n_bootstrap,
                seed=seed,
            )
            for name, partner in pairs
        ]
    except MixplanError as err:
        console.print(f"[red]error[/red]: {err}")
        raise typer.Exit(2) from err
    if as_json:
        typer.echo(json.dumps(results, indent=1, default=str))
        return
    for result in results:
        mixture_fit_report(result, console=console)


def predict_command(
    fit: Annotated[Path, typer.Option("--fit", help="A stored fit (JSON).")],
    at: Annotated[Path, typer.Option("--at", help="CSV of rows to predict.")],
    level: Annotated[float, typer.Option(help="Interval level.")] = 0.95,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON.")] = False,
) -> None:
    """Predicted loss with its interval for arbitrary rows."""
    import polars as pl

    from mixplan.planning.errors import MixplanError
    from mixplan.planning.fitting import predict_with_interval
    from mixplan.tasks.fit import read_fit

    console = cli_console(stderr=as_json)
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

    ``mixplan fit`` fits scale laws, ``mixplan fit --mixture`` mixture laws (the ``fit-mixture``
    flow); ``mixplan predict`` reads a stored scale-law fit.
    """
    app.command("fit", help=FIT_HELP)(fit_command)
    app.command("predict", help=PREDICT_HELP)(predict_command)
