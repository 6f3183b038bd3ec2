"""Mixture-law benchmark: our convex laws vs RegMix's LightGBM vs a linear model, in one run.

1. RegMix (sail-sg/regmix): fit on the 512 training runs, predict the 256 held-out 1M runs;
   Spearman rank correlation and mean relative error per validation domain, for every law and
   baseline (same code path: ``planning.mixture.evaluation.compare``). LightGBM stops early on a
   10% split of the *training* runs (RegMix's released code stopped on the test set).
2. 5Mix (yegcjs/mixinglaws): fit the nested route (step law -> size law -> mixture law) and the
   joint route (additive law in N, D, h) on the 70M-305M models; predict each mixture's 410M
   loss at its last step; mean absolute error per route.

Both data sets go through the ingest stage into a temporary lake first.

Run: ``python bench/mixture.py`` (about 2-4 minutes on 2 cores).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mixplan.planning.mixture.evaluation import comparison_table, evaluate  # noqa: E402
from mixplan.planning.mixture.nested import JointRoute, NestedRoute, held_out_errors  # noqa: E402
from mixplan.tasks.ingest import ingest_paths  # noqa: E402
from mixplan.tasks.mixture import make_model, read_mixture_curves, read_mixture_data  # noqa: E402

DATA = REPO / "data" / "public"
MODELS = ("additive", "exponential", "per_source", "lightgbm", "linear")


def _print_wide(console: Console, wide: pl.DataFrame, title: str, *, scale: float = 1.0) -> None:
    table = Table(title=title)
    for column in wide.columns:
        table.add_column(column, justify="left" if column == "domain" else "right")
    for row in wide.iter_rows():
        table.add_row(str(row[0]), *[f"{scale * v:.4f}" for v in row[1:]])
    console.print(table)


def regmix(console: Console, lake: str) -> pl.DataFrame:
    """Every law and baseline on the RegMix split; prints the comparison tables."""
    train, _ = read_mixture_data(lake, "regmix-1m-train")
    test, _ = read_mixture_data(lake, "regmix-1m-test", domains=list(train.domains))
    tables, seconds = [], {}
    for name in MODELS:
        start = time.perf_counter()
        model = make_model(name).fit(train)
        seconds[name] = time.perf_counter() - start
        tables.append(evaluate(model, test, name=name))
    scores = pl.concat(tables)
    console.print(
        f"RegMix: {len(train.run_ids)} training runs -> {len(test.run_ids)} held-out runs, "
        f"{len(train.sources)} sources, {len(train.domains)} domains; fit seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
    )
    _print_wide(console, comparison_table(scores, metric="spearman"), "Held-out Spearman")
    _print_wide(
        console,
        comparison_table(scores, metric="mre"),
        "Held-out mean relative error (%)",
        scale=100,
    )
    return scores


def five_mix(console: Console, lake: str) -> pl.DataFrame:
    """Nested and joint routes from 70M-305M to 410M; prints the route table."""
    curves = read_mixture_curves(lake, "mixinglaws-5mix")
    largest = float(curves.params.max())
    held_out = curves.runs_where(curves.params == largest).final()
    train = curves.runs_where(curves.params < largest)
    tokens = float(held_out.tokens[0])
    routes = {
        "nested (additive mixture law)": NestedRoute(params=largest, tokens=tokens),
        "nested (exponential mixture law, Ye et al.)": NestedRoute(
            params=largest, tokens=tokens, mixture_law="exponential"
        ),
        "nested (per-mixture size law)": NestedRoute(
            params=largest, tokens=tokens, size_law="per_mixture"
        ),
        "nested (step law at the target, no observed step)": NestedRoute(
            params=largest, tokens=tokens, prefer_observed=False
        ),
        "joint (additive, A and B in h)": JointRoute(params=largest, tokens=tokens),
        "joint (additive, shared A and B)": JointRoute(params=largest, tokens=tokens, joint=False),
    }
    tables = []
    table = Table(title="5Mix: fit on 70M-305M, predict 410M at its last step (26 x 22)")
    for column in ("route", "MAE (nats)", "max error", "MRE %", "seconds"):
        table.add_column(column, justify="left" if column == "route" else "right")
    for name, route in routes.items():
        start = time.perf_counter()
        route.fit(train)
        seconds = time.perf_counter() - start
        errors = held_out_errors(route, held_out, name=name)
        tables.append(errors)
        table.add_row(
            name,
            f"{errors['abs_error'].mean():.4f}",
            f"{errors['abs_error'].max():.4f}",
            f"{100 * errors['rel_error'].mean():.3f}",
            f"{seconds:.1f}",
        )
    console.print(table)
    return pl.concat(tables)


def main() -> int:
    """Run both comparisons; exit status 1 if a goal of issue 4 is missed."""
    console = Console(width=160)
    with tempfile.TemporaryDirectory(prefix="mixplan-bench-") as folder:
        lake = str(Path(folder) / "lake")
        ingest_paths([DATA / "sail-sg__regmix", DATA / "yegcjs__mixinglaws" / "5Mix"], lake)
        scores = regmix(console, lake)
        routes = five_mix(console, lake)
    pile_cc = scores.filter((pl.col("model") == "additive") & (pl.col("domain") == "pile_cc"))
    spearman, mre = pile_cc["spearman"][0], pile_cc["mre"][0]
    nested_mae = routes.filter(pl.col("route") == "nested (additive mixture law)")[
        "abs_error"
    ].mean()
    goals = {
        f"RegMix Pile-CC additive Spearman {spearman:.4f} >= 0.99": spearman >= 0.99,
        f"RegMix Pile-CC additive MRE {100 * mre:.3f}% <= 0.6%": mre <= 0.006,
        f"5Mix nested 410M MAE {nested_mae:.4f} <= 0.02 nats": nested_mae <= 0.02,
    }
    for text, ok in goals.items():
        console.print(("[green]PASS[/green] " if ok else "[red]MISS[/red] ") + text)
    lightgbm = scores.filter(pl.col("model") == "lightgbm")["spearman"].to_numpy()
    additive = scores.filter(pl.col("model") == "additive")["spearman"].to_numpy()
    console.print(
        f"additive vs LightGBM Spearman: higher on {int(np.sum(additive > lightgbm))} of "
        f"{len(additive)} domains"
    )
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
