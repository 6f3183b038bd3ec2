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

FIT_HELP = """Fit scaling laws to the runs in the lake, choose one by how it extrapolates.

Per experiment, every law that applies is refitted on the runs below compute quantiles
0.3-0.8 and scored on the runs above (a rolling-origin backtest). The leaderboard is printed
and stored at LAKE/fits/EXPERIMENT-leaderboard.json; the experiment's default law and the
winner are fitted (Huber on log loss, bootstrap by run) and stored at LAKE/fits/NAME.json.
Loss intervals are 90% prediction intervals calibrated on the backtests, printed with the
coverage they reached on held-out runs.

Laws (--law):

  chinchilla   E + A/N^alpha + B/D^beta (Hoffmann et al.)

  kaplan       [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D

  gadre        E + (a M^eta + b M^-eta) C^-eta, M = D/N (over-training)

  muennighoff  Chinchilla with effective N', D' when data repeats

  tao          unigram-normalised loss with a vocabulary term

  loss_curve   L0 + A S1^-alpha - C S2 over learning-rate areas

  steplaw      optimal learning rate and batch size from a sweep

Runs that log several eval domains and no "all" domain are fitted per domain (a note says
so); --domain picks some. --target fits loss -> downstream error instead (Gadre's
eps - k exp(-gamma L) or a sigmoid, the better on held-out low-loss runs) for a metric
column or run tag (accuracies: the error is 1 - metric).

Examples:

  mixplan fit

  mixplan fit -e epoch-chinchilla --bootstrap 1000

  mixplan fit -e sardana --law kaplan

  mixplan fit -e gemstones-hot --domain all

  mixplan fit -e sardana --target eval_gauntlet/core_average

  mixplan fit --json > fits.json

  mixplan fit --mixture -e regmix-1m-train -d github
"""

PREDICT_HELP = """Predict loss with a 90% prediction interval for the rows of a CSV file.

The CSV needs the columns the fitted law reads: params and tokens (Chinchilla, Kaplan, Gadre),
plus unique_tokens (Muennighoff), or non_vocab_params, vocab_params and tokens (Tao).

Example:

  mixplan predict --fit out/lake/fits/epoch-chinchilla.json --at rows.csv

with rows.csv

  params,tokens

  7e10,1.4e12

prints the predicted loss, its interval and how far each row lies past the largest fitted run
("extrapolation", a ratio of compute; a warning is printed past 10x). The interval is
calibrated on the fit's rolling-origin backtests and printed with the coverage it reached on
held-out runs (fits stored without a calibration fall back to the bootstrap of the curve).
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
        "calibration": {
            k: v for k, v in (result.calibration or {}).items() if k not in ("scores", "origins")
        },
        "loss_calibrated": result.decisions.get("loss_calibrated", []),
        "leaderboard": result.leaderboard,
        "isoflop": result.isoflop,
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
    table.caption = "bootstrap by run: intervals on the curve's parameters, not on new runs"
    intervals = (
        result.intervals()
        if result.n_bootstrap
        else {k: (getattr(result.law, k), math.nan, math.nan) for k in result.law.param_names()}
    )
    for key, (point, low, high) in intervals.items():
        table.add_row(key, _fmt(point), _fmt(low), _fmt(high))
    table.add_row("objective", f"{result.objective:.6g}", "", "")
    console.print(table)
    render_calibrated(console, result)
    render_isoflop(console, result.isoflop)
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


def render_calibrated(console: Console, result: Any) -> None:
    """The compute-optimal loss at each budget with its calibrated 90% prediction interval and
    the coverage such intervals reached on held-out runs."""
    from mixplan.planning.fitting.calibration import coverage_note, widening_note

    record = result.calibration or {}
    if not record:
        return
    bands = result.decisions.get("loss_calibrated", [])
    for budget, loss, band in zip(
        result.decisions.get("flops", []), result.decisions.get("loss", []), bands, strict=False
    ):
        console.print(
            f"  loss at {budget:.3g} FLOPs: {_fmt(loss)}, {record['level']:.0%} prediction "
            f"interval {_fmt(band[0])} - {_fmt(band[1])}"
        )
    console.print(f"  {record['level']:.0%} loss intervals: {coverage_note(record)}")
    console.print(f"  {widening_note(record)}")


def render_isoflop(console: Console, iso: dict[str, Any]) -> None:
    """IsoFLOP approaches 1 and 2 next to the parametric fit's implied exponents."""
    if not iso:
        return
    if iso.get("status") != "ok":
        console.print(f"  isoFLOP: {iso.get('status')}")
        return
    level = iso.get("level", 0.9)
    rows = [("approach 1 (minima)", iso.get("approach_1", {}))]
    rows.append(("approach 2 (parabolas)", iso.get("approach_2", {})))
    rows.append(("parametric fit", iso.get("parametric", {})))
    parts = []
    for label, entry in rows:
        if not entry or not math.isfinite(entry.get("a", math.nan)):
            parts.append(f"{label} -")
            continue
        lo, hi = entry.get("a_interval", [math.nan, math.nan])
        band = f" [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else ""
        parts.append(f"{label} a = {entry['a']:.3f}{band}")
    console.print(
        f"  isoFLOP N* ~ C^a ({iso['n_slices']} budgets, {level:.0%} bootstrap, b = 1 - a): "
        + "; ".join(parts)
    )


