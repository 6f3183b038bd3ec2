"""Two ingests of the same runs from two files, at the same moment, into one lake.

Two worker processes (each its own interpreter, as two ``mixplan ingest`` would be) are started
once and then released together by a barrier, 20 rounds in a row, each round into a fresh lake.
Every round must end with each run once and each (run, step, split, domain) once: neither
duplicated (both writers thinking the runs are new) nor lost.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import polars as pl

from mixplan.tasks.lake import read_metrics, read_quarantine, read_runs

ROUNDS = 20
RUNS = 9
STEPS = 200


def _worker(log: str, lakes: list[str], barrier, results) -> None:
    from mixplan.tasks.ingest import ingest_paths

    for lake in lakes:
        barrier.wait()
        report = ingest_paths([log], lake)
        results.put((log, lake, report.files[0].status))


def _write(path: Path, steps: range) -> None:
    lines = [
        json.dumps(
            {
                "run_id": f"r{run}",
                "experiment": "race",
                "params": 1e8 * (run + 1),
                "step": step,
                "loss": 4.0 - step / 1000 - run / 100,
            }
        )
        for run in range(RUNS)
        for step in steps
    ]
    path.write_text("\n".join(lines) + "\n")


def test_two_concurrent_ingests_of_the_same_runs_never_duplicate_or_lose_rows(tmp_path):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    _write(first, range(0, STEPS))
    _write(second, range(STEPS // 2, STEPS + STEPS // 2))  # half the steps overlap
    lakes = [str(tmp_path / f"lake{i}") for i in range(ROUNDS)]
    context = mp.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    workers = [
        context.Process(target=_worker, args=(str(log), lakes, barrier, results))
        for log in (first, second)
    ]
    for worker in workers:
        worker.start()
    reports = [results.get() for _ in range(2 * ROUNDS)]
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    assert {status for _, _, status in reports} == {"ingested"}
    distinct_steps = STEPS + STEPS // 2
    for lake in lakes:
        runs = read_runs(lake)
        metrics = read_metrics(lake)
        assert runs.height == RUNS, lake
        assert runs["run_id"].n_unique() == RUNS
        assert metrics.height == RUNS * distinct_steps, lake
        assert metrics.select(pl.struct("run_id", "step").n_unique()).item() == metrics.height
        assert read_quarantine(lake).height == 0
