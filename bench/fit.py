"""Benchmark the fitting engine on the 240 Epoch points against the published procedure.

Baseline (measured in the same run): scipy L-BFGS-B from each of the 4,500 grid starts, one by
one, with the analytic gradient, as the published replication did. mixplan: the vectorised
multi-start search with pruning and L-BFGS-B polish. Prints both times, the speed ratio, both
objectives and their ratio, the time of 1,000 bootstrap refits (by run), and the Epoch backtest
(fit on C below the top 20% of compute, predict the rest).

Usage: ``python bench/fit.py [--starts N]`` (``--starts`` subsamples the baseline grid evenly
to shorten a run; the full grid is the default and the goal's reference).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from mixplan.planning.fitting.backtest import backtest
from mixplan.planning.fitting.bootstrap import bootstrap_chunk, resample_counts
from mixplan.planning.fitting.engine import baseline_search, search
from mixplan.planning.fitting.fit import prepare, warm_starts
from mixplan.planning.fitting.specs import CHINCHILLA

EPOCH_CSV = (
    Path(__file__).resolve().parents[1]
    / "data/public/epoch-research__analyzing-chinchilla/svg_extracted_data.csv"
)


def epoch_frame() -> pl.DataFrame:
    """The 245 digitised Chinchilla runs as params / tokens / flops / loss."""
    raw = pl.read_csv(EPOCH_CSV)
    return raw.select(
        pl.col("Model Size").alias("params"),
        pl.col("Training FLOP").alias("flops"),
        pl.col("loss"),
    ).with_columns((pl.col("flops") / (6 * pl.col("params"))).alias("tokens"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=None, help="baseline starts (default all)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()

    data = prepare(epoch_frame(), "chinchilla", outlier_rule="drop_highest_loss:5")
    grid = CHINCHILLA.grid_points()
    base_starts = grid
    if args.starts:
        base_starts = grid[np.linspace(0, len(grid) - 1, args.starts).astype(int)]
    print(f"data: {data.n_points} points; grid {len(grid)} starts")

    # warm up both code paths (lazy imports, BLAS threads) so neither pays first-call costs
    search(CHINCHILLA, data.columns, data.loss, starts=grid[:50])
    baseline_search(CHINCHILLA, data.columns, data.loss, starts=grid[:2])
    timings = []
    for _ in range(3):  # best of three: the fit takes about a second
        t0, c0 = time.perf_counter(), time.process_time()
        ours = search(CHINCHILLA, data.columns, data.loss)
        timings.append((time.perf_counter() - t0, time.process_time() - c0))
    t_ours, c_ours = min(timings)
    print(f"mixplan  : {t_ours:8.2f} s wall {c_ours:8.2f} s CPU  objective {ours.objective:.10f}")

    t0, c0 = time.perf_counter(), time.process_time()
    _, base_obj = baseline_search(CHINCHILLA, data.columns, data.loss, starts=base_starts)
    t_base, c_base = time.perf_counter() - t0, time.process_time() - c0
    scale = len(grid) / len(base_starts)
    print(
        f"baseline : {t_base:8.2f} s wall {c_base:8.2f} s CPU  objective {base_obj:.10f}  "
        f"({len(base_starts)} starts; x{scale:.1f} to scale to {len(grid)})"
    )
    print(
        f"speed-up : {t_base * scale / t_ours:8.1f}x wall, {c_base * scale / c_ours:.1f}x CPU"
        "   (goal >= 50x; CPU time is the fairer figure on shared cores)"
    )
    print(f"objective ratio mixplan/baseline: {ours.objective / base_obj:.8f}   (goal <= 1.0001)")
    law = CHINCHILLA.to_law(ours.theta)
    print(f"law: {law}")

    counts = resample_counts(data.n_runs, args.bootstrap, seed=0)
    t0, c0 = time.perf_counter(), time.process_time()
    thetas, _ = bootstrap_chunk(CHINCHILLA, data, warm_starts(ours), counts)
    t_boot, c_boot = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"bootstrap: {args.bootstrap} refits by run in {t_boot:.2f} s wall, {c_boot:.2f} s CPU"
        "   (goal < 60 s)"
    )
    lo, hi = np.percentile(np.exp(thetas[:, 2]), [2.5, 97.5])
    print(f"           E 95% interval ({lo:.4f}, {hi:.4f})")

    t0 = time.perf_counter()
    bt = backtest(CHINCHILLA, data, quantile=0.8)
    t_bt = time.perf_counter() - t0
    print(
        f"backtest : fit on {bt['n_train_runs']} runs with C <= {bt['cutoff_flops']:.3g}, "
        f"predict {bt['n_test_runs']}: median rel. error {bt['median_relative_error']:.4%}, "
        f"max {bt['max_relative_error']:.4%}, mean signed {bt['mean_signed_relative_error']:+.4%}"
        f" ({t_bt:.2f} s)"
    )


if __name__ == "__main__":
    main()