def fit_command(
    lake: Annotated[str, typer.Option(help="Lake folder or object-store URL.")] = str(DEFAULT_LAKE),
    experiment: Annotated[
        list[str] | None,
        typer.Option("--experiment", "-e", help="Fit only this experiment (repeatable)."),
    ] = None,
    law: Annotated[
        str | None,
        typer.Option("--law", "-l", help="Fit this law only (no leaderboard); see the list."),
    ] = None,
    domain: Annotated[
        list[str] | None,
        typer.Option("--domain", "-d", help="Fit only this eval domain (repeatable)."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option("--target", help="'loss' (default) or a downstream metric column / tag."),
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
    as_json: Annotated[bool, typer.Option("--json", help="Print the fits as JSON.")] = False,
) -> None:
    """Fit scaling laws (or, with --mixture, mixture laws) with intervals and backtests."""
    from mixplan.planning.errors import MixplanError
    from mixplan.planning.fitting.recipes import LAW_NAMES
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
    if held_out is not None:
        console.print("[red]error[/red]: --held-out goes with --mixture")
        raise typer.Exit(2)
    if law is not None:
        law = law.replace("-", "_")
        if law not in LAW_NAMES:
            console.print(
                f"[red]error[/red]: unknown law {law!r}; --law takes one of {', '.join(LAW_NAMES)}"
            )
            raise typer.Exit(2)
    if target not in (None, "loss"):
        _fit_downstream_command(console, lake, experiment, domain, target, bootstrap, seed, as_json)
        return
    notes: list[str] = []
    try:
        recipes = discover_recipes(lake, experiment, by_domain=by_domain, law=law, domains=domain)
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
        bar = progress.add_task("fitting", total=None)

        def on_fit(recipe: Any, result: Any, path: str | None) -> None:
            if result is None:
                progress.update(bar, description=f"backtesting laws on {recipe.name}")
            else:
                progress.update(bar, description=f"fitted {recipe.name}", advance=1)

        try:
            done = fit_lake(
                lake,
                experiments=list(dict.fromkeys(r.experiment for r in recipes)),
                n_bootstrap=bootstrap,
                seed=seed,
                by_domain=by_domain,
                law=law,
                domains=domain,
                notes=notes,
                on_fit=on_fit,
            )
        except MixplanError as err:
            console.print(f"[red]error[/red]: {err}")
            raise typer.Exit(2) from err
        progress.update(bar, description="done", total=len(done), completed=len(done))
    for note in dict.fromkeys(notes):
        console.print(f"[cyan]note[/cyan]: {note}")
    if as_json:
        typer.echo(json.dumps([fit_summary(r, p) for r, p in done], indent=1, default=str))
        return
    shown: set[str] = set()
    for result, path in done:
        board = result.leaderboard
        if board and board.get("name") not in shown and law is None:
            shown.add(board["name"])
            render_leaderboard(console, board)
        render_fit(console, result, path)
    if not done:
        console.print("no experiment in the lake could be fitted")
        raise typer.Exit(1)


def render_leaderboard(console: Console, board: dict[str, Any]) -> None:
    """Print a rolling-origin leaderboard: rank, law, held-out error, calibrated coverage."""
    table = Table(
        title=f"{board['name']}: laws ranked by extrapolation (fit below compute quantiles "
        f"{', '.join(f'{q:g}' for q in board['quantiles'])}, predict above)",
        title_justify="left",
    )
    for col in ("rank", "law", "mean rel. error", "origins", "90% coverage", "fit"):
        table.add_column(col, justify="right" if col not in ("law", "fit") else "left")
    for entry in board["entries"]:
        cov = entry.get("coverage", {})
        coverage = f"{cov['coverage']:.0%} of {cov['n']}" if cov.get("n") else "not measurable"
        table.add_row(
            str(entry["rank"]),
            entry["law"],
            "-" if not math.isfinite(entry["score"]) else f"{entry['score']:.2%}",
            str(entry["n_origins"]),
            coverage,
            entry["fit"],
        )
    console.print(table)
    if board.get("winner"):
        console.print(f"  winner: {board['winner']} (the planner's default law for this data)")


def _fit_downstream_command(
    console: Console,
    lake: str,
    experiments: list[str] | None,
    domains: list[str] | None,
    metric: str,
    n_bootstrap: int,
    seed: int,
    as_json: bool,
) -> None:
    """``mixplan fit --target METRIC``: loss -> downstream error per experiment."""
    from mixplan.planning.errors import MixplanError
    from mixplan.tasks.fit import fit_downstream_lake
    from mixplan.tasks.lake import lake_summary

    if not experiments:
        console.print(
            "[red]error[/red]: --target needs --experiment (the runs that log the metric)"
        )
        raise typer.Exit(2)
    if domains and len(domains) > 1:
        console.print("[red]error[/red]: --target takes one --domain (the loss to relate to)")
        raise typer.Exit(2)
    results = []
    try:
        known = set(lake_summary(lake)["experiments"])
        for name in experiments:
            if name not in known:
                raise_unknown = ", ".join(sorted(known)) or "none"
                console.print(
                    f"[red]error[/red]: no experiment {name!r} in {lake}; it has {raise_unknown}"
                )
                raise typer.Exit(2)
            fit, path = fit_downstream_lake(
                lake,
                name,
                metric,
                domain=domains[0] if domains else None,
                n_bootstrap=n_bootstrap,
                seed=seed,
            )
            results.append({**fit, "path": path})
    except MixplanError as err:
        console.print(f"[red]error[/red]: {err}")
        raise typer.Exit(2) from err
    if as_json:
        typer.echo(json.dumps(results, indent=1, default=str))
        return
    for fit in results:
        table = Table(
            title=f"{fit['name']}: {fit['target']} from {fit['domain']} loss, {fit['n_runs']} runs",
            title_justify="left",
        )
        for col in ("law", "in-sample RMSE", f"held-out RMSE ({fit['n_holdout']} lowest loss)"):
            table.add_column(col)
        for cand in fit["candidates"]:
            mark = " (chosen)" if cand["law"] == fit["law"] else ""
            table.add_row(cand["name"] + mark, f"{cand['rmse']:.4f}", f"{cand['holdout_rmse']:.4f}")
        console.print(table)
        params = ", ".join(
            f"{k} {_fmt(v)} [{_fmt(fit['intervals'][k][0])}, {_fmt(fit['intervals'][k][1])}]"
            for k, v in fit["law"]["params"].items()
            if k in fit["intervals"]
        )
        console.print(f"  {fit['level']:.0%} bootstrap by run: {params}")
        console.print(f"  stored at {fit['path']}")


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
    level: Annotated[float, typer.Option(min=0.5, max=0.99, help="Interval level.")] = 0.9,
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
    kind = out["interval"][0] if out.height else ""
    shown = out.drop("interval")
    table = Table(title=f"{result.name}: predicted loss ({kind})")
    for col in shown.columns:
        table.add_column(col, justify="right")
    for row in shown.iter_rows():
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
