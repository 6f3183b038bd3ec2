"""Planner benchmarks (a script, not a test): run ``python bench/plan.py [--quick]``.

(a) What-if latency of the loss-target + inference program (laws.md 3, Sardana form): p50/p99
    over 1,000 re-solves of the program built once (DPP, new parameter values each time) against
    building a fresh problem for every query. Goal: p50 <= 5 ms per re-solve.
(b) A 7-source mixture plan with per-source caps and repetition, on an exponential mixing law
    fitted here to the bundled RegMix 1M-parameter runs (6 Pile sources + "other"), with the
    Sardana scale law: the convex solve against RegMix-style random search over 100,000
    Dirichlet mixtures (best and top-128 mean) and the Data-Mixing-Laws 1/16 simplex grid, all on
    the same objective at the same D. Goals: convex >= both searches; >= 10x faster than random.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from mixplan.planning.laws.chinchilla import SARDANA
from mixplan.planning.mixture.data import MixtureData
from mixplan.planning.mixture.exponential import ExponentialLaw
from mixplan.planning.programs.budget import BudgetProgram
from mixplan.planning.programs.inference import TargetProgram
from mixplan.planning.programs.mixture import MixtureProgram, Source, simplex_grid

ROOT = Path(__file__).resolve().parents[1]
REGMIX = ROOT / "data" / "public" / "sail-sg__regmix"
KEEP = ["pile_cc", "github", "pubmed_central", "arxiv", "freelaw", "wikipedia_en"]
DOMAINS = ["pile_cc", "github", "arxiv", "wikipedia_en", "pubmed_central"]
# Unique tokens per source (about 1 token per 4 bytes of the Pile's sizes) and epoch caps.
UNIQUE = {
    "pile_cc": 5.7e10,
    "github": 2.4e10,
    "pubmed_central": 2.2e10,
    "arxiv": 1.4e10,
    "freelaw": 1.3e10,
    "wikipedia_en": 1.6e9,
    "other": 7.5e10,
}
EPOCHS = {"wikipedia_en": 10.0}


def percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.array(samples) * 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def bench_whatif(count: int, rebuild_count: int, rng: np.random.Generator) -> None:
    targets = rng.uniform(1.90, 2.20, count)
    tokens = 10 ** rng.uniform(10, 13, count)
    program = TargetProgram()
    program.solve(SARDANA, target_loss=2.0, inference_tokens=1e12)  # build + compile once
    resolve = []
    for target, t_inf in zip(targets, tokens, strict=True):
        start = time.perf_counter()
        r = program.solve(SARDANA, target_loss=float(target), inference_tokens=float(t_inf))
        resolve.append(time.perf_counter() - start)
        assert r.status == "optimal"
    rebuild = []
    for target, t_inf in zip(targets[:rebuild_count], tokens[:rebuild_count], strict=True):
        start = time.perf_counter()
        TargetProgram().solve(SARDANA, target_loss=float(target), inference_tokens=float(t_inf))
        rebuild.append(time.perf_counter() - start)
    budget = BudgetProgram()
    budget.solve(SARDANA, flops=1e23)
    budget_times = []
    for flops in 10 ** rng.uniform(20, 26, count):
        start = time.perf_counter()
        budget.solve(SARDANA, flops=float(flops), inference_tokens=1e12)
        budget_times.append(time.perf_counter() - start)
    p50, p99 = percentiles(resolve)
    b50, b99 = percentiles(rebuild)
    g50, g99 = percentiles(budget_times)
    print("(a) what-if latency, loss target + inference program (Sardana constants)")
    print(f"    re-solve (built once, DPP), {count} queries: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"    rebuild every query, {rebuild_count} queries: p50 {b50:.2f} ms, p99 {b99:.2f} ms")
    print(f"    speed-up of re-solve at p50: {b50 / p50:.1f}x   (goal p50 <= 5 ms: "
          f"{'met' if p50 <= 5 else 'MISSED'})")  # fmt: skip
    print(f"    budget program re-solve, {count} queries: p50 {g50:.2f} ms, p99 {g99:.2f} ms")


def fitted_law() -> tuple[ExponentialLaw, float]:
    mix = pl.read_csv(REGMIX / "train_mixture_1m.csv")
    loss = pl.read_csv(REGMIX / "train_pile_loss_1m.csv")
    cols = [f"train_the_pile_{k}" for k in KEEP]
    weights = mix.select(cols).to_numpy()
    other = mix.drop(["index", *cols]).to_numpy().sum(axis=1)
    losses = loss.select([f"metric/the_pile_{d}_val_loss" for d in DOMAINS]).to_numpy()
    data = MixtureData.from_arrays(
        np.c_[weights, other], losses, sources=[*KEEP, "other"], domains=DOMAINS
    )
    start = time.perf_counter()
    law = ExponentialLaw().fit(data)
    return law, time.perf_counter() - start


def bench_mixture(flops: float, random_count: int, rng: np.random.Generator) -> None:
    law, fit_seconds = fitted_law()
    sources = [Source(n, UNIQUE[n], EPOCHS.get(n, 4.0)) for n in law.sources_]
    start = time.perf_counter()
    program = MixtureProgram(sources, law, scale_law=SARDANA, domain_weights=None)
    build = time.perf_counter() - start
    start = time.perf_counter()
    program.solve_at(2e11, flops=flops)  # the first solve compiles the DPP problem
    compile_seconds = time.perf_counter() - start
    plans = []
    for _ in range(5):
        start = time.perf_counter()
        plan = program.plan(flops=flops)
        plans.append(time.perf_counter() - start)
    plan_seconds = float(np.median(plans))
    tokens = plan.tokens
    inner = []
    for _ in range(50):
        start = time.perf_counter()
        r = program.solve_at(tokens, flops=flops)
        inner.append(time.perf_counter() - start)
    inner_seconds = float(np.median(inner))

    start = time.perf_counter()
    draws = rng.dirichlet(np.ones(len(sources)), random_count)
    values = program.objective(draws, tokens, flops)
    order = np.argsort(values)
    top = draws[order[:128]].mean(axis=0)
    random_seconds = time.perf_counter() - start
    best_random = float(values[order[0]])
    top_value = float(program.objective(top, tokens, flops)[0])
    feasible = int(np.isfinite(values).sum())

    start = time.perf_counter()
    grid = simplex_grid(len(sources), 16)
    grid_values = program.objective(grid, tokens, flops)
    grid_seconds = time.perf_counter() - start
    best_grid = float(grid_values.min())

    print(f"(b) 7-source mixture at C = {flops:.0e} (law fitted to {len(law.sources_)} RegMix "
          f"sources x {len(law.domains_)} domains in {fit_seconds:.2f} s)")  # fmt: skip
    print(f"    caps: {', '.join(f'{s.name} {s.cap:.2g}' for s in sources)}")
    print(f"    build {build * 1e3:.0f} ms + first solve (DPP compile) "
          f"{compile_seconds * 1e3:.0f} ms, once per spec")  # fmt: skip
    print(f"    convex plan (golden section on log D, {plan.solves} inner solves, median of 5): "
          f"{plan_seconds * 1e3:.1f} ms, D = {tokens:.4g}, N = {plan.params:.4g}, "
          f"loss {plan.loss:.6f}")  # fmt: skip
    print(
        f"    capped sources: {list(plan.capped) or 'none'}; mixture "
        + ", ".join(f"{k} {v:.3f}" for k, v in plan.mixture.items())
    )
    print(f"    at that D: convex inner solve {inner_seconds * 1e3:.2f} ms (median of 50), "
          f"loss {r.loss:.6f}")  # fmt: skip
    print(
        f"    random search ({random_count:,} Dirichlet, {feasible:,} within caps): "
        f"{random_seconds * 1e3:.1f} ms, best {best_random:.6f}, top-128 mean {top_value:.6f}"
    )
    print(f"    1/16 simplex grid ({len(grid):,} mixtures): {grid_seconds * 1e3:.1f} ms, "
          f"best {best_grid:.6f}")  # fmt: skip
    best_search = min(best_random, best_grid, top_value)
    print(f"    convex - best search: {r.loss - best_search:+.2e} (goal <= 0: "
          f"{'met' if r.loss <= best_search + 1e-9 else 'MISSED'})")  # fmt: skip
    ratio_inner, ratio_plan = random_seconds / inner_seconds, random_seconds / plan_seconds
    print(f"    speed: random search / convex inner solve = {ratio_inner:.1f}x (goal >= 10x);"
          f" random search at one D / joint (D, mixture) plan = {ratio_plan:.2f}x")  # fmt: skip
    print(f"    (a random search that also chose D would repeat its "
          f"{random_seconds * 1e3:.0f} ms at every D tried)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer queries (smoke run)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    count = 100 if args.quick else 1000
    bench_whatif(count, 50 if args.quick else 1000, rng)
    bench_mixture(1e22, 10_000 if args.quick else 100_000, rng)


if __name__ == "__main__":
    main()
