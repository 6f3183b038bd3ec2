"""Main-job timing (a script, not a test): ``python bench/pipeline.py [--runs N]``.

Times ``python -m mixplan pipeline`` (the path users call: the CLI in a fresh process, on the
bundled real data) from a fresh ``MIXPLAN_OUT`` and ``PREFECT_HOME``:

* **cold**: the first run (empty lake, fresh Prefect database: ingest, every fit, every plan,
  the report);
* **warm**: the next run on the same lake (nothing changed: fits, plans and charts reused).

As a baseline measured in the same run it times ``python -c "import prefect"`` plus
``python -m mixplan --help`` (the floor every run pays: interpreter and imports), and prints
each timing against the goals (cold < 60 s, warm < 15 s on 2 cores) and as a multiple of that
floor, with the CPU seconds each run used (user + system, the Prefect server included: the
wall time on a shared machine is inflated by the other jobs, the CPU time much less). Every
subprocess runs with one BLAS thread (``OMP/OPENBLAS/MKL_NUM_THREADS=1``), as the
fitting engine pins it anyway.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOALS = {"cold": 60.0, "warm": 15.0}


def _env(out: Path, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MIXPLAN_OUT": str(out),
        "PREFECT_HOME": str(home),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


CPU: dict[str, list[float]] = {"floor": [], "cold": [], "warm": []}
"""CPU seconds (user + system) of each timed command and its children (the Prefect server)."""


def _timed(command: list[str], env: dict[str, str], kind: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    CPU[kind].append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="cold + warm pairs to time")
    args = parser.parse_args()
    python = sys.executable
    timings: dict[str, list[float]] = {"floor": [], "cold": [], "warm": []}
    for _ in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix="mixplan-bench-pipeline-"))
        try:
            env = _env(root / "out", root / "prefect")
            timings["floor"].append(
                _timed([python, "-c", "import prefect"], env, "floor")
                + _timed([python, "-m", "mixplan", "--help"], env, "floor")
            )
            timings["cold"].append(_timed([python, "-m", "mixplan", "pipeline"], env, "cold"))
            timings["warm"].append(_timed([python, "-m", "mixplan", "pipeline"], env, "warm"))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    floor = min(timings["floor"])
    print(f"mixplan pipeline on the bundled data, {os.cpu_count()} cores, {args.runs} run(s)")
    print(f"floor (import prefect + mixplan --help): {floor:.1f} s")
    for kind in ("cold", "warm"):
        best = min(timings[kind])
        verdict = "OK" if best < GOALS[kind] else "MISSED"
        runs = ", ".join(f"{t:.1f}" for t in timings[kind])
        print(
            f"{kind}: {best:6.1f} s wall, {min(CPU[kind]):6.1f} CPU-s  (goal < {GOALS[kind]:.0f} s:"
            f" {verdict}; {best / floor:.1f}x the floor; all runs: {runs})"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (wall times inflate under load)")


if __name__ == "__main__":
    main()
