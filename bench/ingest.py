"""Benchmark: ingest >= 1 GB of synthetic per-step JSONL logs vs a bare polars baseline.

Run as ``python bench/ingest.py [--gb 1.0]``. Generates canonical per-step JSONL logs under
``bench/_work`` (git-ignored), then, each in its own subprocess so peak RSS is measured per
job: (1) the baseline ``polars.scan_ndjson(files).sink_parquet(out)``; (2) ``mixplan ingest``'s
plain function ``tasks.ingest.ingest_paths`` (what ``mixplan ingest`` runs) into a fresh lake;
each job reports its own ``ru_maxrss``. Prints rows/s, MB/s, peak RSS
and the ratio of mixplan to the baseline. Goals: throughput >= 0.5x baseline, RSS < 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORK = Path(__file__).resolve().parent / "_work"
ROOT = Path(__file__).resolve().parents[1]


def generate(folder: Path, gigabytes: float, *, files: int = 8, seed: int = 0) -> int:
    """Write ``files`` JSONL logs totalling ~``gigabytes`` GB; returns the number of rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    target = gigabytes * 1e9 / files
    rows = 0
    for f in range(files):
        path = folder / f"run_{f:02d}.jsonl"
        written = 0
        with open(path, "w") as handle:
            run = 0
            while written < target:
                run += 1
                run_id = f"bench/f{f}-r{run}"
                steps = np.arange(1, 20_001)
                loss = 2.0 + 8.0 * steps**-0.3 + rng.normal(0, 0.01, steps.size)
                lr = 3e-4 * np.minimum(1.0, steps / 500)
                head = f'{{"run_id":"{run_id}","experiment":"bench","params":124000000,"step":'
                lines = [
                    f'{head}{s},"tokens_seen":{s * 524_288},"learning_rate":{r:.6g},'
                    f'"split":"train","domain":"all","loss":{x:.6f}}}\n'
                    for s, r, x in zip(steps.tolist(), lr.tolist(), loss.tolist(), strict=True)
                ]
                block = "".join(lines)
                handle.write(block)
                written += len(block)
                rows += len(lines)
    return rows


PEAK = """
import resource
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""
BASELINE = (
    """
import polars as pl, sys
pl.scan_ndjson(sys.argv[1]).sink_parquet(sys.argv[2])
print(0)
"""
    + PEAK
)
MIXPLAN = (
    """
import sys
from tasks.ingest import ingest_paths
report = ingest_paths([sys.argv[1]], sys.argv[2])
print(report.totals()["metric_rows"])
"""
    + PEAK
)


def timed(code: str, *args: str) -> tuple[float, float, str]:
    """Run ``code`` in a fresh interpreter: (seconds, its own peak RSS in GB, its stdout)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, check=True
    )
    seconds = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    return seconds, int(lines[-1]) * 1024 / 1e9, lines[-2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=1.0, help="input size in GB")
    parser.add_argument("--keep", action="store_true", help="keep bench/_work afterwards")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    logs = WORK / "logs"
    t0 = time.perf_counter()
    rows = generate(logs, args.gb)
    size = sum(p.stat().st_size for p in logs.iterdir())
    print(f"generated {rows:,} rows, {size / 1e6:,.0f} MB in {time.perf_counter() - t0:.1f}s")

    results = {}
    base_s, base_rss, _ = timed(BASELINE, str(logs / "*.jsonl"), str(WORK / "baseline.parquet"))
    results["baseline"] = (base_s, base_rss)
    mix_s, mix_rss, out = timed(MIXPLAN, str(logs), str(WORK / "lake"))
    results["mixplan"] = (mix_s, mix_rss)
    accepted = int(out)
    if accepted != rows:
        raise SystemExit(f"mixplan accepted {accepted:,} rows, expected {rows:,}")

    print(f"{'job':<10}{'seconds':>10}{'rows/s':>14}{'MB/s':>10}{'peak RSS GB':>14}")
    for name, (seconds, rss) in results.items():
        print(
            f"{name:<10}{seconds:>10.1f}{rows / seconds:>14,.0f}{size / 1e6 / seconds:>10.1f}"
            f"{rss:>14.2f}"
        )
    ratio = base_s / mix_s
    print(f"throughput ratio mixplan/baseline = {ratio:.2f} (goal >= 0.5)")
    print(f"mixplan peak RSS = {mix_rss:.2f} GB (goal < 1.5 GB; ru_maxrss of each job's process)")
    print(f"cpu count {os.cpu_count()} (shared with other processes; timings are noisy)")
    print(
        json.dumps(
            {
                "rows": rows,
                "bytes": size,
                "baseline_s": base_s,
                "mixplan_s": mix_s,
                "baseline_rss_gb": base_rss,
                "mixplan_rss_gb": mix_rss,
                "ratio": ratio,
            }
        )
    )
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
