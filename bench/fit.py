"""Benchmark the fitting engine against the published procedure, on 240 points and at scale.

Baseline (measured in the same run): scipy L-BFGS-B from each of the 4,500 grid starts, one by
one, with the analytic gradient, as the published replication did. mixplan: the vectorised
multi-start search with pruning and L-BFGS-B polish. Both run with one BLAS thread
(threadpoolctl), in this process and in the scaling children.

Prints, on the 240 Epoch points: both times, the speed ratio, both objectives; 1,000 bootstrap
refits (by run); the Epoch backtest. Then the scaling table: synthetic Chinchilla runs (1%
log-normal noise, checkpoints per run) of 2,400 / 24,000 / 100,000 points, each fitted in its
own subprocess (the 4,500-start search plus 200 bootstrap refits) for its wall time and peak
RSS, next to the plain loop's time per start at that size times 4,500.

Usage: ``python bench/fit.py [--starts N] [--sizes 2400,24000,100000]`` (``--starts``
subsamples the baseline grid evenly to shorten a run; the full grid is the goal's reference).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from mixplan.planning.fitting.backtest import backtest
from mixplan.planning.fitting.bootstrap import bootstrap_chunk, resample_counts
from mixplan.planning.fitting.engine import baseline_search, search
from mixplan.planning.fitting.fit import prepare, warm_starts
from mixplan.planning.fitting.specs import CHINCHILLA
from mixplan.planning.laws.chinchilla import BESIROGLU

EPOCH_CSV = (
    Path(__file__).resolve().parents[1]
    / "data/public/epoch-research__analyzing-chinchilla/svg_extracted_data.csv"
)
BLAS_THREADS = 1
BASELINE_SCALE_STARTS = 4
"""Starts of the plain loop timed at each scaling size (its cost per start is flat)."""


def epoch_frame() -> pl.DataFrame:
    """The 245 digitised Chinchilla runs as params / tokens / flops / loss."""
    raw = pl.read_csv(EPOCH_CSV)
    return raw.select(
        pl.col("Model Size").alias("params"),
        pl.col("Training FLOP").alias("flops"),
        pl.col("loss"),
    ).with_columns((pl.col("flops") / (6 * pl.col("params"))).alias("tokens"))


def synthetic_frame(n_points: int, seed: int = 0) -> pl.DataFrame:
    """``n_points`` checkpoints of synthetic runs (20 per run) from Besiroglu et al.'s law."""
    rng = np.random.default_rng(seed)
    per_run = 20
    n_runs = max(n_points // per_run, 1)
    params = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), n_runs))
    final_tpp = np.exp(rng.uniform(np.log(5), np.log(100), n_runs))
    fraction = np.linspace(0.1, 1.0, per_run)
    n = np.repeat(params, per_run)
    d = np.repeat(params * final_tpp, per_run) * np.tile(fraction, n_runs)
    loss = BESIROGLU.predict(n, d) * np.exp(rng.normal(0, 0.01, n.size))
    run_id = np.repeat(np.arange(n_runs), per_run).astype(str)
    return pl.DataFrame({"run_id": run_id, "params": n, "tokens": d, "loss": loss})


def scale_child(n_points: int) -> None:
    """Fit ``n_points`` synthetic points (search + 200 bootstrap refits); print JSON."""
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        data = prepare(synthetic_frame(n_points), "chinchilla")
        t0, c0 = time.perf_counter(), time.process_time()
        result = search(CHINCHILLA, data.columns, data.loss)
        t_fit, c_fit = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        bootstrap_chunk(CHINCHILLA, data, warm_starts(result), resample_counts(data.n_runs, 200))
        t_boot = time.perf_counter() - t0
        starts = CHINCHILLA.grid_points()
        starts = starts[np.linspace(0, len(starts) - 1, BASELINE_SCALE_STARTS).astype(int)]
        t0 = time.perf_counter()
        baseline_search(CHINCHILLA, data.columns, data.loss, starts=starts)
        t_base = (time.perf_counter() - t0) / BASELINE_SCALE_STARTS * len(CHINCHILLA.grid_points())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "n": data.n_points,
                "fit_s": t_fit,
                "fit_cpu_s": c_fit,
                "bootstrap_s": t_boot,
                "baseline_s": t_base,
                "peak_mb": peak_mb,
                "objective": result.objective,
            }
        )
    )


def scaling(sizes: list[int]) -> None:
    """The scaling table, one subprocess per size (peak RSS is per process)."""
    print("\nscaling (synthetic checkpoints; search + 200 bootstrap refits, each in a subprocess):")
    print(
        f"{'points':>8} {'search wall':>12} {'(CPU)':>8} {'bootstrap':>10} {'peak RSS':>10} "
        f"{'plain loop est.':>16}"
    )
    rows = []
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--scale-child", str(n)],
            check=True,
            capture_output=True,
            text=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{row['n']:>8,} {row['fit_s']:>11.2f}s {row['fit_cpu_s']:>7.2f}s "
            f"{row['bootstrap_s']:>9.2f}s "
            f"{row['peak_mb']:>7.0f} MB {row['baseline_s']:>14.0f}s  "
            f"({row['baseline_s'] / row['fit_s']:.0f}x)"
        )
    if len(rows) >= 2:
        growth = rows[-1]["fit_s"] / rows[0]["fit_s"]
        print(
            f"search time x{growth:.1f} for x{rows[-1]['n'] / rows[0]['n']:.0f} points "
            "(goals: 24,000 points < 1.5 GB peak RSS, 100,000 points < 60 s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=None, help="baseline starts (default all)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--sizes", default="2400,24000,100000", help="scaling sizes ('' skips)")
    parser.add_argument("--scale-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_child is not None:
        scale_child(args.scale_child)
        return

    data = prepare(epoch_frame(), "chinchilla", outlier_rule="drop_highest_loss:5")
    grid = CHINCHILLA.grid_points()
    base_starts = grid
    if args.starts:
        base_starts = grid[np.linspace(0, len(grid) - 1, args.starts).astype(int)]
    print(f"data: {data.n_points} points; grid {len(grid)} starts; BLAS threads {BLAS_THREADS}")

    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        # warm up both code paths (lazy imports) so neither pays first-call costs
        search(CHINCHILLA, data.columns, data.loss, starts=grid[:50])
        baseline_search(CHINCHILLA, data.columns, data.loss, starts=grid[:2])
        timings = []
        for _ in range(3):  # best of three: the fit takes well under a second
            t0, c0 = time.perf_counter(), time.process_time()
            ours = search(CHINCHILLA, data.columns, data.loss)
            timings.append((time.perf_counter() - t0, time.process_time() - c0))
        t_ours, c_ours = min(timings)
        print(
            f"mixplan  : {t_ours:8.2f} s wall {c_ours:8.2f} s CPU  objective {ours.objective:.10f}"
        )
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
        "   (goal >= 100x; CPU time is the fairer figure on shared cores)"
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
    if args.sizes:
        scaling([int(s) for s in args.sizes.split(",")])


if __name__ == "__main__":
    main()
